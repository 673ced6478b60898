"""A look over a folder of scans for notebooks: a table of verdicts and a gallery."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from bcdiag.scans.files import iter_files, judge_file
from bcdiag.scans.types import Verdict


def survey(folder: Path, modality: str | None = None) -> list[Verdict]:
    """Judge every file under `folder` as an upload would be judged."""
    return [judge_file(path, modality) for path in iter_files([folder])]


def verdict_table(verdicts: Sequence[Verdict], root: Path) -> pd.DataFrame:
    """One row per file: name relative to `root`, outcome, code, modality, size."""
    rows = [
        {**verdict.as_json(), "file": str(Path(verdict.file).relative_to(root))}
        for verdict in verdicts
    ]
    return pd.DataFrame(rows, columns=["file", "ok", "code", "modality", "rows", "columns"])


def gallery(verdicts: Sequence[Verdict], columns: int = 4) -> Figure:
    """The accepted images as the model's reader sees them (after windowing)."""
    accepted = [(v, v.scan) for v in verdicts if v.scan is not None]
    n_rows = max(1, -(-len(accepted) // columns))
    figure = Figure(figsize=(3 * columns, 3 * n_rows))
    for index, (verdict, scan) in enumerate(accepted):
        axes = figure.add_subplot(n_rows, columns, index + 1)
        axes.imshow(scan.image, cmap="gray", vmin=0.0, vmax=1.0)
        axes.set_title(f"{Path(verdict.file).name}\n{verdict.modality}", fontsize=8)
        axes.axis("off")
    figure.tight_layout()
    return figure
