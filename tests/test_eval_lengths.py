"""task.eval_lengths: the test split regenerated at other lengths, evaluated with the trained weights."""

from __future__ import annotations

import json

import pytest
from helpers import compose_run
from hydra.utils import instantiate
from omegaconf import open_dict

from attnlab.config.eval_lengths import check_eval_lengths
from attnlab.data.eval_sizes import (
    EVAL_BATCH_TOKENS,
    EVAL_MIN_ROWS,
    EVAL_TEST_TOKENS,
    eval_batch_size,
    eval_rows,
)
from attnlab.data.generators import generate_test_at, length_knobs
from attnlab.errors import ConfigError
from attnlab.run.train import run

TINY_RUN = ["logger=none", "trainer=cpu", "trainer.max_steps=2", "trainer.val_check_interval=2"]
MQAR = [
    "task=mqar",
    "task.data.builtin.seq_len=32",
    "task.data.builtin.num_kv_pairs=4",  # fixed pairs: the haystack grows with the length
    "task.data.builtin.vocab_size=64",
    "task.data.builtin.n_train=64",
    "task.data.builtin.n_validation=16",
    "task.data.builtin.n_test=24",
    "task.data.batch_size=8",
]


def test_sizes_are_bounded_in_tokens():
    assert eval_rows(1000, 256) == 1000  # short: the generator's own count
    assert eval_rows(1000, 4096) == EVAL_TEST_TOKENS // 4096 == 64
    assert eval_rows(1000, 16384) == EVAL_MIN_ROWS  # the floor
    assert eval_rows(10, 16384) == 10 and eval_rows(1000, 256, limit=32) == 32
    assert eval_rows(None, 4096) is None  # a generator without n_test (the corpus): its own rows
    for length in (16, 256, 4096, 16384, 65536):
        batch = eval_batch_size(64, length)
        assert 1 <= batch <= 64 and (batch == 1 or batch * length <= EVAL_BATCH_TOKENS)


def test_length_knobs_declared_or_by_convention():
    assert length_knobs("mqar", 512) == {"seq_len": 512}  # a `seq_len` parameter: nothing to declare
    assert length_knobs("listops", 512) == {"min_length": 256, "max_length": 512}
    assert length_knobs("corpus", 512) == {}  # the task cuts its windows at the length
    assert length_knobs("translation", 512) is None


def test_regenerated_rows_have_the_length_and_keep_the_other_knobs():
    builtin = {"generator": "mqar", "seq_len": 32, "num_kv_pairs": 4, "vocab_size": 64, "seed": 3}
    rows = generate_test_at(builtin, 256, 5)
    assert len(rows) == 5 and all(len(r["ids"]) == 257 for r in rows)
    assert all(sum(r["loss_mask"]) == 4 for r in rows)  # num_kv_pairs kept
    assert max(t for r in rows for t in r["ids"]) < 64  # vocab_size kept
    assert rows == generate_test_at(builtin, 256, 5)  # the seed decides
    assert rows != generate_test_at({**builtin, "seed": 4}, 256, 5)


def test_position_tables_cap_the_lengths_and_schemes_without_one_do_not(tmp_path):
    cfg = compose_run(tmp_path, [*MQAR, "model.max_len=64", "task.eval_lengths=[64,1024]"])
    with pytest.raises(ConfigError, match="past the sinusoidal position table; choose model.positional=rope"):
        check_eval_lengths(cfg)
    with open_dict(cfg):  # rope, alibi and none come with the positions branch; the rule reads the string
        for scheme in ("rope", "alibi", "none"):
            cfg.model.positional = scheme
            check_eval_lengths(cfg)
    hf = compose_run(
        tmp_path, [*MQAR, "model=hf_gpt2", "model.max_len=64", "task.eval_lengths=[1024]"], fast=False
    )
    with pytest.raises(
        ConfigError, match="past the transformers model's positions; raise model.max_len=1024"
    ):
        check_eval_lengths(hf)


def test_a_variant_sized_by_max_len_is_capped_whatever_the_positions(tmp_path):
    cfg = compose_run(tmp_path, ["task=classify", "attention=lowrank", "task.eval_lengths=[1024]"])
    with open_dict(cfg):
        cfg.model.positional = "none"
    with pytest.raises(ConfigError, match="attention 'lowrank' sizes its weights by model.max_len"):
        check_eval_lengths(cfg)


