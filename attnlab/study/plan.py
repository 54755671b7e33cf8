"""The study's grid (variant × length × seed) and the checks before a run starts that relate two keys
or need the composed task; each key's own check is declared beside its type (attnlab.config.study_schema:
StudyArgs for the command line's keys, StudyBlock for the task's block).

A task that supports the study carries a `study:` block in conf/task/<name>.yaml (the contract):

    study:
      variants: [multihead, linear, performer, local]   # defaults of variants=/lengths=/seeds=
      lengths: [64, 128, 256]
      seeds: [0]
      overrides: ["experiment=mqar"]                     # applied before the user's own overrides

A length is one fact with one home: a cell hands it to its data's generator through the generator's
length knobs (attnlab.data.generators.length_knobs: mqar's seq_len, listops' min_length/max_length),
the map task.eval_lengths reads too, and the model is as long as the rows those knobs generate
(model.max_len=null: attnlab.config.sequence_lengths.resolve_max_len). `length_overrides` (templates
with {length} and {half}) say what else a length sets, e.g. task=lm's ["model.max_len={length}"]: its
corpus has no knob, its windows are the length.

Each cell becomes one tiny `# @package _global_` config in a generated config group `study_cell`
(its attention, seed, length overrides and run directory); the runs are one Hydra multirun over
`+study_cell=<cell>,<cell>,...`, so the cells need not form a cartesian product (a rerun sweeps only
the missing ones). Every cell's config is composed and checked here, through the same files.

The block may also hold `grid:` and `tune:` mappings (config key -> values, attnlab.study.axes),
`mean_over:` (a grid key whose values the study averages per variant), `skip:` (cells left out:
a list of {axis: value or [values]} matches, axes being variant, length, seed or a grid key) and
`per_length:` ({config key: {length: value}}: a value that follows the length, e.g. zoology's
(length, pairs) points). The block is read from the task composed with the command's overrides, so
an `experiment=` preset may carry its own study settings (conf/experiment/zoology_mqar.yaml).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from attnlab.config.fields import checked_values
from attnlab.config.study_schema import StudyArgs, StudyBlock, variant_layers
from attnlab.errors import ConfigError, did_you_mean
from attnlab.study import axes as ax

STUDY_KEYS = tuple(f.name for f in fields(StudyBlock))  # the block's keys, typed and checked there
CELL_GROUP = "study_cell"  # the generated config group, one config per cell


def variant_slug(variant: str) -> str:
    """A variant name, or a hybrid's pattern label, as a file and directory name:
    gated_deltanet*3+multihead -> gated_deltanetx3+multihead; 'local(window=64)' -> local.window64."""
    slug = variant.replace("*", "x").replace("(", ".").replace(",", ".").replace("=", "").replace(")", "")
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", slug)


@dataclass(frozen=True)
class Cell:
    variant: str
    length: int
    seed: int
    grid: ax.Point = ()  # the grid point: ((key, value), ...)
    tune: ax.Point = ()  # the tuned values this run trains with
    tags: tuple[str, str] = field(default=("", ""), compare=False)  # the name's grid and tune parts

    @property
    def name(self) -> str:
        """The cell's config name and run directory name, e.g. linear-L128-s0, linear-L128-d_model64-s0-lr0p003."""
        return f"{variant_slug(self.variant)}-L{self.length}{self.tags[0]}-s{self.seed}{self.tags[1]}"

    @property
    def group(self) -> tuple[str, int, str, int]:
        """What one tuned selection is made over: (variant, length, grid point, seed)."""
        return (self.variant, self.length, ax.describe(self.grid), self.seed)

    def __hash__(self) -> int:  # values may be lists; the name is unique within a study
        return hash(self.name)


