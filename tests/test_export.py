"""De-identified export of real DICOM: identifiers change, pixels stay, risky files stay home."""

from __future__ import annotations

import csv
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from exam_files import four_views, store_dicom
from PIL import Image, PngImagePlugin
from pydicom.dataset import Dataset
from sqlalchemy import select

from bcdiag.errors import BcdiagError
from bcdiag.storage import Storage, upgrade
from bcdiag.storage.export import export_deidentified, strip_image_metadata
from bcdiag.storage.models import AuditEvent

IDENTIFIERS = (
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


def _with_burned_in_flag(path: Path, flag: str) -> bytes:
    """The real file at ``path`` with BurnedInAnnotation set, as a reviewer would."""
    dataset = pydicom.dcmread(path)
    dataset.BurnedInAnnotation = flag
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def stored(storage: Storage, data_dir: Path) -> dict[str, tuple[str, bytes]]:
    """Real scans stored under names saying what each should show; name -> (sha256, bytes)."""
    dicom = data_dir / "dicom"
    mammogram = next((dicom / "derived").glob("cbisddsm_*.dcm"))
    files = {
        "mammogram-secondary-capture": mammogram.read_bytes(),
        "mammogram-reviewed-no-text": _with_burned_in_flag(mammogram, "NO"),
        "ultrasound-flag-absent": (dicom / "US1_J2KR.dcm").read_bytes(),
        "ultrasound-flag-no": (dicom / "JPGLosslessP14SV1_1s_1f_8b.dcm").read_bytes(),
        "pet": (dicom / "breast_pet_ACRIN-FLT-Breast_028.dcm").read_bytes(),
        "pet-flag-yes": _with_burned_in_flag(dicom / "breast_pet_ACRIN-FLT-Breast_029.dcm", "YES"),
        "png": next((data_dir / "mias" / "png512").glob("*.png")).read_bytes(),
    }
    result = {}
    for name, data in files.items():
        scan_format = "png" if name == "png" else "dicom"
        scan = storage.store_scan(
            data,
            filename=name,
            metadata={"format": scan_format},
            user="u",
            identity=None,
            case_name="Case A",
        )
        result[name] = (scan.sha256, data)
    return result


def _manifest(out: Path) -> dict[str, dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as handle:
        return {row["sha256"]: row for row in csv.DictReader(handle)}


def test_export_deidentifies_and_withholds_what_may_show_text(
    storage: Storage, stored: dict[str, tuple[str, bytes]], tmp_path: Path
) -> None:
    out = tmp_path / "export"
    results = export_deidentified(storage, out, user="researcher")
    manifest = _manifest(out)
    status = {name: manifest[sha]["status"] for name, (sha, _) in stored.items()}
    assert status == {
        "mammogram-secondary-capture": "withheld",
        "mammogram-reviewed-no-text": "exported",
        "ultrasound-flag-absent": "withheld",
        "ultrasound-flag-no": "exported",
        "pet": "exported",
        "pet-flag-yes": "withheld",
        "png": "exported",
    }
    reason = {name: manifest[sha]["reason"] for name, (sha, _) in stored.items()}
    assert reason["pet-flag-yes"] == "BurnedInAnnotation is YES: the pixels carry text"
    assert "secondary capture" in reason["mammogram-secondary-capture"]
    assert "modality US" in reason["ultrasound-flag-absent"]
    exported = {row["file"] for row in manifest.values() if row["status"] == "exported"}
    assert {p.name for p in out.iterdir()} == exported | {"manifest.csv"}
    assert len(results) == len(stored)
    png_sha, png = stored["png"]
    exported_png = Image.open(out / manifest[png_sha]["file"])
    assert np.array_equal(np.asarray(exported_png), np.asarray(Image.open(BytesIO(png))))
    with storage.sessions() as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "scans.exported"))
        assert audit.one().details == {"exported": 4, "withheld": 3, "failed": 0}


@pytest.mark.parametrize("name", ["mammogram-reviewed-no-text", "ultrasound-flag-no", "pet"])
def test_exported_dicom_has_new_identifiers_and_the_same_pixels(
    storage: Storage, stored: dict[str, tuple[str, bytes]], tmp_path: Path, name: str
) -> None:
    export_deidentified(storage, tmp_path / "out", user="researcher")
    sha, data = stored[name]
    before = pydicom.dcmread(BytesIO(data))
    path = tmp_path / "out" / _manifest(tmp_path / "out")[sha]["file"]
    after = pydicom.dcmread(path)
    for keyword in IDENTIFIERS:
        if str(before.get(keyword, "")):
            assert str(after.get(keyword)) != str(before.get(keyword)), keyword
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
    assert after.Modality == before.Modality
    assert after.PixelData == before.PixelData
    assert np.array_equal(after.pixel_array, before.pixel_array)
    assert not _private_elements(after)
    for value in (before.PatientID, str(before.PatientName)):
        if len(value) >= 4:
            assert value.encode() not in path.read_bytes()


