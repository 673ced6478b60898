"""The "My analyses" tab: every scan the clinician uploaded, with its state.

An analysed scan opens its card right under its row (where the clinician is
looking); a scan stored without an analysis (no model yet, registry down) can be
analysed from here once a model exists.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets

from bcdiag.app.cards import OUTCOME_NAMES
from bcdiag.storage import Storage
from bcdiag.storage.history import HistoryEntry

HISTORY_LIMIT = 50


def entry_text(entry: HistoryEntry) -> str:
    """One line: when, which file, what kind, its state and, when analysed, the result."""
    modality = entry.modality or "kind unknown"
    parts = [
        f"{entry.uploaded_at:%Y-%m-%d %H:%M}",
        html.escape(entry.filename),
        html.escape(modality),
        f"<b class='bcdiag-state'>{entry.state}</b>",
    ]
    if entry.analysis is not None:
        analysis = entry.analysis
        parts += [
            f"{analysis.probability:.1%} · {html.escape(analysis.call)}",
            f"{html.escape(analysis.model_name)} v{html.escape(analysis.model_version)}",
        ]
    if entry.feedback is not None:
        parts.append(f"outcome: {html.escape(OUTCOME_NAMES[entry.feedback.outcome])}")
    return " · ".join(parts)


class HistoryView:
    """The list, rebuilt by `refresh`; `open_card` and `analyse_later` build the detail."""

    def __init__(
        self,
        storage: Storage,
        user: str,
        open_card: Callable[[HistoryEntry], widgets.Widget],
        analyse_later: Callable[[HistoryEntry], widgets.Widget],
    ) -> None:
        self.storage, self.user = storage, user
        self.open_card, self.analyse_later = open_card, analyse_later
        self.entries = widgets.VBox()
        refresh = widgets.Button(description="Refresh history", icon="refresh")
        refresh.on_click(lambda _: self.refresh())
        note = widgets.HTML(f"<p>Your {HISTORY_LIMIT} most recent uploads, newest first.</p>")
        self.widget = widgets.VBox([widgets.HBox([refresh, note]), self.entries])

    def refresh(self) -> None:
        """List the user's uploads again."""
        rows = [self._row(entry) for entry in self.storage.list_history(self.user, HISTORY_LIMIT)]
        self.entries.children = tuple(rows) or (widgets.HTML("<p>No uploads yet.</p>"),)

    def _row(self, entry: HistoryEntry) -> widgets.Widget:
        detail = widgets.VBox()
        text = widgets.HTML(entry_text(entry))
        if entry.analysis is None:
            button = widgets.Button(description="Analyse now", icon="play")
        else:
            button = widgets.Button(description="Open", icon="folder-open")

        def toggle(_: widgets.Button) -> None:
            if detail.children:
                detail.children = ()
                button.description = "Open"
                return
            button.disabled = True
            try:
                shown = (
                    self.open_card(entry) if entry.analysis is not None
                    else self.analyse_later(entry)
                )  # fmt: skip
            finally:
                button.disabled = False
            detail.children = (shown,)
            button.description = "Close"

        button.on_click(toggle)
        return widgets.VBox([widgets.HBox([button, text]), detail])
