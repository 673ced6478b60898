"""Metrics for a binary malignancy score: discrimination, operating point, calibration.

Labels ``y`` are integers with 1 = malignant (the positive class); ``p`` is the
predicted probability of malignancy in [0, 1]. Every function is pure and raises
``ValueError`` for input it cannot score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

FloatArray = npt.NDArray[np.float64]

BOOTSTRAP_BATCH = 250  # replicates ranked at once: bounds memory to 250 × n floats
TEMPERATURE_BOUNDS = (0.05, 20.0)  # a fit at either end means the logits are broken


@dataclass(frozen=True)
class AucEstimate:
    """ROC AUC with a ``level`` confidence interval [low, high] found by ``method``."""

    auc: float
    low: float
    high: float
    method: str
    level: float


@dataclass(frozen=True)
class AucDifference:
    """Paired AUC difference (new − old) with a ``level`` DeLong interval [low, high]."""

    delta: float
    low: float
    high: float
    level: float


@dataclass(frozen=True)
class OperatingPoint:
    """Counts and rates when ``p >= threshold`` is suspicious; a rate over zero cases is NaN."""

    threshold: float
    accuracy: float
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    tp: int
    fp: int
    tn: int
    fn: int


def _validate(
    y: npt.ArrayLike, s: npt.ArrayLike, *, probabilities: bool = True
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    labels, scores = np.asarray(y), np.asarray(s, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape or labels.size == 0:
        raise ValueError(
            f"y and p must be 1-D, non-empty, of one length; got {labels.shape} and {scores.shape}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("y must hold only 0 (not malignant) and 1 (malignant)")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite; found NaN or inf")
    if probabilities and not ((scores >= 0) & (scores <= 1)).all():
        raise ValueError("p must hold probabilities in [0, 1]")
    return labels.astype(np.int64), scores


def _require_both_classes(y: npt.NDArray[np.int64], *, at_least: int = 1) -> None:
    n_pos = int(y.sum())
    if min(n_pos, y.size - n_pos) < at_least:
        raise ValueError(
            f"needs {at_least}+ cases of each class; y has {n_pos} malignant of {y.size}"
        )


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(stats.norm.ppf(0.5 + level / 2))


def _rank_auc(rank_sum_pos: FloatArray, m: int, n: int) -> FloatArray:
    """Mann-Whitney AUC from the summed midranks of the ``m`` positives among ``m + n``."""
    return rank_sum_pos / (m * n) - (m + 1) / (2 * n)


def _delong(y: npt.NDArray[np.int64], scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """AUCs of the rows of ``scores`` (k, n) and their DeLong covariance (k, k).

    The O(n log n) midrank algorithm of Sun & Xu (2014), IEEE Signal Process. Lett. 21(11).
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    # Structural components: per positive the share of negatives below it, and
    # per negative the share of positives above it (ties count half).
    v10 = (tz[:, :m] - stats.rankdata(pos, axis=1)) / n
    v01 = 1 - (tz[:, m:] - stats.rankdata(neg, axis=1)) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return _rank_auc(tz[:, :m].sum(axis=1), m, n), cov


def auc_with_ci(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    level: float = 0.95,
    method: Literal["delong", "bootstrap"] = "delong",
    n_boot: int = 2000,
    seed: int = 0,
) -> AucEstimate:
    """ROC AUC with a confidence interval.

    ``"delong"`` gives a normal interval on the logit scale from DeLong's variance
    (degenerate at AUC 0 or 1); ``"bootstrap"`` gives the percentile interval of
    ``n_boot`` replicates resampled within each class, seeded by ``seed``.

    Raises:
        ValueError: fewer than two cases of either class, or a bad argument.
    """
    labels, scores = _validate(y, p)
    _require_both_classes(labels, at_least=2)
    z = _check_level(level)
    aucs, cov = _delong(labels, scores[np.newaxis])
    auc = float(aucs[0])
    if method == "delong":
        se = float(np.sqrt(max(cov[0, 0], 0.0)))
        if 0 < auc < 1 and se > 0:
            half = z * se / (auc * (1 - auc))  # delta method: se of logit(AUC)
            low, high = special.expit(special.logit(auc) + np.array([-half, half]))
        else:
            low = high = auc
    elif method == "bootstrap":
        if n_boot < 1:
            raise ValueError(f"n_boot must be at least 1, got {n_boot}")
        replicates = _bootstrap_aucs(labels, scores, n_boot, np.random.default_rng(seed))
        low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    else:
        raise ValueError(f"unknown method {method!r}; choose 'delong' or 'bootstrap'")
    return AucEstimate(auc, float(low), float(high), method, level)


