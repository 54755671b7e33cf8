"""Shared test setup: a simulated plugin installation, and the conformance suite's inputs.

Plugins are "installed" the way pip would leave them, through entry-point METADATA only: at import
time (before any test module is collected) a temporary site directory receives
`attnlab_example_plugin-0.1.dist-info/{METADATA,entry_points.txt}`, and it and tests/plugins (the
package's code) go on sys.path. `importlib.metadata.entry_points(group="attnlab.attention")` then
finds the plugin, so `attnlab.available_attentions()` (hence the conformance parametrisation)
includes it. The broken plugin has its own site directory, activated only by the `broken_plugin`
fixture.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PLUGIN_CODE = TESTS / "plugins"  # the plugins' import packages

EXAMPLE_PLUGIN = (
    "attnlab-example-plugin",
    "0.1",
    {"sigmoid": "attnlab_example_plugin.sigmoid:SigmoidAttention"},
)
BROKEN_PLUGIN = ("attnlab-broken-plugin", "0.1", {"broken": "attnlab_broken_plugin:BrokenAttention"})
# Declares causal=True but lets the future leak: only ever installed in a subprocess (test_check.py).
LEAKY_PLUGIN = ("attnlab-leaky-plugin", "0.1", {"leaky": "attnlab_leaky_plugin:LeakyAttention"})
# Declares its capabilities honestly and never calls check_request: the framework enforces them.
HONEST_PLUGIN = ("attnlab-honest-plugin", "0.1", {"honest": "attnlab_honest_plugin:HonestAttention"})
# A task added from outside attnlab (one module + its config file): only installed in a subprocess.
TINY_TASK_PLUGIN = ("attnlab-tiny-task", "0.1", {"tiny": "attnlab_tiny_task"}, "attnlab.tasks")


def make_site(
    site: Path, dist: str, version: str, entry_points: dict[str, str], group: str = "attnlab.attention"
) -> Path:
    """Write the dist-info of an installed distribution `dist` declaring `entry_points` into `site`."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    return site


_TMP = Path(tempfile.mkdtemp(prefix="attnlab-test-plugins-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
EXAMPLE_SITE = make_site(_TMP / "site", *EXAMPLE_PLUGIN)
BROKEN_SITE = make_site(_TMP / "broken-site", *BROKEN_PLUGIN)
LEAKY_SITE = make_site(_TMP / "leaky-site", *LEAKY_PLUGIN)
HONEST_SITE = make_site(_TMP / "honest-site", *HONEST_PLUGIN)
TINY_TASK_SITE = make_site(_TMP / "tiny-task-site", *TINY_TASK_PLUGIN)

for path in (str(ROOT), str(PLUGIN_CODE), str(EXAMPLE_SITE)):
    if path not in sys.path:
        sys.path.insert(0, path)
importlib.invalidate_caches()

from attnlab.attention import registry  # noqa: E402  (after the simulated installation)

if registry._discovered:  # something imported and queried the registry before us
    registry.rediscover()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny-tensor tests: a second thread only adds contention on
    a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def broken_plugin() -> Iterator[Path]:
    """Install the broken plugin (its own dist-info) for one test, then remove it again."""
    with activated(BROKEN_SITE):
        yield BROKEN_SITE


@contextlib.contextmanager
def activated(site: Path) -> Iterator[None]:
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        with warnings.catch_warnings():  # the test itself rediscovers under pytest.warns
            warnings.simplefilter("ignore")
            registry.rediscover()
        yield
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("attnlab_broken_plugin", None)
        importlib.invalidate_caches()
        registry.rediscover()


def plugin_pythonpath(*sites: Path) -> str:
    """PYTHONPATH for a subprocess that should see attnlab, the plugin code and `sites`."""
    return ":".join(str(p) for p in (ROOT, PLUGIN_CODE, *sites))


# ---- the conformance suite's inputs: shipped with the package (attnlab/check/inputs.py) ---------------
from attnlab.check.inputs import MAX_LEN, B, D, H, N, qkv, randn  # noqa: E402, F401
