"""The clinician app driven in Python: upload real files, read the cards, check what is stored."""

from __future__ import annotations

import base64
import io
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import cv2
import ipywidgets as widgets
import mlflow
import numpy as np
import pydicom
import pytest
from exam_files import four_views
from PIL import Image
from sqlalchemy import select
from test_inference import breastmnist_png, register
from test_report import pdf_text

from bcdiag.app import ClinicianApp
from bcdiag.app.cards import OUTCOME_CHOICES
from bcdiag.app.clinician import WORKLIST_TAB
from bcdiag.app.hanging import HANGING
from bcdiag.models.bundle import ModelBundle
from bcdiag.processes import free_port
from bcdiag.serving.inference import Predictor
from bcdiag.serving.local import LocalScorer
from bcdiag.settings import get_settings
from bcdiag.storage import Storage
from bcdiag.storage.analysis_store import OUTCOME_LABELS
from bcdiag.storage.models import AuditEvent

AppFactory = Callable[..., ClinicianApp]


@pytest.fixture
def open_app(
    storage: Storage,
    mlflow_tracking: str,
    audit_trail: Storage,
) -> Iterator[AppFactory]:
    """Builds a user's app on the test storage (champions checked against `audit_trail`);
    at teardown waits for every app's warm-up thread, which must not outlive the test's
    MLflow tracking URI."""
    apps: list[ClinicianApp] = []

    def build(user: str, predictor: Predictor | None = None) -> ClinicianApp:
        apps.append(ClinicianApp(storage, LocalScorer(predictor), user))
        return apps[-1]

    yield build
    for app in apps:
        app.warming.join()


def rsna_jpeg(data_dir: Path, index: int) -> bytes:
    """A real screening mammogram (RSNA, 640 px JPEG) as a user would upload it."""
    return sorted((data_dir / "rsna640" / "images").glob("*.jpg"))[index].read_bytes()


def _choose(app: ClinicianApp, *files: tuple[str, bytes]) -> None:
    """What the browser's FileUpload sends once it has read the chosen files."""
    app.upload.value = tuple(
        {"name": name, "type": "", "size": len(data), "content": memoryview(data),
         "last_modified": datetime.now(UTC)}
        for name, data in files
    )  # fmt: skip


def _upload(
    app: ClinicianApp, *files: tuple[str, bytes], modality: str = "US", case: str = "Case A"
) -> None:
    """Choose the files, state `modality` for every PNG/JPEG and the `case` they join,
    press Analyse."""
    _choose(app, *files)
    app.chooser.choose_all(modality)
    app.case.value = case
    app.analyse.click()


def _worklist(app: ClinicianApp) -> list[str]:
    """The worklist's lines, as the clinician opens its tab (or refreshes it there)."""
    app.tabs.selected_index = WORKLIST_TAB
    app.worklist.refresh()
    return [line for line, _ in app.worklist.exams.options]


def _open_exam(app: ClinicianApp, line_part: str) -> widgets.Widget:
    """Choose the worklist's exam whose line holds `line_part`; the exam view."""
    app.worklist.refresh()
    (exam_id,) = [i for line, i in app.worklist.exams.options if line_part in line]
    app.worklist.exams.value = exam_id
    if app.exam_view.loader is not None:
        app.exam_view.loader.join(60)  # the images load in their own thread
    return app.exam_view.widget


def _texts(widget: widgets.Widget) -> str:
    """All HTML text under a widget."""
    if isinstance(widget, widgets.HTML):
        return str(widget.value)
    children = getattr(widget, "children", ())
    return "\n".join(_texts(child) for child in children)


def _find(widget: widgets.Widget, kind: type[widgets.Widget], description: str) -> widgets.Widget:
    for child in getattr(widget, "children", ()):
        if isinstance(child, kind) and getattr(child, "description", None) == description:
            return child
        found = _find(child, kind, description) if hasattr(child, "children") else None
        if found is not None:
            return found
    return None  # type: ignore[return-value]