def _bootstrap_aucs(
    y: npt.NDArray[np.int64], p: FloatArray, n_boot: int, rng: np.random.Generator
) -> FloatArray:
    pos, neg = p[y == 1], p[y == 0]
    m, n = pos.size, neg.size
    aucs = np.empty(n_boot)
    for start in range(0, n_boot, BOOTSTRAP_BATCH):
        size = min(BOOTSTRAP_BATCH, n_boot - start)
        sample = np.concatenate([rng.choice(pos, (size, m)), rng.choice(neg, (size, n))], axis=1)
        ranks = stats.rankdata(sample, axis=1)
        aucs[start : start + size] = _rank_auc(ranks[:, :m].sum(axis=1), m, n)
    return aucs


def paired_auc_difference(
    y: npt.ArrayLike, p_new: npt.ArrayLike, p_old: npt.ArrayLike, level: float = 0.95
) -> AucDifference:
    """AUC(new) − AUC(old) on the same cases, with DeLong's paired normal interval.

    For a non-inferiority gate, compare ``low`` with minus the margin.
    """
    labels, new = _validate(y, p_new)
    _, old = _validate(labels, p_old)
    _require_both_classes(labels, at_least=2)
    z = _check_level(level)
    aucs, cov = _delong(labels, np.stack([new, old]))
    delta = float(aucs[0] - aucs[1])
    half = z * float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    return AucDifference(delta, max(delta - half, -1.0), min(delta + half, 1.0), level)


