"""compare_stores and cka_matrix_stores against one-shot CKA on the same stored rows."""

import json

import numpy as np
import pytest
from test_store_compare_helpers import paired_arrays, stored, write

from activations import StoreMismatchError, hook_name
from psiloscope.cka import cka_matrix, linear_cka
from psiloscope.stores import Target, cka_matrix_stores, compare_stores

SEEDS = [0, 1, 2]
HOOKS = {hook_name(0, "resid_post"): 10, hook_name(1, "resid_post"): 6}


@pytest.fixture(params=SEEDS)
def stores(request, tmp_path):
    tokens, A, B = paired_arrays(request.param, 30, HOOKS)
    return write(tmp_path / "a.h5", tokens, A), write(tmp_path / "b.h5", tokens, B), request.param


def test_values_equal_one_shot_cka_of_the_stored_rows(stores):
    a, b, seed = stores
    rows = compare_stores(a, b, n_boot=50, seed=seed, block_rows=37)
    assert {(r["hook"], r["measure"]) for r in rows} == {(h, m) for h in HOOKS for m in
                                                         ("linear_cka", "debiased_cka")}
    for row in rows:
        X, Y = stored(a, row["hook"]), stored(b, row["hook"])
        expected = linear_cka(X, Y, debiased=row["measure"] == "debiased_cka")
        assert row["value"] == pytest.approx(expected, rel=1e-9)
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
        assert row["n_tokens"] == len(X) and row["n_sequences"] == 30 and row["layer"] in (0, 1)
    json.dumps(rows)


def test_column_targets_and_per_side_selections(stores):
    a, b, seed = stores
    hook = hook_name(0, "resid_post")
    targets = [("first half", hook, hook, slice(0, 5)),
               Target("mask vs index", hook, hook, columns=np.arange(10) % 3 == 0, columns_b=[1, 2, 7])]
    rows = compare_stores(a, b, targets, measures=("debiased_cka",), n_boot=0, seed=seed)
    X, Y = stored(a, hook), stored(b, hook)
    assert rows[0]["value"] == pytest.approx(linear_cka(X[:, :5], Y[:, :5], debiased=True), rel=1e-9)
    assert rows[1]["value"] == pytest.approx(linear_cka(X[:, ::3], Y[:, [1, 2, 7]], debiased=True), rel=1e-9)
    assert rows[0]["ci_low"] is None and rows[0]["p_perm"] is None


@pytest.mark.parametrize("seed", SEEDS)
def test_float16_store_with_offset_column_gives_the_float64_answer(seed, tmp_path):
    tokens, A, B = paired_arrays(seed, 20, {hook_name(2, "resid_post"): 8})
    hook = hook_name(2, "resid_post")
    A[hook][:, 0] += 1000.0
    a, b = write(tmp_path / "a.h5", tokens, A, dtype="float16"), write(tmp_path / "b.h5", tokens, B, "float16")
    row = compare_stores(a, b, measures=("linear_cka",), n_boot=0)[0]
    X, Y = stored(a, hook), stored(b, hook)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    exact = np.linalg.norm(Xc.T @ Yc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))
    assert row["value"] == pytest.approx(exact, rel=1e-9)


def test_permutation_pvalue_separates_related_from_shuffled(tmp_path):
    hook = hook_name(0, "resid_post")
    tokens, A, B = paired_arrays(5, 40, {hook: 6}, noise=0.5)
    rng = np.random.default_rng(5)
    order = rng.permutation(len(B[hook]))
    a, b = write(tmp_path / "a.h5", tokens, A), write(tmp_path / "b.h5", tokens, B)
    c = write(tmp_path / "c.h5", tokens, {hook: B[hook][order]})
    related = compare_stores(a, b, n_boot=0, n_perm=99, seed=1)
    unrelated = compare_stores(a, c, n_boot=0, n_perm=99, seed=1)
    assert all(r["p_perm"] == pytest.approx(0.01) for r in related)
    assert all(r["p_perm"] > 0.05 for r in unrelated)
    assert all(abs(r["value"]) < 0.05 for r in unrelated if r["measure"] == "debiased_cka")


def test_minibatch_matrix_from_stores_equals_arrays(stores):
    a, b, seed = stores
    hooks = list(HOOKS)
    from_stores = cka_matrix_stores(a, hooks, b, hooks[::-1], batch_size=40, seed=seed, block_rows=10_000)
    arrays = cka_matrix([stored(a, h) for h in hooks], [stored(b, h) for h in hooks[::-1]], batch_size=40,
                        seed=seed)
    np.testing.assert_allclose(from_stores, arrays, rtol=1e-9)
    assert cka_matrix_stores(a, hooks, a, hooks, batch_size=16, block_rows=64)[0, 0] == pytest.approx(1.0)


def test_refuses_different_token_sets_and_bad_arguments(tmp_path):
    hook = hook_name(0, "resid_post")
    tokens, A, _ = paired_arrays(0, 4, {hook: 4})
    a = write(tmp_path / "a.h5", tokens, A)
    shifted_tokens = write(tmp_path / "b.h5", [t + 1 for t in tokens], A)
    with pytest.raises(StoreMismatchError):
        compare_stores(a, shifted_tokens)
    with pytest.raises(ValueError, match="Unknown measures"):
        compare_stores(a, a, measures=("cca",))
    with pytest.raises(ValueError, match="picks no columns"):
        compare_stores(a, a, [("none", hook, hook, slice(0, 0))])
    with pytest.raises(ValueError, match="at least 5 sequences"):
        compare_stores(a, a, n_boot=0, n_perm=10)
    with pytest.raises(ValueError, match="n_boot"):
        compare_stores(a, a, n_boot=-3)