@dataclass(frozen=True)
class Study:
    task: str
    variants: tuple[str, ...]
    lengths: tuple[int, ...]
    seeds: tuple[int, ...]
    length_overrides: tuple[str, ...]  # templates with {length} and {half}, after the generator's knobs
    overrides: tuple[str, ...]  # the task's study.overrides, then the user's own (to every run)
    out: Path  # absolute: a launcher's jobs may run elsewhere (SLURM) and need the same path
    grid: ax.Axes = ()
    tune: ax.Axes = ()
    mean_over: str | None = None  # a grid key averaged per variant in study.md
    eval_lengths: tuple[int, ...] = ()  # every run is also tested at these lengths (task.eval_lengths)
    allow_partial: bool = False  # runs cut short count in means and selections
    skip: tuple[dict[str, tuple[Any, ...]], ...] = ()  # cells left out (matches)
    per_length: tuple[tuple[str, dict[int, Any]], ...] = ()  # (key, {length: value}) set in each cell
    generator: str | None = None  # the built-in generator whose length knobs each length sets

    @property
    def grid_points(self) -> list[ax.Point]:
        return ax.points(self.grid)

    @property
    def tune_points(self) -> list[ax.Point]:
        return ax.points(self.tune)

    @property
    def cells(self) -> list[Cell]:
        grid_names, tune_names = ax.labels([k for k, _ in self.grid]), ax.labels([k for k, _ in self.tune])
        out = []
        for v in self.variants:
            for n in self.lengths:
                for g in self.grid_points:
                    for s in self.seeds:
                        for t in self.tune_points:
                            tags = (ax.tag(g, grid_names), ax.tag(t, tune_names))
                            cell = Cell(v, n, s, g, t, tags)
                            if not skipped(self.skip, cell):
                                out.append(cell)
        return out

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


BOUND = re.compile(r"^\s*(<=|>=|<|>)\s*(-?\d+(?:\.\d*)?(?:e-?\d+)?)\s*$")  # skip's '<256', '>=1e-3'


def skipped(skip: Sequence[dict[str, tuple[Any, ...]]], cell: Cell) -> bool:
    """True when every axis of one `skip` entry holds the cell's value: one of the entry's values, or
    within one of its bounds (a string '<256', '>=1024': the capacity point at the longest lengths only)."""
    values = {"variant": cell.variant, "length": cell.length, "seed": cell.seed, **dict(cell.grid)}
    return any(all(_matches(values.get(key), allowed) for key, allowed in entry.items()) for entry in skip)


def _matches(value: Any, allowed: Sequence[Any]) -> bool:
    for item in allowed:
        bound = BOUND.match(item) if isinstance(item, str) else None
        if bound is None:
            if value == item:
                return True
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        op, limit = bound.group(1), float(bound.group(2))
        if {"<": value < limit, "<=": value <= limit, ">": value > limit, ">=": value >= limit}[op]:
            return True
    return False


def default_out(task: str) -> Path:
    return Path("studies") / task


# ---- the task's study block ----------------------------------------------------------------------
def tasks_with_study() -> list[str]:
    """Tasks whose conf/task/<name>.yaml has a study: block."""
    import attnlab.conf as conf_package

    task_dir = Path(conf_package.__file__).parent / "task"
    return sorted(p.stem for p in task_dir.glob("*.yaml") if "study" in (OmegaConf.load(p) or {}))


def compose(argv: Sequence[str]) -> DictConfig:
    """The app's composed and checked config for `argv` (attnlab.config.preflight: one-line errors)."""
    from attnlab.config.preflight import preflight

    cfg = preflight(list(argv))
    assert cfg is not None  # argv never holds flags here
    return cfg


def study_block(task: str, cfg: DictConfig) -> DictConfig:
    """`cfg.task.study` (cfg composed with task=<task>), checked against the contract: its keys by their
    declared checks (attnlab.config.study_schema StudyBlock), then how a length reaches the data."""
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
    try:
        checked_values(StudyBlock, block)
    except ConfigError as err:
        raise ConfigError(f"conf/task/{task}.yaml: study.{err}") from None
    if not block.get("length_overrides") and length_generator(cfg) is None:
        raise ConfigError(
            f"conf/task/{task}.yaml: study.length_overrides is empty and the task's data has no length knob; "
            f'list how a length becomes overrides, e.g. ["model.max_len={{length}}"]'
        )
    return block


def length_generator(cfg: DictConfig) -> str | None:
    """The built-in generator of the task's data when it has length knobs (length_knobs), else None."""
    from attnlab.data.generators import generator_params, length_knobs

    data = cfg.get("task", {}).get("data") or {}
    name, _ = generator_params(data.get("builtin") or {})
    return name if name is not None and length_knobs(name, 1) else None


