"""Layer-wise probes on small constructed activation stores with planted linear signals."""

import numpy as np
import pytest

from activations import StoreWriter
from probes import compare_probes, run_probes, sequence_bootstrap_ci

N_SEQUENCES, SEQ_LEN, VOCAB, WIDTH = 40, 30, 6, 24
ROW_KEYS = {"task", "hook", "layer", "accuracy", "ci_low", "ci_high", "chance", "n_rows", "n_sequences",
            "n_classes", "n_folds", "classifier", "shuffled_labels"}


def write_store(path, tokens_seed: int, noise_seed: int, prev1_layers: tuple[int, ...]) -> str:
    """Three resid_post layers of width WIDTH over random tokens.

    Layers in ``prev1_layers`` encode the previous token linearly (a fixed random embedding) plus unit
    noise, the first row of each sequence encoding nothing; layer 2 encodes the current token; the
    rest is noise. Column 0 carries a +1000 offset, as residual streams' massive dimensions do.
    """
    rng = np.random.default_rng(tokens_seed)
    embedding = rng.normal(size=(VOCAB, WIDTH)) * 1.5
    hooks = {f"blocks.{layer}.hook_resid_post": WIDTH for layer in range(3)}
    noise_rng = np.random.default_rng(noise_seed)
    writer = StoreWriter(path, hooks=hooks, dtype="float32")
    for _ in range(N_SEQUENCES):
        tokens = rng.integers(0, VOCAB, SEQ_LEN)
        prev = np.vstack([np.zeros((1, WIDTH)), embedding[tokens[:-1]]])
        acts = {}
        for layer in range(3):
            signal = prev if layer in prev1_layers else embedding[tokens] if layer == 2 else 0.0
            values = signal + noise_rng.normal(size=(SEQ_LEN, WIDTH))
            values[:, 0] += 1000.0
            acts[f"blocks.{layer}.hook_resid_post"] = values
        writer.append(tokens.astype(np.int32), acts)
    return str(writer.close())


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Frozen-like store (prev1 at layer 1), adapted-like store (prev1 at layers 0 and 1), other tokens."""
    root = tmp_path_factory.mktemp("probe_stores")
    return {
        "a": write_store(root / "a.h5", tokens_seed=0, noise_seed=10, prev1_layers=(1,)),
        "b": write_store(root / "b.h5", tokens_seed=0, noise_seed=11, prev1_layers=(0, 1)),
        "other_tokens": write_store(root / "c.h5", tokens_seed=1, noise_seed=12, prev1_layers=(1,)),
    }


def test_probe_recovers_planted_signal_only_where_planted(stores):
    rows = run_probes(stores["a"], task="prev1", top_k=VOCAB, n_folds=5, max_rows=None)
    assert [r["layer"] for r in rows] == [0, 1, 2]
    assert all(set(r) == ROW_KEYS for r in rows)
    noise, signal, current = rows
    assert signal["ci_low"] > signal["chance"] + 0.5
    assert signal["ci_low"] <= signal["accuracy"] <= signal["ci_high"]
    for row in (noise, current):  # layers without prev1 information
        assert row["ci_low"] <= row["chance"] + 0.02
        assert row["accuracy"] < signal["ci_low"]
    assert signal["n_rows"] == N_SEQUENCES * (SEQ_LEN - 1)
    assert signal["n_sequences"] == N_SEQUENCES and signal["n_classes"] == VOCAB


def test_shuffled_labels_score_at_chance(stores):
    # Each 95% interval misses chance now and then (one of these ten seeds does), so judge the set.
    rows = [run_probes(stores["a"], task="prev1", layers=[1], top_k=VOCAB, seed=seed, shuffle_labels=True)[0]
            for seed in range(10)]
    assert all(row["shuffled_labels"] for row in rows)
    covered = sum(row["ci_low"] <= row["chance"] <= row["ci_high"] for row in rows)
    assert covered >= 8
    assert abs(np.mean([row["accuracy"] - row["chance"] for row in rows])) < 0.015


def test_current_token_task_and_pca_and_logistic(stores):
    ridge = run_probes(stores["a"], task="current", layers=[2], top_k=VOCAB, max_features=8)
    logistic = run_probes(stores["a"], task="current", layers=[2], top_k=VOCAB, classifier="logistic",
                          max_rows=600)
    for (row,) in (ridge, logistic):
        assert row["ci_low"] > row["chance"] + 0.5
    assert logistic[0]["n_rows"] <= 600 and logistic[0]["classifier"] == "logistic"


def test_max_rows_samples_whole_sequences(stores):
    (row,) = run_probes(stores["a"], task="current", layers=[2], top_k=VOCAB, max_rows=10 * SEQ_LEN + 5)
    assert row["n_sequences"] == 10
    assert row["n_rows"] == 10 * SEQ_LEN


def test_compare_is_paired_and_finds_the_adapted_layer(stores):
    rows = compare_probes(stores["a"], stores["b"], task="prev1", top_k=VOCAB)
    by_layer = {r["layer"]: r for r in rows}
    assert by_layer[0]["difference_ci_low"] > 0.5  # b encodes prev1 at layer 0, a does not
    # Layer 1 differs only in noise draws; the paired difference interval must cover 0.
    assert by_layer[1]["difference_ci_low"] <= 0 <= by_layer[1]["difference_ci_high"]
    same = compare_probes(stores["a"], stores["a"], task="prev1", top_k=VOCAB, layers=[1])
    assert same[0]["difference"] == 0 and same[0]["difference_ci_low"] == same[0]["difference_ci_high"] == 0
    assert same[0]["accuracy_a"] == same[0]["accuracy_b"]
    single = run_probes(stores["a"], task="prev1", top_k=VOCAB, layers=[1])
    assert single[0]["accuracy"] == same[0]["accuracy_a"]


def test_bootstrap_interval_shrinks_with_more_sequences():
    rng = np.random.default_rng(0)
    widths = []
    for n_groups in (20, 320):
        groups = np.repeat(np.arange(n_groups), 10)
        correct = rng.random(groups.size) < 0.7
        estimate, low, high = sequence_bootstrap_ci(correct, groups)
        assert low[0] <= estimate[0] <= high[0]
        widths.append(high[0] - low[0])
    assert widths[1] < widths[0] / 2


def test_bad_requests_are_refused_with_clear_messages(stores):
    with pytest.raises(ValueError, match=r"lacks hooks \['blocks.7.hook_resid_post'\]"):
        run_probes(stores["a"], layers=[7])
    with pytest.raises(ValueError, match="layers is empty"):
        run_probes(stores["a"], layers=[])
    with pytest.raises(ValueError, match=r"no 'resid_pre' hooks; it holds hook kinds \['resid_post'\]"):
        run_probes(stores["a"], hook_kind="resid_pre")
    with pytest.raises(ValueError, match="unknown probe task"):
        run_probes(stores["a"], task="prev6", layers=[0])
    with pytest.raises(ValueError, match="whole sequences fit.*n_folds=50"):
        run_probes(stores["a"], layers=[0], n_folds=50, max_rows=None)
    with pytest.raises(ValueError, match="different token sets"):
        compare_probes(stores["a"], stores["other_tokens"], layers=[0])
    with pytest.raises(ValueError, match="unknown classifier"):
        run_probes(stores["a"], layers=[0], top_k=VOCAB, classifier="svm")
