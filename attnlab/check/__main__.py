"""`python -m attnlab.check NAME [NAME...] | --all`: the conformance report of installed variants.

`--layers PATTERN` (with `--short-conv K`, `--output-gate`, `--qk-norm`) holds a whole stack instead:
a per-layer pattern (attnlab/nn/pattern.py) built as a causal LM and an encoder (attnlab/check/stack.py).

One line per contract point (PASS, FAIL with what broke, SKIP with why), a summary per variant;
exit status 0 when nothing failed, 1 when a point failed, 2 for a usage error (unknown variant,
a plugin that failed to load).
"""

from __future__ import annotations

import argparse
import sys

from attnlab.attention import available_attentions
from attnlab.attention.registry import find_attention
from attnlab.check import CHECKS, FAIL, PASS, SKIP, run_checks
from attnlab.errors import AttnlabError

EXIT_FAILED, EXIT_USAGE = 1, 2


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m attnlab.check",
        description="Hold installed attention variants (built-ins and plugins) to the attnlab contract.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="variants to check (see --all)")
    parser.add_argument("--all", action="store_true", help="check every installed variant")
    parser.add_argument(
        "--point", action="append", metavar="POINT", help=f"only these contract points: {', '.join(CHECKS)}"
    )
    parser.add_argument(
        "--layers",
        metavar="PATTERN",
        help="check a stack: one variant per layer, comma- or +-separated, NAME*N repeats "
        "(e.g. 'gated_deltanet*3,multihead')",
    )
    parser.add_argument(
        "--short-conv", type=int, default=0, metavar="K", help="with --layers: model.short_conv"
    )
    parser.add_argument("--output-gate", action="store_true", help="with --layers: model.output_gate=true")
    parser.add_argument("--qk-norm", action="store_true", help="with --layers: model.qk_norm=true")
    args = parser.parse_args(argv)
    if not args.names and not args.all and args.layers is None:
        parser.error("name a variant (e.g. python -m attnlab.check linear), pass --all, or --layers PATTERN")
    return args


def resolve(names: list[str], every: bool) -> list[str]:
    """The variants to check; a broken plugin or unknown name is a ConfigError."""
    for name in names:
        find_attention(name)  # the one check of an attention name (attnlab.attention.registry)
    return available_attentions() if every else list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    failed = False
    try:
        if args.layers is not None:
            failed |= report_stack(args)
        names = resolve(args.names, args.all) if args.names or args.all else []
        width = max(map(len, args.point or CHECKS))
        for name in names:
            results = run_checks(name, args.point)
            print(f"{name}")
            for result in results:
                print(f"  {result.line(width)}")
            counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, SKIP)}
            failed |= counts[FAIL] > 0
            verdict = "FAILS the contract" if counts[FAIL] else "conforms"
            print(
                f"  {name} {verdict}: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped\n"
            )
    except AttnlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILED if failed else 0


def report_stack(args: argparse.Namespace) -> bool:
    """Print the stack points of --layers; True when one failed."""
    from attnlab.check.stack import STACK_CHECKS, run_stack_checks
    from attnlab.nn.layer_options import LayerOptions

    options = LayerOptions(short_conv=args.short_conv, output_gate=args.output_gate, qk_norm=args.qk_norm)
    results = run_stack_checks(top_level_commas_to_plus(args.layers), options)
    width = max(map(len, STACK_CHECKS))
    print(results[0].variant)
    for result in results:
        print(f"  {result.line(width)}")
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, SKIP)}
    verdict = "FAILS the contract" if counts[FAIL] else "conforms"
    print(
        f"  {results[0].variant} {verdict}: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped\n"
    )
    return counts[FAIL] > 0


def top_level_commas_to_plus(text: str) -> str:
    """'a*3,local(window=8,chunk=2)' -> 'a*3+local(window=8,chunk=2)': commas inside parentheses stay."""
    depth, out = 0, []
    for char in text:
        depth += (char == "(") - (char == ")")
        out.append("+" if char == "," and depth == 0 else char)
    return "".join(out)


if __name__ == "__main__":
    sys.exit(main())
