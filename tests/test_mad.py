"""task=mad: each MAD generator's definition (what is asked, what counts), determinism, the knobs,
one-line errors, the compression bottleneck, and a one-batch run of every kind."""

from __future__ import annotations

import pytest
import torch
from helpers import compose_run

from attnlab.data.generators import generated_length, get_generator
from attnlab.data.mad import IGNORE, KINDS, mad, memorization_map
from attnlab.errors import DataError
from attnlab.run.train import run
from attnlab.tasks.mad import MADTask

SMALL = {"n_train": 40, "n_validation": 20, "n_test": 20}


def rows(kind: str, split: str = "test", **knobs) -> list[dict]:
    return mad(kind=kind, **{**SMALL, **knobs})[split]


def asked(row: dict) -> list[int]:
    return [i for i, t in enumerate(row["targets"]) if t != IGNORE]


def recall_answers(ids: list[int], keys: range, values: range) -> tuple[list[int], dict[int, int]]:
    """Positions i whose next token is the value of a key seen earlier (next-token form), read from the
    stream alone, and the key -> value map it shows."""
    stream, answers, kv = ids, [], {}
    for j in range(0, len(stream) - 1, 2):
        key, value = stream[j], stream[j + 1]
        if key not in keys:
            continue  # a noise slot
        assert value in values
        if key in kv:
            assert kv[key] == value  # one value per key within an example
            answers.append(j)  # position j reads the key; its target is the value
        kv[key] = value
    return answers, kv


@pytest.mark.parametrize("split", ["train", "test"])
def test_in_context_recall_asks_every_repeated_keys_value(split):
    for row in rows("in_context_recall", split, seq_len=32):
        ids, targets = row["ids"], row["targets"]
        assert len(ids) == len(targets) == 31  # mad-lab: a stream of seq_len tokens, read but the last
        full = [*ids, targets[-1]]  # the last target is the final value, always asked
        answers, _ = recall_answers(full, range(8), range(8, 16))
        assert asked(row) == answers and answers[-1] == 30
        assert all(targets[i] == full[i + 1] for i in answers)


def test_noisy_recall_mixes_noise_pairs_at_the_rate_asked_and_never_asks_them():
    def noise_share(frac: float) -> float:
        slots = noisy = 0
        for row in rows("noisy_recall", n_test=200, frac_noise=frac):
            full = [*row["ids"], row["targets"][-1]]
            answers, _ = recall_answers(full, range(8), range(8, 16))
            assert asked(row) == answers
            pairs = [full[j : j + 2] for j in range(0, len(full) - 2, 2)]  # the final query is no slot
            noise = [p for p in pairs if p[0] >= 16]
            assert all(16 <= t < 32 for p in noise for t in p)  # both tokens from the noise vocabulary
            slots, noisy = slots + len(pairs), noisy + len(noise)
        return noisy / slots

    assert noise_share(0.2) == pytest.approx(0.2, abs=0.03)
    assert noise_share(0.6) == pytest.approx(0.6, abs=0.03)


@pytest.mark.parametrize("split", ["train", "test"])
def test_fuzzy_recall_asks_every_token_of_a_recalled_value(split):
    lengths = set()
    for row in rows("fuzzy_recall", split, seq_len=64):
        full = [*row["ids"], row["targets"][-1]]
        assert len(row["ids"]) == 64
        body = full[next(i for i, t in enumerate(full) if t != 15) :]  # after the left padding (token 15)
        offset = len(full) - len(body)
        runs, start = [], 0  # maximal runs of key tokens [0, 7) and value tokens [7, 14)
        for i in range(1, len(body) + 1):
            if i == len(body) or (body[i] < 7) != (body[start] < 7):
                runs.append((start, body[start:i]))
                start = i
        assert body[0] < 7 and len(runs) % 2 == 0  # key, value, key, value, ...
        expected, kv = [], {}
        for (_, key), (at, value) in zip(runs[0::2], runs[1::2], strict=True):
            assert 1 <= len(key) <= 3 and 1 <= len(value) <= 3
            lengths.add(len(key))
            if tuple(key) in kv:
                assert kv[tuple(key)] == value
                expected += [offset + at + k - 1 for k in range(len(value))]  # read the previous token
            kv[tuple(key)] = value
        assert asked(row) == expected and expected[-1] == 63  # the final query is always asked
    assert lengths == ({3} if split == "test" else {1, 2, 3})  # test prompts at the longest key


