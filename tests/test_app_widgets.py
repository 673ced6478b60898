"""The clinician app driven in Python: upload real files, read the cards, check what is stored."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import cv2
import ipywidgets as widgets
import mlflow
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select
from test_inference import breastmnist_png, register
from test_report import pdf_text

from bcdiag.app import ClinicianApp
from bcdiag.app.cards import OUTCOME_CHOICES
from bcdiag.app.clinician import HISTORY_TAB
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


def _upload(app: ClinicianApp, *files: tuple[str, bytes], modality: str = "US") -> None:
    """Choose the files, state `modality` for every PNG/JPEG, press Analyse."""
    _choose(app, *files)
    app.chooser.choose_all(modality)
    app.analyse.click()


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


def test_history_is_private_and_reopens_the_same_card_under_its_row(
    open_app: AppFactory, storage: Storage, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)
    alice = open_app("alice")
    _upload(alice, ("first.png", breastmnist_png(data_dir, 1)))
    alice.tabs.selected_index = HISTORY_TAB
    assert "first.png" in _texts(alice.history.widget)
    alice.tabs.selected_index = 0
    _upload(alice, ("second.png", breastmnist_png(data_dir, 2)))
    assert "second.png" not in _texts(alice.history.widget)  # built when the tab opens
    alice.tabs.selected_index = HISTORY_TAB
    history = _texts(alice.history.widget)
    assert history.index("second.png") < history.index("first.png")  # newest first

    bob = open_app("bob")
    bob.tabs.selected_index = HISTORY_TAB
    assert "first.png" not in _texts(bob.history.widget)
    assert "No uploads yet" in _texts(bob.history.widget)

    shown_before = alice.results.children
    first_row = alice.history.entries.children[1]
    _find(first_row, widgets.Button, "Open").click()
    (card,) = first_row.children[1].children  # right under its row, in the open tab
    assert "first.png" in _texts(card) and "Probability of malignancy" in _texts(card)
    assert alice.results.children == shown_before  # the Analyse tab is left alone
    _find(first_row, widgets.Button, "Close").click()
    assert first_row.children[1].children == ()
    with storage.sessions() as session:
        viewed = session.scalars(select(AuditEvent).where(AuditEvent.action == "analysis.viewed"))
        assert viewed.one().user == "alice"


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
    app.analyse.click()
    texts = [_texts(child) for child in app.results.children]
    assert len(texts) == 22
    for name, _ in files:
        assert sum(name in text for text in texts) == 1, name
    assert sum("Probability of malignancy" in text for text in texts) == 20
    assert "Finished 22 file(s): 20 analysed, 2 not analysed" in app.status.value


def test_a_scan_without_a_model_is_in_the_history_and_analysed_later(
    open_app: AppFactory, storage: Storage, small_bundle: ModelBundle, data_dir: Path
) -> None:
    register(small_bundle)  # ultrasound only: a mammogram waits
    app = open_app("alice")
    _upload(app, ("mammo.jpg", rsna_jpeg(data_dir, 1)), modality="MG")
    assert "no model for MG scans yet" in _texts(app.results)
    app.tabs.selected_index = HISTORY_TAB
    (row,) = app.history.entries.children
    assert "mammo.jpg · MG · <b class='bcdiag-state'>not analysed</b>" in _texts(row)

    register(replace(small_bundle, modality="MG"))
    later = open_app("alice")  # a new page: the new champion is loaded
    later.tabs.selected_index = HISTORY_TAB
    (row,) = later.history.entries.children
    _find(row, widgets.Button, "Analyse now").click()
    assert "Probability of malignancy" in _texts(row.children[1])
    assert "bcdiag-mg version 1" in _texts(row.children[1])
    later.history.refresh()
    assert "<b class='bcdiag-state'>analysed</b>" in _texts(later.history.entries)
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

    app.tabs.selected_index = HISTORY_TAB
    (row,) = app.history.entries.children
    assert "outcome: Biopsy: benign" in _texts(row)
    _find(row, widgets.Button, "Open").click()
    reopened = row.children[1]
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
