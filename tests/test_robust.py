"""Outlier-robust CKA: planted massive dimensions are found from the stats and removing them restores
the CKA of the remaining dimensions."""

import numpy as np
import pytest
from test_store_compare_helpers import paired_arrays, stored, write

from activations import hook_name
from psiloscope.cka import linear_cka
from psiloscope.robust import massive_dims, robust_cka

HOOK = hook_name(3, "resid_post")
PLANTED = [2, 7]


@pytest.fixture(params=[0, 1, 2])
def stores(request, tmp_path):
    seed = request.param
    tokens, A, B = paired_arrays(seed, 30, {HOOK: 9}, noise=0.3)
    rng = np.random.default_rng(seed + 50)
    clean_a, clean_b = A[HOOK].copy(), B[HOOK].copy()
    for arrays in (A, B):  # unrelated massive dims on both sides, same coordinates
        arrays[HOOK][:, PLANTED] = 300.0 + 40.0 * rng.normal(size=(len(clean_a), len(PLANTED)))
    return (write(tmp_path / "a.h5", tokens, A), write(tmp_path / "b.h5", tokens, B),
            np.delete(clean_a, PLANTED, axis=1), np.delete(clean_b, PLANTED, axis=1))


@pytest.mark.parametrize("by", ["abs_mean", "variance"])
def test_massive_dims_finds_the_planted_ones(stores, by):
    a, b, _, _ = stores
    assert sorted(massive_dims(a, HOOK, 2, by=by)) == PLANTED
    assert sorted(massive_dims(b, HOOK, 2, by=by)) == PLANTED


@pytest.mark.parametrize("side", ["union", "each"])
def test_dropping_them_restores_the_cka_of_the_rest(stores, side):
    a, b, clean_a, clean_b = stores
    rows = robust_cka(a, b, k=2, by="variance", side=side, n_boot=0)
    by_variant = {(r["variant"], r["measure"]): r for r in rows}
    for measure in ("linear_cka", "debiased_cka"):
        raw, robust = by_variant["raw", measure], by_variant["robust", measure]
        X, Y = stored(a, HOOK), stored(b, HOOK)
        keep = np.setdiff1d(np.arange(9), PLANTED)
        debiased = measure == "debiased_cka"
        assert robust["value"] == pytest.approx(linear_cka(X[:, keep], Y[:, keep], debiased=debiased), rel=1e-9)
        clean = linear_cka(clean_a, clean_b, debiased=debiased)
        assert robust["value"] == pytest.approx(clean, abs=1e-5)  # float32 storage rounding only
        assert raw["value"] < clean - 0.3  # the unrelated massive dims swamp the raw similarity
        assert robust["dropped_a"] == PLANTED and raw["dropped_a"] == []


def test_bad_arguments(stores):
    a, b, _, _ = stores
    with pytest.raises(ValueError, match="by must be"):
        massive_dims(a, HOOK, 2, by="max")
    with pytest.raises(ValueError, match="would drop every dimension"):
        massive_dims(a, HOOK, 9)
    with pytest.raises(ValueError, match="side must be"):
        robust_cka(a, b, k=1, side="both")