def test_upload_gives_a_card_a_reason_a_report_and_an_outcome(
    open_app: AppFactory, storage: Storage, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)
    app = open_app("alice")
    hostile = "<img src=x onerror=alert(1)>.png"
    ct = (data_dir / "dicom" / "CT_small.dcm").read_bytes()
    assert app.analyse.disabled  # until the kernel holds the chosen files
    _choose(app, (hostile, breastmnist_png(data_dir, 3)), ("CT_small.dcm", ct))
    assert "Received 2 file(s)" in app.status.value
    assert app.analyse.disabled and "Choose the kind of scan for 1 PNG/JPEG" in app.status.value
    app.chooser.choose_all("US")
    assert app.analyse.disabled and "Choose or name the case (patient)" in app.status.value
    app.case.value = "Case A"
    assert not app.analyse.disabled
    app.analyse.click()
    assert app.analyse.disabled and app.upload.value == ()

    card, rejection = app.results.children
    text = _texts(card)
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in text and "<img src=x" not in text
    assert re.search(r"Probability of malignancy: <b>\d+\.\d%</b>", text)
    assert "bcdiag-us version 1" in text and "not a diagnosis" in text
    assert "Modality: US (stated at upload)" in text
    registered = mlflow.MlflowClient().get_model_version("bcdiag-us", "1").creation_timestamp
    trained = datetime.fromtimestamp(registered / 1000, UTC)
    assert f"trained {trained:%Y-%m-%d %H:%M} UTC" in text
    assert "modality CT" in _texts(rejection) and "Not analysed" in _texts(rejection)
    assert app.progress.value == app.progress.max == 2

    picture = next(w for w in card.children[0].children if isinstance(w, widgets.Image))
    with_heatmap = picture.value
    _find(card, widgets.ToggleButton, "Heatmap on").value = False
    assert picture.value != with_heatmap and bytes(picture.value).startswith(b"\x89PNG")

    _find(card, widgets.Button, "Prepare PDF report").click()
    link = re.search(r"base64,([A-Za-z0-9+/=]+)'", _texts(card))
    assert link
    pdf = base64.b64decode(link.group(1))
    assert pdf.startswith(b"%PDF")
    assert f"Model trained\n{trained:%Y-%m-%d %H:%M} UTC" in pdf_text(pdf)

    _find(card, widgets.Dropdown, "Outcome:").value = "biopsy-malignant"
    _find(card, widgets.Button, "Record outcome").click()
    assert "Recorded outcome: <b>Biopsy: malignant</b>, by alice" in _texts(card)
    assert [case.malignant for case in storage.confirmed_cases()] == [1]

    with storage.sessions() as session:
        actions = [e.action for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions[:2] == ["scan.stored", "analysis.created"]
    assert {"upload.rejected", "report.downloaded", "feedback.recorded"} <= set(actions)


def test_the_worklist_is_private_and_opens_an_exam(
    open_app: AppFactory, storage: Storage, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)
    alice = open_app("alice")
    _upload(alice, ("first.png", breastmnist_png(data_dir, 1)), case="Case A")
    assert [line.split(" · ")[1] for line in _worklist(alice)] == ["Case A"]
    alice.tabs.selected_index = 0
    _upload(alice, ("second.png", breastmnist_png(data_dir, 2)), case="Case B")
    assert len(alice.worklist.exams.options) == 1  # read when the tab opens
    assert [line.split(" · ")[1] for line in _worklist(alice)] == ["Case B", "Case A"]
    assert alice.case.options == ("Case A",)  # the cases there were when the files came

    bob = open_app("bob")
    assert _worklist(bob) == [] and "No exams match" in bob.worklist.count.value

    shown_before = alice.results.children
    assert alice.exam_view.controls.layout.display == "none"  # nothing to act on yet
    view = _open_exam(alice, "Case A")
    assert alice.exam_view.controls.layout.display is None
    text = _texts(view)
    assert ">Case A</h3>" in text and "Exam score: <b>" in text and "1 image(s)" in text
    assert re.search(r"<b>first\.png</b> · \d+\.\d% · ", text)
    assert len(alice.exam_view.viewers) == 1 and alice.exam_view.viewers[0].overlay == "off"
    assert len(alice.exam_view.images.children) == 1  # no empty mammography slots
    (first_viewer,) = alice.exam_view.viewers
    _open_exam(alice, "Case B")  # the next exam: the first one's viewer is let go
    assert "second.png" in _texts(alice.exam_view.images)
    assert first_viewer.comm is None and first_viewer not in alice.exam_view.viewers
    alice.exam_view.overlay.value = "heat"  # no longer linked to the closed viewer
    assert first_viewer.overlay == "off" and alice.exam_view.viewers[0].overlay == "heat"
    assert alice.results.children == shown_before  # the Analyse tab is left alone
    with storage.sessions() as session:
        viewed = session.scalars(select(AuditEvent).where(AuditEvent.action == "analysis.viewed"))
        assert [event.user for event in viewed] == ["alice", "alice"]  # one per exam opened


def test_a_four_view_mammogram_exam_is_hung_and_scored_by_its_highest_view(
    open_app: AppFactory, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(replace(small_bundle, modality="MG"))  # any real model will do
    app = open_app("alice")
    views = four_views(data_dir, patient_id="P-0042", patient_name="DOE^JANE")
    _choose(app, *((f"{name}.dcm", data) for name, data in reversed(views.items())))
    assert not app.analyse.disabled  # DICOM files name their patient: no case to choose
    app.analyse.click()
    assert "Finished 4 file(s): 4 analysed" in app.status.value
    (line,) = _worklist(app)
    assert "P-0042 (DOE JANE) · MG · " in line and "4 image(s)" in line
    view = _open_exam(app, "P-0042")
    cells = app.exam_view.images.children
    labels = [_texts(cell).split("</b>")[0].split("<b>")[-1] for cell in cells]
    assert [name.removesuffix(" (mirrored)") for name in labels] == list(HANGING)
    scores = [float(s) for s in re.findall(r"</b> · (\d+\.\d)%", _texts(app.exam_view.images))]
    assert len(scores) == 4
    assert f"Exam score: <b>{max(scores):.1f}%</b>" in _texts(view)

    _find(view, widgets.Button, "Prepare exam report").click()
    pdf_data, zip_data = (
        base64.b64decode(encoded)
        for encoded in re.findall(r"base64,([A-Za-z0-9+/=]+)'", app.exam_view.report_link.value)
    )
    text = pdf_text(pdf_data)
    assert "Patient\nP-0042" in text and "Patient name\nDOE JANE" in text
    assert "Accession number\nACC-0001" in text and "Study date\n2026-03-02" in text
    assert f"Exam score\n{max(scores):.1f}% (the highest probability among its images)" in text
    places = [text.index(f"{view} ({view}.dcm)") for view in ("RCC", "LCC", "RMLO", "LMLO")]
    assert places == sorted(places)  # in hanging order

    with zipfile.ZipFile(io.BytesIO(zip_data)) as archive:
        captures = [pydicom.dcmread(archive.open(name)) for name in sorted(archive.namelist())]
    assert [(c.ImageLaterality, c.ViewPosition) for c in captures] == [
        ("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")
    ]  # fmt: skip
    study = captures[0].StudyInstanceUID
    for capture in captures:
        assert capture.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
        assert (capture.PatientID, str(capture.PatientName)) == ("P-0042", "DOE^JANE")
        assert capture.StudyInstanceUID == study and capture.AccessionNumber == "ACC-0001"
        assert capture.pixel_array.shape[2] == 3 and "not a diagnosis" in capture.ImageComments
    assert len({c.SeriesInstanceUID for c in captures}) == 1  # one new series of the study


def test_png_and_jpeg_need_an_explicit_kind_of_scan_each(
    open_app: AppFactory, storage: Storage, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)  # an ultrasound champion only
    app = open_app("alice")
    _choose(app, ("us.png", breastmnist_png(data_dir, 1)), ("mg.jpg", rsna_jpeg(data_dir, 0)))
    first, second = app.chooser.files
    assert first.stated_modality is None and second.stated_modality is None  # no default
    app.analyse.click()
    assert app.results.children == () and "Choose the kind of scan for 2" in app.status.value
    first.modality.value = "US"
    assert app.analyse.disabled
    second.modality.value = "MG"
    app.case.value = "Case A"
    assert not app.analyse.disabled
    app.analyse.click()
    card, message = app.results.children
    assert "Modality: US (stated at upload)" in _texts(card)
    assert "mg.jpg: there is no model for MG scans yet" in _texts(message)
    assert "Finished 2 file(s): 1 analysed, 1 not analysed" in app.status.value


def test_every_chosen_file_ends_as_a_card_or_a_message(
    open_app: AppFactory, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)
    app = open_app("alice")
    assert "Up to 20 files at a time" in _texts(app.widget)  # said before any upload
    files = [(f"scan{n:02}.png", breastmnist_png(data_dir, n)) for n in range(22)]
    _choose(app, *files)
    assert "Only the first 20 are analysed in one batch; the other 2" in app.status.value
    assert "scan21.png: not analysed, because more than 20" in _texts(app.chooser.widget)
    app.chooser.choose_all("US")
    app.case.value = "Case A"
    app.analyse.click()
    texts = [_texts(child) for child in app.results.children]
    assert len(texts) == 22
    for name, _ in files:
        assert sum(name in text for text in texts) == 1, name
    assert sum("Probability of malignancy" in text for text in texts) == 20
    assert "Finished 22 file(s): 20 analysed, 2 not analysed" in app.status.value


def test_a_scan_without_a_model_is_in_the_worklist_and_analysed_later(
    open_app: AppFactory, storage: Storage, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)  # ultrasound only: a mammogram waits
    app = open_app("alice")
    _upload(app, ("mammo.jpg", rsna_jpeg(data_dir, 1)), modality="MG")
    assert "no model for MG scans yet" in _texts(app.results)
    (line,) = _worklist(app)
    assert "Case A · MG · no score · not analysed" in line

    register(replace(small_bundle, modality="MG"))
    later = open_app("alice")  # a new page: the new champion is loaded
    _worklist(later)
    view = _open_exam(later, "Case A")
    _find(view, widgets.Button, "Analyse now").click()
    assert later.exam_view.loader is not None
    later.exam_view.loader.join(60)  # the exam is shown again, analysed
    assert "bcdiag-mg v1" in _texts(later.exam_view.images)
    (line,) = _worklist(later)
    assert " · analysed · " in line
    assert len(storage.list_scans()) == 1  # analysed from the stored scan, not stored again


def test_the_outcome_has_no_default_and_a_change_is_confirmed_and_audited(
    open_app: AppFactory, storage: Storage, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)
    app = open_app("alice")
    _upload(app, ("case.png", breastmnist_png(data_dir, 4)))
    (card,) = app.results.children
    choice = _find(card, widgets.Dropdown, "Outcome:")
    record = _find(card, widgets.Button, "Record outcome")
    assert choice.label == "Choose the confirmed outcome…" and record.disabled
    assert "No outcome recorded yet" in _texts(card)
    record.click()  # a stray click on the disabled button records nothing
    assert storage.confirmed_cases() == []
    choice.value = "biopsy-benign"
    record.click()
    assert [c.outcome for c in storage.confirmed_cases()] == ["biopsy-benign"]

    (line,) = _worklist(app)
    assert "outcome recorded" in line
    reopened = _open_exam(app, "Case A")
    assert "Recorded outcome: <b>Biopsy: benign</b>, by alice on " in _texts(reopened)
    assert _find(reopened, widgets.Dropdown, "Outcome:").value == ""  # nothing pre-chosen
    _find(reopened, widgets.Dropdown, "Outcome:").value = "biopsy-malignant"
    _find(reopened, widgets.Button, "Change outcome").click()
    assert "Change the recorded outcome from <b>Biopsy: benign</b>" in _texts(reopened)
    assert [c.outcome for c in storage.confirmed_cases()] == ["biopsy-benign"]  # not yet
    _find(reopened, widgets.Button, "Confirm change").click()
    assert [c.outcome for c in storage.confirmed_cases()] == ["biopsy-malignant"]
    assert "Recorded outcome: <b>Biopsy: malignant</b>" in _texts(reopened)
    with storage.sessions() as session:
        changed = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "feedback.changed")
        ).one()
    assert changed.details["previous_outcome"] == "biopsy-benign"
    assert changed.details["outcome"] == "biopsy-malignant" and changed.user == "alice"


