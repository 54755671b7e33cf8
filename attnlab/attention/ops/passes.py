"""The elementwise passes of chunked causal linear attention, each one pass over memory on CPU.

Between its matrix products, the causal kernel (linear_kernels.py) runs about twenty elementwise
passes over (N, d)-sized tensors: the feature map, the causal mask, the normaliser, and their
gradients. In eager PyTorch many take two or three passes (`tril_` then `sum`; `vecdot`, `+=`, `/=`;
`clamp` then `mul_`), each a full read and write of the tensor (timings: docs/measurements.md). linear_passes.c does each
in one pass for contiguous float32 CPU tensors; everything else (float64, GPU, non-contiguous
inputs, tensor subclasses such as fake tensors, a call autograd records, or no C compiler) takes
the PyTorch version beside it, which computes the same thing.

The C file is compiled on first use with the system's C compiler (`cc`, or $CC; -O3 -march=native)
into ~/.cache/attnlab (or $XDG_CACHE_HOME/attnlab), keyed by source, compiler, flags and CPU, and
loaded with ctypes. A failed build warns once and leaves the PyTorch passes in place.
ATTNLAB_FUSED_CPU=0 turns the C passes off.

The chunked forms of the recurrent family (attention/ops) use the scan too, and Based's Taylor
feature map, the delta rule's SiLU + L2 normalisation, the heads' RMS normalisation and gla's log
decay gate, each with its backward, are here for the same reason (the end of this file).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

SOURCE = Path(__file__).with_name("passes.c")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC")
# x86: let the compiler's own vector loops (exp, the elementwise passes) use all 512 bits where the CPU
# has AVX-512 (GCC and clang default to 256 there); Based's chunk loops ran ~8% faster with it.
X86_FLAGS = ("-mprefer-vector-width=512",)
# Threads through torch's own OpenMP runtime (already loaded: the same libgomp/libomp serves both);
# where torch does not use OpenMP, or the compiler has none (Apple clang), one thread.
PARALLEL, SERIAL = ("-fopenmp",), ("-fopenmp-simd",)
FEATURE_MAPS = {None: 0, "elu": 1, "relu": 2}  # linear_passes.c's feature_map codes
_P, _I = ctypes.c_void_p, ctypes.c_int64
SIGNATURES = {
    "elu_plus_one": [_P, _P, _I],
    "tril_rowsum": [_P, _P, _I, _I],
    "normalize": [_P, _P, _P, _P, _P, ctypes.c_float, _I, _I, _I, _I],
    "grad_prologue": [_P, _P, _P, _P, _P, _I, _I],
    "add_rows_tril": [_P, _P, _I, _I],
    "feature_grad": [_P, _P, _P, _P, ctypes.c_int, _I, _I, _I],
    "inclusive_scan": [_P, _I, _I, _I, ctypes.c_int],
    "taylor_features": [_P, _P, _I, _I],
    "taylor_features_backward": [_P, _P, _P, _I, _I],
    "unit_norm": [_P, _P, _P, ctypes.c_int, ctypes.c_float, _I, _I],
    "unit_norm_backward": [_P, _P, _P, _P, _P, ctypes.c_int, _I, _I],
    "rms_norm": [_P, _P, _P, ctypes.c_float, _I, _I],
    "rms_norm_backward": [_P, _P, _P, _P, _I, _I],
    "log_decay_gate": [_P, _P, ctypes.c_float, ctypes.c_float, _I],
    "log_decay_gate_backward": [_P, _P, _P, ctypes.c_float, ctypes.c_float, _I],
    "decay_matrix": [_P, _P, ctypes.c_float, _I, _I],
    "flush_small": [_P, ctypes.c_float, _I],
    "delta_scores_backward": [_P] * 8 + [_I, _I],
    "delta_rule_forward_loop": [_P, _P, _P, _P, ctypes.c_float, ctypes.c_float, _P, _P, _P, _P] + [_I] * 5,
    "delta_rule_backward_loop": [_P] * 5
    + [_I, _I, _P, _P, ctypes.c_float, ctypes.c_float]
    + [_P] * 10
    + [_I] * 5,
    "delta_rule_rhs": [_P] * 5 + [ctypes.c_float, _I, _I, _I, _I],
    "delta_rule_grad_epilogue": [_P] * 8 + [_I, _I, _I],
    "parallel_threads": [],
    "window_attention_forward": [_P] * 6 + [ctypes.c_float, _P] + [_I] * 10,
    "window_attention_backward": [_P] * 10 + [ctypes.c_float, _P] + [_I] * 10,
    "based_scratch_floats": [_I] * 3,
    "based_forward_loop": [_P] * 4 + [ctypes.c_float] + [_P] * 4 + [_I] * 5,
    "based_backward_loop": [_P] * 12 + [_I] * 5,
    "gla_chunk_factors": [_P] * 6 + [ctypes.c_float, ctypes.c_float, _I, _I, _I],
    "gla_chunk_grad_epilogue": [_P] * 11 + [ctypes.c_float, ctypes.c_float, _I, _I, _I],
}
RESULTS = {"parallel_threads": ctypes.c_int, "based_scratch_floats": _I}  # the rest return nothing


def _cpu_signature() -> str:
    """What -march=native compiles for: the CPU's model and feature flags where Linux tells them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    keys = ("model name", "flags", "Features", "CPU part")
    return platform.machine() + "".join(sorted({line for line in lines if line.startswith(keys)}))


