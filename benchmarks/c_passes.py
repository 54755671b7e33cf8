"""Keep C only where it pays: each C pass of attnlab against the best PyTorch form, side by side.

How to run (not part of the test suite; tens of minutes on a 2-core CPU at 16K, --quick: a few):

    python benchmarks/c_passes.py                      # N = 16K, 5 interleaved rounds, one thread
    python benchmarks/c_passes.py --quick              # N = 4K, 3 rounds
    python benchmarks/c_passes.py --threads 2          # the same with two threads
    python benchmarks/c_passes.py --only log_decay_gate window_causal   # some rows (names: --list)
    python benchmarks/c_passes.py --no-compile         # skip torch.compile (its build takes minutes)

Each row is one operation a variant calls (the C passes grouped by the call that runs them), forward
and backward, at the bench's shapes (batch 1, 4 heads, head dim 64, float32, CPU). Forms, all timed
in the same rounds (one call of each per round, in turn, the order rotated each round; medians of the
calling thread's CPU time with one thread, steady on a shared machine; wall clock with more, --clock):

    C         the call as the variant makes it, the C passes on (attention/cpu/*.c)
    fallback  the same call with the C passes off (what ATTNLAB_FUSED_CPU=0 runs)
    autograd  a plain PyTorch form differentiated by autograd, where one is written here
    compile   torch.compile (CPU inductor) of the autograd form, else of the fallback

Every form's output and input gradients are checked against C's (max |a - b| <= 1e-3 · max |C|)
before anything is timed. "best PyTorch" is the fastest of the other forms; a row is kept only where
C is >= 1.3x faster than it (docs/c-passes.md). Take a verdict near that line on a quiet machine only:
under load the fallback's memory-bound loops were timed up to 1.7x fast (docs/c-passes.md, the delta
rule's rows), which once sent 200 lines of C that pays towards deletion.

The rows here are the C that stayed. The seven rows that did not pay on a quiet machine (the causal
and non-causal linear kernels' passes, performer's, unit_norm, rms_norm, Based's Taylor features, gla's
one-block chunk) were deleted with their C; their measurements are in docs/c-passes.md, and
`git show d8dfebc:benchmarks/c_passes.py` is this benchmark as it measured them.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

# Everything this benchmark knows of attnlab's C passes and their callers, in one place.
from attnlab.attention.cpu import build as passes  # the C library's one switch: passes.library()
from attnlab.attention.ops.delta_rule import chunk_delta_rule
from attnlab.attention.ops.window.chunk import sliding_window_attention
from attnlab.attention.variants.based import BasedAttention
from attnlab.attention.variants.gated_deltanet import GatedDeltaNet
from attnlab.attention.variants.gla import LogDecayGate

B, H, D = 1, 4, 64  # the bench's and the speed targets' setting
KEEP_RATIO = 1.3  # C stays where it is at least this much faster than the best PyTorch form
TOLERANCE = 1e-3  # max |form - C| relative to max |C|, outputs and gradients
SAMPLE_S = 0.1  # a timing sample repeats a call to about this long (short passes: several calls)


def _no_library() -> None:
    return None


@contextlib.contextmanager
def c_off() -> Iterator[None]:
    """The C passes off, as ATTNLAB_FUSED_CPU=0 (whose switch is read once per process)."""
    saved, passes.library = passes.library, _no_library
    try:
        yield
    finally:
        passes.library = saved


@dataclass
class Case:
    """One operation a variant calls. make(N) -> (inputs, extra): inputs the leaf tensors whose
    gradients are compared; forms take (inputs, extra) and return the output(s)."""

    name: str
    passes: str  # the C functions it runs
    users: str  # the variants whose calls run it (at the bench's defaults)
    make: Callable[[int], tuple[list[Tensor], dict]]
    c: Callable
    autograd: Callable | None = None  # a plain autograd form, if any
    extra_forms: dict[str, Callable] = field(default_factory=dict)  # more PyTorch forms (C off)
    compile_extra: bool = False  # torch.compile the extra forms too
    no_compile: str | None = None  # why torch.compile is not tried on this row


def _leaf(*shape: int, scale: float = 1.0) -> Tensor:
    return (torch.randn(*shape) * scale).requires_grad_()


# ---- the plain autograd forms --------------------------------------------------------------------
# ---- the cases -------------------------------------------------------------------------------------
def _qkv(n: int, dv: int = D) -> list[Tensor]:
    return [_leaf(B, H, n, D), _leaf(B, H, n, D), _leaf(B, H, n, dv)]


def _delta_inputs(n: int, gated: bool) -> tuple[list[Tensor], dict]:
    """q, k as deltanet / gated_deltanet hand them to the op (SiLU, unit norm), β and g from their gates."""
    torch.manual_seed(0)
    module = GatedDeltaNet(heads=H)
    with torch.no_grad():
        q, k, gates = module.prepare(torch.randn(B, H, n, D), torch.randn(B, H, n, D),
                                     {"g": torch.randn(B, H, n), "beta": torch.randn(B, H, n)})  # fmt: skip
    inputs = [q.requires_grad_(), k.requires_grad_(), _leaf(B, H, n, D), gates["beta"].requires_grad_()]
    if gated:
        inputs.append(gates["g"].requires_grad_())
    return inputs, {}


def _delta(inputs: list[Tensor], extra: dict) -> Tensor:
    q, k, v, beta, *g = inputs
    return chunk_delta_rule(q, k, v, beta, g[0] if g else None, scale=D**-0.5, chunk_size=32)[0]


def _window(causal: bool) -> Callable:
    def form(inputs: list[Tensor], extra: dict) -> Tensor:
        q, k, v = inputs
        return sliding_window_attention(q, k, v, window=128, causal=causal, key_padding_mask=None)

    return form


def _based_inputs(n: int) -> tuple[list[Tensor], dict]:
    torch.manual_seed(0)
    return _qkv(n), {"module": BasedAttention(head_dim=D)}


def _based(causal: bool) -> Callable:
    def form(inputs: list[Tensor], extra: dict) -> Tensor:
        return extra["module"](*inputs, causal=causal)

    return form


LOOP = (
    "dynamo unrolls the fallback's Python loop over chunks (N/C iterations: 256 to 512 at 16K); at N=1K "
    "(32 chunks) the delta rule's build took 221 s and ran slower than eager"
)


CASES = [
    Case(
        "log_decay_gate",
        "log_decay_gate, log_decay_gate_backward (LogDecayGate)",
        "gla",
        lambda n: ([_leaf(B, H, n, D, scale=3.0)], {}),
        lambda i, e: LogDecayGate.apply(i[0], 16.0, -4.0),
        lambda i, e: F.logsigmoid(i[0]).div(16.0).clamp(min=-4.0),
    ),
    Case(
        "delta_rule",
        "delta_rule_rhs, delta_rule_forward_loop, delta_rule_backward_loop, delta_scores_backward, "
        "delta_rule_grad_epilogue, GEMM micro-kernel (ChunkDeltaRule)",
        "deltanet, gated_deltaproduct (ungated part)",
        lambda n: _delta_inputs(n, gated=False),
        _delta,
        no_compile=LOOP,
    ),
    Case(
        "gated_delta_rule",
        "the delta rule's + decay_matrix, flush_small (ChunkDeltaRule with g)",
        "gated_deltanet, gated_deltaproduct",
        lambda n: _delta_inputs(n, gated=True),
        _delta,
        no_compile=LOOP,
    ),
    Case(
        "window_causal",
        "window_attention_forward, window_attention_backward, GEMM micro-kernel (BlockedWindowAttention)",
        "local (causal, window 128)",
        lambda n: (_qkv(n), {}),
        _window(causal=True),
    ),
    Case(
        "window_noncausal",
        "window_attention_forward, window_attention_backward (BlockedWindowAttention)",
        "local (non-causal, window 128), based (non-causal window part)",
        lambda n: (_qkv(n), {}),
        _window(causal=False),
    ),
    Case(
        "based_causal",
        "based_forward_loop, based_backward_loop, window_attention_* (FusedBased)",
        "based (causal)",
        _based_inputs,
        _based(causal=True),
    ),
    Case(
        "based_noncausal",
        "window_attention_* (the Taylor part in PyTorch)",
        "based (non-causal)",
        _based_inputs,
        _based(causal=False),
    ),
]


# ---- running the forms -----------------------------------------------------------------------------
def _outputs(result: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def step(form: Callable, inputs: list[Tensor], extra: dict, grads_out: list[Tensor] | None) -> tuple:
    """One forward + backward of `form`; -> (outputs, input gradients), detached."""
    for x in [*inputs, *(extra["module"].parameters() if "module" in extra else ())]:
        x.grad = None
    outs = _outputs(form(inputs, extra))
    torch.autograd.backward(outs, grads_out or [torch.ones_like(o) for o in outs])
    return tuple(o.detach() for o in outs), tuple(x.grad for x in inputs)


def without_c(form: Callable) -> Callable:
    def run(inputs: list[Tensor], extra: dict):
        with c_off():
            return form(inputs, extra)

    return run


def mismatch(reference: tuple, other: tuple) -> float:
    """The largest |a - b| / max |a| over outputs and gradients (a: C's)."""
    worst = 0.0
    for a, b in zip((*reference[0], *reference[1]), (*other[0], *other[1]), strict=True):
        if a is None or b is None:
            continue
        worst = max(worst, float((a - b).abs().max()) / max(float(a.abs().max()), 1e-30))
    return worst


@dataclass
class Row:
    case: Case
    ms: dict[str, float] = field(default_factory=dict)  # form -> median ms (the chosen clock)
    wall: dict[str, float] = field(default_factory=dict)  # form -> median wall-clock ms
    repeats: int = 1
    samples: dict[str, list[float]] = field(default_factory=dict)  # form -> ms per round (chosen clock)
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> tuple[str, float] | None:
        others = {k: v for k, v in self.ms.items() if k != "C"}
        return min(others.items(), key=lambda kv: kv[1]) if others else None


def measure(case: Case, n: int, rounds: int, compile_: bool, clock: str) -> Row:
    row = Row(case)
    torch.manual_seed(0)
    inputs, extra = case.make(n)
    forms: dict[str, Callable] = {"C": case.c, "fallback": without_c(case.c)}
    if case.autograd is not None:
        forms["autograd"] = without_c(case.autograd)
    for name, form in case.extra_forms.items():
        forms[name] = without_c(form)
    if compile_ and case.no_compile:
        row.notes.append(f"compile not tried: {case.no_compile}")
    elif compile_:
        base = case.autograd or case.c
        forms["compile"] = without_c(torch.compile(base, dynamic=False))
        if case.compile_extra:
            for name, form in case.extra_forms.items():
                forms[f"compile {name}"] = without_c(torch.compile(form, dynamic=False))
    reference = step(case.c, inputs, extra, None)
    grads_out = [torch.randn_like(o) for o in reference[0]]
    reference = step(case.c, inputs, extra, grads_out)
    for name in list(forms):
        if name == "C":
            continue
        start = time.perf_counter()
        try:
            result = step(forms[name], inputs, extra, grads_out)
        except Exception as exc:  # a form that does not run here is reported, not fatal
            row.notes.append(f"{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            del forms[name]
            continue
        if name.startswith("compile"):
            row.notes.append(f"{name}: first call (build) {time.perf_counter() - start:.0f} s")
            step(forms[name], inputs, extra, grads_out)  # the backward's graph is built on first use too
        error = mismatch(reference, result)
        if error > TOLERANCE:
            row.notes.append(f"{name} differs from C: {error:.1e} > {TOLERANCE:g}; not timed")
            del forms[name]
        elif error > 1e-5:
            row.notes.append(f"{name} vs C: {error:.1e}")
    names = list(forms)
    start = time.perf_counter()
    step(case.c, inputs, extra, grads_out)
    repeats = max(1, round(SAMPLE_S / (time.perf_counter() - start)))  # calls per sample: short passes too
    times: dict[str, list[float]] = {name: [] for name in names}
    walls: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotated: no form always first
        for name in order:
            wall, cpu = time.perf_counter(), time.thread_time()
            for _ in range(repeats):
                step(forms[name], inputs, extra, grads_out)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            walls[name].append(wall * 1e3 / repeats)
            times[name].append((cpu if clock == "cpu" else wall) * 1e3 / repeats)
    row.samples = times
    row.wall = {name: statistics.median(ts) for name, ts in walls.items()}
    row.repeats = repeats
    row.ms = {name: statistics.median(ts) for name, ts in times.items()}
    return row


def paired_spread(row: Row) -> str:
    """The per-round ratios best-form / C (each round's two calls ran back to back): lowest..highest."""
    best = row.best
    if best is None or "C" not in row.samples:
        return "-"
    ratios = [b / c for b, c in zip(row.samples[best[0]], row.samples["C"], strict=True)]
    return f"{min(ratios):.2f}..{max(ratios):.2f}"


def verdict(row: Row) -> tuple[str, str]:
    best = row.best
    if "C" not in row.ms or best is None:
        return "-", "?"
    ratio = best[1] / row.ms["C"]
    return f"{ratio:.2f}x", "keep" if ratio >= KEEP_RATIO else "delete"


def _cell(ms: dict[str, float], name: str) -> str:
    return f"{ms[name]:.2f}" if name in ms else "-"


def table(rows: list[Row]) -> str:
    head = "| pass (call) | C ms | fallback ms | autograd ms | compile ms | best PyTorch | C vs best | rounds | kept? |"
    lines = [head, "|---|---:|---:|---:|---:|---|---:|---|---|"]
    for row in rows:
        ms = row.ms

        extra = [f"{k} {v:.1f}" for k, v in ms.items() if k not in ("C", "fallback", "autograd", "compile")]
        best = row.best
        best_text = f"{best[0]} {best[1]:.1f}" if best else "-"
        ratio, kept = verdict(row)
        name = row.case.name + (f" ({'; '.join(extra)})" if extra else "")
        lines.append(
            f"| {name} | {_cell(ms, 'C')} | {_cell(ms, 'fallback')} | {_cell(ms, 'autograd')} | {_cell(ms, 'compile')} "
            f"| {best_text} | {ratio} | {paired_spread(row)} | {kept} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 4K, 3 rounds")
    parser.add_argument("--length", type=int, default=None, help="tokens (default 16384; --quick 4096)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; --quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the bench's 1 by default)")
    parser.add_argument("--only", nargs="+", default=None, help="these rows only")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile forms")
    parser.add_argument(
        "--clock", choices=["cpu", "wall"], default=None,
        help="cpu: the calling thread's CPU time (steady on a shared machine; one thread only); "
        "default cpu with --threads 1, else wall",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args()
    if args.list:
        for case in CASES:
            print(f"{case.name:18s} {case.users}: {case.passes}")
        return
    names = {case.name for case in CASES}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        raise SystemExit(f"unknown row(s) {unknown}; choose from {sorted(names)}")
    if passes.library() is None:
        raise SystemExit("the C passes are not available here (ATTNLAB_FUSED_CPU=0 or no C compiler)")
    n = args.length or (4096 if args.quick else 16384)
    rounds = args.rounds or (3 if args.quick else 5)
    torch.set_num_threads(args.threads)
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    if clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu counts the calling thread only; use it with --threads 1")
    print(f"N={n}, B={B}, H={H}, D={D}, float32, forward+backward, {rounds} rounds, "
          f"{args.threads} thread(s), {clock} clock, torch {torch.__version__}, {platform.processor() or platform.machine()}")  # fmt: skip
    rows = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        start = time.perf_counter()
        row = measure(case, n, rounds, not args.no_compile, clock)
        rows.append(row)
        ratio, kept = verdict(row)
        timings = ", ".join(f"{k} {v:.2f}" for k, v in row.ms.items())
        walls = ", ".join(f"{k} {v:.2f}" for k, v in row.wall.items())
        print(f"{case.name}: {clock} {timings} ms (wall {walls}; {row.repeats} call(s) a sample) -> {ratio} "
              f"(rounds {paired_spread(row)}) {kept} ({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
        for note in row.notes:
            print(f"    {note}", flush=True)
    print()
    print(table(rows))
    print(f"\n{clock} ms, medians of {rounds} interleaved rounds; kept: C >= {KEEP_RATIO}x faster than the "
          "best PyTorch form")  # fmt: skip
    notes = [(row.case.name, note) for row in rows for note in row.notes]
    for name, note in notes:
        print(f"- {name}: {note}")


if __name__ == "__main__":
    main()
