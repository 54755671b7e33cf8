"""The study's grid (variant × length × seed) and every check that can fail before a run starts.

A task that supports the study carries a `study:` block in conf/task/<name>.yaml (the contract):

    study:
      length_overrides: ["task.data.builtin.seq_len={length}", "model.max_len={length}"]
      variants: [multihead, linear, performer, local]   # defaults of variants=/lengths=/seeds=
      lengths: [64, 128, 256]
      seeds: [0]
      overrides: ["experiment=mqar"]                     # applied before the user's own overrides

Each cell becomes one tiny `# @package _global_` config in a generated config group `study_cell`
(its attention, seed, length overrides and run directory); the runs are one Hydra multirun over
`+study_cell=<cell>,<cell>,...`, so the cells need not form a cartesian product (a rerun sweeps only
the missing ones). Every cell's config is composed and checked here, through the same files.
"""

from __future__ import annotations

import string
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from attnlab.errors import ConfigError, did_you_mean

STUDY_KEYS = ("length_overrides", "variants", "lengths", "seeds", "overrides")
TEMPLATE_FIELDS = ("length", "half")
CELL_GROUP = "study_cell"  # the generated config group, one config per cell


@dataclass(frozen=True)
class Cell:
    variant: str
    length: int
    seed: int

    @property
    def name(self) -> str:
        """The cell's config name and run directory name, e.g. linear-L128-s0."""
        return f"{self.variant}-L{self.length}-s{self.seed}"


@dataclass(frozen=True)
class Study:
    task: str
    variants: tuple[str, ...]
    lengths: tuple[int, ...]
    seeds: tuple[int, ...]
    length_overrides: tuple[str, ...]  # templates with {length} and {half}
    overrides: tuple[str, ...]  # the task's study.overrides, then the user's own (to every run)
    out: Path  # absolute: a launcher's jobs may run elsewhere (SLURM) and need the same path

    @property
    def cells(self) -> list[Cell]:
        return [Cell(v, n, s) for v in self.variants for n in self.lengths for s in self.seeds]

    @property
    def runs_dir(self) -> Path:
        """Hydra's sweep directory: one run directory per cell below it."""
        return self.out / "runs"

    @property
    def cells_dir(self) -> Path:
        """The config search path entry holding the generated `study_cell` group."""
        return self.out / ".cells"

    @property
    def group(self) -> str:
        """The wandb group every run of the study shares, and the study's own run."""
        return f"study-{self.task}-{self.out.name}"

    def run_dir(self, cell: Cell) -> Path:
        return self.runs_dir / cell.name


def default_out(task: str) -> Path:
    return Path("studies") / task


# ---- the task's study block ----------------------------------------------------------------------
def tasks_with_study() -> list[str]:
    """Tasks whose conf/task/<name>.yaml has a study: block."""
    import attnlab.conf as conf_package

    task_dir = Path(conf_package.__file__).parent / "task"
    return sorted(p.stem for p in task_dir.glob("*.yaml") if "study" in (OmegaConf.load(p) or {}))


def compose(argv: Sequence[str]) -> DictConfig:
    """The app's composed and checked config for `argv` (attnlab.app.preflight: one-line errors)."""
    from attnlab.app import preflight

    cfg = preflight(list(argv))
    assert cfg is not None  # argv never holds flags here
    return cfg


def study_block(task: str, cfg: DictConfig) -> DictConfig:
    """`cfg.task.study` (cfg composed with task=<task>), checked against the contract."""
    block = cfg.task.get("study")
    if block is None:
        having = tasks_with_study()
        raise ConfigError(
            f"task={task} has no study: block in conf/task/{task}.yaml, so it has no length to vary; "
            f"choose task= one of {', '.join(having) or '(none)'}"
        )
    unknown = [k for k in block if k not in STUDY_KEYS]
    if unknown:
        raise ConfigError(
            f"conf/task/{task}.yaml: unknown study key '{unknown[0]}'{did_you_mean(unknown[0], STUDY_KEYS)}; "
            f"the study block holds {', '.join(STUDY_KEYS)}"
        )
    if not block.get("length_overrides"):
        raise ConfigError(
            f"conf/task/{task}.yaml: study.length_overrides is empty; list how a length becomes overrides, "
            f'e.g. ["model.max_len={{length}}"]'
        )
    for template in block.length_overrides:
        check_template(task, str(template))
    return block