def test_selective_copying_asks_the_data_tokens_in_order_at_the_trailing_blanks():
    for row in rows("selective_copying", seq_len=64, num_tokens_to_copy=10):
        ids, targets = row["ids"], row["targets"]
        assert len(ids) == 64 and ids[-11] == 15 and ids[-10:] == [14] * 10  # copy token, then blanks
        data = [t for t in ids[:-11] if t != 14]
        assert len(data) == 10 and all(0 <= t < 14 for t in data)
        assert asked(row) == list(range(54, 64)) and targets[54:] == data


def test_compression_asks_every_token_but_the_compression_token():
    for row in rows("compression", vocab_size=32, seq_len=48):
        assert len(row["ids"]) == 48 and row["ids"][-1] == 31 and max(row["ids"][:-1]) < 31
        assert row["targets"] == [*row["ids"][:-1], IGNORE]


def test_memorization_asks_one_fixed_map_in_every_split_and_never_shows_a_value():
    data = mad(kind="memorization", **SMALL)
    kv = memorization_map(0, 256)
    assert sorted(kv) == list(range(127)) and len(set(kv.values())) == 127
    assert all(127 <= v < 255 for v in kv.values())
    for split_rows in data.values():
        for row in split_rows:
            ids, targets = row["ids"], row["targets"]
            assert len(ids) == 32 and ids[1::2] == [255] * 16 and asked(row) == list(range(1, 32, 2))
            assert all(targets[i + 1] == kv[ids[i]] for i in range(0, 32, 2))
            assert max(ids[0::2]) < 127  # inputs hold keys and insert tokens only
    assert memorization_map(1, 256) != kv


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_is_deterministic_in_its_seed_and_seeds_differ(kind):
    assert mad(kind=kind, seed=3, **SMALL) == mad(kind=kind, seed=3, **SMALL)
    a, b = mad(kind=kind, seed=3, **SMALL), mad(kind=kind, seed=4, **SMALL)
    assert all(a[split] != b[split] for split in a)
    assert a["train"] != a["test"]  # the splits are drawn apart


@pytest.mark.parametrize("kind", list(KINDS))
def test_defaults_are_mad_labs_baselines_and_knobs_change_what_they_say(kind):
    base = {"in_context_recall": 128, "fuzzy_recall": 128, "noisy_recall": 128, "selective_copying": 256}
    length = base.get(kind, 32)
    row = mad(kind=kind, n_train=2, n_validation=1, n_test=1)["test"][0]
    assert len(row["ids"]) in (length - 1, length)  # recall kinds read all but the last of seq_len
    vocab = {"noisy_recall": 32, "memorization": 256}.get(kind, 16)
    assert max(row["ids"]) < vocab
    longer = mad(kind=kind, n_train=2, n_validation=1, n_test=1, seq_len=2 * length)["test"][0]
    assert len(longer["ids"]) == len(row["ids"]) + length
    assert len(mad(kind=kind, n_train=7, n_validation=1, n_test=1)["train"]) == 7


