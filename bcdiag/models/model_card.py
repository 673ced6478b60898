"""The model card of a registered version: what it was trained on, how it measured, what it
is for and what it is not. Logged with the model (artifact ``model_card.md``) and as the
registered version's description, where the MLflow UI shows it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bcdiag.datasets import SPLITS, ImageSet
from bcdiag.models.bundle import ModelBundle
from bcdiag.models.evaluate import Evaluation

ARTIFACT = "model_card.md"
SOURCES = {
    "rsna640": "rsna640: full-field digital screening mammograms (very likely RSNA Screening "
    "Mammography 2023, BreastScreen Victoria and Emory), 8-bit 640 px copies; research use only",
    "busi256": "busi256: BUSI breast ultrasound (Al-Dhabyani et al. 2020, Baheya Hospital, "
    "Cairo, 2018), 256 px; CC BY 4.0",
    "breastmnist": "BreastMNIST (MedMNIST v2): BUSI ultrasound at 28 px; CC BY 4.0",
    "mias": "mini-MIAS: digitised film mammograms (UK, 1990s); research use only",
    "folder": "this site's own labelled scans",
}
LIMITS = {
    "rsna640": "Labels: `normal` means cancer-negative at screening, not biopsy-proven benign; "
    "positives are over-represented (subsampled negatives).",
    "busi256": "BUSI has no patient ids and repeats frames across its splits (`test_dedup`).",
}
NOT_A_DEVICE = (
    "**Not a medical device.** Research software: not cleared or approved for clinical use. "
    "A score supports, and never replaces, a qualified reader's decision."
)


def model_card(
    bundle: ModelBundle,
    images: ImageSet,
    evaluations: Sequence[Evaluation],
    params: Mapping[str, Any],
) -> str:
    """The card as Markdown, from the run's own figures."""
    dataset = str(params.get("dataset", images.name))
    point = bundle.operating_point
    rows = [
        f"| {split} | {int((images.split == split).sum())} | {int(images.part(split).y.sum())} "
        f"| {_share(images.part(split).y)} |"
        for split in SPLITS
    ]
    figures = [
        f"| {e.name} | {e.n} | {e.auc.auc:.3f} ({e.auc.low:.3f}–{e.auc.high:.3f}) "
        f"| {e.operating_point.sensitivity:.3f} | {e.operating_point.specificity:.3f} |"
        for e in evaluations
    ]
    config = bundle.info.get("config", {})
    return "\n".join(
        [
            f"# Model card: {bundle.modality} malignancy model ({bundle.architecture})",
            "",
            NOT_A_DEVICE,
            "",
            "## Intended use",
            f"Research and decision support on {_MODALITY[bundle.modality]}: a probability "
            "of malignancy per image, a call at a stated operating point and a heatmap of "
            "where the model looked. Not for screening decisions without a reader, not for "
            "other modalities, views or populations than those below.",
            "",
            "## Data",
            SOURCES.get(dataset, dataset) + ".",
            "Split fixed by patient (no patient in two splits); the threshold and "
            "calibration were chosen on `valid` only; `test` was used only to report.",
            "",
            "| split | images | malignant | prevalence |",
            "|---|---|---|---|",
            *rows,
            "",
            f"**Prevalence.** Scores are calibrated to the training set "
            f"({_share(images.part('train').y)} malignant). Screening populations are under "
            "1%: set BCDIAG_PREVALENCE_MG / _US to show probabilities at a site's prevalence.",
            "",
            "## Model",
            f"{bundle.architecture}, input {bundle.image_size} px single channel, "
            f"{len(bundle.members)} member(s), recipe: `{config}`.",
            f"Operating point ({point.rule}, chosen on valid): threshold {point.threshold:.3f}, "
            f"sensitivity {point.sensitivity:.3f}, specificity {point.specificity:.3f}.",
            "",
            "## Measured (AUC with 95% DeLong interval; at the operating point)",
            "| set | n | AUC (95% CI) | sensitivity | specificity |",
            "|---|---|---|---|---|",
            *figures,
            "",
            "`*_patient`: the maximum score over a patient's images. `test_dedup`: test "
            "without near-duplicates of training images.",
            "",
            "## Limits",
            "Small public sets of 8-bit downsampled copies. External validation (another "
            "set, `bcdiag evaluate --dataset ...`) is not part of this card. "
            + LIMITS.get(dataset, ""),
        ]
    )


_MODALITY = {"MG": "screening mammograms", "US": "breast ultrasound images"}


def _share(y: np.ndarray) -> str:
    return f"{100 * float(np.mean(y)):.1f}%" if len(y) else "n/a"
