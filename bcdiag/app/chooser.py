"""The chosen files before analysis: one row each, with the kind of scan of each PNG/JPEG.

A PNG or JPEG does not say what it shows, so each one needs the clinician's explicit
choice (ultrasound or mammogram) before Analyse is possible; there is no default. A
DICOM names its modality in its header. At most `MAX_FILES` are analysed per batch;
the others are listed, each with the reason, so no chosen file goes unmentioned.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from bcdiag.errors import ScanRejected
from bcdiag.scans.sniff import Kind, sniff

MAX_FILES = 20
MODALITIES = {"US": "Ultrasound", "MG": "Mammogram"}
UNCHOSEN = ""  # the placeholder's value: a value of None would show an empty box


@dataclass(frozen=True)
class ChosenFile:
    """One chosen file; ``modality`` is the choice widget of a PNG or JPEG, else None."""

    name: str
    data: bytes
    kind: Kind | None  # None: not a DICOM, PNG or JPEG; the analysis says why
    modality: widgets.Dropdown | None

    @property
    def stated_modality(self) -> str | None:
        """The clinician's choice for a PNG/JPEG (None until chosen, and for DICOM)."""
        return None if self.modality is None else self.modality.value or None

    @property
    def ready(self) -> bool:
        """Whether the file can be analysed: a PNG/JPEG needs its modality chosen."""
        return self.stated_modality is not None or self.modality is None


def over_cap_message(name: str) -> str:
    """Why a file beyond `MAX_FILES` was not analysed."""
    return (
        f"{name}: not analysed, because more than {MAX_FILES} files were chosen at once. "
        "Choose it again in the next batch."
    )


class FileChooser:
    """The rows of the chosen files; calls `on_change` whenever readiness may change."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self.files: list[ChosenFile] = []
        self.over_cap: list[str] = []
        self.rows = widgets.VBox()
        self.set_all = widgets.HBox(
            [widgets.HTML("All PNG/JPEG files above are:")]
            + [self._set_all_button(code, label) for code, label in MODALITIES.items()],
            layout={"display": "none"},
        )
        self.widget = widgets.VBox([self.rows, self.set_all])

    def _set_all_button(self, code: str, label: str) -> widgets.Button:
        button = widgets.Button(description=label, tooltip=f"Every PNG/JPEG is a {label.lower()}")
        button.on_click(lambda _: self.choose_all(code))
        return button

    def choose(self, items: Sequence[dict[str, Any]]) -> None:
        """Show the files the browser sent (FileUpload's value); the first `MAX_FILES` count."""
        self.files = [self._chosen(item) for item in items[:MAX_FILES]]
        self.over_cap = [str(item["name"]) for item in items[MAX_FILES:]]
        rows = [self._row(chosen) for chosen in self.files]
        rows += [
            widgets.HTML(f"<div class='bcdiag-over-cap'>{html.escape(over_cap_message(n))}</div>")
            for n in self.over_cap
        ]
        self.rows.children = tuple(rows)
        images = any(chosen.modality is not None for chosen in self.files)
        self.set_all.layout.display = "flex" if images else "none"
        self.on_change()

    def clear(self) -> None:
        """Forget the chosen files (after they were analysed)."""
        self.choose(())

    def choose_all(self, modality: str) -> None:
        """Set every PNG/JPEG to `modality`."""
        for chosen in self.files:
            if chosen.modality is not None:
                chosen.modality.value = modality

    @property
    def missing(self) -> int:
        """How many PNG/JPEG files still need their modality chosen."""
        return sum(not chosen.ready for chosen in self.files)

    def _chosen(self, item: dict[str, Any]) -> ChosenFile:
        name, data = str(item["name"]), bytes(item["content"])
        try:
            kind: Kind | None = sniff(data, name)
        except ScanRejected:
            kind = None
        picker = None
        if kind in ("png", "jpeg"):
            options = [
                ("Choose…", UNCHOSEN),
                *((label, code) for code, label in MODALITIES.items()),
            ]
            picker = widgets.Dropdown(
                options=options,
                value=UNCHOSEN,
                description="Kind of scan:",
                style={"description_width": "initial"},  # the whole label, not "Kind of sc…"
            )
            picker.observe(lambda _: self.on_change(), names="value")
        return ChosenFile(name, data, kind, picker)

    @staticmethod
    def _row(chosen: ChosenFile) -> widgets.Widget:
        kind = {"dicom": "DICOM", "png": "PNG", "jpeg": "JPEG", None: "not a scan"}[chosen.kind]
        label = widgets.HTML(
            f"<span class='bcdiag-chosen'>{html.escape(chosen.name)} · {kind} · "
            f"{len(chosen.data) / 1e6:.1f} MB</span>",
            layout={"width": "420px"},
        )
        if chosen.modality is not None:
            return widgets.HBox([label, chosen.modality])
        note = "modality from the DICOM header" if chosen.kind == "dicom" else ""
        return widgets.HBox([label, widgets.HTML(f"<i>{note}</i>")])
