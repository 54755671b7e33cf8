"""Experiment tracking set-up: wandb offline unless the user has configured a key; never a prompt.

Online, wandb gets WANDB_INIT_TIMEOUT_S to start a run; a server that does not answer (no network,
a wrong WANDB_BASE_URL, a rejected key) makes the run log offline instead, with one warning line:
a run is never lost, nor held for minutes, because tracking is unavailable (`start_wandb`).

A run directory keeps its wandb run id in `wandb/run_id`, so a resumed run (`ckpt_path=last`)
continues the same wandb run (Lightning's WandbLogger passes `resume="allow"` with the id) instead
of splitting its history over two.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any

log = logging.getLogger("attnlab.tracking")  # its name in run.log from before the move to run/


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc(Path.home() / ".netrc").authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def ensure_wandb_mode() -> str:
    """Respect WANDB_MODE if set; otherwise go offline when no API key is configured."""
    if not os.environ.get("WANDB_MODE") and not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
        log.info(
            "wandb: no API key configured, logging offline (upload later with `wandb sync <run_dir>/wandb`)"
        )
    os.environ.setdefault("WANDB_SILENT", "true")
    return os.environ.get("WANDB_MODE", "online")


WANDB_ID_FILE = Path("wandb") / "run_id"  # inside the run directory
ID_ALPHABET = string.ascii_lowercase + string.digits  # wandb's own ids: 8 of these


def wandb_run_id(run_dir: str | Path) -> str:
    """The run directory's wandb run id: read from `wandb/run_id`, or made and stored there once."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and (stored := path.read_text().strip()):
        return stored
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # exclusive create: with several ranks starting at once, the first one's id wins
        with open(path, "x") as handle:
            handle.write("".join(secrets.choice(ID_ALPHABET) for _ in range(8)) + "\n")
    except FileExistsError:
        pass
    return path.read_text().strip()


def quiet_wandb_init(logger: Any) -> None:
    """Drop the `anonymous=None` that Lightning's WandbLogger always passes to wandb.init: wandb
    >= 0.19 warns about any value of that deprecated setting ("The anonymous setting has no effect")."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)


# wandb's own default is 90 s, then a CommError traceback: a run without network would sit silent for
# minutes before failing. WANDB_INIT_TIMEOUT, when the user sets it, wins.
WANDB_INIT_TIMEOUT_S = 25.0


def start_wandb(logger: Any) -> None:
    """Start a WandbLogger's run now, online within WANDB_INIT_TIMEOUT_S or else offline (one warning)."""
    import wandb

    init = getattr(logger, "_wandb_init", None)
    if not isinstance(init, dict):
        return
    online = os.environ.get("WANDB_MODE", "online") in ("online", "run")
    if online and "settings" not in init and not os.environ.get("WANDB_INIT_TIMEOUT"):
        init["settings"] = wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S)
    try:
        logger.experiment  # noqa: B018  (wandb.init, on rank zero)
    except wandb.errors.CommError as error:
        if not online:
            raise
        reason = " ".join(str(error).split())
        log.warning(
            "wandb: no answer from %s (%s); logging offline instead (upload later with `wandb sync %s`)",
            os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"),
            reason,
            Path(init.get("dir") or logger.save_dir or ".") / "wandb" / "offline-run-*",
        )
        # The wandb service still holds the half-started run's id, which the offline run reuses: leave it,
        # and start a service of this process's own (WANDB_SERVICE may name a parent's, e.g. a study's).
        wandb.teardown()
        os.environ.pop("WANDB_SERVICE", None)
        os.environ["WANDB_MODE"] = "offline"  # the rest of this process (a sweep's next runs) too
        init["mode"] = "offline"
        init.pop("settings", None)
        logger._experiment = None
        logger.experiment  # noqa: B018