def test_outcome_choices_are_the_stored_outcomes() -> None:
    assert {value for _, value in OUTCOME_CHOICES} == set(OUTCOME_LABELS)


def test_an_empty_upload_asks_for_files(open_app: AppFactory) -> None:
    app = open_app("alice")
    app.analyse.click()
    assert "Choose one or more scans" in app.status.value


def test_an_unreachable_registry_is_a_message_in_the_card_area(
    open_app: AppFactory, data_dir: Path
) -> None:
    mlflow.set_tracking_uri(f"http://127.0.0.1:{free_port()}")  # the MLflow server is down
    app = open_app("alice", Predictor(registry_timeout_s=1))
    app.warming.join(timeout=5)  # the warm-up met the same registry and gave up quietly
    assert not app.warming.is_alive()
    _upload(app, ("lesion <1>.png", breastmnist_png(data_dir, 4)))
    (message,) = app.results.children
    text = _texts(message)
    assert "<b>Not analysed:</b> lesion &lt;1&gt;.png: the model registry did not" in text
    assert "within 1 s" in text and "try again" in text and "Traceback" not in text
    assert "Finished 1 file(s): 0 analysed, 1 not analysed" in app.status.value
    assert app.progress.value == 1


def _picture(card: widgets.Widget) -> Image.Image:
    picture = next(w for w in card.children[0].children if isinstance(w, widgets.Image))
    return Image.open(io.BytesIO(bytes(picture.value)))