def _private_elements(dataset: Dataset) -> list[str]:
    found: list[str] = []
    dataset.walk(
        lambda _, element: found.append(str(element.tag)) if element.tag.is_private else None
    )
    return found


def test_export_refuses_a_folder_that_is_not_empty(storage: Storage, tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("earlier export")
    with pytest.raises(BcdiagError, match="not empty"):
        export_deidentified(storage, tmp_path, user="researcher")


def test_cli_refuses_identified_export_and_summarises_a_deidentified_one(
    bcdiag_home: Path, data_dir: Path, tmp_path: Path
) -> None:
    from bcdiag.cli.export import export  # imports the whole CLI package

    bcdiag_home.mkdir()
    upgrade(f"sqlite:///{bcdiag_home / 'bcdiag.sqlite'}")
    with Storage.from_settings() as storage:
        for path in (data_dir / "dicom").glob("breast_pet_*.dcm"):
            storage.store_scan(
                path.read_bytes(),
                filename=path.name,
                metadata={"format": "dicom"},
                user="u",
                identity=None,
                case_name="Case A",
            )
    runner = CliRunner()
    refused = runner.invoke(export, [str(tmp_path / "out")])
    assert refused.exit_code == 2
    assert "--deidentify" in refused.output
    assert not (tmp_path / "out").exists()
    done = runner.invoke(export, ["--deidentify", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    assert "exported 2 of 2 scans" in done.output


def test_image_text_and_exif_do_not_leave_with_the_pixels(data_dir: Path) -> None:
    source = Image.open(next((data_dir / "mias" / "png512").glob("*.png")))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Patient DOE^JANE 1970-01-01")
    tagged = BytesIO()
    source.save(tagged, format="PNG", pnginfo=info)
    jpeg = BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "DOE^JANE"  # ImageDescription
    source.save(jpeg, format="JPEG", exif=exif)
    for data in (tagged.getvalue(), jpeg.getvalue()):
        assert b"DOE" in data
        clean = strip_image_metadata(data)
        assert b"DOE" not in clean
        assert Image.open(BytesIO(clean)).size == source.size
    np.testing.assert_array_equal(
        np.asarray(Image.open(BytesIO(strip_image_metadata(tagged.getvalue())))),
        np.asarray(source),
    )


def test_the_case_and_exam_identifiers_do_not_leave_with_the_export(
    storage: Storage, data_dir: Path, tmp_path: Path
) -> None:
    """Cases and exams hold the header's identifiers and the clinicians' case names; an
    export carries none of them (exported headers are de-identified, the tables stay)."""
    files = four_views(data_dir, patient_id="PID-7731", patient_name="ROE^MARY",
                       study_uid="1.2.826.0.1.7731", accession="ACC-7731")  # fmt: skip
    secret = {"PID-7731", "ROE^MARY", "1.2.826.0.1.7731", "ACC-7731", "Screening mammography",
              "Clinic case Mary R."}  # fmt: skip
    for key, data in files.items():
        dataset = pydicom.dcmread(BytesIO(data))
        dataset.BurnedInAnnotation = "NO"  # reviewed: exported, not withheld
        secret.add(str(dataset.SeriesInstanceUID))
        reviewed = BytesIO()
        dataset.save_as(reviewed, enforce_file_format=True)
        store_dicom(storage, reviewed.getvalue(), f"{key}.dcm")
    png = next((data_dir / "mias" / "png512").glob("*.png")).read_bytes()
    storage.store_scan(png, filename="view.png", metadata={"format": "png"}, user="alice",
                       case_name="Clinic case Mary R.")  # fmt: skip
    assert {row.patient_key for row in storage.worklist("alice").rows} == {
        "PID-7731",
        "Clinic case Mary R.",
    }
    results = export_deidentified(storage, tmp_path / "out", user="researcher")
    assert [result.status for result in results] == ["exported"] * 5
    for path in (tmp_path / "out").iterdir():
        content = path.read_bytes()
        assert not [value for value in secret if value.encode() in content], path.name
