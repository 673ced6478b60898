"""The patient and study a DICOM header names, read apart from the scan's metadata."""

from __future__ import annotations

import logging
import warnings
from dataclasses import fields
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from exam_files import derived_mammograms, four_views
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage
from scan_corpus import dicom_bytes, png_bytes

from bcdiag.errors import ScanRejected
from bcdiag.scans import ScanMetadata, read_scan
from bcdiag.scans.identity import ScanIdentity, read_identity


def _read(path: Path) -> ScanIdentity:
    identity = read_identity(path.read_bytes(), path.name)
    assert identity is not None
    return identity


def test_a_real_cbis_ddsm_mammogram_names_its_patient_study_and_side(data_dir: Path) -> None:
    path = next(p for p in derived_mammograms(data_dir) if "P_00173" in p.name)
    assert _read(path) == ScanIdentity(
        patient_id="Mass-Test_P_00173_LEFT_CC",
        patient_name="Mass-Test_P_00173_LEFT_CC",
        study_instance_uid="1.3.6.1.4.1.9590.100.1.2.141041603211541608539911824931783400682",
        series_instance_uid="1.3.6.1.4.1.9590.100.1.2.280437157711493692000884645494047094463",
        study_date=date(2016, 10, 4),
        accession_number=None,
        study_description=None,
        laterality="L",  # from Laterality: CBIS-DDSM has no ImageLaterality
        view=None,  # nor a ViewPosition
    )


REAL_FILES = {
    # file: (PatientID, PatientName, StudyDate, AccessionNumber, laterality, view)
    "JPGLosslessP14SV1_1s_1f_8b.dcm": (None, "Citizen^Jan", date(2019, 1, 24), None, None, None),
    "OBXXXX1A_rle.dcm": ("11-05-25-142825", "OB", date(2011, 5, 25), None, None, None),
    "image_dfl.dcm": (None, None, None, None, None, None),  # PatientName "^^^^"
    "RG3_J2KR.dcm": ("11RG3", "CompressedSamples^RG3", date(2004, 8, 26), "FUJI95706", "R", "AP"),
}


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_headers_give_none_for_what_they_lack(data_dir: Path, name: str) -> None:
    identity = _read(data_dir / "dicom" / name)
    assert (
        identity.patient_id,
        identity.patient_name,
        identity.study_date,
        identity.accession_number,
        identity.laterality,
        identity.view,
    ) == REAL_FILES[name]
    assert identity.study_instance_uid  # every real file names its study


def test_four_rewritten_views_name_one_study_and_each_its_view(data_dir: Path) -> None:
    files = four_views(data_dir, patient_id="P-1", study_uid="1.2.3.4", accession="A7")
    identities = [read_identity(data, key) for key, data in files.items()]
    read = [identity for identity in identities if identity is not None]
    assert [(i.laterality, i.view) for i in read] == [
        ("R", "CC"),
        ("L", "CC"),
        ("R", "MLO"),
        ("L", "MLO"),
    ]
    assert {
        (i.patient_id, i.study_instance_uid, i.accession_number, i.study_date) for i in read
    } == {("P-1", "1.2.3.4", "A7", date(2026, 3, 2))}
    assert len({i.series_instance_uid for i in read}) == 4


def _built(**attributes: object) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = UltrasoundImageStorage
    ds.Modality = "US"
    ds.set_pixel_data(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), "MONOCHROME2", 16)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return dicom_bytes(ds)


def test_values_are_normalised_as_the_header_means_them() -> None:
    data = _built(
        PatientID="  12345 ",
        PatientName="SMITH^ANNA^^^=^^^^",
        ImageLaterality="l",
        Laterality="R",  # ImageLaterality wins
        ViewPosition="mlo",
        StudyDate="20261301",  # not a date
        StudyDescription="US breast\tleft",
    )
    identity = read_identity(data, "built.dcm")
    assert identity is not None
    assert (identity.patient_id, identity.patient_name) == ("12345", "SMITH^ANNA")
    assert (identity.laterality, identity.view, identity.study_date) == ("L", "MLO", None)
    assert identity.study_description == "US breastleft"  # control characters dropped
    assert read_identity(_built(Laterality="X"), "odd.dcm") == ScanIdentity(
        *(None for _ in fields(ScanIdentity))
    )  # an unknown laterality, like every absent field, is None


def test_png_and_jpeg_have_no_identity(data_dir: Path) -> None:
    png = png_bytes(np.zeros((32, 32), dtype=np.uint8))
    jpeg = next((data_dir / "rsna640" / "images").glob("*.jpg")).read_bytes()
    assert read_identity(png, "a.png") is None
    assert read_identity(jpeg, "a.jpg") is None


def test_a_damaged_header_is_a_rejection_that_quotes_no_value(data_dir: Path) -> None:
    data = four_views(data_dir, patient_id="SECRET-ID")["RCC"]
    value = data.index(b"SECRET-ID")  # PatientID's VR becomes SQ of undefined length
    damaged = data[: value - 4] + b"SQ\0\0\xff\xff\xff\xff" + data[value:]
    with pytest.raises(ScanRejected) as raised:
        read_identity(damaged, "cut.dcm")
    assert raised.value.code == "corrupt-header"
    assert "cut.dcm" in raised.value.message and "SECRET" not in raised.value.message


def test_identifiers_reach_neither_logs_nor_warnings_nor_the_metadata(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = four_views(data_dir, patient_id="SECRET-ID", patient_name="SECRET^NAME",
                       study_uid="1.2.3.44444")  # fmt: skip
    # Not a valid UID: pydicom's validation would log and warn it, value and all.
    data = files["LMLO"].replace(b"1.2.3.44444", b"1.2.SECRETX")
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        identity = read_identity(data, "lmlo.dcm")
        metadata = read_scan(files["RMLO"], "rmlo.dcm").metadata
    assert identity is not None and identity.patient_id == "SECRET-ID"
    assert identity.study_instance_uid == "1.2.SECRETX"
    assert "SECRET" not in caplog.text
    assert not [w for w in caught if "SECRET" in str(w.message)]
    assert "SECRET" not in repr(metadata.as_dict())
    assert not {"patient_id", "patient_name"} & {f.name for f in fields(ScanMetadata)}
