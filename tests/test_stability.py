"""Numerical stability: linear, performer and nystrom train under bf16/fp16 autocast without NaN/Inf,
and a NaN/Inf loss or gradient stops the run naming the step and the variant, keeping last.ckpt good."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attnlab.nn import AttentionSpec, ModelConfig
from attnlab.run.app import EXIT_USER_ERROR, run_args
from attnlab.tasks.classify import Classifier

VARIANTS = ["linear", "performer", "nystrom"]


def cpu_autocast_supports(dtype: torch.dtype) -> bool:
    try:
        with torch.autocast("cpu", dtype=dtype):
            (torch.ones(2, 2) @ torch.ones(2, 2)).sum()
        return True
    except (RuntimeError, AssertionError):
        return False


def train_under_autocast(
    variant: str, dtype: torch.dtype, steps: int, n: int = 96, layers: int = 2
) -> list[float]:
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, heads=2, encoder_layers=layers, max_len=n, dropout=0.1)
    model = Classifier(
        vocab_size=50, num_classes=4, cfg=cfg, spec=AttentionSpec.from_config(variant), pooling="mean"
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        lengths = torch.randint(4, n, (8,), generator=g)
        ids = torch.randint(1, 50, (8, n), generator=g)
        padding = torch.arange(n)[None, :] >= lengths[:, None]  # (B, N) True = padding
        labels = ids[:, 0] % 4  # learnable from the first token
        with torch.autocast("cpu", dtype=dtype):
            logits = model(ids, padding)
            loss = F.cross_entropy(logits.float(), labels)
        assert torch.isfinite(loss), f"{variant} {dtype}: loss {loss} at step {step}"
        optimiser.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), (
                f"{variant} {dtype}: gradient of {name} at step {step}"
            )
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("variant", VARIANTS)
def test_trains_briefly_under_bf16_autocast_without_nan(variant):
    losses = train_under_autocast(variant, torch.bfloat16, steps=60, n=32, layers=1)
    assert all(map(torch.isfinite, torch.tensor(losses)))


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_trains_300_steps_under_bf16_autocast_without_nan(variant):
    losses = train_under_autocast(variant, torch.bfloat16, steps=300)
    assert sum(losses[-30:]) / 30 < sum(losses[:30]) / 30  # it learns, too


# Known issue: under autocast, linear attention's `.float()` accumulation is cast back to fp16 by the
# autocast matmul, and the running sums overflow (NaN at step ~270 here).
@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_trains_300_steps_under_fp16_autocast_without_nan(variant):
    if not cpu_autocast_supports(torch.float16):
        pytest.skip("no fp16 autocast on this CPU build (the kernel-level fp16 test covers fp16)")
    train_under_autocast(variant, torch.float16, steps=300)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_with_large_logits_stay_finite(variant, dtype):
    """fp16/bf16 tensors straight into the kernel, with large q/k (softmax-kernel overflow territory)."""
    from attnlab.attention import build_attention

    attention = build_attention(variant, head_dim=16, heads=2, max_len=256)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 200, 16, generator=g) * s for s in (8.0, 8.0, 1.0))
    mask = torch.zeros(2, 200, dtype=torch.bool)
    mask[1, 150:] = True
    out = attention(q.to(dtype), k.to(dtype), v.to(dtype), key_padding_mask=mask)
    reference = attention(q, k, v, key_padding_mask=mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max() + 0.05


# ---- the NaN guard in a real run -------------------------------------------------------------------
RUN = [
    "model.d_model=32",
    "model.heads=2",
    "model.encoder_layers=1",
    "model.max_len=128",
    "callbacks.progress=null",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "trainer.max_steps=12",
    "trainer.val_check_interval=4",
    "task.data.batch_size=8",
    "task.data.limit.train=64",
    "task.data.limit.validation=16",
    "task.data.limit.test=16",
]


def test_nan_gradient_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    code, message = run_args(
        [
            f"paths.run_dir={run_dir}",
            f"paths.data_cache={tmp_path / 'cache'}",
            *RUN,
            "attention=linear",
            "callbacks.finite.inject_nan_at_step=7",
        ]
    )
    assert code == EXIT_USER_ERROR and "\n" not in message
    assert "non-finite gradient" in message and "at step 7" in message and "attention 'linear'" in message
    assert "last good checkpoint kept" in message
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 4
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())
    assert not (run_dir / "results.json").exists()


def test_nan_loss_stops_the_run_naming_step_and_variant(tmp_path, monkeypatch):
    from attnlab.tasks.classify import ClassifyTask

    original = ClassifyTask.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("inf") if self.global_step == 2 else loss

    monkeypatch.setattr(ClassifyTask, "training_step", poisoned)
    code, message = run_args(
        [
            f"paths.run_dir={tmp_path / 'run'}",
            f"paths.data_cache={tmp_path / 'cache'}",
            *RUN,
            "attention=performer",
        ]
    )
    assert code == EXIT_USER_ERROR and "non-finite training loss" in message
    assert (
        "at step 3" in message
        and "attention 'performer'" in message
        and "no checkpoint was written yet" in message
    )