def check_template(task: str, template: str) -> None:
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None and field not in TEMPLATE_FIELDS:
            raise ConfigError(
                f"conf/task/{task}.yaml: study.length_overrides '{template}' uses {{{field}}}; "
                f"only {{length}} and {{half}} may appear in braces"
            )
    if "=" not in template:
        raise ConfigError(
            f"conf/task/{task}.yaml: study.length_overrides '{template}' is not key=value; "
            f'write e.g. "model.max_len={{length}}"'
        )


# ---- the grid ------------------------------------------------------------------------------------
def plan(
    task: str,
    *,
    variants: Sequence[str] | None = None,
    lengths: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
) -> Study:
    """The study of `task`: None takes the study block's default; checks everything but the cells' configs."""
    cfg = compose([f"task={task}"])
    block = study_block(task, cfg)
    variants = _unique(block.get("variants") if variants is None else variants)
    lengths = _unique(block.get("lengths") if lengths is None else lengths)
    seeds = _unique(block.get("seeds") if seeds is None else seeds)
    for key, values in (("variants", variants), ("lengths", lengths), ("seeds", seeds)):
        if not values:
            example = {"variants": "[multihead,linear]", "lengths": "[64,128]", "seeds": "[0,1]"}[key]
            raise ConfigError(
                f"{key}= is empty: the grid has no cells; give at least one, e.g. {key}={example}"
            )
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ConfigError(f"lengths: {length!r} is not a positive integer; e.g. lengths=[64,128,256]")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seeds: {seed!r} is not an integer; e.g. seeds=[0,1]")
    check_variants(task, [str(v) for v in variants], task_attention_roles(cfg))
    return Study(
        task=task,
        variants=tuple(str(v) for v in variants),
        lengths=tuple(lengths),
        seeds=tuple(seeds),
        length_overrides=tuple(str(t) for t in block.length_overrides),
        overrides=(*(str(o) for o in block.get("overrides") or ()), *overrides),
        out=Path(str(out) if out is not None else default_out(task)).expanduser().resolve(),
    )


def _unique(values: Any) -> list[Any]:
    if values is None:
        return []
    values = list(values) if isinstance(values, list | tuple) or OmegaConf.is_list(values) else [values]
    return list(dict.fromkeys(values))


def check_variants(task: str, variants: list[str], roles: Sequence[str]) -> None:
    """Known variants (did-you-mean), each able to do what the task's model asks of its attention."""
    from attnlab.attention.base import Capabilities
    from attnlab.attention.registry import get_attention_class, variants_with
    from attnlab.config_checks import check_attention_name
    from attnlab.nn.spec import ROLES

    for name in variants:
        try:
            check_attention_name(name)
        except ConfigError as err:
            raise ConfigError(f"variants: {err}") from None
    for name in variants:
        cls = get_attention_class(name)
        for role in roles:
            for capability in ROLES[role][0]:
                if not getattr(cls.capabilities, capability):
                    what = Capabilities.DESCRIPTIONS.get(capability, capability)
                    able = ", ".join(variants_with(capability))
                    raise ConfigError(
                        f"variants: attention '{name}' does not support {what}, which task={task} needs "
                        f"(its {role.replace('_', ' ')} attention); drop '{name}' from variants=[...]; "
                        f"variants that support it: {able}"
                    )


