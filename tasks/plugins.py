"""Tasks from installed packages: the entry-point group `attnlab.tasks`, one config file per task.

A package declares, in its pyproject.toml,

    [project.entry-points."attnlab.tasks"]
    majority = "my_package.majority"         # a module; its config is my_package/majority.yaml

and `python -m attnlab task=majority` runs it: the YAML beside the module (same stem) is stored
into Hydra's ConfigStore as the option `majority` of the group `task`, exactly as a file
conf/task/majority.yaml would be. A plugin whose config cannot be found or read, or whose name
is taken by a built-in task, is reported by name as a warning and skipped.
"""

from __future__ import annotations

import importlib.util
import warnings
from importlib import metadata
from pathlib import Path

ENTRY_POINT_GROUP = "attnlab.tasks"


def builtin_tasks() -> list[str]:
    import attnlab.conf as conf_package

    return sorted(p.stem for p in (Path(conf_package.__file__).parent / "task").glob("*.yaml"))


def task_config_path(module: str) -> Path:
    """The config file of a task module: <module file without .py>.yaml."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"no module named '{module}'")
    return Path(spec.origin).with_suffix(".yaml")


def store_task_configs() -> dict[str, Path]:
    """Store every installed task plugin's config as an option of the `task` group: {name: config file}."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    stored: dict[str, Path] = {}
    taken = set(builtin_tasks())
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            if entry.name in taken:
                raise ValueError(f"the name '{entry.name}' is taken by a built-in task")
            path = task_config_path(entry.value)
            node = OmegaConf.load(path)
            name = node.get("name", entry.name)
            if name != entry.name:
                raise ValueError(f"{path.name} says name: {name}, but its entry point is '{entry.name}'")
        except Exception as error:  # one broken plugin never breaks the others
            reason = " ".join(str(error).split())
            warnings.warn(f"task plugin '{entry.name}' ({entry.value}) skipped: {reason}", stacklevel=2)
            continue
        node.name = entry.name
        provider = entry.dist.name if entry.dist is not None else entry.value
        ConfigStore.instance().store(group="task", name=entry.name, node=node, provider=provider)
        stored[entry.name] = path
    return stored