def generator_length_keys(generator: str | None) -> list[str]:
    """The config keys a length sets on the generator (task.data.builtin.<knob>)."""
    from attnlab.data.generators import length_knobs

    return [f"task.data.builtin.{knob}" for knob in length_knobs(generator, 1)] if generator else []


# ---- the grid ------------------------------------------------------------------------------------
def plan(
    task: str,
    *,
    variants: Sequence[str] | None = None,
    lengths: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    out: str | Path | None = None,
    grid: dict[str, Any] | None = None,
    tune: dict[str, Any] | None = None,
    cleared: Sequence[str] = (),
    mean_over: str | None = None,
    eval_lengths: Sequence[int] | None = None,
    allow_partial: bool = False,
    skip: Sequence[dict[str, Any]] | None = None,
) -> Study:
    """The study of `task`: None takes the study block's default; checks everything but the cells' configs.
    `grid`/`tune`: {key: values} from the command line, over the block's; `cleared`: "grid"/"tune"
    whose block defaults are dropped (`grid={}`)."""
    cfg = compose_task(task, overrides)
    block = study_block(task, cfg)
    variants = _unique(block.get("variants") if variants is None else variants)
    lengths = _unique(block.get("lengths") if lengths is None else lengths)
    seeds = _unique(block.get("seeds") if seeds is None else seeds)
    eval_lengths = block.get("eval_lengths") if eval_lengths is None else eval_lengths
    given = dict(variants=variants, lengths=lengths, seeds=seeds, out=out, eval_lengths=eval_lengths)
    # each key by its declared check (attnlab.config.study_schema), the block's defaults where the
    # command line leaves them; the block's own skip entries were checked with the block
    given |= dict(task=task, allow_partial=allow_partial, mean_over=mean_over, skip=skip)
    checked_values(StudyArgs, given)
    check_variants(task, [str(v) for v in variants], task_attention_roles(cfg))
    grid_axes = ax.merge("grid", block.get("grid"), grid, "grid" in cleared)
    tune_axes = ax.merge("tune", block.get("tune"), tune, "tune" in cleared)
    templates = tuple(str(t) for t in block.get("length_overrides") or ())
    generator = length_generator(cfg)
    task_overrides = tuple(str(o) for o in block.get("overrides") or () if str(o) not in overrides)
    per_length = tuple((str(k), dict(m)) for k, m in (ax.plain(block.get("per_length")) or {}).items())
    passed = [override_key(o) for o in (*task_overrides, *overrides)]
    ax.check_keys(
        grid_axes,
        tune_axes,
        passed=passed,
        length_keys=[
            *generator_length_keys(generator),
            *(override_key(t) for t in templates),
            *(k for k, _ in per_length),
        ],
    )
    for key, _ in per_length:
        if key in passed:
            raise ConfigError(
                f"{key} is set per length by the study's per_length and by the override {key}=...; "
                f"the override would win at every length: drop it"
            )
    mean_over = str(block.get("mean_over")) if mean_over is None and block.get("mean_over") else mean_over
    if mean_over is not None and mean_over not in dict(grid_axes):
        known = [k for k, _ in grid_axes]
        raise ConfigError(
            f"mean_over={mean_over}: not a grid axis{did_you_mean(mean_over, known)}; it averages over the values "
            f"of one grid.<key>=[...] ({', '.join(known) or 'this study has none'})"
        )
    evals = tuple(_unique(eval_lengths))
    if evals:
        overrides = (*overrides, f"task.eval_lengths=[{','.join(str(n) for n in evals)}]")
    axis_names = ("variant", "length", "seed", *(k for k, _ in grid_axes))
    if skip is None:  # the block's skip entries naming an axis this study dropped (grid={}) do not apply
        skip = [
            e for e in ax.as_list(block.get("skip") or []) if set(ax.flatten(ax.plain(e))) <= set(axis_names)
        ]
    skips = check_skip(skip, axis_names)
    study = Study(
        task=task,
        variants=tuple(str(v) for v in variants),
        lengths=tuple(lengths),
        seeds=tuple(seeds),
        length_overrides=templates,
        overrides=(*task_overrides, *overrides),
        out=Path(str(out) if out is not None else default_out(task)).expanduser().resolve(),
        grid=grid_axes,
        tune=tune_axes,
        mean_over=mean_over,
        eval_lengths=evals,
        allow_partial=bool(allow_partial),
        skip=skips,
        per_length=per_length,
        generator=generator,
    )
    check_names(study)
    return study