def test_the_card_shows_the_whole_upload_and_what_the_score_is_calibrated_to(
    open_app: AppFactory, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)
    app = open_app("alice")
    pixels = np.asarray(Image.open(io.BytesIO(breastmnist_png(data_dir, 3))))
    wide = io.BytesIO()
    Image.fromarray(cv2.resize(pixels, (640, 400))).save(wide, format="PNG")
    _upload(app, ("wide.png", wide.getvalue()))
    (card,) = app.results.children
    assert _picture(card).size == (640, 400)  # the upload's aspect, not the model's square
    text = _texts(card)
    trained = small_bundle.info["train_prevalence"]
    assert f"(score calibrated to the training set, {100 * trained:.1f}% malignant)" in text
    assert "site's prevalence" not in text


def test_a_site_prevalence_gives_the_probability_at_it_on_card_and_report(
    open_app: AppFactory, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)
    app = open_app("alice")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BCDIAG_PREVALENCE_US", "0.01")
        get_settings.cache_clear()
        try:
            _upload(app, ("lesion.png", breastmnist_png(data_dir, 3)))
        finally:
            get_settings.cache_clear()
    (card,) = app.results.children
    text = _texts(card)
    assert "Probability at this site's prevalence (1.0%): <b>" in text
    assert "the call does not change with the site's prevalence" in text
    _find(card, widgets.Button, "Prepare PDF report").click()
    link = re.search(r"base64,([A-Za-z0-9+/=]+)'", _texts(card))
    assert link
    pdf = " ".join(pdf_text(base64.b64decode(link.group(1))).splitlines())
    assert "Probability at this site's prevalence (1.0%)" in pdf
