"""How much memory a run's model will take, from its config alone, before anything is built.

A config such as `model.encoder_layers=1000`, `model.mlp_ratio=100000` or `attention=based
attention.feature_dim=100000` is accepted by every type and range, and then allocates until the
machine swaps. `check_fits(cfg)` refuses it first, with the estimate, the memory available and what
to lower. The estimate counts only what training must hold for a batch at model.max_len, the longest
the model accepts, or at the generated length where that is shorter (task.data.builtin.seq_len: a
model sized to be tested at 4K but trained at 128): weights, gradients and Adam's two moments in fp32;
the activations the batch saves for the backward pass; the attention kernel's own working memory; the
logits; nothing of the framework's own overheads, so it errs low: configs near the limit are left to try. Padded tasks
(classify, translate, summarise) whose data is much shorter than model.max_len need less: there the
advice to lower model.max_len is the fix (it costs nothing but positions the data never reaches).

    parameters   embeddings (vocab × d) + learned positions (max_len × d) + per block:
                 4·d² (q, k, v, out) [+ 4·d² cross attention] + 2·mlp_ratio·d² (MLP) + variant's own
    activations  per block: B·N·d·(10 + 2·mlp_ratio) floats (norms, q, k, v, output, residual, the MLP's
                 hidden layer twice) + the variant's `Attention.working_memory` (based's Taylor
                 features, performer's random features, full's N² scores); + B·N·V logits
    decoding     beam search holds beam × batch hypotheses, each with a key/value cache of
                 max_len positions per decoder layer, and their beam × V next-token scores
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

FLOAT_BYTES = 4  # weights, optimiser moments and (as a floor under mixed precision: 2) activations
OPTIMISER_COPIES = 4  # weights, gradients, Adam's first and second moments
BLOCK_ACTIVATIONS = 10  # d-sized tensors a pre-norm block saves besides the MLP's hidden layer
DEFAULT_VOCAB = 256  # byte tokenizer: the smallest vocabulary a task builds
# The built-in tasks' stacks; a plugin task not listed is estimated as an encoder (its smallest).
STACKS = {
    "classify": ("encoder",),
    "lm": ("decoder",),
    "mqar": ("decoder",),
    "translate": ("encoder", "decoder+cross"),
    "summarise": ("encoder", "decoder+cross"),
}
GB = 1024**3
# The memory a run may take, in GB, when less than the machine has (a machine shared with others).
MEMORY_LIMIT_VARIABLE = "ATTNLAB_MEMORY_GB"
# Hyperparameters that size a kernel's working memory, named in the advice (the variants' hooks
# `Attention.working_memory` do the counting).
ATTENTION_SIZES = ("feature_dim", "features", "landmarks")


@dataclass(frozen=True)
class Estimate:
    parameters: int  # count
    weights_bytes: int  # weights + gradients + optimiser state
    activation_bytes: int  # one training batch's saved activations and the kernels' working memory
    decode_bytes: int  # beam search's hypotheses (generation tasks), else 0
    kernel_bytes: int  # of activation_bytes: the attention kernels' own working memory

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + max(self.activation_bytes, self.decode_bytes)

    def describe(self) -> str:
        parts = [
            f"{_count(self.parameters)} parameters ({self.weights_bytes / GB:,.1f} GB with gradients and Adam)",
            f"activations {self.activation_bytes / GB:,.1f} GB",
        ]
        if self.decode_bytes:
            parts.append(f"beam search {self.decode_bytes / GB:,.1f} GB")
        return ", ".join(parts)


def _count(n: int) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def estimate(cfg: Any) -> Estimate:
    """The floor of a run's memory (see the module docstring) from its composed app config."""
    from omegaconf import OmegaConf

    from attnlab.attention import get_attention_class
    from attnlab.attention.registry import validate_hyperparameters

    model, data = cfg.model, cfg.task.get("data") or {}
    d, heads, ratio, max_len = int(model.d_model), int(model.heads), int(model.mlp_ratio), int(model.max_len)
    batch = int(data.get("batch_size") or 1)
    vocab = _vocab(data)
    attention = OmegaConf.to_container(cfg.attention, resolve=True)
    name = attention.pop("name")
    cls, attention = get_attention_class(name), validate_hyperparameters(name, attention)
    length, _ = training_length(cfg)  # what a training batch holds; max_len: what the model accepts
    shape = {"batch": batch, "heads": heads, "length": length, "head_dim": d // heads}
    kernel_params = cls.parameter_count(attention, heads=heads, head_dim=d // heads)
    kernel_memory = cls.working_memory(attention, **shape)
    stacks = STACKS.get(str(cfg.task.get("name")), ("encoder",))
    parameters = activations = kernels = 0
    for stack in stacks:
        layers = int(model.encoder_layers if stack == "encoder" else model.get("decoder_layers", 1))
        attentions = 2 if stack.endswith("+cross") else 1
        block = attentions * (4 * d * d + kernel_params) + 2 * ratio * d * d
        positions = max_len * d if model.get("positional") == "learned" else 0  # sinusoidal: a buffer
        parameters += vocab * d + positions + layers * block
        kernels += layers * attentions * kernel_memory
        activations += layers * batch * length * d * (BLOCK_ACTIVATIONS + 2 * ratio)
    if stacks[-1] != "encoder":
        activations += batch * length * vocab  # the logits
    decode = 0
    decoding = cfg.task.get("decode")
    if decoding is not None and "decoder+cross" in stacks:
        rows = batch * int(decoding.get("beam") or 1)  # hypotheses stepping together
        cache = 2 * max_len * d * int(model.get("decoder_layers", 1))  # keys and values of every layer
        decode = rows * (cache + 2 * vocab) * FLOAT_BYTES
    return Estimate(
        parameters=parameters,
        weights_bytes=parameters * FLOAT_BYTES * OPTIMISER_COPIES,
        activation_bytes=(activations + kernels) * FLOAT_BYTES,
        decode_bytes=decode,
        kernel_bytes=kernels * FLOAT_BYTES,
    )


def training_length(cfg: Any) -> tuple[int, str]:
    """(length, its key): the longest sequence a training batch holds. Generated data of a fixed length
    shorter than the model accepts (task.data.builtin.seq_len below model.max_len: train short, test
    long) holds that length; otherwise model.max_len, the longest the model accepts."""
    max_len = int(cfg.model.max_len)
    builtin = (cfg.task.get("data") or {}).get("builtin") or {}
    seq_len = builtin.get("seq_len") if hasattr(builtin, "get") else None
    if isinstance(seq_len, int) and not isinstance(seq_len, bool) and 0 < seq_len < max_len:
        return seq_len, "task.data.builtin.seq_len"
    return max_len, "model.max_len"


def _vocab(data: Any) -> int:
    """Pre-tokenized rows (columns.ids: task=mqar) have exactly task.data.vocab_size ids; a tokenizer's
    vocabulary is not known before it is trained, so the floor is the byte tokenizer's."""
    columns = data.get("columns") or {}
    size = data.get("vocab_size")
    if columns.get("ids") is not None and isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    return DEFAULT_VOCAB


def available_memory(accelerator: str = "cpu") -> tuple[int, str]:
    """(bytes, where) the run may still take: ATTNLAB_MEMORY_GB when set, the GPU's free memory when it
    trains on CUDA, else the machine's MemAvailable (Linux) or physical memory (elsewhere)."""
    if accelerator in ("gpu", "cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info()
            return int(free), "free on the GPU"
    limit = os.environ.get(MEMORY_LIMIT_VARIABLE, "").strip()
    if limit:
        try:
            return int(float(limit) * GB), f"allowed by {MEMORY_LIMIT_VARIABLE}={limit}"
        except ValueError:
            from attnlab.errors import ConfigError

            raise ConfigError(
                f"{MEMORY_LIMIT_VARIABLE}={limit} must be a number of GB, e.g. {MEMORY_LIMIT_VARIABLE}=8"
            ) from None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available on this machine"
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "of memory on this machine"
    except (ValueError, OSError, AttributeError):
        return 0, ""


def check_fits(cfg: Any) -> Estimate:
    """Raise ConfigError when the estimate's floor exceeds the memory available; return the estimate."""
    from attnlab.errors import ConfigError

    found = estimate(cfg)
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    available, where = available_memory(accelerator)
    if available and found.total_bytes > available:
        raise ConfigError(
            f"this model needs at least {found.total_bytes / GB:,.1f} GB ({found.describe()}) but "
            f"{available / GB:,.1f} GB is {where}; lower {_largest(cfg, found)}"
        )
    return found


def _largest(cfg: Any, found: Estimate) -> str:
    """What to lower, largest contribution first."""
    model = cfg.model
    if found.decode_bytes > found.activation_bytes and found.decode_bytes > found.weights_bytes:
        return "task.decode.beam or task.data.batch_size"
    keys = []
    if model.mlp_ratio > 8:
        keys.append(f"model.mlp_ratio={model.mlp_ratio}")
    if model.d_model > 4096:
        keys.append(f"model.d_model={model.d_model}")
    for key in ("encoder_layers", "decoder_layers"):
        if int(model.get(key) or 0) > 48:
            keys.append(f"model.{key}={model.get(key)}")
    if 2 * found.kernel_bytes > found.activation_bytes:
        sizes = [f"attention.{k}={v}" for k, v in cfg.attention.items() if k in ATTENTION_SIZES]
        keys.append(" or ".join(sizes) if sizes else f"attention={cfg.attention.name} (its working memory)")
    if found.activation_bytes > found.weights_bytes:
        keys += ["task.data.batch_size", training_length(cfg)[1]]
    return ", ".join(keys or ["model.d_model", "the layer counts", "task.data.batch_size"])
