"""The wheel is the product: built from this tree, installed into a fresh environment (no editable
install, cwd outside the repository), it holds every module and config file and composes every
config group the README names, launchers included."""

from __future__ import annotations

import re
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow  # builds a wheel and a virtual environment: ~30-60 s on 2 cores

GROUP_OPTION = re.compile(
    r"\b(task|model|attention|trainer|logger|experiment|hparams_search|hydra/launcher)=([\w,]+)"
)
# Launcher presets of the installed Hydra plugins (not files of ours) that the README names.
PLUGIN_LAUNCHERS = {"joblib", "submitit_local", "submitit_slurm"}

COMPOSE_ALL = r"""
import json, sys
from pathlib import Path
import attnlab, attnlab.conf
from attnlab.attention import available_attentions
from attnlab.config.schemas import store_configs
from hydra import compose, initialize_config_module

assert "site-packages" in attnlab.__file__ and sys.prefix in attnlab.__file__, attnlab.__file__
conf = Path(attnlab.conf.__file__).parent
groups = {}
for path in sorted(conf.rglob("*.yaml")):
    group = path.parent.relative_to(conf).as_posix()
    if group != ".":
        groups.setdefault(group, []).append(path.stem)
groups["attention"] = sorted(available_attentions())
groups["hydra/launcher"] += json.loads(sys.argv[1])
store_configs()
composed = {}
with initialize_config_module(config_module="attnlab.conf", version_base="1.3"):
    for group, options in groups.items():
        if group in ("hydra",):  # hydra/default.yaml is selected by config.yaml itself
            continue
        for option in options:
            cfg = compose(config_name="config", overrides=[f"{group}={option}"], return_hydra_config=True)
            if group == "hydra/launcher":
                assert cfg.hydra.launcher._target_, (group, option)
            composed.setdefault(group, []).append(option)
    bench = compose(config_name="bench", overrides=["logger=wandb"])
print(json.dumps(composed))
"""


def test_the_wheel_installs_and_composes_every_config_group_outside_the_repository(tmp_path):
    source = tmp_path / "src"  # build from a copy: the build writes build/ and *.egg-info
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("attnlab", "tasks", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("attnlab-*.whl")

    # every module and every config file of the tree is in the wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"attnlab/{p.relative_to(ROOT / 'attnlab').as_posix()}" for p in (ROOT / "attnlab").rglob("*.py")
    }
    expected |= {f"attnlab/tasks/{p.name}" for p in (ROOT / "tasks").glob("*.py")}
    expected |= {
        f"attnlab/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")
    }
    expected = {name for name in expected if "__pycache__" not in name}
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"

    # a fresh environment: the wheel installed for real; the dependencies (torch, ...) come from this
    # environment's site-packages through a .pth line, which does not activate its editable install
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (purelib / "attnlab_test_deps.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(deps)))
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    import json

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    composed = subprocess.run(
        [str(python), "-c", COMPOSE_ALL, json.dumps(sorted(PLUGIN_LAUNCHERS))],
        cwd=outside,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_MODE": "offline"},
    )
    assert composed.returncode == 0, composed.stderr[-3000:]
    groups = json.loads(composed.stdout.strip().splitlines()[-1])
    assert {"parallel", "slurm"} <= set(groups["hydra/launcher"])

    # every group option the README names was composed (attention: the built-ins; plugins are examples)
    readme = (ROOT / "README.md").read_text()
    named = {(g, o) for g, options in GROUP_OPTION.findall(readme) for o in options.split(",") if o}
    missing = {(g, o) for g, o in named if o not in groups.get(g, []) and g != "attention"}
    assert not missing, (
        f"the README names config options the installed wheel cannot compose: {sorted(missing)}"
    )
