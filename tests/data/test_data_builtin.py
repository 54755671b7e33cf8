"""Built-in generators: deterministic, valid labels, long lengths, trivial baselines."""

from __future__ import annotations

import statistics
import time
from collections import Counter

import pytest

from attnlab.data import (
    copy_baseline,
    lead_baseline,
    listops,
    split_sentences,
    summarisation_builtin,
    translation_builtin,
)
from attnlab.errors import DataError

SMALL = {"n_train": 200, "n_validation": 20, "n_test": 20}


def reference_listops(text: str) -> int:
    """An evaluator written independently of the generator: a stack over the space-separated tokens."""
    stack: list[list] = []
    result = None
    for token in text.split():
        if token.startswith("["):
            stack.append([token[1:]])
        elif token == "]":
            op, *values = stack.pop()
            if op == "MAX":
                value = max(values)
            elif op == "MIN":
                value = min(values)
            elif op == "MED":
                ordered = sorted(values)
                mid = len(ordered) // 2
                value = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2
            else:
                assert op == "SM"
                value = sum(values) % 10
            if stack:
                stack[-1].append(value)
            else:
                result = value
        else:
            assert token.isdigit() and len(token) == 1
            stack[-1].append(int(token))
    assert not stack and result is not None
    return result


def depth(text: str) -> int:
    level = best = 0
    for token in text.split():
        level += token.startswith("[")
        level -= token == "]"
        best = max(best, level)
    return best


@pytest.mark.parametrize("generator", [listops, translation_builtin, summarisation_builtin])
def test_same_seed_same_data_other_seed_other_data(generator):
    a, b, c = generator(**SMALL, seed=1), generator(**SMALL, seed=1), generator(**SMALL, seed=2)
    assert a == b
    assert a["train"] != c["train"]
    assert [len(a[s]) for s in ("train", "validation", "test")] == [200, 20, 20]


def test_listops_labels_match_an_independent_evaluator():
    data = listops(
        n_train=2000, n_validation=0, n_test=0, max_depth=4, max_args=5, min_length=9, max_length=200
    )
    for row in data["train"]:
        assert row["label"] == reference_listops(row["text"]), row["text"]
        assert 9 <= len(row["text"]) <= 200 and depth(row["text"]) <= 4


def test_listops_defaults_are_short_varied_and_not_degenerate():
    rows = listops()["train"]
    lengths = [len(r["text"]) for r in rows]
    assert min(lengths) >= 30 and max(lengths) <= 120
    counts = Counter(r["label"] for r in rows)
    assert sorted(counts) == list(range(10))
    assert max(counts.values()) / len(rows) < 0.2  # majority-class rate ~0.11
    assert {depth(r["text"]) for r in rows} >= {2, 3}


def test_listops_long_lengths_are_fast_and_in_range():
    start = time.perf_counter()
    rows = listops(
        n_train=200, n_validation=0, n_test=0, max_depth=10, max_args=10, min_length=1000, max_length=2000
    )["train"]
    assert time.perf_counter() - start < 5
    assert all(1000 <= len(r["text"]) <= 2000 for r in rows)
    for row in rows[:20]:
        assert row["label"] == reference_listops(row["text"])


def test_listops_impossible_lengths_are_a_clear_error():
    with pytest.raises(DataError, match="raise task.data.builtin.max_depth"):
        listops(max_depth=1, max_args=3, min_length=100, max_length=200)


def test_translation_is_a_mapping_with_reordering_not_a_copy():
    rows = translation_builtin(n_train=300, n_validation=0, n_test=0, min_words=4, max_words=12)["train"]
    for row in rows:
        src, tgt = row["source"].split(), row["target"].split()
        assert 4 <= len(src) <= 12 and len(src) == len(tgt)
        assert not set(src) & set(tgt)
    # the dictionary is consistent: each source word always maps into the same target vocabulary slot
    vocab_src = {w for r in rows for w in r["source"].split()}
    vocab_tgt = {w for r in rows for w in r["target"].split()}
    assert len(vocab_src) == len(vocab_tgt)
    assert all(p != r["target"] for p, r in zip(copy_baseline(rows), rows))