def choose_threshold(
    y_val: npt.ArrayLike,
    p_val: npt.ArrayLike,
    *,
    rule: Literal["youden", "sensitivity"] = "youden",
    min_sensitivity: float | None = None,
) -> float:
    """Pick the decision threshold on VALIDATION data; it must never see the test set.

    Each candidate lies halfway between two neighbouring distinct validation scores
    and flags the same validation cases as the higher one; the lowest is the smallest
    score, so the result lies within [min(p_val), max(p_val)].

    Args:
        y_val: validation labels.
        p_val: validation probabilities.
        rule: ``"youden"`` maximises sensitivity + specificity − 1, ties going to
            the lowest threshold (a missed cancer costs more than a recall);
            ``"sensitivity"`` takes the highest threshold whose validation
            sensitivity is at least ``min_sensitivity``.
        min_sensitivity: in (0, 1]; required by, and only allowed with, ``"sensitivity"``.
    """
    labels, scores = _validate(y_val, p_val)
    _require_both_classes(labels)
    values = np.unique(scores)
    pos, neg = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    tp = pos.size - np.searchsorted(pos, values, side="left")  # flagged at p >= values[i]
    tn = np.searchsorted(neg, values, side="left")
    mid = (values[:-1] + values[1:]) / 2
    thresholds = np.concatenate([values[:1], np.where(mid > values[:-1], mid, values[1:])])
    if rule == "youden":
        if min_sensitivity is not None:
            raise ValueError("min_sensitivity applies only to rule='sensitivity'")
        best = int(np.argmax(tp * neg.size + tn * pos.size))  # Youden's J in exact integers
    elif rule == "sensitivity":
        if min_sensitivity is None or not 0 < min_sensitivity <= 1:
            raise ValueError(
                f"rule='sensitivity' needs min_sensitivity in (0, 1], got {min_sensitivity}"
            )
        best = int(np.flatnonzero(tp / pos.size >= min_sensitivity)[-1])
    else:
        raise ValueError(f"unknown rule {rule!r}; choose 'youden' or 'sensitivity'")
    return float(thresholds[best])


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def operating_point(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> OperatingPoint:
    """Confusion counts and rates when ``p >= threshold`` is called suspicious."""
    labels, scores = _validate(y, p)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    threshold = float(threshold)
    flagged, malignant = scores >= threshold, labels == 1
    tp, fp = int(np.sum(flagged & malignant)), int(np.sum(flagged & ~malignant))
    fn, tn = int(np.sum(~flagged & malignant)), int(np.sum(~flagged & ~malignant))
    accuracy, sensitivity = _ratio(tp + tn, labels.size), _ratio(tp, tp + fn)
    specificity, ppv, npv = _ratio(tn, tn + fp), _ratio(tp, tp + fp), _ratio(tn, tn + fn)
    return OperatingPoint(threshold, accuracy, sensitivity, specificity, ppv, npv, tp, fp, tn, fn)


def brier_score(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Mean squared difference between probability and outcome (0 is perfect)."""
    labels, scores = _validate(y, p)
    return float(np.mean((scores - labels) ** 2))


def calibration_bins(
    y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Mean probability, observed malignancy rate and count in equal-width bins of [0, 1].

    Empty bins give NaN rates; p = 1 falls in the last bin.
    """
    labels, scores = _validate(y, p)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    index = np.minimum((scores * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=scores, minlength=n_bins) / count
        observed = np.bincount(index, weights=labels, minlength=n_bins) / count
    return mean_p, observed, count


def expected_calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> float:
    """Count-weighted mean |observed rate − mean probability| over equal-width bins."""
    mean_p, observed, count = calibration_bins(y, p, n_bins)
    return float(np.nansum(np.abs(observed - mean_p) * count) / count.sum())


def fit_temperature(y_val: npt.ArrayLike, logits_val: npt.ArrayLike) -> float:
    """Fit temperature scaling on VALIDATION data: the T minimising NLL of sigmoid(logit / T).

    Chosen over Platt scaling (Guo et al. 2017): one parameter cannot overfit a
    small validation set, and it keeps the ranking (AUC) and p = 0.5 at logit 0.
    T > 1 softens an overconfident model. For a two-logit softmax head pass
    ``z_malignant − z_benign``; T is searched within `TEMPERATURE_BOUNDS`. Choose
    the decision threshold afterwards, on the calibrated validation probabilities.
    """
    labels, logits = _validate(y_val, logits_val, probabilities=False)
    _require_both_classes(labels)
    margin = (2 * labels - 1) * logits  # positive when the logit points the right way

    def nll(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -margin / np.exp(log_t))))

    result = optimize.minimize_scalar(nll, bounds=np.log(TEMPERATURE_BOUNDS), method="bounded")
    return float(np.exp(result.x))


def apply_temperature(logits: npt.ArrayLike, t: float) -> FloatArray:
    """Calibrated probabilities of malignancy: sigmoid(logits / t)."""
    if not t > 0:
        raise ValueError(f"temperature must be positive, got {t}")
    return np.asarray(special.expit(np.asarray(logits, dtype=np.float64) / t), dtype=np.float64)


def at_prevalence(p: float, trained: float, site: float) -> float:
    """Probability `p`, calibrated to a population whose share of malignant cases is
    `trained`, as the probability in one whose share is `site` (prior shift):
    odds' = odds × [site / (1 − site)] / [trained / (1 − trained)]
    (Saerens, Latinne & Decaestecker 2002, Neural Comput. 14(1); Elkan 2001, IJCAI).

    It assumes the site's images of each class look like the training set's (only the
    class shares differ). The map is strictly increasing in `p`, so a decision at a
    threshold on `p` is the same decision as at the threshold mapped alike: bcdiag keeps
    the call at the validated threshold on `p`, and the call does not change with `site`.

    Raises:
        ValueError: `p` outside [0, 1], or a prevalence not strictly between 0 and 1.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    for name, share in (("trained", trained), ("site", site)):
        if not 0.0 < share < 1.0:
            raise ValueError(f"the {name} prevalence must be strictly between 0 and 1, got {share}")
    malignant = p * site / trained
    other = (1.0 - p) * (1.0 - site) / (1.0 - trained)
    return malignant / (malignant + other)