def compose_task(task: str, overrides: Sequence[str]) -> DictConfig:
    """The task's config composed with the command's overrides (a preset may change the study block);
    when those overrides do not compose, the task alone (preflight_cells then names the bad override)."""
    if overrides:
        from attnlab.config.preflight import compose as compose_only
        from attnlab.config.schemas import store_configs

        store_configs()
        try:  # Hydra's composition only: the run's own checks (a GPU preset on a CPU) come per cell
            return compose_only([f"task={task}", *overrides])
        except ConfigError:
            pass
    return compose([f"task={task}"])


def override_key(override: str) -> str:
    """The key an override (or a length template) sets, without `+`/`~`/`++`."""
    return override.split("=", 1)[0].lstrip("+~")


def check_skip(entries: Any, axis_names: Sequence[str]) -> tuple[dict[str, tuple[Any, ...]], ...]:
    """`skip`'s entries (each a mapping, StudyArgs' check) by axis: one that is not one of the study's
    axes is an error."""
    out = []
    for entry in ax.as_list(entries) if entries is not None else []:
        flat = ax.flatten(entry)
        for key in flat:
            if key not in axis_names:
                raise ConfigError(
                    f"skip: '{key}' is not an axis of this study{did_you_mean(key, axis_names)}; "
                    f"the axes: {', '.join(axis_names)}"
                )
        out.append({key: tuple(ax.as_list(value)) for key, value in flat.items()})
    return tuple(out)


def check_names(study: Study) -> None:
    """Every cell has its own name (two values of an axis could read alike, e.g. 1 and "1")."""
    cells = study.cells
    if not cells:
        raise ConfigError("skip= leaves no cell to run; drop or narrow its entries")
    seen: dict[str, Cell] = {}
    for cell in cells:
        if cell.name in seen:
            raise ConfigError(
                f"two cells would share the name {cell.name} ({ax.describe(seen[cell.name].grid + seen[cell.name].tune)} "
                f"and {ax.describe(cell.grid + cell.tune)}); give the axis values that differ in more than their type"
            )
        seen[cell.name] = cell


def _unique(values: Any) -> list[Any]:
    if values is None:
        return []
    values = list(values) if isinstance(values, list | tuple) or OmegaConf.is_list(values) else [values]
    return list(dict.fromkeys(values))