def test_translation_length_grows_with_max_words():
    short = translation_builtin(n_train=200, n_validation=0, n_test=0, min_words=4, max_words=8)["train"]
    long = translation_builtin(n_train=200, n_validation=0, n_test=0, min_words=40, max_words=60)["train"]
    assert statistics.mean(len(r["source"].split()) for r in long) > 3 * statistics.mean(
        len(r["source"].split()) for r in short
    )


def test_translation_lexicon_grows_with_nouns():
    small = translation_builtin(n_train=400, n_validation=0, n_test=0, max_words=16, nouns=16)["train"]
    large = translation_builtin(n_train=400, n_validation=0, n_test=0, max_words=16, nouns=512)["train"]
    assert (
        large == translation_builtin(n_train=400, n_validation=0, n_test=0, max_words=16)["train"]
    )  # default

    def words(rows):
        return {w for r in rows for w in r["source"].split()}

    assert len(words(large)) > 4 * len(words(small))
    for row in large:  # still a word-for-word mapping with reordering
        src, tgt = row["source"].split(), row["target"].split()
        assert len(src) == len(tgt) and not set(src) & set(tgt)


def _fact_words(document: str) -> list[list[str]]:
    """The words of each key fact of a built-in summarisation document: the sentences with a number."""
    return [words for words in map(str.split, split_sentences(document)) if any(t.isdigit() for t in words)]


def test_summaries_are_the_numbered_facts_by_name_resolved_through_the_cast():
    rows = summarisation_builtin(n_train=300, n_validation=0, n_test=0, role_rate=1)["train"]
    for row in rows:
        sentences = [s.split() for s in split_sentences(row["document"])]
        cast = {words[3]: words[0] for words in sentences[:4]}  # "Kemo is the baker ."
        assert all(words[1:3] == ["is", "the"] for words in sentences[:4]) and len(set(cast.values())) == 4
        facts = _fact_words(row["document"])  # the cast sentences have no number
        assert all(words[0] == "the" and words[1] in cast for words in facts)  # role_rate=1: all by role
        compressed = [f"{cast[words[1]]} {' '.join(words[2:5])} ." for words in facts]
        assert row["summary"] == " ".join(compressed)
    leads = lead_baseline(rows, n=3)
    assert sum(lead == row["summary"] for lead, row in zip(leads, rows)) == 0


def test_without_roles_the_summaries_are_the_numbered_facts_as_written():
    rows = summarisation_builtin(n_train=300, n_validation=0, n_test=0)["train"]  # role_rate=0, the default
    for row in rows:
        assert " is the " not in row["document"]  # no cast
        compressed = [" ".join(words[:4]) + " ." for words in _fact_words(row["document"])]
        assert row["summary"] == " ".join(compressed)
    assert (
        rows == summarisation_builtin(n_train=300, n_validation=0, n_test=0, cast=9)["train"]
    )  # nothing drawn


def test_some_facts_by_role_some_by_name():
    rows = summarisation_builtin(n_train=300, n_validation=0, n_test=0, role_rate=0.5, cast=2)["train"]
    subjects = [words[0] for row in rows for words in _fact_words(row["document"])]
    by_role = sum(subject == "the" for subject in subjects) / len(subjects)
    assert 0.4 < by_role < 0.6


def test_lead_and_copy_baselines():
    assert lead_baseline([{"document": "A b. C d! E f? G h."}], n=2) == ["A b. C d!"]
    assert copy_baseline([{"source": "x y"}]) == ["x y"]


@pytest.mark.parametrize(
    ("generator", "kwargs"),
    [
        (translation_builtin, {"min_words": 2}),
        (summarisation_builtin, {"max_facts": 13}),
        (summarisation_builtin, {"role_rate": 1.5}),
        (summarisation_builtin, {"cast": 0, "role_rate": 1}),
        (summarisation_builtin, {"cast": 13, "role_rate": 0.5}),
    ],
)
def test_bad_generator_settings_are_data_errors(generator, kwargs):
    with pytest.raises(DataError):
        generator(**kwargs)
