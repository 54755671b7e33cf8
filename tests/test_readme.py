"""Every `python -m attnlab…` command the README shows is valid: its overrides compose and pass the
same checks a real run starts with (commands are not trained to completion here: the slow suite and
the default-run tests do that)."""

from __future__ import annotations

import re
import shlex

import pytest
from helpers import ROOT
from hydra import compose, initialize_config_module

from attnlab.bench.config import parse
from attnlab.config.schemas import store_configs
from attnlab.errors import ConfigError
from attnlab.run.app import preflight

README = (ROOT / "README.md").read_text()
# The user's guide is the README plus the pages it links under docs/: their commands are checked alike.
GUIDE = "\n".join([README, *(page.read_text() for page in sorted((ROOT / "docs").glob("*.md")))])
COMMANDS = [
    line.split("#")[0].strip()
    for block in re.findall(r"```bash\n(.*?)```", GUIDE, flags=re.S)
    for line in block.replace("\\\n", " ").splitlines()
    if line.strip().startswith(("python -m attnlab ", "python -m attnlab.bench"))
]
# _gpu: the experiment=<x>_gpu presets
NEEDS_A_GPU = ("trainer=gpu", "trainer=fsdp", "precision=bf16-mixed", "_gpu")


def single_run(tokens: list[str]) -> list[str]:
    """A sweep's first point: `-m` dropped, `a,b,c` -> `a`; placeholders and sweep ranges skipped."""
    argv = []
    for token in tokens:
        if token == "-m" or "<" in token or "interval(" in token:
            continue
        key, _, value = token.partition("=")
        if "[" not in value and "{" not in value:
            value = value.split(",")[0]
        argv.append(f"{key}={value}" if value else key)
    return argv


def test_readme_shows_commands():
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_is_valid(command):
    tokens = shlex.split(command)[3:]
    if tokens and tokens[0] == "-m" and shlex.split(command)[2] == "attnlab.bench":
        tokens = tokens[1:]
    if shlex.split(command)[2] == "attnlab.bench":
        store_configs()
        with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
            cfg = compose(config_name="bench", overrides=single_run(tokens))
        assert parse(cfg).variants
        return
    argv = single_run(tokens)
    if any(a.startswith(("hparams_search=",)) for a in argv):
        argv = [a for a in argv if not a.startswith(("hydra.sweeper", "model.dropout"))]
    try:
        cfg = preflight(argv, hydra_config=True)
    except ConfigError as error:
        if any(flag in command for flag in NEEDS_A_GPU) and ("GPU" in str(error) or "CUDA" in str(error)):
            pytest.skip(f"needs a GPU: {error}")
        raise
    assert cfg is not None
