"""Cross-validated linear probes and sequence-bootstrap confidence intervals.

Each fold standardises the features on its training rows only (residual streams carry a few huge
dimensions that would otherwise dominate), optionally projects them onto the training rows' top
principal components, and fits a linear classifier. Predictions are pooled over the held-out folds.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from probes.design import ProbeDesign
from probes.ridge import LeaveOneOutRidgeClassifier

#: Linear classifiers a probe can use. "ridge" is the default: see :func:`make_probe`.
CLASSIFIERS: tuple[str, ...] = ("ridge", "logistic")

# Logistic penalty fixed rather than searched (a search would multiply an already slow fit): on
# standardised features of width ~600 and a few thousand rows, C=1 overfits and C=0.01 scored higher.
_LOGISTIC_C = 0.01
_LOGISTIC_MAX_ITER = 300
# The linear algebra here is small (width ~600), so BLAS threads mostly wait on each other; on a busy
# 2-core machine a 576 x 576 eigh took 0.05 s on one thread and up to 4.6 s on two.
_BLAS_THREADS = 1


def make_probe(
    classifier: str, n_train: int, n_features: int, max_features: int | None, seed: int
) -> Pipeline:
    """Standardise -> optional PCA -> linear classifier.

    ``"ridge"`` (:class:`probes.ridge.LeaveOneOutRidgeClassifier`): one least-squares fit for all
    classes, penalty chosen by exact leave-one-out error on the training fold. ``"logistic"``:
    multinomial logistic regression (lbfgs, C=0.01). Measured on a synthetic 30-layer store (width
    576, 2,185 rows from 15 sequences, 50 classes, 5 folds, 2 shared cores): ridge 0.7 s per layer
    (21 s for all 30), logistic 2.3 s per layer; accuracies 0.42 vs 0.33 and 0.71 vs 0.72 at two
    layers. Ridge is the default for speed and because its tuned penalty falls back to the class
    prior on layers without signal; logistic is there when calibrated probabilities are wanted.
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {classifier!r}; choose one of {', '.join(CLASSIFIERS)}")
    steps: list = [StandardScaler()]
    if max_features is not None:
        if max_features < 1:
            raise ValueError(f"max_features must be positive or None, got {max_features!r}")
        n_components = min(int(max_features), n_features, n_train)
        if n_components < n_features:
            steps.append(PCA(n_components=n_components, svd_solver="randomized", random_state=seed))
    if classifier == "ridge":
        steps.append(LeaveOneOutRidgeClassifier())
    else:
        steps.append(LogisticRegression(C=_LOGISTIC_C, max_iter=_LOGISTIC_MAX_ITER, solver="lbfgs"))
    return make_pipeline(*steps)


def out_of_fold_predictions(
    features: np.ndarray,
    design: ProbeDesign,
    classifier: str = "ridge",
    max_features: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Held-out class prediction for every row of the design.

    Parameters
    ----------
    features : (n_rows, width) activations of the design's rows, in design order.
    design : rows, labels and folds.

    Returns
    -------
    (n_rows,) int64 predicted class index of each row, predicted by the probe not trained on its fold.
    """
    if features.shape[0] != design.n_rows:
        raise ValueError(f"features have {features.shape[0]} rows but the design has {design.n_rows}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or infinite values; the store's activations are corrupt")
    predictions = np.empty(design.n_rows, dtype=np.int64)
    with threadpool_limits(limits=_BLAS_THREADS, user_api="blas"):
        for fold in range(design.n_folds):
            test = design.folds == fold
            train = ~test
            probe = make_probe(classifier, int(train.sum()), features.shape[1], max_features, seed)
            probe.fit(features[train], design.labels[train])
            predictions[test] = probe.predict(features[test])
    return predictions


def majority_baseline_correct(design: ProbeDesign) -> np.ndarray:
    """Per-row correctness of a constant probe predicting its training folds' majority class.

    Returns
    -------
    (n_rows,) bool. Its mean is the chance accuracy a probe must beat.
    """
    correct = np.empty(design.n_rows, dtype=bool)
    for fold in range(design.n_folds):
        test = design.folds == fold
        majority = np.bincount(design.labels[~test], minlength=design.n_classes).argmax()
        correct[test] = design.labels[test] == majority
    return correct


def sequence_bootstrap_ci(
    per_row: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-mean of one or more per-row scores with percentile intervals from resampling whole sequences.

    Tokens of one sequence are not independent, so sequences (not rows) are drawn with replacement;
    every score is resampled with the *same* draws, which makes differences between rows of
    ``per_row`` paired.

    Parameters
    ----------
    per_row : (n_scores, n_rows) scores, e.g. 0/1 correctness of two probes and their difference.
    groups : (n_rows,) sequence id of each row.

    Returns
    -------
    estimate, ci_low, ci_high : (n_scores,) pooled mean over rows and its interval.
    """
    per_row = np.atleast_2d(np.asarray(per_row, dtype=np.float64))
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot={n_boot} is too few draws for a percentile interval; use at least 100")
    _, group_index = np.unique(groups, return_inverse=True)
    n_groups = int(group_index.max()) + 1
    group_sums = np.stack([np.bincount(group_index, weights=s, minlength=n_groups) for s in per_row])
    group_sizes = np.bincount(group_index, minlength=n_groups).astype(np.float64)
    # Drawing n_groups sequences with replacement == multinomial counts of how often each is drawn.
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)
    boot = (draws @ group_sums.T) / (draws @ group_sizes)[:, None]
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha], axis=0)
    return per_row.mean(axis=1), low, high