def check_variants(task: str, variants: list[str], roles: Sequence[str]) -> None:
    """Known variants (did-you-mean), each able to do what the task's model asks of its attention."""
    from attnlab.attention.base import Capabilities
    from attnlab.attention.registry import get_attention_class, variants_with
    from attnlab.nn.spec import ROLES

    # each entry's variants: itself, or a hybrid's one per layer (an unknown name: StudyArgs' check)
    layers = {name: variant_layers(name) for name in variants}
    for name in variants:
        for layer in dict.fromkeys(layers[name]):
            cls = get_attention_class(layer)
            for role in roles:
                for capability in ROLES[role][0]:
                    if not getattr(cls.capabilities, capability):
                        what = Capabilities.DESCRIPTIONS.get(capability, capability)
                        able = ", ".join(variants_with(capability))
                        where = f"attention '{layer}'" + (f" (a layer of '{name}')" if layer != name else "")
                        raise ConfigError(
                            f"variants: {where} does not support {what}, which task={task} needs "
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
    """A cell's length as overrides: the generator's length knobs (as task.eval_lengths sets them), then
    the block's templates."""
    from attnlab.data.generators import length_knobs

    knobs = length_knobs(study.generator, length) if study.generator else {}
    data = [f"task.data.builtin.{knob}={value}" for knob, value in knobs.items()]
    return [*data, *(t.format(length=length, half=length // 2) for t in study.length_overrides)]


def cell_config(study: Study, cell: Cell, *, resume: bool = False) -> str:
    """The cell's `# @package _global_` config: its variant, seed, length overrides and run directory
    (`resume`: continue from the run directory's last checkpoint, `ckpt_path: last`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from attnlab.config.overrides import config_groups
    from attnlab.nn.pattern import is_pattern, parse_pattern, pattern_label

    values = OmegaConf.create({"seed": cell.seed})
    for override in OverridesParser.create().parse_overrides(length_overrides(study, cell.length)):
        key = override.key_or_group
        if key in config_groups() or override.is_sweep_override() or override.is_delete():
            raise ConfigError(
                f"conf/task/{study.task}.yaml: study.length_overrides '{override.input_line}' must set one "
                f"config value (key=value), not a config group or a sweep"
            )
        OmegaConf.update(values, key, override.value(), force_add=True)  # `+` or not: a config may add keys
    for key, by_length in study.per_length:
        if cell.length in by_length:
            OmegaConf.update(values, key, by_length[cell.length], force_add=True)
    groups = config_groups()
    attention = cell.variant
    if is_pattern(cell.variant):  # a hybrid: its layers are model.layers; attention names its first layer
        layers = parse_pattern(cell.variant)
        attention = layers[0].attention.name
        OmegaConf.update(values, "model.layers", pattern_label(layers).split("+"), force_add=True)
    defaults = [f"override /attention: {attention}"]
    for key, value in (*cell.grid, *cell.tune):
        if key in groups:  # a config group as an axis (grid.model=[tiny,small]): a choice, not a value
            defaults.append(f"override /{key.replace('.', '/')}: {value}")
        else:
            OmegaConf.update(values, key, value, force_add=True)
    if resume:
        OmegaConf.update(values, "ckpt_path", "last")
    OmegaConf.update(values, "hydra.sweep.subdir", cell.name, force_add=True)
    body = OmegaConf.to_yaml(values)
    listed = "".join(f"  - {line}\n" for line in defaults)
    return f"# @package _global_\n# study cell {cell.name}\ndefaults:\n{listed}\n{body}"


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


def _sets_eval_lengths(override: str) -> bool:
    return override_key(override) == "task.eval_lengths"


def representative_cells(study: Study) -> list[Cell]:
    """The cells whose configs preflight composes: every (variant, length, grid point) once, and every
    further tuned value once. A seed is an integer that no check refuses, and a composition takes a
    second or more on a busy laptop, so the default MQAR study's 72 cells need 14, not 72."""
    chosen: dict[tuple, Cell] = {}
    for cell in study.cells:
        chosen.setdefault((cell.variant, cell.length, ax.describe(cell.grid)), cell)
    for cell in study.cells:
        chosen.setdefault(("tune", ax.describe(cell.tune)), cell)
    picked = set(chosen.values())
    return [cell for cell in study.cells if cell in picked]


def preflight_cells(study: Study) -> DictConfig:
    """Compose and check the cells' configs (through their generated files, representative_cells)
    before any run starts. Returns the first cell's config (its logger, task and metric)."""
    from attnlab.config.overrides import config_groups

    first: DictConfig | None = None
    with tempfile.TemporaryDirectory(prefix="attnlab-study-") as tmp:
        cells_dir = write_cell_configs(study, study.cells, Path(tmp))
        if study.grid or study.tune:  # the axis keys exist in a cell's config composed without them
            bare = Cell(study.variants[0], study.lengths[0], study.seeds[0], tags=("-axes", ""))
            write_cell_configs(study, [bare], cells_dir)
            # composed for its keys only: without the test lengths, whose checks may hold only with the
            # axes' values (eval_lengths past max_len with grid.model.positional=[rope,none])
            shared = [
                o for o in shared_overrides(study, cells_dir, wandb_group=False) if not _sets_eval_lengths(o)
            ]
            argv = [*shared, f"+{CELL_GROUP}={bare.name}"]
            try:
                base = compose(argv)
            except ConfigError as err:
                raise ConfigError(f"study cell {bare.name}: {err}") from None
            ax.check_keys_exist(base, study.grid, "grid", config_groups())
            ax.check_keys_exist(base, study.tune, "tune", config_groups())
        for cell in representative_cells(study):
            argv = [*shared_overrides(study, cells_dir, wandb_group=False), f"+{CELL_GROUP}={cell.name}"]
            try:
                cfg = compose(argv)  # checked: model.max_len=null is the cell's generated length by now
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
