"""Passkey generator: the fact at the requested depth, the answer is its value, only the answer counts."""

from __future__ import annotations

import pytest

from attnlab.data.passkey import chance_accuracy, fact_position, last_fact_position, passkey
from attnlab.errors import DataError

SMALL = {"n_train": 30, "n_validation": 5, "n_test": 10, "seq_len": 64, "vocab_size": 32}


def parts(row: dict, m: int) -> tuple[int, list[int], int]:
    """(the fact's position, the value, the query's position) read from the stream."""
    ids = row["ids"]
    query = len(ids) - 1 - m
    key = ids[query]
    (start,) = [i for i in range(query) if ids[i] == key]  # the key appears once before the query
    return start, ids[start + 1 : start + 1 + m], query


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 1.0])
def test_fact_sits_at_the_depth_and_the_answer_is_its_value(depth, m):
    splits = passkey(**SMALL, depth=depth, answer_tokens=m)
    expected = fact_position(64, depth, m)
    assert expected == round(depth * (64 - 2 * m - 1))
    for rows in splits.values():
        for row in rows:
            ids, mask = row["ids"], row["loss_mask"]
            assert len(ids) == len(mask) == 65
            start, value, query = parts(row, m)
            assert start == expected
            assert ids[query + 1 :] == value  # the answer is the stored value
            assert [i for i, counted in enumerate(mask) if counted] == list(range(query + 1, 65))
            assert 1 <= ids[query] < 8 and all(16 <= v < 32 for v in value)  # a key; values
            hay = [t for i, t in enumerate(ids) if i != query and not start <= i <= start + m and i <= query]
            assert all(8 <= t < 16 for t in hay)  # the filler: its own quarter of the vocabulary
    if depth == 1.0:  # right before the query
        assert start + 1 + m == query


def test_null_depth_spreads_facts_and_test_depth_sets_the_test_split_alone():
    rows = passkey(**{**SMALL, "n_train": 200})["train"]
    starts = {parts(row, 1)[0] for row in rows}
    assert min(starts) < 10 and max(starts) > last_fact_position(64, 1) - 10 and len(starts) > 30
    splits = passkey(**SMALL, test_depth=0.5)
    assert {parts(row, 1)[0] for row in splits["test"]} == {fact_position(64, 0.5, 1)}
    assert len({parts(row, 1)[0] for row in splits["train"]}) > 1
    assert splits["train"] == passkey(**SMALL)["train"]  # the test depth does not touch training rows


def test_deterministic_in_the_seed_and_each_split_its_own_stream():
    assert passkey(**SMALL, seed=3) == passkey(**SMALL, seed=3)
    assert passkey(**SMALL, seed=3)["test"] != passkey(**SMALL, seed=4)["test"]
    # the test rows do not depend on how many training rows were drawn (eval lengths regenerate test alone)
    assert passkey(**SMALL)["test"] == passkey(**{**SMALL, "n_train": 0, "n_validation": 0})["test"]
    assert chance_accuracy(32) == 1 / 16


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"depth": 1.5}, "depth=1.5 must be in \\[0, 1\\]"),
        ({"test_depth": -0.1}, "test_depth=-0.1 must be in \\[0, 1\\]"),
        ({"answer_tokens": 0}, "answer_tokens=0 must be >= 1"),
        ({"seq_len": 4, "answer_tokens": 2}, "needs seq_len >= 5"),
        ({"vocab_size": 7}, "vocab_size >= 8"),
    ],
)
def test_bad_knobs_are_one_line_errors(params, message):
    with pytest.raises(DataError, match=message):
        passkey(**{**SMALL, **params})
