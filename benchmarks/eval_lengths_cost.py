"""What one `task.eval_lengths` cell costs: a tiny MQAR model evaluated at a long length on the CPU.

How to run (not part of the test suite; about a minute on a 2-core CPU):

    python benchmarks/eval_lengths_cost.py                          # linear at 16,384 tokens
    python benchmarks/eval_lengths_cost.py --variant deltanet --length 16384 --threads 1

The model is experiment=mqar's (d_model 64, 2 layers), untrained: the cost of an evaluation does not
depend on what the weights learnt. It builds the test set at --length the way a run does
(EncodedDataModule.test_dataloader_at: rows and batches bounded in tokens) and evaluates it with
attnlab.run.eval_lengths.evaluate_at_lengths, then prints the rows, the batch size, the wall time of
generation and of generation plus evaluation, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from attnlab.config.schemas import store_configs
from attnlab.run.eval_lengths import evaluate_at_lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="linear")
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store_configs()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_module("attnlab.conf", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "experiment=mqar",
                f"attention={args.variant}",
                "task.data.builtin.seq_len=256",
                "task.data.builtin.num_kv_pairs=16",  # a fixed number of pairs: the haystack grows
                "task.data.builtin.n_train=64",
                "task.data.builtin.n_validation=16",
                f"model.max_len={args.length}",
                f"task.eval_lengths=[{args.length}]",
                "logger=none",
                f"paths.run_dir={tmp}/run",
                f"paths.data_cache={tmp}/cache",
            ],
        )
        datamodule = instantiate(cfg.task.datamodule, _recursive_=False)
        datamodule.setup("fit")
        module = instantiate(cfg.task.module, _recursive_=False)(
            datamodule=datamodule, model=cfg.model, attention=cfg.attention
        )
        start = time.perf_counter()
        loader = datamodule.test_dataloader_at(args.length)
        generated = time.perf_counter()
        metrics = evaluate_at_lengths(cfg, module, datamodule, None)
        done = time.perf_counter()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(
        f"{args.variant} at {args.length} tokens, {args.threads} thread(s): {len(loader.dataset)} rows, "
        f"batch {loader.batch_size}; generation {generated - start:.1f} s; generation + evaluation "
        f"{done - generated:.1f} s; peak RSS {peak_mib:.0f} MiB; "
        + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
    )


if __name__ == "__main__":
    main()
