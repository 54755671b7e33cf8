"""MQAR generator: the recall structure zoology defines, deterministic in the seed."""

from __future__ import annotations

import pytest

from attnlab.data.mqar import chance_accuracy, default_kv_pairs, mqar
from attnlab.errors import DataError

SMALL = {"n_train": 40, "n_validation": 5, "n_test": 5, "seq_len": 64, "vocab_size": 128}


def test_every_query_recalls_a_pair_seen_exactly_once_and_only_answers_count():
    splits = mqar(**SMALL, num_kv_pairs=6)
    half = SMALL["vocab_size"] // 2
    for row in splits["train"]:
        ids, mask = row["ids"], row["loss_mask"]
        assert len(ids) == len(mask) == SMALL["seq_len"] + 1
        keys, values = ids[0:12:2], ids[1:12:2]
        assert all(1 <= k < half for k in keys) and all(half <= v < 128 for v in values)
        assert len(set(keys)) == 6
        answers = [i for i, counted in enumerate(mask) if counted]
        assert len(answers) == 6 and min(answers) > 12
        for i in answers:  # the query is the token before the answer
            query, answer = ids[i - 1], ids[i]
            earlier = [j for j in range(i - 1) if ids[j] == query]
            assert earlier == [keys.index(query) * 2]  # the key appears earlier exactly once: in its pair
            assert answer == values[keys.index(query)] == ids[earlier[0] + 1]
        assert {ids[i - 1] for i in answers} == set(keys)  # every key is queried once


def test_deterministic_in_the_seed_and_different_across_seeds():
    assert mqar(**SMALL, seed=3) == mqar(**SMALL, seed=3)
    assert mqar(**SMALL, seed=3)["train"] != mqar(**SMALL, seed=4)["train"]
    splits = mqar(**SMALL)
    assert splits["train"][:5] != splits["test"][:5]


def test_defaults_follow_zoology():
    assert default_kv_pairs(64) == 4 and default_kv_pairs(256) == 16
    rows = mqar(**{**SMALL, "seq_len": 256, "vocab_size": 512})["test"]
    assert all(sum(r["loss_mask"]) == 16 for r in rows)
    assert chance_accuracy(8192) == 1 / 4096


def test_power_law_places_most_queries_early():
    rows = mqar(**{**SMALL, "n_train": 200, "seq_len": 256, "vocab_size": 512}, num_kv_pairs=4)["train"]
    gaps = [i for r in rows for i, m in enumerate(r["loss_mask"]) if m]
    early = sum(g < 8 + 64 for g in gaps) / len(gaps)
    assert early > 0.5  # uniform placement would put ~27% in the first quarter of the query region


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"seq_len": 16, "num_kv_pairs": 5}, "seq_len >= 4 \\* num_kv_pairs = 20"),
        ({"vocab_size": 8, "num_kv_pairs": 4}, "too few keys"),
        ({"num_kv_pairs": 0}, "must be >= 1"),
        ({"power_a": 0.0}, "power_a=0.0 must be > 0"),
    ],
)
def test_impossible_settings_are_one_line_errors(params, message):
    with pytest.raises(DataError, match=message):
        mqar(**{**SMALL, **params})
