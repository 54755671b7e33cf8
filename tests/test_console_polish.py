"""The end of a run's console (issue 30): the final metric at 4 significant digits, the final progress
bar's metrics on one line in a log, and the epoch count the bar shows equal to wandb's."""

from __future__ import annotations

import re

import pytest
from helpers import read_wandb_offline_run, run_cli

from attnlab.run.train import shown

# 64 training examples in batches of 32: 2 steps per epoch, so 7 steps end in the 4th epoch
SPANS_EPOCHS = [
    "model.d_model=32",
    "model.heads=2",
    "trainer.max_steps=7",
    "task.data.batch_size=32",
    "task.data.limit.train=64",
    "task.data.limit.validation=32",
    "task.data.limit.test=32",
    "logger=wandb",
]


def test_metrics_are_shown_at_four_significant_digits():
    assert shown(0.10999999940395355) == "0.11" and shown(28.712345) == "28.71" and shown(None) == "n/a"


@pytest.mark.slow  # a command-line run with the progress bar: ~20-30 s on 2 busy cores
def test_the_end_of_a_run_reads_cleanly_and_agrees_with_wandb(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli([*SPANS_EPOCHS, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env={"HOME": str(tmp_path)})
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    final = re.search(r"test/acc = (\S+)  \|  seed 0; .*  \|  results: ", console).group(1)
    assert len(final.replace("0.", "", 1)) <= 4, final  # e.g. 0.1562, not 0.15625000596046448
    bars = [line for line in console.splitlines() if line.startswith("Epoch ")]
    assert bars and "val/acc: " in bars[-1] and "train/loss_step: " in bars[-1]  # one line, metrics whole
    assert "v_num" not in console
    epoch = int(re.match(r"Epoch (\d+)", bars[-1]).group(1))
    (wandb_file,) = (run_dir / "wandb").glob("offline-run-*/*.wandb")
    assert epoch == read_wandb_offline_run(wandb_file)["summary"]["epoch"] == 4
