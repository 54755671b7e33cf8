"""A passkey heat map before the study grids over depth: each variant trained once, tested at every
length x depth with the same weights; writes OUT/rows.json and OUT/haystack.png.

How to run (not part of the test suite; on the 2-core CPU multihead trains in 8-25 min, depending
on the load, linear in about a minute):

    python benchmarks/passkey_haystack.py --out studies/passkey-preview --variants multihead linear

Each variant trains with experiment=passkey (N = 256, the fact anywhere) and model.max_len=4096 (a
sinusoidal table long enough for the longest test); then, per depth, the test split is regenerated
with task.data.builtin.test_depth=<depth> and evaluated at each length (attnlab.run.eval_lengths).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from attnlab.config.schemas import store_configs
from attnlab.run.eval_lengths import evaluate_at_lengths
from attnlab.run.train import run
from attnlab.study.haystack import plot_haystack


def config(out: Path, overrides: list[str]):
    with initialize_config_module("attnlab.conf", version_base="1.3"):
        return compose(
            "config",
            overrides=[f"paths.run_dir={out / 'run'}", f"paths.data_cache={out / 'cache'}", *overrides],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=["multihead", "linear"])
    parser.add_argument("--train-length", type=int, default=256)
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 1024, 4096])
    parser.add_argument("--depths", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    args = parser.parse_args()
    store_configs()
    rows = []
    for variant in args.variants:
        base = [
            "experiment=passkey",
            f"attention={variant}",
            f"task.data.builtin.seq_len={args.train_length}",
            f"model.max_len={max(args.lengths)}",
            "logger=csv",
        ]
        results = run(config(args.out / variant, base))
        print(
            f"{variant}: test/acc {results['metrics']['test/acc']:.3f} (fact anywhere, N = {args.train_length})"
        )
        for depth in args.depths:
            cfg = config(
                args.out / variant / f"depth-{depth:g}",
                [
                    *base,
                    f"task.data.builtin.test_depth={depth}",
                    "task.data.builtin.n_train=1",  # only the test split is read: the weights are the run's
                    "task.data.builtin.n_validation=1",
                    f"task.eval_lengths=[{','.join(map(str, args.lengths))}]",
                ],
            )
            datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
            datamodule.setup("test")
            module = instantiate(cfg.task.module, _recursive_=False)(
                datamodule=datamodule, model=cfg.model, attention=cfg.attention
            )
            metrics = evaluate_at_lengths(cfg, module, datamodule, results["best_checkpoint"])
            rows += [(variant, n, depth, metrics[f"test/acc@{n}"]) for n in args.lengths]
            print(variant, f"depth {depth:g}:", {n: round(metrics[f"test/acc@{n}"], 3) for n in args.lengths})
    (args.out / "rows.json").write_text(json.dumps(rows))
    print(plot_haystack(args.out / "haystack.png", rows, train_length=args.train_length))


if __name__ == "__main__":
    main()
