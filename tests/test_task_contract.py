"""The task contract (attnlab/tasks/common.py): what the framework calls on a task is declared and
checked before anything runs, and a new task is one module plus one config file
(docs/adding-a-task.md), proved by tests/plugins/attnlab_tiny_task.py run end to end."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_TASK_SITE, plugin_pythonpath
from helpers import FAST, compose_run, run_cli
from hydra.utils import instantiate

from attnlab.errors import ConfigError, TaskError
from attnlab.run.app import run_args
from attnlab.tasks.classify import ClassifyDataModule, ClassifyTask
from attnlab.tasks.common import AttnlabTask, EncodedDataModule, check_datamodule, check_task_class
from attnlab.tasks.plugins import builtin_tasks

TASK = {"name": "scratch", "monitor": "val/acc", "primary_metric": "test/acc", "monitor_mode": "max"}


@pytest.mark.parametrize("task", builtin_tasks())
def test_builtin_tasks_honour_the_contract(tmp_path, task):
    cfg = compose_run(tmp_path, [f"task={task}"])
    make_module = instantiate(cfg.task.module, _recursive_=False)
    check_task_class(make_module.func.__self__, cfg.task)


def test_a_task_missing_members_is_one_line_naming_them():
    class Scratch(AttnlabTask):  # no from_datamodule, compute_loss, PADDING_MASKS or METRICS
        pass

    with pytest.raises(TaskError) as error:
        check_task_class(Scratch, TASK)
    message = str(error.value)
    for member in ("from_datamodule", "compute_loss", "PADDING_MASKS (or count_tokens and count_positions)"):
        assert member in message
    assert "METRICS" in message and "\n" not in message
    with pytest.raises(TaskError, match="is not an attnlab.tasks.common.AttnlabTask"):
        check_task_class(dict, TASK)


def test_counting_methods_replace_declared_padding_masks():
    class Counting(ClassifyTask):
        PADDING_MASKS = ()

        def count_tokens(self, batch):
            return 1

        def count_positions(self, batch):
            return 1

    check_task_class(Counting, TASK)


def test_monitor_must_name_a_logged_metric():
    with pytest.raises(ConfigError, match=r"task.monitor=val/accuracy \(did you mean 'val/acc'\?\)"):
        check_task_class(ClassifyTask, {**TASK, "monitor": "val/accuracy"})
    with pytest.raises(
        ConfigError, match="is not a metric ClassifyTask logs; choose one of test/loss, test/acc, test/f1"
    ):
        check_task_class(ClassifyTask, {**TASK, "primary_metric": "test/bleu"})


def test_the_app_refuses_a_wrong_monitor_before_writing_anything(tmp_path):
    status, message = run_args([*FAST, "task.monitor=val/accuracy", f"paths.run_dir={tmp_path / 'run'}"])
    assert status == 2 and message.startswith("error: task.monitor=val/accuracy (did you mean 'val/acc'?)")
    assert not (tmp_path / "run").exists()


def test_a_data_module_without_splits_is_named():
    class Empty(EncodedDataModule):
        def setup(self, stage=None):
            self.encoded = {"train": []}

        def collate(self, items):
            return {}

    empty = Empty()
    empty.data, empty.batch_size = {}, 1
    empty.setup()
    with pytest.raises(TaskError, match=r"does not define encoded\['validation'\], encoded\['test'\]"):
        check_datamodule(empty, TASK)
    with pytest.raises(TaskError, match="is not an attnlab.tasks.common.EncodedDataModule"):
        check_datamodule(object(), TASK)
    assert issubclass(ClassifyDataModule, EncodedDataModule)


def test_a_task_from_outside_attnlab_runs_end_to_end(tmp_path):
    """One module and one config file, installed as a plugin: `task=tiny` composes, trains, tests,
    and its cost figures come from its own padding-mask key ('blank')."""
    run_dir = tmp_path / "run"
    result = run_cli(
        ["task=tiny", "logger=none", *FAST, "trainer.max_steps=12", "trainer.val_check_interval=6",
         "+task.data.builtin.n_train=128", f"paths.run_dir={run_dir}", f"paths.data_cache={tmp_path / 'cache'}",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env={"PYTHONPATH": plugin_pythonpath(TINY_TASK_SITE)}, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok" and results["task"] == "tiny" and results["primary_metric"] == "test/acc"
    assert 0.0 <= results["metrics"]["test/acc"] <= 1.0 and "val/loss" in results["metrics"]
    assert results["cost"]["train_tokens_per_s"] > 0 and results["cost"]["attention_flops_per_token"] > 0
    assert results["config"]["task"]["data"]["source"] == "builtin"  # the shared data block, merged


def test_a_data_block_written_without_the_schema_gets_its_declared_checks():
    """A plugin task that writes its whole `data:` block (keys of its own) instead of `- data: default`:
    the keys it shares with attnlab.config.data_schema.DataSchema are checked as the schema checks them."""
    from omegaconf import OmegaConf

    from attnlab.config.checks import check_data
    from attnlab.errors import ConfigError

    check_data(OmegaConf.create({"batch_size": 8, "threshold": 0.5}))  # its own key: the task's to check
    with pytest.raises(ConfigError, match=r"^task.data.batch_size=0 must be an integer >= 1"):
        check_data(OmegaConf.create({"batch_size": 0, "threshold": 0.5}))
    with pytest.raises(ConfigError, match=r"^task.data.columns.text=label and task.data.columns.label=label"):
        check_data(OmegaConf.create({"columns": {"text": "label", "label": "label"}}))


def test_a_task_config_adding_a_data_key_to_the_schema_is_told_how():
    """A task YAML listing `- data: default` with a key of its own under `data:`: Hydra raises the merge
    error inside its handler (the OmegaConf error is the context, not the cause); the line names the key
    and how a task adds keys."""
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    from attnlab.config.data_schema import DataSchema
    from attnlab.config.preflight import hydra_error_message

    cfg = OmegaConf.create({"task": {"data": OmegaConf.structured(DataSchema)}})
    try:
        try:
            cfg.merge_with({"task": {"data": {"threshold": 0.5}}})
        except Exception as error:
            raise ConfigCompositionException(f"In 'task/mine': {error}")  # noqa: B904 (as Hydra does: no `from`)
    except ConfigCompositionException as composed:
        line = hydra_error_message(composed, ["task=mine"])
    assert line.startswith("unknown config key 'task.data.threshold'; the keys of task.data are: source,")
    assert line.endswith("writes its whole data: block instead of `- data: default`")


def test_a_task_module_that_cannot_be_loaded_is_one_line(tmp_path):
    target = "task.module._target_=attnlab.tasks.classify.Classifyer.from_datamodule"
    status, message = run_args([*FAST, target, f"paths.run_dir={tmp_path / 'run'}"])
    assert status == 2 and "\n" not in message
    assert message.startswith(
        "error: task 'classify': task.module._target_=attnlab.tasks.classify.Classifyer"
    )
    assert "cannot be loaded" in message and not (tmp_path / "run").exists()
