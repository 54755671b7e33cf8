"""Contract points of a whole stack: a per-layer pattern (a hybrid) with layer options, built as models.

The variant points (attnlab/check/checks.py) hold one kernel to the contract; these hold what the
layer and the stack add around kernels — the short convolution and its decoding cache, the output
gate, QK-norm, and a pattern mixing variants — on tiny models built the way runs build them:

    python -m attnlab.check --layers 'gated_deltanet*3,multihead' --short-conv 4 --output-gate

    from attnlab.check.stack import run_stack_checks
    run_stack_checks("gated_deltanet*3+multihead", LayerOptions(short_conv=4))   # [Result, ...]

Points (STACK_CHECKS): a causal LM of the pattern is causal (changing a later token changes no earlier
logit); its token-by-token decoding equals its parallel pass (when every layer decodes incrementally);
every parameter gets a finite gradient, the layer options' included; an encoder of the pattern
(bidirectional layers, where non-causal variants sit) gets finite gradients too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from attnlab.check import FAIL, PASS, SKIP, Result
from attnlab.check.checks import Skip
from attnlab.check.inputs import MAX_LEN  # the conformance suite's: every default fits it
from attnlab.nn.layer_options import LayerOptions
from attnlab.nn.pattern import LayerSpec, parse_pattern, pattern_label

VOCAB, LENGTH, WIDTH, HEADS, BATCH = 23, 12, 16, 2, 2
ATOL = 1e-4  # fp32, a whole stack (layer norms, MLPs, several kernels) computed two ways


def _pattern(layers: Sequence[LayerSpec]) -> list[dict[str, Any]]:
    """LayerSpecs back to pattern entries, so that the models are built through model.layers as runs are."""
    return [
        {"name": layer.name, **layer.attention.params}
        | {k: v for k, v in vars(layer.options).items() if k not in layer.attention.params}
        for layer in layers
    ]


def causal_lm(layers: Sequence[LayerSpec], options: LayerOptions, *, seed: int = 0):
    from attnlab.nn import AttentionSpec, CausalLM
    from attnlab.nn.transformer import ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=WIDTH, heads=HEADS, max_len=MAX_LEN, dropout=0.0, mlp_ratio=2, layers=_pattern(layers),
        short_conv=options.short_conv, output_gate=options.output_gate, qk_norm=options.qk_norm,
    )  # fmt: skip
    return CausalLM(VOCAB, cfg, AttentionSpec.from_config(layers[0].name)).eval()


def encoder(layers: Sequence[LayerSpec], options: LayerOptions, *, seed: int = 0):
    from attnlab.nn import AttentionSpec, Encoder
    from attnlab.nn.transformer import ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(
        d_model=WIDTH, heads=HEADS, max_len=MAX_LEN, dropout=0.0, mlp_ratio=2, layers=_pattern(layers),
        short_conv=options.short_conv, output_gate=options.output_gate, qk_norm=options.qk_norm,
    )  # fmt: skip
    return Encoder(VOCAB, cfg, AttentionSpec.from_config(layers[0].name))


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, LENGTH), generator=torch.Generator().manual_seed(seed))


def stack_causality(layers: Sequence[LayerSpec], options: LayerOptions) -> None:
    model = causal_lm(layers, options)
    ids = _ids()
    with torch.no_grad():
        before = model(ids)  # (B, N, V)
        for t in (1, LENGTH // 2, LENGTH - 1):
            changed = ids.clone()
            changed[:, t:] = (changed[:, t:] + 1) % VOCAB  # every token from t on
            after = model(changed)
            leak = (after[:, :t] - before[:, :t]).abs().max().item()
            assert leak <= 1e-5, f"changing tokens from position {t} on changes earlier logits by {leak:.2e}"


def stack_decoding(layers: Sequence[LayerSpec], options: LayerOptions) -> None:
    model = causal_lm(layers, options)
    if not model.incremental:
        raise Skip("a layer has no incremental state: generation recomputes the prefix")
    ids = _ids()
    with torch.no_grad():
        parallel = model(ids)  # (B, N, V)
        state = model.start(BATCH, device=ids.device, dtype=torch.float32)
        stepped = []
        for t in range(LENGTH):
            logits, state = model.step(ids[:, t], state)  # (B, V)
            stepped.append(logits)
    gap = (torch.stack(stepped, 1) - parallel).abs().max().item()
    assert gap <= ATOL, f"token-by-token decoding differs from the parallel pass by {gap:.2e} (> {ATOL})"


def _gradients(model: torch.nn.Module, run: Callable[[], torch.Tensor]) -> None:
    model.train()
    run().square().mean().backward()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        assert parameter.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        if ".wrap." in name:  # the layer options' own weights must learn
            assert parameter.grad.abs().sum() > 0, f"{name} (a layer option) gets a zero gradient"


def stack_gradients(layers: Sequence[LayerSpec], options: LayerOptions) -> None:
    model = causal_lm(layers, options)
    ids = _ids()
    _gradients(model, lambda: model(ids))


def stack_encoder_gradients(layers: Sequence[LayerSpec], options: LayerOptions) -> None:
    model = encoder(layers, options)
    ids = _ids()
    padding = torch.zeros(BATCH, LENGTH, dtype=torch.bool)
    padding[0, -3:] = True  # the first row ends in padding
    _gradients(model, lambda: model(ids, padding))


Point = Callable[[Sequence[LayerSpec], LayerOptions], None]
STACK_CHECKS: dict[str, tuple[str, Point, str]] = {  # point -> (what, check, the stack it needs)
    "stack-causality": ("a later token changes no earlier logit of a causal LM", stack_causality, "decoder_self"),
    "stack-decoding": ("token-by-token decoding equals the parallel pass", stack_decoding, "decoder_self"),
    "stack-gradients": ("finite gradients everywhere, layer options included", stack_gradients, "decoder_self"),
    "stack-encoder-gradients": ("an encoder of the pattern: finite gradients", stack_encoder_gradients, "encoder_self"),
}  # fmt: skip


def run_stack_checks(
    pattern: str | Sequence[Any], options: LayerOptions | None = None, points: Iterable[str] | None = None
) -> list[Result]:
    """Every stack point (or `points`) on `pattern` with `options`; a point whose role a layer cannot
    play (a non-causal variant in a causal LM) is a SKIP saying which layer."""
    from attnlab.attention import get_attention_class
    from attnlab.nn.spec import ROLES

    options = options or LayerOptions()
    layers = parse_pattern(pattern, options=options, key="--layers")
    label = pattern_label(layers, options=options)
    results = []
    for point in points or STACK_CHECKS:
        _, run, role = STACK_CHECKS[point]
        unable = [
            f"{layer.name} ({capability})"
            for layer in layers
            for capability in ROLES[role][0]
            if not getattr(get_attention_class(layer.name).capabilities, capability)
        ]
        if unable:
            results.append(Result(label, point, SKIP, f"{role} needs what {', '.join(unable)} lacks"))
            continue
        try:
            run(layers, options)
        except Skip as skip:
            results.append(Result(label, point, SKIP, str(skip)))
        except AssertionError as failure:
            results.append(Result(label, point, FAIL, " ".join(str(failure).split())))
        except Exception as error:
            results.append(
                Result(label, point, FAIL, f"raised {type(error).__name__}: {' '.join(str(error).split())}")
            )
        else:
            results.append(Result(label, point, PASS))
    return results