def test_test_loader_at_a_length(tmp_path):
    cfg = compose_run(tmp_path, [*MQAR, "model.max_len=1024"])
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.setup("fit")
    same = datamodule.test_dataloader_at(32)  # the length it was built at: its own test split
    assert same.dataset is datamodule.encoded["test"]
    loader = datamodule.test_dataloader_at(1024)
    batch = next(iter(loader))
    assert batch["ids"].shape == (eval_batch_size(8, 1024), 1024)
    assert len(loader.dataset) == 24 and int(batch["loss_mask"].sum()) == 4 * batch["ids"].shape[0]


@pytest.mark.parametrize(
    ("overrides", "lengths", "trained"),
    [
        # MQAR trained at 32, tested at 32 and at 8x its length (a large sinusoidal table)
        ([*MQAR, "attention=linear", "model.max_len=256"], [32, 256], 32),
        # passkey trained at 32 with the fact anywhere, tested at 32 and 128
        (
            [
                "task=passkey",
                "task.data.builtin.seq_len=32",
                "task.data.builtin.n_train=64",
                "task.data.builtin.n_validation=16",
                "task.data.builtin.n_test=16",
                "task.data.batch_size=8",
                "model.max_len=128",
            ],
            [32, 128],
            32,
        ),
        # ListOps (classify's built-in), expressions of 30-60 characters, tested at 60 and 120
        (
            [
                "task=classify",
                "task.data.builtin.min_length=30",
                "task.data.builtin.max_length=60",
                "task.data.limit.train=64",
                "task.data.limit.validation=16",
                "task.data.limit.test=16",
                "model.max_len=128",
            ],
            [60, 120],
            None,
        ),
        # the LM's built-in corpus, windows of 128 tokens, tested on windows of 32 and 128
        pytest.param(
            ["task=lm", "task.data.limit.train=4", "task.data.limit.validation=2", "task.data.limit.test=2"],
            [32, 128],
            128,
            marks=pytest.mark.slow,
        ),
    ],
    ids=["mqar", "passkey", "listops", "corpus"],
)
def test_results_hold_a_metric_per_length(tmp_path, overrides, lengths, trained):
    cfg = compose_run(tmp_path, [*TINY_RUN, *overrides, f"task.eval_lengths=[{','.join(map(str, lengths))}]"])
    results = run(cfg)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    metrics = written["metrics"]
    assert metrics == results["metrics"]
    names = ("loss", "ppl", "acc") if cfg.task.name != "classify" else ("loss", "acc", "f1")
    for length in lengths:
        for name in names:
            assert 0 <= metrics[f"test/{name}@{length}"] < float("inf")
    assert not any(k.startswith(("test/baseline_acc@", "test/unigram_ppl@")) for k in metrics)
    # the validation score of the checkpoint the test read (one validation here: the last one's)
    assert metrics[f"best/{cfg.task.monitor}"] == pytest.approx(metrics[cfg.task.monitor])
    # the decoding state measured at each test length: never shrinking with it, and at the length the
    # run measured its own decode_state_bytes at, the same figure
    cost = written["cost"]
    states = [cost[f"decode_state_bytes@{length}"] for length in sorted(lengths)]
    assert all(isinstance(size, int) and size > 0 for size in states)
    assert states == sorted(states)
    if cost["decode_state_length"] in lengths:
        assert cost[f"decode_state_bytes@{cost['decode_state_length']}"] == cost["decode_state_bytes"]
    if trained is not None:  # at the length it was trained at, the test split itself
        assert metrics[f"test/acc@{trained}"] == pytest.approx(metrics["test/acc"])
        assert metrics[f"test/loss@{trained}"] == pytest.approx(metrics["test/loss"])


def test_state_at_lengths_grows_with_a_kv_cache_and_not_with_a_fixed_state():
    """decode_state_bytes@<length>: multihead's cache doubles with the length, linear's state does not."""
    from omegaconf import OmegaConf

    from attnlab.nn.causal_lm import CausalLM
    from attnlab.nn.spec import AttentionSpec
    from attnlab.nn.transformer import ModelConfig
    from attnlab.run.eval_lengths import state_at_lengths

    cfg = OmegaConf.create({"task": {"eval_lengths": [16, 32]}})
    model_cfg = ModelConfig(d_model=16, heads=2, decoder_layers=2, max_len=8, positional="rope")
    kv = state_at_lengths(cfg, CausalLM(11, model_cfg, AttentionSpec.from_config("multihead")))
    assert kv["decode_state_bytes@32"] == 2 * kv["decode_state_bytes@16"] > 0
    flat = state_at_lengths(cfg, CausalLM(11, model_cfg, AttentionSpec.from_config("linear")))
    assert flat["decode_state_bytes@32"] == flat["decode_state_bytes@16"] > 0
