"""Train at one length, test the same weights at others: `task.eval_lengths=[256,1024,4096]`.

After `trainer.test`, the run regenerates the test split at each length with the task's built-in
generator (same knobs and seed; attnlab.data.generators.generate_test_at), encodes it with the data
module's `encode_rows`, and evaluates the best checkpoint on it. results.json's metrics (and the wandb
summary) gain `test/<metric>@<length>` for every metric the task logs (METRICS), e.g. `test/acc@4096`,
and its cost gains `decode_state_bytes@<length>`: the decoding state measured at that context length
(attnlab.nn.state_size), so a KV cache's growth and a hybrid's bytes at 4K are read, not extrapolated.

Sizes are bounded in tokens (attnlab.data.eval_sizes), so memory and time grow linearly with the length for a linear-time
variant: a length-L test set has at most EVAL_TEST_TOKENS / L rows (never fewer than EVAL_MIN_ROWS,
never more than the generator's n_test or task.data.limit.test), in batches of at most
EVAL_BATCH_TOKENS / L rows (never more than task.data.batch_size, never fewer than one).

Checked before training by attnlab.config.eval_lengths (what lengths this task, model and attention
can take).
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)


def metric_key(name: str, length: int) -> str:
    """'test/acc', 4096 -> 'test/acc@4096'."""
    return f"{name}@{length}"


STATE_KEY = "decode_state_bytes"  # results["cost"] key of the decoding state at the training length


def state_at_lengths(cfg: DictConfig, module: Any) -> dict[str, int | None]:
    """{decode_state_bytes@<length>: bytes} for every task.eval_lengths length: the model's decoding state
    per sequence after that many tokens, measured (attnlab.nn.state_size), for results["cost"]."""
    from attnlab.nn.state_size import decode_state_bytes

    lengths = list(cfg.task.get("eval_lengths") or [])
    return {
        metric_key(STATE_KEY, int(length)): decode_state_bytes(module, int(length))[STATE_KEY]
        for length in lengths
    }


# ---- after training ----------------------------------------------------------------------------------
def evaluate_at_lengths(
    cfg: DictConfig, module: Any, datamodule: Any, ckpt_path: str | None
) -> dict[str, float]:
    """{test/<metric>@<length>: value} for every task.eval_lengths length, from the weights at ckpt_path
    (None: the module's own). A trainer without loggers or callbacks runs them, so a logged `test/acc`
    stays the training length's and the training's cost figures are untouched."""
    import torch
    from hydra.utils import instantiate

    lengths = list(cfg.task.get("eval_lengths") or [])
    if not lengths:
        return {}
    if ckpt_path:  # the weights trainer.test evaluated, loaded once, whatever Lightning left in the module
        state = torch.load(ckpt_path, map_location=module.device, weights_only=False)["state_dict"]
        module.load_state_dict(state)
    trainer = instantiate(
        cfg.trainer,
        callbacks=[],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(cfg.paths.run_dir),
    )
    names = [f"test/{metric}" for metric in type(module).METRICS]
    out: dict[str, float] = {}
    for length in lengths:
        loader = datamodule.test_dataloader_at(int(length))
        (metrics,) = trainer.test(module, dataloaders=loader, verbose=False)
        found = {metric_key(name, length): float(metrics[name]) for name in names if name in metrics}
        log.info(
            "length %d (%d rows, batch %d): %s",
            length,
            len(loader.dataset),
            loader.batch_size,
            "  ".join(f"{k}={v:.4g}" for k, v in found.items()),
        )
        out |= found
    return out
