"""`python -m attnlab.bench key=value ...` — the Hydra entry point (config: conf/bench.yaml)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from attnlab.bench.sweep import run
from attnlab.errors import AttnlabError


@hydra.main(config_path="pkg://attnlab.conf", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except AttnlabError as exc:  # a user mistake: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