def _flag_sets() -> list[tuple[str, ...]]:
    flags = (*FLAGS, *X86_FLAGS) if platform.machine().lower() in ("x86_64", "amd64") else FLAGS
    serial = (*flags, *SERIAL)
    if "parallel backend: OpenMP" in torch.__config__.parallel_info():
        return [(*flags, *PARALLEL), serial]
    return [serial]


def _build(compiler: str, flags: tuple[str, ...], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run(
            [compiler, *flags, "-o", str(built), str(SOURCE)], check=True, capture_output=True, text=True
        )
        os.replace(built, target)  # atomic: processes building at once all end with a whole file


def _load(compiler: str, flags: tuple[str, ...]) -> ctypes.CDLL:
    """The library built with `flags`, from the cache (built there first if need be)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *flags, version, _cpu_signature()]).encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnlab"
    target = cache / f"linear_passes-{key.hexdigest()[:16]}.so"
    if not target.exists():
        _build(compiler, flags, target)
    return ctypes.CDLL(str(target))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled passes, or None (turned off, or no compiler / a failed build: warned once)."""
    if os.environ.get("ATTNLAB_FUSED_CPU", "1") == "0":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    error: BaseException = OSError(f"no C compiler found ({os.environ.get('CC', 'cc')!r} is not on PATH)")
    lib = None
    for flags in _flag_sets() if compiler else []:
        try:
            lib = _load(compiler, flags)
            break
        except (OSError, subprocess.CalledProcessError) as exc:
            error = exc
    if lib is None:
        detail = getattr(error, "stderr", None) or error
        warnings.warn(
            f"attnlab: could not build the fused CPU passes of causal linear attention ({detail}); "
            "running their PyTorch versions instead (slower on CPU). ATTNLAB_FUSED_CPU=0 skips the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    for name, argtypes in SIGNATURES.items():
        getattr(lib, name).argtypes = argtypes
        getattr(lib, name).restype = RESULTS.get(name)
    return lib


def _fused(*tensors: Tensor | None) -> ctypes.CDLL | None:
    """The library if every tensor is a plain contiguous float32 CPU tensor that autograd is not
    recording (the C passes are invisible to it), else None."""
    recording = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        if type(t) is not torch.Tensor or t.device.type != "cpu" or t.dtype != torch.float32:
            return None
        if not t.is_contiguous() or (recording and t.requires_grad):
            return None
    return library()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _scan_steps(n: int) -> list[tuple[int, int, int]]:
    """(target, source, stride) triples of an in-place inclusive scan of length n (Blelloch's
    up-sweep, then its down-sweep for the inclusive result): x[target::stride] += x[source::stride],
    as many elements on each side. Within one step targets and sources never overlap."""
    steps, span = [], 1
    while span < n:  # up-sweep: each element at 2s-1 (mod 2s) takes in its left sibling's total
        steps.append((2 * span - 1, span - 1, 2 * span))
        span *= 2
    span //= 2
    while span >= 1:  # down-sweep: the totals flow right to the elements still missing them
        steps.append((3 * span - 1, 2 * span - 1, 2 * span))
        span //= 2
    return steps


def inclusive_scan_(x: Tensor, *, reverse: bool = False) -> Tensor:
    """In-place prefix sums of x (G, n, E) along dim 1: x[:, i] <- Σ_{j<=i} x[:, j] (reverse: j >= i).

    In C: one walk down the sequence per block of columns. In PyTorch: 2·log2(n) strided in-place
    adds, no allocation (torch.cumsum along a middle dimension is several times slower on CPU and
    allocates its result). Each output sums only its own side of the sequence.
    """
    H, n = x.shape[:2]
    lib = _fused(x)
    if lib is not None:
        lib.inclusive_scan(_ptr(x), H, n, x.shape[2:].numel(), int(reverse))
        return x
    for target, source, stride in _scan_steps(n):
        count = len(range(target, n, stride))
        if count == 0:
            continue
        span = stride * (count - 1) + 1
        if reverse:  # the same pairs on the mirrored index n - 1 - i
            target, source = n - target - span, n - source - span
        x[:, target : target + span : stride] += x[:, source : source + span : stride]
    return x


def elu_plus_one(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1 > 0, as a fresh contiguous tensor."""
    own = x.contiguous()  # a copy (ours to overwrite) when x is a strided view
    lib = _fused(own)
    if lib is None:
        return F.elu_(own).add_(1.0) if own is not x else F.elu(x).add_(1.0)
    phi = own if own is not x else torch.empty_like(x)
    lib.elu_plus_one(_ptr(own), _ptr(phi), x.numel())  # in place on our copy
    return phi


def tril_rowsum_(scores: Tensor) -> Tensor:
    """scores (G, C, C) in place: zero above the diagonal; returns the row sums (G, C, 1)."""
    G, C = scores.shape[:2]
    lib = _fused(scores)
    if lib is None:
        return scores.tril_().sum(dim=-1, keepdim=True)
    rowsum = scores.new_empty(G, C, 1)
    lib.tril_rowsum(_ptr(scores), _ptr(rowsum), G, C)
    return rowsum


def normalize_(out: Tensor, q: Tensor, zk: Tensor, rowsum: Tensor, eps: float) -> Tensor:
    """den = q · zk + rowsum + eps, then out /= den in place; returns den (G, C, 1).
    out (G, C, Dv), q (G, C, D), zk (G, D, 1), rowsum (G, C, 1)."""
    (G, C, D), Dv = q.shape, out.shape[-1]
    lib = _fused(out, q, zk, rowsum)
    if lib is None:
        den = torch.linalg.vecdot(q, zk.view(G, 1, D)).unsqueeze_(-1)  # (G, C, 1); bmm: 2x slower
        den += rowsum
        den += eps
        out /= den
        return den
    den = q.new_empty(G, C, 1)
    lib.normalize(_ptr(out), _ptr(den), _ptr(q), _ptr(zk), _ptr(rowsum), eps, G, C, D, Dv)
    return den


def grad_prologue(grad: Tensor, den: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
    """(grad / den, -Σ (grad / den)·out over the last dim): the gradients w.r.t. the numerator
    (G, C, Dv) and the denominator (G, C, 1) of out = numerator / den."""
    lib = _fused(grad, den, out)
    if lib is None:
        grad_num = grad / den
        return grad_num, torch.linalg.vecdot(grad_num, out).neg_().unsqueeze(-1)
    grad_num, grad_den = torch.empty_like(out), den.new_empty(den.shape)
    lib.grad_prologue(
        _ptr(grad), _ptr(den), _ptr(out), _ptr(grad_num), _ptr(grad_den), den.numel(), out.shape[-1]
    )
    return grad_num, grad_den


def add_rows_tril_(dscores: Tensor, grad_den: Tensor) -> Tensor:
    """dscores (G, C, C) in place: + grad_den (G, C, 1) row-wise, then zero above the diagonal."""
    G, C = dscores.shape[:2]
    lib = _fused(dscores, grad_den)
    if lib is None:
        dscores += grad_den
        return dscores.tril_()
    lib.add_rows_tril(_ptr(dscores), _ptr(grad_den), G, C)
    return dscores


def feature_grad_(
    x: Tensor,
    scale: Tensor | None,
    vec: Tensor | None,
    phi: Tensor,
    feature_map: str | None,
    spare: list[Tensor],
) -> Tensor:
    """x (G, C, D) in place: += scale (G, C, 1; None: 1) times vec (G, 1, D; None: no term), then times
    the feature map's derivative read off phi = feature_map(input) (G, C, D). `spare`: buffers of the
    backward no longer needed, which the PyTorch version may overwrite (never a saved tensor: a
    retained graph stays valid)."""
    G, C, D = x.shape
    lib = _fused(x, scale, vec, phi)
    if lib is not None:
        lib.feature_grad(_ptr(x), _ptr(scale), _ptr(vec), _ptr(phi), FEATURE_MAPS[feature_map], G, C, D)
        return x
    if vec is not None:
        x.addcmul_(scale, vec) if scale is not None else x.add_(vec)
    if feature_map == "elu":  # phi' = 1 for x > 0, exp(x) = phi otherwise: min(phi, 1)
        free = next((t for t in spare if t.numel() >= phi.numel()), None)
        scratch = None if free is None else free.view(-1)[: phi.numel()].view_as(phi)
        x.mul_(torch.clamp(phi, max=1.0, out=scratch))
    elif feature_map == "relu":  # phi' = 1 where phi > 0 (PyTorch's relu'(0) = 0)
        x.masked_fill_(phi <= 0, 0.0)
    return x


def taylor_feature_count(d: int) -> int:
    """F = 1 + d + d(d+1)/2, the Taylor features of d dimensions (taylor_features)."""
    return 1 + d + d * (d + 1) // 2


def taylor_features(x: Tensor) -> Tensor:
    """Based's feature map, x (..., d) -> φ(x) (..., 1 + d + d(d+1)/2) = [1, x, c_ab x_a x_b (a <= b)],
    c_aa = 1/√2, c_ab = 1 (pairs in row-major order of the upper triangle), with no autograd record.
    In PyTorch: one broadcast product per row a of the pairs (index gathers are ~10x slower)."""
    d = x.shape[-1]
    phi = x.new_empty(*x.shape[:-1], taylor_feature_count(d))
    lib = _fused(x)
    if lib is not None:
        lib.taylor_features(_ptr(x), _ptr(phi), x.numel() // d, d)
        return phi
    phi[..., 0] = 1.0
    phi[..., 1 : 1 + d] = x
    start = 1 + d
    for a in range(d):
        row = phi[..., start : start + d - a]  # pairs (a, a), (a, a + 1), ..., (a, d - 1)
        torch.mul(x[..., a : a + 1], x[..., a:], out=row)
        row[..., 0] *= 0.5**0.5
        start += d - a
    return phi


def taylor_features_backward(d_phi: Tensor, x: Tensor) -> Tensor:
    """d loss / d φ(x) (..., F) -> d loss / d x (..., d): the linear part's row, plus for each pair
    (a, b) c_ab·x_b on a's side and c_ab·x_a on b's side."""
    d = x.shape[-1]
    lib = _fused(d_phi, x)
    if lib is not None:
        dx = torch.empty_like(x)
        lib.taylor_features_backward(_ptr(d_phi), _ptr(x), _ptr(dx), x.numel() // d, d)
        return dx
    dx = d_phi[..., 1 : 1 + d].clone()
    start = 1 + d
    for a in range(d):
        t = d_phi[..., start : start + d - a].clone()  # (..., d - a)
        t[..., 0] *= 2.0**0.5  # the diagonal pair: d(x_a² / √2) / dx_a = √2 x_a
        dx[..., a] += torch.linalg.vecdot(t, x[..., a:])
        dx[..., a + 1 :].addcmul_(t[..., 1:], x[..., a : a + 1])
        start += d - a
    return dx
