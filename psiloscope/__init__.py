"""psiloscope: where, and how much, does an adapted model's representation diverge from its frozen base.

Arrays are `(n_samples, n_features)` in any float dtype and are computed in float64. Importing psiloscope never
loads MLX; only `compare` on a run directory or base spec imports the model side, to dump activations.
"""

from psiloscope.cca import canonical_correlations, mean_cca, procrustes, pwcca, svcca
from psiloscope.cka import CKAAccumulator, MinibatchCKA, cka_matrix, linear_cka, rbf_cka
from psiloscope.compare import CompareOptions, Comparison, compare
from psiloscope.heads import head_cka, head_matrix
from psiloscope.novelty import NoveltyResult, detect_novelty_windows, novelty_from_rows
from psiloscope.pca import CovarianceAccumulator, PCAResult, pca, principal_angles
from psiloscope.robust import massive_dims, robust_cka
from psiloscope.stores import Target, cka_matrix_stores, compare_stores

__version__ = "0.1.0"

__all__ = [
    "CKAAccumulator", "Comparison", "CompareOptions", "CovarianceAccumulator", "MinibatchCKA", "NoveltyResult",
    "PCAResult", "Target", "canonical_correlations", "cka_matrix", "cka_matrix_stores", "compare", "compare_stores",
    "detect_novelty_windows", "head_cka", "head_matrix", "linear_cka", "massive_dims", "mean_cca", "novelty_from_rows",
    "pca", "principal_angles", "procrustes", "pwcca", "rbf_cka", "robust_cka", "svcca",
]
