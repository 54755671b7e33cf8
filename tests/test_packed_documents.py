"""Packed documents with boundaries: segment ids, the layer keeping documents apart (natively or by
unpacking them), the `packed-documents` conformance point failing a kernel that leaks, and task=lm
training with boundaries honoured."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from helpers import compose_run

from attnlab.attention import Attention, Capabilities, available_attentions, registry
from attnlab.attention.base import allowed_keys, masked_softmax
from attnlab.check import evaluate
from attnlab.nn import AttentionSpec, CausalLM, ModelConfig
from attnlab.nn.segments import Unpacked, segment_positions, segment_starts
from attnlab.run.train import run
from attnlab.tasks.lm import LMTask, document_segments, one_document_per_row

EOS = 2


@pytest.fixture
def temporary_variants():
    """Variants registered by a test are forgotten afterwards."""
    available_attentions()
    saved = dict(registry._registry)
    yield
    registry._registry.clear()
    registry._registry.update(saved)


class BoundaryLeakingAttention(Attention):
    """Declares segments but ignores them: causal softmax over the whole packed row."""

    complexity = "O(N²·d)"
    capabilities = Capabilities(causal=True, key_padding_mask=True, segments=True)

    def forward(self, q, k, v, *, causal=False, key_padding_mask=None, segment_ids=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, N, N)
        allowed = allowed_keys(  # the bug: segment_ids are not passed on
            q.shape[-2], k.shape[-2], causal=causal, key_padding_mask=key_padding_mask, device=q.device
        )
        return masked_softmax(scores, allowed) @ v


class NoMasksAttention(Attention):
    """Causal softmax with neither segments nor key padding masks: cannot be given packed rows."""

    complexity = "O(N²·d)"
    capabilities = Capabilities(causal=True)

    def forward(self, q, k, v, *, causal=False, key_padding_mask=None):
        self.check_request(q, k, causal=causal, key_padding_mask=key_padding_mask)
        allowed = allowed_keys(
            q.shape[-2], k.shape[-2], causal=causal, key_padding_mask=None, device=q.device
        )
        return masked_softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), allowed) @ v


def test_segments_positions_and_unpacking():
    ids = torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, 4], [EOS, 3, 3, 3, 3, 3, 3, 3]])
    segments = document_segments(ids, EOS)
    assert segments.tolist() == [
        [0, 0, 1, 1, 1, 1, 2, 2],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ]  # an EOS opens a document
    assert segment_positions(segments).tolist() == [[0, 1, 0, 1, 2, 3, 0, 1], list(range(8))]
    assert segment_starts(segments)[0].tolist() == [True, False, True, False, False, False, True, False]
    plan = Unpacked.of(segments)
    assert (plan.documents, plan.length) == (4, 8)
    x = torch.randn(2, 3, 8, 5)  # (B, H, N, E)
    docs = plan.unpack(x)  # (D, H, L, E)
    assert torch.equal(docs[1, :, :4], x[0, :, 2:6]) and torch.equal(docs[3], x[1])
    assert plan.padding[1].tolist() == [False] * 4 + [True] * 4
    assert torch.equal(plan.pack(docs, x.shape), x)


def test_packed_documents_check_fails_a_kernel_that_leaks_across_the_boundary(temporary_variants):
    registry.register_attention("boundary_leak")(BoundaryLeakingAttention)
    result = evaluate("boundary_leak", "packed-documents")
    assert result.status == "FAIL" and "differs from it run alone" in result.detail, result
    registry.register_attention("no_masks")(NoMasksAttention)
    skipped = evaluate("no_masks", "packed-documents")
    assert skipped.status == "SKIP" and "one document per row" in skipped.detail
    assert evaluate("multihead", "packed-documents").status == "PASS"


@pytest.mark.parametrize(
    ("attention", "positional", "token_shift", "short_conv"),
    [
        ("multihead", "learned", True, 0),
        ("gla", "rope", False, 0),
        ("local", "alibi", False, 0),
        ("linear", "none", True, 0),
        ("multihead", "rope", False, 4),  # the layers' short convolution restarts at each document too
        ("gated_deltanet", "none", False, 3),
    ],
)
def test_a_packed_lm_batch_models_each_document_as_if_alone(attention, positional, token_shift, short_conv):
    """The same loss from the packed batch with segments as from one document per row: positions,
    token shift, short convolutions and every layer restart at each document."""
    torch.manual_seed(0)
    model = {"d_model": 32, "heads": 2, "decoder_layers": 2, "max_len": 16, "dropout": 0.0}
    task = LMTask(
        vocab_size=12,
        model=model | {"positional": positional, "token_shift": token_shift, "short_conv": short_conv},
        attention={"name": attention},
    ).eval()
    ids = torch.randint(3, 12, (2, 13))
    ids[0, [3, 9]] = EOS
    ids[1, 5] = EOS
    batch = {
        "ids": ids[:, :-1],
        "targets": ids[:, 1:],
        "loss_mask": torch.ones(2, 12, dtype=torch.bool),
        "padding_mask": torch.zeros(2, 12, dtype=torch.bool),
    }
    batch["segments"] = document_segments(batch["ids"], EOS)
    apart = task.compute_loss(batch)
    alone = task.compute_loss(one_document_per_row(batch))
    torch.testing.assert_close(apart, alone, atol=1e-5, rtol=1e-5)
    leaking = task.compute_loss({k: v for k, v in batch.items() if k != "segments"})
    assert not torch.allclose(apart, leaking, atol=1e-4), "segments must change what the packed rows see"


def test_a_model_that_cannot_take_segments_gets_one_document_per_row(temporary_variants, caplog):
    registry.register_attention("no_masks")(NoMasksAttention)
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, heads=2, decoder_layers=1, max_len=16, dropout=0.0)
    assert not CausalLM(12, cfg, AttentionSpec("no_masks")).takes_segments
    task = LMTask(
        vocab_size=12, model=vars(cfg) | {"encoder": {}, "decoder": {}}, attention={"name": "no_masks"}
    )
    ids = torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, 4, 4]])
    batch = {"ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": torch.ones(1, 8, dtype=torch.bool)}
    batch |= {
        "padding_mask": torch.zeros(1, 8, dtype=torch.bool),
        "segments": document_segments(ids[:, :-1], EOS),
    }
    with caplog.at_level(logging.WARNING):
        loss = task.compute_loss(batch)
    torch.testing.assert_close(loss, task.compute_loss(one_document_per_row(batch)))
    assert sum("one document per batch row" in r.message for r in caplog.records) == 1


def test_lm_on_the_shipped_corpus_trains_with_boundaries(tmp_path):
    from hydra.utils import instantiate

    overrides = ["task=lm", "logger=none", "attention=gla", "task.data.builtin.max_documents=8"]
    overrides += [
        "model.max_len=32",
        "model.positional=rope",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
    ]
    cfg = compose_run(tmp_path, overrides)
    assert cfg.task.data.packing.boundaries is True
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    eos = datamodule.tokenizer.eos_id
    assert all(torch.equal(b["segments"], document_segments(b["ids"], eos)) for b in batches)
    assert any(int(b["segments"].max()) >= 1 for b in batches), "some window should hold two documents"
    results = run(cfg)
    assert math.isfinite(results["metrics"]["test/ppl"]) and results["metrics"]["test/ppl"] > 1.0
