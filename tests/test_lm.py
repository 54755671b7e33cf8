"""task=lm and task=mqar: the causal LM, the loss mask, the baselines, the knobs, end-to-end runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers import compose_run, run_cli

from attnlab.errors import CapabilityError, ConfigError
from attnlab.nn import AttentionSpec, CausalLM, ModelConfig
from attnlab.nn.state_size import decode_state_bytes
from attnlab.run.app import preflight, run_args
from attnlab.run.train import run
from attnlab.tasks.lm import LMTask, unigram_baselines

TINY_LM = ModelConfig(d_model=32, heads=2, decoder_layers=2, max_len=64, dropout=0.0)
MQAR_FAST = [
    "task=mqar",
    "logger=none",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "task.data.builtin.seq_len=32",
    "task.data.builtin.vocab_size=64",
    "task.data.builtin.n_train=64",
    "task.data.builtin.n_validation=16",
    "task.data.builtin.n_test=16",
    "task.data.batch_size=16",
    "model.max_len=32",
]


def tiny_task(vocab: int = 11) -> LMTask:
    model = {"d_model": 32, "heads": 2, "decoder_layers": 2, "max_len": 8, "dropout": 0.0}
    return LMTask(vocab_size=vocab, model=model, attention={"name": "multihead"}).eval()


def test_loss_counts_only_the_masked_in_positions():
    torch.manual_seed(0)
    task = tiny_task()
    ids = torch.randint(0, 11, (2, 5))
    targets = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[False, True, False, True, False], [True, False, False, False, False]])
    batch = {"ids": ids, "targets": targets, "loss_mask": mask, "padding_mask": torch.zeros_like(mask)}
    loss = task.compute_loss(batch)
    logits = task(batch)  # (B, N, V), the full forward
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits[mask], targets[mask]), atol=1e-6)
    other_targets = targets.masked_scatter(~mask, torch.randint(0, 11, (int((~mask).sum()),)))
    assert torch.equal(task.compute_loss(batch | {"targets": other_targets}), loss)  # ignored positions
    moved = mask.clone()
    moved[0, 2] = True
    assert not torch.allclose(task.compute_loss(batch | {"loss_mask": moved}), loss)
    none = task.compute_loss(batch | {"loss_mask": torch.zeros_like(mask)})
    assert none.item() == 0.0 and none.requires_grad


@pytest.mark.parametrize("token_shift", [False, True])
@pytest.mark.parametrize("attention", ["multihead", "linear", "local"])
def test_incremental_steps_match_the_full_forward(attention, token_shift):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY_LM, token_shift=token_shift)
    model = CausalLM(50, cfg, AttentionSpec.from_config(attention)).eval()
    ids = torch.randint(0, 50, (2, 12))
    full = model(ids)  # (B, N, V)
    state = model.start(2, device=ids.device, dtype=torch.float32)
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state)
        assert torch.allclose(logits, full[:, t], atol=1e-4), f"step {t}"


def test_token_shift_hands_each_block_the_previous_position_only():
    torch.manual_seed(0)
    model = CausalLM(50, dataclasses.replace(TINY_LM, token_shift=True), AttentionSpec.from_config("linear"))
    ids = torch.randint(0, 50, (1, 10))
    changed = ids.clone()
    changed[0, 6] = (ids[0, 6] + 1) % 50
    before, after = model.eval()(ids), model(changed)
    assert torch.equal(before[:, :6], after[:, :6])  # still causal
    assert not torch.allclose(before[:, 6:], after[:, 6:])
    assert len(model.shifts) == len(model.blocks)
    assert CausalLM(50, TINY_LM, AttentionSpec.from_config("linear")).shifts is None  # off by default


def test_tie_embeddings_shares_the_head_with_the_embedding_only_when_asked():
    spec = AttentionSpec.from_config("linear")
    tied = CausalLM(50, TINY_LM, spec)
    untied = CausalLM(50, dataclasses.replace(TINY_LM, tie_embeddings=False), spec)
    assert tied.lm_head.weight is tied.embed.weight
    assert untied.lm_head.weight is not untied.embed.weight
    assert sum(p.numel() for p in untied.parameters()) == sum(p.numel() for p in tied.parameters()) + 50 * 32


def test_decoder_only_model_has_no_cross_attention_and_rejects_non_causal_variants():
    model = CausalLM(50, TINY_LM, AttentionSpec.from_config("multihead"))
    assert all(block.cross_attention is None for block in model.blocks) and len(model.blocks) == 2
    with pytest.raises(CapabilityError, match="'lowrank' does not support causal"):
        CausalLM(50, TINY_LM, AttentionSpec.from_config("lowrank"))


def test_decode_state_grows_with_length_for_a_kv_cache_and_not_for_running_sums():
    def state(attention: str, n: int) -> int:
        model = CausalLM(50, TINY_LM, AttentionSpec.from_config(attention))
        measured = decode_state_bytes(model, n)
        assert measured["decode_state_kind"] == "incremental_state" and measured["decode_state_length"] == n
        return measured["decode_state_bytes"]

    # multihead: keys and values, 2 layers x 2 x N x 32 floats
    assert state("multihead", 16) == 2 * 2 * 16 * 32 * 4 and state("multihead", 48) == 3 * state(
        "multihead", 16
    )
    assert state("linear", 16) == state("linear", 48) > 0
    from attnlab.nn import Encoder

    encoder = Encoder(50, TINY_LM, AttentionSpec.from_config("lowrank"))
    recompute = decode_state_bytes(encoder, 40)
    assert (
        recompute["decode_state_kind"] == "recompute_kv"
        and recompute["decode_state_bytes"] == 2 * 2 * 40 * 32 * 4
    )


def test_unigram_baseline_is_add_one_smoothed_train_frequencies():
    train = [([0, 1, 1, 1, 2], [False, True, True, True, True])]  # targets: 1 1 1 2
    test = [([0, 1, 2], [False, True, True])]  # targets: 1 2
    vocab = 4
    p1, p2 = (3 + 1) / (4 + vocab), (1 + 1) / (4 + vocab)
    baselines = unigram_baselines(train, test, vocab)
    assert baselines["unigram_ppl"] == pytest.approx((p1 * p2) ** -0.5)
    assert baselines["baseline_acc"] == 0.5  # two distinct targets in train


def test_builtin_knobs_are_ordinary_typed_keys_with_the_generators_defaults(tmp_path):
    cfg = compose_run(tmp_path, ["task=mqar", "task.data.builtin.seq_len=32"])
    assert cfg.task.data.builtin.seq_len == 32 and cfg.task.data.builtin.num_kv_pairs is None
    # task=mqar's own default (conf/task/mqar.yaml); the generator's signature keeps zoology's 8192
    assert cfg.task.data.builtin.vocab_size == 128 == cfg.task.data.vocab_size
    listops = compose_run(tmp_path, ["task.data.builtin.max_length=300", "task.data.builtin.min_length=200"])
    assert listops.task.data.builtin.max_length == 300 and listops.task.data.builtin.max_depth == 3
    for task, key in (("translate", "max_words"), ("summarise", "max_sentences"), ("lm", "max_documents")):
        assert key in compose_run(tmp_path, [f"task={task}"]).task.data.builtin
    with pytest.raises(ConfigError, match=r"task.data.builtin.seq_lne' \(did you mean 'seq_len'\?\)"):
        preflight(["task=mqar", "task.data.builtin.seq_lne=32"], hydra_config=False)
    with pytest.raises(ConfigError, match="expected an integer"):
        preflight(["task=mqar", "task.data.builtin.seq_len=long"], hydra_config=False)


def test_task_mqar_alone_carries_the_settings_that_learn_mqar(tmp_path):
    """Issue 33: the task's defaults are the preset's; only the study's model size stays in experiment=mqar."""
    cfg = compose_run(tmp_path, ["task=mqar", "task.data.builtin.seq_len=1024"], fast=False)
    assert cfg.model.max_len == 1024  # follows the generated length: seq_len alone works
    assert cfg.model.token_shift and not cfg.model.tie_embeddings and cfg.model.dropout == 0.0
    assert cfg.task.module.lr == 3e-3 and cfg.trainer.max_steps == 400
    assert cfg.model.d_model == 64 and cfg.model.heads == 4  # the size is still model=tiny's
    assert compose_run(tmp_path, ["task=mqar", "model.max_len=300"], fast=False).model.max_len == 300
    assert compose_run(tmp_path, ["task=mqar", "trainer.max_steps=9"], fast=False).trainer.max_steps == 9
    small = compose_run(tmp_path, ["task=mqar", "model=small"], fast=False)
    assert small.model.d_model == 128 and small.model.token_shift  # a chosen size keeps its width
    preset = compose_run(tmp_path, ["experiment=mqar", "task.data.builtin.seq_len=256"], fast=False)
    assert preset.model.heads == 2 and preset.model.max_len == 256 and preset.trainer.max_steps == 400
    other = compose_run(tmp_path, ["task=lm"], fast=False)
    assert other.model.max_len == 512 and not other.model.token_shift  # only mqar's defaults moved


