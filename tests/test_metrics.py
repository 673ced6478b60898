"""Metrics against hand-computed answers, brute-force references and scikit-learn."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import special
from sklearn.metrics import log_loss, roc_auc_score

from bcdiag.models.evaluate import evaluate, format_table
from bcdiag.models.metrics import (
    _delong,
    apply_temperature,
    auc_with_ci,
    brier_score,
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    operating_point,
    paired_auc_difference,
)

FloatArray = npt.NDArray[np.float64]


def synthetic(n: int, separation: float, seed: int = 0) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Labels with 30% malignant and probabilities whose logit shifts by ``separation``."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    return y, special.expit(rng.normal(size=n) + separation * y - 1)


def delong_reference(y: npt.NDArray[np.int64], scores: FloatArray) -> FloatArray:
    """DeLong covariance from the O(n²) structural components (DeLong et al. 1988)."""
    v10, v01 = [], []
    for s in scores:
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    m, n = int(y.sum()), int((y == 0).sum())
    return np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


# --- AUC and DeLong ---------------------------------------------------------------


def test_delong_variance_matches_hand_computation() -> None:
    # Positives 0.8, 0.6, 0.3 against negatives 0.5, 0.2: V10 = (1, 1, ½), V01 = (⅔, 1),
    # so AUC = 5/6 and var = (1/12)/3 + (1/18)/2 = 1/18.
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.8, 0.6, 0.3, 0.5, 0.2])
    aucs, cov = _delong(y, p[np.newaxis])
    assert aucs[0] == pytest.approx(5 / 6)
    assert cov[0, 0] == pytest.approx(1 / 18)
    assert delong_reference(y, p[np.newaxis])[0, 0] == pytest.approx(1 / 18)


def test_delong_covariance_matches_quadratic_reference_with_ties() -> None:
    y, p = synthetic(60, 1.0, seed=3)
    scores = np.stack([p, p**2 + 0.1 * np.roll(p, 1)]).round(1)  # many ties
    aucs, cov = _delong(y, scores)
    assert aucs == pytest.approx([roc_auc_score(y, s) for s in scores])
    assert cov == pytest.approx(delong_reference(y, scores), rel=1e-10)


def test_auc_equals_sklearn_and_ci_contains_it() -> None:
    y, p = synthetic(300, 1.5)
    estimate = auc_with_ci(y, p)
    assert estimate.auc == pytest.approx(roc_auc_score(y, p))
    assert 0 <= estimate.low < estimate.auc < estimate.high <= 1
    assert (estimate.method, estimate.level) == ("delong", 0.95)


def test_ci_width_matches_delong_variance_on_logit_scale() -> None:
    y, p = synthetic(200, 1.0)
    estimate = auc_with_ci(y, p, level=0.9)
    _, cov = _delong(y, p[np.newaxis])
    width = special.logit(estimate.high) - special.logit(estimate.low)
    auc = estimate.auc
    assert width == pytest.approx(2 * 1.6448536 * np.sqrt(cov[0, 0]) / (auc * (1 - auc)))


def test_ci_narrows_with_more_data() -> None:
    small, large = auc_with_ci(*synthetic(100, 1.0)), auc_with_ci(*synthetic(3000, 1.0))
    assert large.high - large.low < 0.4 * (small.high - small.low)


def test_perfect_separation_gives_degenerate_interval() -> None:
    estimate = auc_with_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (estimate.auc, estimate.low, estimate.high) == (1.0, 1.0, 1.0)


def test_bootstrap_roughly_agrees_with_delong() -> None:
    y, p = synthetic(500, 1.2)
    delong = auc_with_ci(y, p)
    boot = auc_with_ci(y, p, method="bootstrap")
    assert boot.auc == delong.auc
    assert boot.low == pytest.approx(delong.low, abs=0.015)
    assert boot.high == pytest.approx(delong.high, abs=0.015)
    assert boot == auc_with_ci(y, p, method="bootstrap")  # seeded


@pytest.mark.parametrize("y", [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
def test_auc_rejects_missing_class(y: list[int]) -> None:
    with pytest.raises(ValueError, match="malignant"):
        auc_with_ci(y, [0.1, 0.4, 0.6, 0.9])


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1, 2], [0.1, 0.5, 0.9], "only 0"),
        ([0, 1, 1], [0.1, 0.5, 1.2], r"\[0, 1\]"),
        ([0, 1, 1], [0.1, np.nan, 0.9], "finite"),
        ([0, 1], [0.1, 0.5, 0.9], "one length"),
    ],
)
def test_invalid_input_is_rejected(y: list[int], p: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        brier_score(y, p)


def test_paired_difference_of_model_with_itself_is_zero() -> None:
    y, p = synthetic(200, 1.0)
    diff = paired_auc_difference(y, p, p)
    assert (diff.delta, diff.low, diff.high) == (0.0, 0.0, 0.0)


def test_clearly_better_model_has_positive_difference() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.4).astype(np.int64)
    signal = rng.normal(size=400) + 2 * y
    better, worse = special.expit(signal), special.expit(signal + 2 * rng.normal(size=400))
    diff = paired_auc_difference(y, better, worse)
    assert diff.delta == pytest.approx(roc_auc_score(y, better) - roc_auc_score(y, worse))
    assert 0 < diff.low < diff.delta < diff.high
    assert paired_auc_difference(y, worse, better).high < 0


# --- thresholds and operating points ------------------------------------------------


def test_separable_validation_puts_threshold_between_classes() -> None:
    assert choose_threshold([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.9]) == pytest.approx(0.5)


def test_threshold_between_adjacent_floats_still_separates() -> None:
    low, high = 0.5, float(np.nextafter(0.5, 1))  # no float lies strictly between them
    t = choose_threshold([0, 1], [low, high])
    assert low < t <= high


def test_youden_ties_go_to_lowest_threshold_whatever_the_order() -> None:
    # Flagging p >= 0.2, >= 0.4 or >= 0.6 all give J = 0; the most sensitive wins.
    y, p = np.array([1, 0, 1, 0]), np.array([0.2, 0.4, 0.6, 0.8])
    order = np.array([3, 1, 0, 2])
    assert choose_threshold(y, p) == choose_threshold(y[order], p[order]) == 0.2


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 1.0])
def test_sensitivity_rule_takes_highest_threshold_meeting_target(target: float) -> None:
    y, p = synthetic(400, 1.0)
    t = choose_threshold(y, p, rule="sensitivity", min_sensitivity=target)
    assert operating_point(y, p, t).sensitivity >= target
    equivalent = p[p >= t].min()  # the observed score that flags the same cases
    assert operating_point(y, p, p[p > equivalent].min()).sensitivity < target


def test_threshold_rule_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="only to rule='sensitivity'"):
        choose_threshold([0, 1], [0.2, 0.8], min_sensitivity=0.9)
    with pytest.raises(ValueError, match="needs min_sensitivity"):
        choose_threshold([0, 1], [0.2, 0.8], rule="sensitivity")


cases = st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=2, max_size=40).filter(
    lambda rows: len({label for label, _ in rows}) == 2
)


@given(cases, st.floats(0.01, 1))
def test_threshold_depends_only_on_its_input(rows: list[tuple[int, float]], target: float) -> None:
    y, p = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    youden = choose_threshold(y, p)
    assert p.min() <= youden <= p.max()
    at, equivalent = operating_point(y, p, youden), operating_point(y, p, p[p >= youden].min())
    assert (at.tp, at.fp) == (equivalent.tp, equivalent.fp)  # same cases as an observed score
    points = [operating_point(y, p, v) for v in p]
    best_j = max(op.sensitivity + op.specificity for op in points)
    assert at.sensitivity + at.specificity == pytest.approx(best_j)
    t = choose_threshold(y, p, rule="sensitivity", min_sensitivity=target)
    assert p.min() <= t <= p.max()
    assert operating_point(y, p, t).sensitivity >= target


def test_operating_point_counts_hand_example() -> None:
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.5, 0.5]  # p == threshold counts as suspicious
    op = operating_point(y, p, 0.5)
    assert (op.tp, op.fp, op.tn, op.fn) == (3, 2, 2, 1)
    assert (op.accuracy, op.sensitivity, op.specificity) == (5 / 8, 3 / 4, 2 / 4)
    assert (op.ppv, op.npv, op.threshold) == (3 / 5, 2 / 3, 0.5)


def test_undefined_rates_are_nan() -> None:
    op = operating_point([0, 0], [0.2, 0.3], 0.5)
    assert np.isnan(op.sensitivity) and np.isnan(op.ppv)
    assert (op.specificity, op.npv) == (1.0, 1.0)


# --- calibration --------------------------------------------------------------------


def test_brier_and_ece_hand_example() -> None:
    y, p = [1, 0, 1, 0], [0.9, 0.2, 0.6, 0.5]
    assert brier_score(y, p) == pytest.approx((0.01 + 0.04 + 0.16 + 0.25) / 4)
    # bin [0, .5): p .2, rate 0 → gap .2 on 1 case; bin [.5, 1]: mean p ⅔, rate ⅔ → 0.
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.2 / 4)
    assert expected_calibration_error([1], [1.0]) == 0.0  # p = 1 lands in the last bin


def test_ece_small_when_calibrated_large_when_overconfident() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = (rng.random(p.size) < p).astype(np.int64)
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, special.expit(4 * special.logit(p))) > 0.1


def test_temperature_scaling_undoes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    true_logit = rng.normal(scale=2, size=5000)
    y = (rng.random(true_logit.size) < special.expit(true_logit)).astype(np.int64)
    logits = 3 * true_logit  # an overconfident model
    t = fit_temperature(y, logits)
    assert 2.6 < t < 3.4
    calibrated = apply_temperature(logits, t)
    assert log_loss(y, calibrated) < log_loss(y, special.expit(logits)) - 0.1
    assert roc_auc_score(y, calibrated) == pytest.approx(roc_auc_score(y, logits))
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(logits, 0.0)


# --- evaluation bundle --------------------------------------------------------------


def test_evaluation_as_dict_is_flat_floats_for_mlflow() -> None:
    y, p = synthetic(300, 1.5)
    result = evaluate(y, p, 0.4, name="test")
    metrics = result.as_dict()
    keys = "auc auc_low auc_high threshold accuracy sensitivity specificity ppv npv tp fp tn fn"
    keys += " brier ece n n_positive"
    assert list(metrics) == [f"test_{key}" for key in keys.split()]
    assert all(type(value) is float for value in metrics.values())
    assert metrics["test_auc"] == pytest.approx(roc_auc_score(y, p))
    assert metrics["test_n"] == 300 and metrics["test_n_positive"] == y.sum()
    assert metrics["test_tp"] + metrics["test_fn"] == y.sum()
    assert "valid_auc" in result.as_dict("valid")


def test_format_table_has_one_row_per_evaluation() -> None:
    y, p = synthetic(300, 1.5)
    rows = [evaluate(y, p, 0.4, name="valid"), evaluate(y, p**2, 0.2, name="test-external")]
    table = format_table(rows).splitlines()
    assert "AUC [95% CI]" in table[0] and "Brier" in table[0] and "ECE" in table[0]
    assert len(table) == 4
    auc = rows[1].auc
    assert table[3].startswith("test-external")
    assert f"{auc.auc:.3f} [{auc.low:.3f}, {auc.high:.3f}]" in table[3]
    assert f" {rows[1].n_positive} " in table[3]


def test_format_table_refuses_mixed_levels() -> None:
    y, p = synthetic(100, 1.5)
    base = evaluate(y, p, 0.5, name="a")
    other = replace(base, auc=auc_with_ci(y, p, level=0.9))
    with pytest.raises(ValueError, match="mixed confidence levels"):
        format_table([base, other])
