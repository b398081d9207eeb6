"""Per-head CKA: column slices of attn.hook_z, one shared pass per layer."""

import numpy as np
import pytest
from test_store_compare_helpers import paired_arrays, stored, write

from activations import hook_name
from psiloscope.cka import linear_cka
from psiloscope.heads import head_cka, head_matrix
from psiloscope.stores import compare_stores

Z0, Z1 = hook_name(0, "attn_z"), hook_name(1, "attn_z")
LAYOUT = {Z0: {"n_heads": 3, "head_dim": 4}, Z1: {"n_heads": 1, "head_dim": 6}}


@pytest.fixture(params=[0, 1, 2])
def stores(request, tmp_path):
    tokens, A, B = paired_arrays(request.param, 25, {Z0: 12, Z1: 6})
    return (write(tmp_path / "a.h5", tokens, A, hook_attrs=LAYOUT),
            write(tmp_path / "b.h5", tokens, B, hook_attrs=LAYOUT), request.param)


def test_each_head_equals_cka_of_its_column_slice(stores):
    a, b, seed = stores
    rows = head_cka(a, b, layers=[0], n_boot=20, seed=seed)
    X, Y = stored(a, Z0), stored(b, Z0)
    assert [(r["layer"], r["head"]) for r in rows if r["measure"] == "linear_cka"] == [(0, 0), (0, 1), (0, 2)]
    for r in rows:
        cols = slice(4 * r["head"], 4 * r["head"] + 4)
        expected = linear_cka(X[:, cols], Y[:, cols], debiased=r["measure"] == "debiased_cka")
        assert r["value"] == pytest.approx(expected, rel=1e-9)


def test_one_head_layer_equals_the_layer_cka(stores):
    a, b, seed = stores
    heads = head_cka(a, b, layers=[1], n_boot=0)
    layer = compare_stores(a, b, [(Z1, Z1, Z1)], n_boot=0)
    for h, full in zip(heads, layer, strict=True):
        assert h["measure"] == full["measure"] and h["head"] == 0
        assert h["value"] == pytest.approx(full["value"], rel=1e-12)


def test_head_matrix_and_refusals(stores):
    a, b, _ = stores
    rows = head_cka(a, b, layers=[0], n_boot=0, measures=("debiased_cka",))
    layers, matrix = head_matrix(rows)
    assert layers == [0] and matrix.shape == (1, 3)
    np.testing.assert_allclose(matrix[0], [r["value"] for r in rows])
    with pytest.raises(ValueError, match="holes"):
        head_matrix(head_cka(a, b, n_boot=0, measures=("debiased_cka",)))
    with pytest.raises(ValueError, match="no attn.hook_z"):
        head_cka(a, b, layers=[7])
