"""Probe targets, class selection and the row/fold design, checked against direct loops."""

import numpy as np
import pytest

from probes import TASKS, build_design, position_bucket, positions_in_sequence, task_targets, top_k_classes


def ragged_tokens(seed: int, n_sequences: int = 12, vocab: int = 7):
    """Random tokens in sequences of uneven length, including lengths 0, 1 and 2."""
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([[0, 1, 2], rng.integers(3, 30, n_sequences - 3)])
    rng.shuffle(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return rng.integers(0, vocab, offsets[-1]), offsets


def direct_targets(tokens, offsets, task):
    """Target of each row by walking every sequence position by position."""
    targets, valid = [], []
    for seq in range(offsets.size - 1):
        sequence = tokens[offsets[seq] : offsets[seq + 1]]
        for pos in range(sequence.size):
            if task == "current":
                source = pos
            elif task == "position":
                source = None
            elif task == "next":
                source = pos + 1
            else:
                source = pos - int(task.removeprefix("prev"))
            if source is None:
                targets.append(int(np.log2(pos + 1)))
                valid.append(True)
            elif 0 <= source < sequence.size:
                targets.append(sequence[source])
                valid.append(True)
            else:
                targets.append(None)
                valid.append(False)
    return targets, np.array(valid, dtype=bool)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("task", TASKS)
def test_targets_match_a_direct_loop_and_never_cross_sequences(task, seed):
    tokens, offsets = ragged_tokens(seed)
    targets, valid = task_targets(tokens, offsets, task)
    expected, expected_valid = direct_targets(tokens, offsets, task)
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_array_equal(targets[valid], [t for t in expected if t is not None])


def test_prev_rows_are_dropped_exactly_at_sequence_starts():
    offsets = np.array([0, 4, 6, 10])
    _, valid = task_targets(np.arange(10), offsets, "prev3")
    np.testing.assert_array_equal(np.flatnonzero(valid), [3, 9])
    _, valid_next = task_targets(np.arange(10), offsets, "next")
    np.testing.assert_array_equal(np.flatnonzero(~valid_next), [3, 5, 9])


def test_positions_and_buckets():
    np.testing.assert_array_equal(positions_in_sequence(np.array([0, 3, 3, 5])), [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(position_bucket(np.arange(8)), [0, 1, 1, 2, 2, 2, 2, 3])


def test_top_k_orders_by_frequency_and_breaks_ties_by_value():
    targets = np.array([5] * 6 + [2] * 4 + [9] * 4 + [1] * 3)
    np.testing.assert_array_equal(top_k_classes(targets, 3, min_count=3), [5, 2, 9])
    # Asking for more classes than exist returns the ones there are.
    np.testing.assert_array_equal(top_k_classes(targets, 10, min_count=3), [5, 2, 9, 1])


def test_top_k_refuses_classes_the_data_cannot_support():
    targets = np.array([5] * 6 + [2] * 4 + [1] * 2)
    with pytest.raises(ValueError, match="only 2 have at least 3 rows.*top_k<=2"):
        top_k_classes(targets, 3, min_count=3)
    with pytest.raises(ValueError, match="only 0 have at least 7 rows.*; raise max_rows"):
        top_k_classes(targets, 2, min_count=7)
    with pytest.raises(ValueError, match="at least 2"):
        top_k_classes(np.array([4, 4, 4]), 5, min_count=1)
    with pytest.raises(ValueError, match="top_k must be at least 2"):
        top_k_classes(targets, 1, min_count=1)


def test_unknown_task_and_bad_offsets_are_refused():
    tokens, offsets = ragged_tokens(0)
    with pytest.raises(ValueError, match="unknown probe task 'prev9'"):
        task_targets(tokens, offsets, "prev9")
    with pytest.raises(ValueError, match="seq_offsets must run from 0"):
        task_targets(tokens, offsets[:-1], "current")


@pytest.mark.parametrize("seed", range(3))
def test_design_keeps_whole_sequences_and_folds_never_share_one(seed):
    tokens, offsets = ragged_tokens(seed, n_sequences=60)
    design = build_design(tokens, offsets, "prev2", top_k=5, n_folds=4, max_rows=600, seed=seed)
    lengths = np.diff(offsets)
    assert lengths[design.sequence_ids].sum() <= 600
    for seq in np.unique(design.groups):
        assert np.unique(design.folds[design.groups == seq]).size == 1
        assert offsets[seq] <= design.rows[design.groups == seq].min()
        assert design.rows[design.groups == seq].max() < offsets[seq + 1]
    assert set(np.unique(design.folds)) == set(range(4))
    # Every kept row's label is its true prev2 token, among the 5 most frequent of the sample.
    targets, valid = task_targets(tokens, offsets, "prev2")
    assert valid[design.rows].all()
    np.testing.assert_array_equal(design.classes[design.labels], targets[design.rows])
    assert design.n_classes == 5


def test_design_depends_on_seed_not_on_call():
    tokens, offsets = ragged_tokens(1, n_sequences=60)
    first = build_design(tokens, offsets, "current", top_k=4, n_folds=3, max_rows=500, seed=7)
    again = build_design(tokens, offsets, "current", top_k=4, n_folds=3, max_rows=500, seed=7)
    other = build_design(tokens, offsets, "current", top_k=4, n_folds=3, max_rows=500, seed=8)
    np.testing.assert_array_equal(first.rows, again.rows)
    np.testing.assert_array_equal(first.folds, again.folds)
    assert not np.array_equal(first.rows, other.rows)


def test_design_refuses_too_few_sequences_for_the_folds():
    tokens, offsets = np.arange(80) % 3, np.arange(0, 81, 20)  # four sequences of 20 tokens
    with pytest.raises(ValueError, match="only 4 whole sequences fit.*n_folds=5"):
        build_design(tokens, offsets, "current", top_k=3, n_folds=5, max_rows=None)
    with pytest.raises(ValueError, match="only 2 whole sequences fit"):
        build_design(tokens, offsets, "current", top_k=3, n_folds=3, max_rows=50)
    rare = np.arange(60) % 2
    rare[[5, 17]] = 2  # a third class with two rows cannot be spread over three folds
    with pytest.raises(ValueError, match="only 2 have at least 3 rows.*pass top_k<=2"):
        build_design(rare, np.arange(0, 61, 10), "current", top_k=3, n_folds=3, max_rows=None)
    # Sequences of length 1 have no prev1 row: only two of the six sequences keep rows.
    short = np.array([0, 1, 2, 3, 4, 14, 24])
    with pytest.raises(ValueError, match="kept rows come from 2 sequences"):
        build_design(np.arange(24) % 2, short, "prev1", top_k=2, n_folds=3, max_rows=None)
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2"):
        build_design(tokens, offsets, "current", n_folds=1)
