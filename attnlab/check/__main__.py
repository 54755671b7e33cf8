"""`python -m attnlab.check NAME [NAME...] | --all`: the conformance report of installed variants.

One line per contract point (PASS, FAIL with what broke, SKIP with why), a summary per variant;
exit status 0 when nothing failed, 1 when a point failed, 2 for a usage error (unknown variant,
a plugin that failed to load).
"""

from __future__ import annotations

import argparse
import sys

from attnlab.attention import available_attentions, broken_plugins
from attnlab.check import CHECKS, FAIL, PASS, SKIP, run_checks
from attnlab.errors import AttnlabError, ConfigError

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
    args = parser.parse_args(argv)
    if not args.names and not args.all:
        parser.error("name a variant (e.g. python -m attnlab.check linear) or pass --all")
    return args


def resolve(names: list[str], every: bool) -> list[str]:
    """The variants to check; a broken plugin or unknown name is a ConfigError."""
    broken = broken_plugins()
    for name in names:
        if name in broken:
            raise ConfigError(
                f"attention '{name}' is a plugin that failed to load ({broken[name]}); fix or reinstall its package"
            )
    return available_attentions() if every else list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    failed = False
    try:
        names = resolve(args.names, args.all)
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


if __name__ == "__main__":
    sys.exit(main())
