"""Checkpoint averaging, measured on a finished run: its last checkpoint holds both the averaged
weights (`state_dict`, what validation, the checkpoints and the test used) and the raw weights of the
last step (`current_model_state`, kept by Lightning's WeightAveraging). This evaluates both on the
run's test split with the run's own config (results.json), side by side, and prints the task's
primary metric for each: what `callbacks.average` bought, without a second training run. The decoded
test samples of each go to RUN_DIR/average_ab/{averaged,raw}/.

    python benchmarks/checkpoint_average_ab.py RUN_DIR [RUN_DIR ...] [--threads N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# isort: off
import attnlab  # noqa: F401  before torch: OpenMP's threads then wait passively (docs/runs.md)
import torch

# isort: on
import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf


def evaluate(run_dir: Path) -> dict[str, float]:
    """{"averaged": metric, "raw": metric} on the test split of one run."""
    results = json.loads((run_dir / "results.json").read_text())
    cfg = OmegaConf.create(results["config"])
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    if "current_model_state" not in checkpoint:
        raise SystemExit(
            f"{run_dir}: the last checkpoint holds no raw weights (the run had no callbacks.average)"
        )
    datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")  # the tokenizer, trained on the train split as the run did
    module = instantiate(cfg.task.module, _recursive_=False)(
        datamodule=datamodule, model=cfg.model, attention=cfg.attention
    )
    scores = {}
    for name, state in (("averaged", checkpoint["state_dict"]), ("raw", checkpoint["current_model_state"])):
        module.load_state_dict(state)
        trainer = L.Trainer(  # the decoded test samples go to RUN_DIR/average_ab/<averaged|raw>/
            logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu",
            default_root_dir=run_dir / "average_ab" / name,
        )  # fmt: skip
        (metrics,) = trainer.test(module, datamodule=datamodule, verbose=False)
        scores[name] = float(metrics[cfg.task.primary_metric])
    print(
        f"{run_dir}: step {checkpoint['global_step']}, {cfg.task.primary_metric}: "
        f"averaged {scores['averaged']:.2f}, raw {scores['raw']:.2f} "
        f"(averaging {scores['averaged'] - scores['raw']:+.2f})",
        flush=True,
    )
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories (with results.json)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for run_dir in args.runs:
        evaluate(run_dir)


if __name__ == "__main__":
    main()