def task_attention_roles(cfg: DictConfig) -> tuple[str, ...]:
    """The attention roles (attnlab.nn.spec.ROLES) the task's model uses, from its module class's
    `attention_roles`; () when the class does not say (the run itself then checks)."""
    from hydra.utils import get_object

    target = str(cfg.task.module.get("_target_", ""))
    try:
        found = get_object(target)
    except (ImportError, AttributeError, ValueError):
        return ()
    owner = getattr(found, "__self__", found)  # a classmethod constructor: its class
    return tuple(getattr(owner, "attention_roles", ()))


# ---- one config per cell -------------------------------------------------------------------------
def length_overrides(study: Study, length: int) -> list[str]:
    return [t.format(length=length, half=length // 2) for t in study.length_overrides]


def cell_config(study: Study, cell: Cell, *, resume: bool = False) -> str:
    """The cell's `# @package _global_` config: its variant, seed, length overrides and run directory
    (`resume`: continue from the run directory's last checkpoint, `ckpt_path: last`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from attnlab.config_checks import config_groups

    values = OmegaConf.create({"seed": cell.seed})
    for override in OverridesParser.create().parse_overrides(length_overrides(study, cell.length)):
        key = override.key_or_group
        if key in config_groups() or override.is_sweep_override() or override.is_delete():
            raise ConfigError(
                f"conf/task/{study.task}.yaml: study.length_overrides '{override.input_line}' must set one "
                f"config value (key=value), not a config group or a sweep"
            )
        OmegaConf.update(values, key, override.value(), force_add=True)  # `+` or not: a config may add keys
    if resume:
        OmegaConf.update(values, "ckpt_path", "last")
    OmegaConf.update(values, "hydra.sweep.subdir", cell.name, force_add=True)
    body = OmegaConf.to_yaml(values)
    return f"# @package _global_\n# study cell {cell.name}\ndefaults:\n  - override /attention: {cell.variant}\n\n{body}"


def write_cell_configs(
    study: Study, cells: Sequence[Cell], cells_dir: Path, *, resume: Sequence[Cell] = ()
) -> Path:
    group = cells_dir / CELL_GROUP
    group.mkdir(parents=True, exist_ok=True)
    for cell in cells:
        (group / f"{cell.name}.yaml").write_text(cell_config(study, cell, resume=cell in resume))
    return cells_dir


def quote(value: str | Path) -> str:
    """A Hydra override value in single quotes (paths may hold spaces or `=`)."""
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def shared_overrides(study: Study, cells_dir: Path, *, wandb_group: bool) -> list[str]:
    """What every cell's run gets, before its own `+study_cell=<cell>`."""
    argv = [
        f"task={study.task}",
        f"hydra.searchpath=[{quote('file://' + str(cells_dir))}]",
        f"hydra.sweep.dir={quote(study.runs_dir)}",
        *study.overrides,
    ]
    if wandb_group:
        argv.append(f"logger.wandb.group={quote(study.group)}")
    return argv


def preflight_cells(study: Study) -> DictConfig:
    """Compose and check every cell's config (through its generated file) before any run starts.
    Returns the first cell's config (its logger, task and metric)."""
    first: DictConfig | None = None
    with tempfile.TemporaryDirectory(prefix="attnlab-study-") as tmp:
        cells_dir = write_cell_configs(study, study.cells, Path(tmp))
        for cell in study.cells:
            argv = [*shared_overrides(study, cells_dir, wandb_group=False), f"+{CELL_GROUP}={cell.name}"]
            try:
                cfg = compose(argv)
            except ConfigError as err:
                raise ConfigError(f"study cell {cell.name}: {err}") from None
            if cfg.model.max_len < cell.length:
                raise ConfigError(
                    f"study cell {cell.name}: length {cell.length} is above model.max_len={cfg.model.max_len}; "
                    f"lower lengths= to at most {cfg.model.max_len}, or raise (or drop) the model.max_len override"
                )
            first = first if first is not None else cfg
    assert first is not None
    return first
