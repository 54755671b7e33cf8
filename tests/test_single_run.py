"""A single run composes its config once (attnlab.config.single_run): the preflight's config is the one
the job runs on, with the run directory, `.hydra/` files and Hydra's run mode that `@hydra.main` gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT

# In a subprocess: count the compositions (the preflight's and any by Hydra's config loader), refuse
# @hydra.main, stub the job's work, then run the command's entry point as `python -m` would.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from hydra.core.hydra_config import HydraConfig
    import attnlab.config.preflight as preflight

    composed = []
    compose = preflight.compose
    def counting(*args, **kwargs):
        composed.append(args[0])
        return compose(*args, **kwargs)
    preflight.compose = counting

    def refuse_main(*args, **kwargs):
        raise AssertionError("@hydra.main composed a single run again")

    def stub(cfg):
        hydra = HydraConfig.get()
        seen = {"output_dir": hydra.runtime.output_dir, "mode": str(hydra.mode), "cfg_has_hydra": "hydra" in cfg,
                "compositions": len(composed)}
        with open(out, "w") as file:
            json.dump(seen, file)
        return {"metrics": {}}

    module, out = sys.argv[1], sys.argv[-1]
    sys.argv = [module, *sys.argv[2:-1]]
    if module == "attnlab":
        import attnlab.run.app as app, attnlab.run.train as train
        train.run, app.main = stub, refuse_main
        app.entry()
    else:
        import attnlab.bench.__main__ as bench
        bench.run, bench.main = stub, refuse_main
        bench.entry()
    """
)


def _run(module: str, args: list[str], cwd: Path, seen: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, module, *args, str(seen)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"},
    )


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("attnlab", ["attention=linear", "trainer.max_steps=3"]),
        ("attnlab.bench", ["variants=[linear]", "lengths=[64]"]),
    ],
)
def test_a_single_run_composes_once_and_runs_in_its_hydra_run_directory(tmp_path, module, args):
    run_dir, seen = tmp_path / "run", tmp_path / "seen.json"
    result = _run(module, [*args, f"hydra.run.dir={run_dir}"], tmp_path, seen)
    assert result.returncode == 0, result.stderr
    observed = json.loads(seen.read_text())
    assert observed["compositions"] == 1  # the preflight's; @hydra.main was never called
    assert observed["output_dir"] == str(run_dir) and observed["mode"] == "RunMode.RUN"
    assert observed["cfg_has_hydra"] is False  # the job gets the config without Hydra's node, as before
    hydra_dir = run_dir / ".hydra"
    assert list(OmegaConf.load(hydra_dir / "overrides.yaml")) == args
    hydra_node = OmegaConf.load(hydra_dir / "hydra.yaml").hydra
    assert (
        "hydra.mode=RUN" in hydra_node.overrides.hydra
        and f"hydra.run.dir={run_dir}" in hydra_node.overrides.hydra
    )
    assert hydra_node.job.name == ("app" if module == "attnlab" else "__main__")  # the names @hydra.main gave
    assert (hydra_dir / "config.yaml").is_file()


def test_a_resumed_run_records_its_directory_as_a_hydra_override(tmp_path):
    from attnlab.config.preflight import preflight
    from attnlab.config.single_run import set_run_dir

    cfg = preflight(["attention=linear"])
    set_run_dir(cfg, str(tmp_path / "earlier"))
    assert cfg.hydra.run.dir == str(tmp_path / "earlier")
    assert list(cfg.hydra.overrides.hydra)[-1] == f"hydra.run.dir={tmp_path / 'earlier'}"
