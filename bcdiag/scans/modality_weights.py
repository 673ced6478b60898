"""Weights of `bcdiag.scans.modality_check`, in the order of its FEATURES.

Written by `benchmarks/modality_check.py --fit` (logistic regression, C=1, balanced
classes, on the 3752 train images of the shared sets and framed BUSI; the
thresholds catch 99% of the other modality's train images). Do not edit.
"""

MEAN: tuple[float, ...] = (
    0.107676,
    0.50663,
    0.375948,
    0.17106,
    0.491905,
    0.554157,
    0.028313,
    0.112867,
    0.484537,
    0.062583,
    0.19293,
    0.078038,
    1.605282,
    0.33257,
    0.142117,
    0.38674,
)
SCALE: tuple[float, ...] = (
    0.309971,
    0.248614,
    0.262472,
    0.13156,
    0.320111,
    0.329283,
    0.06097,
    0.158267,
    0.1586,
    0.024151,
    0.05696,
    0.031304,
    0.503469,
    0.192672,
    0.044136,
    0.115215,
)
COEFFICIENTS: tuple[float, ...] = (
    0.745904,
    -5.365361,
    3.186837,
    2.840519,
    1.598791,
    0.00359,
    -2.351493,
    0.582445,
    0.433531,
    -0.60015,
    2.187561,
    -0.808592,
    -3.360665,
    -1.038446,
    -1.339268,
    1.641939,
)
INTERCEPT = 3.682223
US_AT_MOST = 0.616302
MG_AT_LEAST = 0.269728