def test_difficulty_knobs_of_one_kind_each():
    wide = rows("in_context_recall", vocab_size=64, seq_len=128)
    assert max(t for r in wide for t in r["ids"]) >= 40 and max(t for r in wide for t in r["ids"]) < 64
    assert all(len(asked(r)) == 16 for r in rows("selective_copying", seq_len=64, num_tokens_to_copy=16))
    assert all(len(asked(r)) == 24 for r in rows("selective_copying", seq_len=64, num_tokens_to_copy=24))
    keys = rows("fuzzy_recall", vocab_size=32, k_motif_size=5, seq_len=128)
    assert all(len([t for t in r["ids"][-7:] if t < 15]) >= 5 for r in keys)  # the final key: 5 tokens
    assert max(memorization_map(0, 1024)) == 510  # keys [0, (V - 1) // 2)


@pytest.mark.parametrize(
    ("knobs", "fragment"),
    [
        ({"kind": "in_context"}, "mad kind 'in_context' (did you mean 'in_context_recall'?) is unknown"),
        ({"kind": "compression", "frac_noise": 0.2}, "compression has no knob frac_noise"),
        ({"kind": "memorization", "num_tokens_to_copy": 4}, "belongs to selective_copying"),
        ({"kind": "in_context_recall", "seq_len": 31}, "must be even"),
        ({"kind": "noisy_recall", "frac_noise": 1.0}, "frac_noise=1.0 must be in [0, 1)"),
        ({"kind": "noisy_recall", "frac_noise": 0.0}, "no noise is kind=in_context_recall"),
        ({"kind": "in_context_recall", "frac_noise": 0.2}, "noise_vocab_size=0 must be > 0"),
        ({"kind": "selective_copying", "seq_len": 32, "num_tokens_to_copy": 16}, "seq_len > 2 * num_tokens"),
        ({"kind": "fuzzy_recall", "seq_len": 16}, "task.data.builtin.seq_len >= 18"),
        ({"kind": "fuzzy_recall", "k_motif_size": 0}, "k_motif_size=0 must be >= 1"),
        ({"kind": "fuzzy_recall", "k_motif_size": 9}, "fewer than a motif of 9"),
        ({"kind": "compression", "n_test": 0}, "n_test=0 must be >= 1"),
    ],
)
def test_bad_knobs_are_one_line_data_errors(knobs, fragment):
    with pytest.raises(DataError) as error:
        mad(**{**SMALL, **knobs})
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_the_generator_is_registered_with_its_signature_as_the_config(tmp_path):
    assert get_generator("mad") is mad
    cfg = compose_run(tmp_path, ["task=mad", "task.data.builtin.kind=memorization"])
    assert cfg.task.data.builtin.generator == "mad" and cfg.task.data.builtin.vocab_size is None
    assert cfg.task.data.builtin.kind == "memorization" and cfg.task.name == "mad"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seq_len", [None, 64])
def test_the_generated_length_is_the_longest_row_of_the_kind(kind, seq_len):
    """attnlab.data.generators.generated_length (what model.max_len is checked against): every row fits
    it, and the longest is at most one token shorter (the recalls read seq_len - 1); seq_len=null is the
    kind's own length."""
    builtin = {"generator": "mad", "kind": kind, "seq_len": seq_len}
    longest = max(
        len(row["ids"]) for rows in mad(kind=kind, seq_len=seq_len, **SMALL).values() for row in rows
    )
    assert generated_length(builtin) - 1 <= longest <= generated_length(builtin)


def test_one_key_sets_a_mad_length_for_data_and_model(tmp_path):
    """The model is as long as the rows the kind generates (model.max_len=null: conf/task_defaults/mad.yaml),
    in experiment=mad too: seq_len alone sets both, and null is each kind's own length."""
    for kind in KINDS:
        cfg = compose_run(tmp_path, ["experiment=mad", f"task.data.builtin.kind={kind}"], fast=False)
        assert cfg.model.max_len == generated_length(cfg.task.data.builtin)
    for task in ("task=mad", "experiment=mad"):
        cfg = compose_run(tmp_path, [task, "task.data.builtin.seq_len=64"], fast=False)
        assert cfg.model.max_len == cfg.task.datamodule.max_len == 64
    assert compose_run(tmp_path, ["experiment=mad", "model.max_len=300"], fast=False).model.max_len == 300