def test_a_null_max_len_is_the_generated_rows_length_for_model_and_data(tmp_path):
    """model.max_len=null: listops' longest expression (the classify study's setting), passkey's seq_len;
    the data's truncation (an interpolation of model.max_len) reads the same number."""
    listops = compose_run(tmp_path, ["model.max_len=null", "task.data.builtin.max_length=300"], fast=False)
    assert listops.model.max_len == listops.task.datamodule.max_len == 300
    passkey = compose_run(tmp_path, ["experiment=passkey", "task.data.builtin.seq_len=128"], fast=False)
    assert passkey.model.max_len == 128
    assert compose_run(tmp_path, ["task=classify"], fast=False).model.max_len == 512  # model=tiny's own


@pytest.mark.slow
def test_task_mqar_on_its_own_learns_mqar(tmp_path):
    """The command a new user reads first: `python -m attnlab task=mqar attention=multihead
    task.data.builtin.seq_len=128` reaches >= 0.9 test accuracy (README; ~2.5 min on one core)."""
    args = [
        "task=mqar",
        "attention=multihead",
        "task.data.builtin.seq_len=128",
        "threads=1",
        "logger=none",
        f"paths.run_dir={tmp_path / 'run'}",
        f"paths.data_cache={tmp_path / 'cache'}",
    ]
    done = run_cli(args, tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["metrics"]["test/acc"] >= 0.9, results["metrics"]


def test_non_causal_variant_for_lm_is_a_one_line_error(tmp_path):
    status, message = run_args(
        [
            "task=lm",
            "attention=lowrank",
            f"paths.run_dir={tmp_path}",
            f"paths.data_cache={tmp_path}",
            "logger=none",
        ]
    )
    assert status == 2 and "\n" not in message
    assert message.startswith("error: attention 'lowrank' does not support causal")
    assert "model.decoder.self_attention=" in message


def test_mqar_run_end_to_end(tmp_path):
    results = run(compose_run(tmp_path, MQAR_FAST))
    metrics = results["metrics"]
    assert results["task"] == "mqar" and results["primary_metric"] == "test/acc"
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/ppl"] > 1.0
    assert metrics["test/baseline_acc"] == pytest.approx(1 / 32)  # chance among the 32 values
    cost = results["cost"]
    assert cost["decode_state_length"] == 32 and cost["decode_state_bytes"] == 2 * 1 * 32 * 32 * 4
    saved = json.loads((Path(tmp_path) / "run" / "results.json").read_text())
    assert saved["cost"]["decode_state_bytes"] == cost["decode_state_bytes"]


def test_lm_run_on_a_text_file_end_to_end(tmp_path):
    docs = tmp_path / "docs.jsonl"
    lines = [
        {"body": f"document {i}: the quick brown fox jumps over the lazy dog. " * (1 + i % 4)}
        for i in range(30)
    ]
    docs.write_text("\n".join(json.dumps(line) for line in lines))
    results = run(
        compose_run(
            tmp_path,
            [
                "task=lm",
                "logger=none",
                "attention=linear",
                "task.data.source=files",
                f"task.data.train={docs}",
                "task.data.columns.text=body",
                "model.max_len=32",
                "trainer.max_steps=4",
                "trainer.val_check_interval=2",
            ],
        )
    )
    metrics = results["metrics"]
    assert results["primary_mode"] == "min" and metrics["test/ppl"] > 1.0 and 0 <= metrics["test/acc"] <= 1
    assert metrics["test/unigram_ppl"] > 1.0
    assert (
        results["cost"]["decode_state_length"] == 32
        and results["cost"]["decode_state_kind"] == "incremental_state"
    )


def test_lm_builtin_corpus_composes_packs_and_builds(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_run(tmp_path, ["task=lm", "task.data.builtin.max_documents=6"])
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["ids"].shape[1] == cfg.model.max_len and torch.equal(
        batch["targets"][:, :-1], batch["ids"][:, 1:]
    )
    assert not batch["padding_mask"][0].any()