@pytest.mark.parametrize("kind", ["in_context_recall", "memorization"])
def test_the_test_split_is_regenerated_at_another_length(tmp_path, kind):
    """task.eval_lengths: the same generator, knobs and seed at another seq_len (memorization keeps its
    map), encoded as setup encodes; the rows are as long as asked."""
    from hydra.utils import instantiate

    small = ["task.data.builtin.n_train=16", "task.data.builtin.n_validation=8", "task.data.builtin.n_test=8"]
    cfg = compose_run(tmp_path, ["task=mad", f"task.data.builtin.kind={kind}", *small, "model.max_len=512"])
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.setup("fit")
    trained = max(len(ids) for ids, _ in datamodule.encoded["test"])
    length = 2 * cfg.task.data.builtin.seq_len if cfg.task.data.builtin.seq_len else 4 * trained
    expected = len(mad(kind=kind, seq_len=length, **SMALL)["test"][0]["ids"])  # the generator's own rows
    batch = next(iter(datamodule.test_dataloader_at(length)))
    assert batch["ids"].shape[1] == expected > trained and batch["loss_mask"].any()


def test_compression_decodes_from_the_last_position_alone():
    torch.manual_seed(0)
    model = {"d_model": 32, "heads": 2, "decoder_layers": 2, "max_len": 16, "dropout": 0.0}
    task = MADTask(vocab_size=16, model=model, attention={"name": "multihead"}, bottleneck=True).eval()
    row = mad(kind="compression", seq_len=16, **SMALL)["test"][0]
    ids, targets = torch.tensor([row["ids"]]), torch.tensor([row["targets"]])  # (1, 16)
    batch = {"ids": ids, "targets": targets, "loss_mask": targets != IGNORE}
    logits = task.counted_logits(batch)  # (15, 16)
    assert logits.shape == (15, 16)
    hidden = task.model.hidden

    def scrambled(x):  # every position but the last replaced: the decoder must not notice
        h = hidden(x)  # (B, N, C)
        return torch.cat([torch.randn_like(h[:, :-1]), h[:, -1:]], dim=1)

    task.model.hidden = scrambled
    assert torch.allclose(task.counted_logits(batch), logits)
    plain = MADTask(vocab_size=16, model=model, attention={"name": "multihead"}).eval()
    assert plain.decoder is None


@pytest.mark.parametrize("kind", list(KINDS))
def test_one_batch_run_of_every_kind(tmp_path, kind):
    results = run(
        compose_run(
            tmp_path,
            [
                "experiment=mad",
                "trainer=debug",
                "logger=none",
                f"task.data.builtin.kind={kind}",
                "task.data.builtin.seq_len=64",
                "model.max_len=64",
                "task.data.builtin.n_train=32",
                "task.data.builtin.n_validation=16",
                "task.data.builtin.n_test=16",
                "task.data.batch_size=16",
            ],
        )
    )
    metrics = results["metrics"]
    assert results["task"] == "mad" and results["primary_metric"] == "test/acc"
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/ppl"] > 1.0
    chance = {"in_context_recall": 1 / 8, "noisy_recall": 1 / 8, "compression": 1 / 15}
    if kind in chance:  # every value / token is asked somewhere in 32 training rows
        assert metrics["test/baseline_acc"] == pytest.approx(chance[kind])


def test_the_study_block_plans_the_three_variants_at_one_length(tmp_path):
    from attnlab.study.plan import plan, preflight_cells

    study = plan("mad", out=tmp_path)
    assert study.variants == ("multihead", "linear", "deltanet") and len(study.lengths) == 1
    assert len(study.cells) == 3 * 6  # the six kinds are an axis of the grid
    cfg = preflight_cells(study)
    assert cfg.task.name == "mad" and cfg.model.max_len == cfg.task.data.builtin.seq_len == study.lengths[0]
