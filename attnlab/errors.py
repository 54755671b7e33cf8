"""User-facing errors: one line that says what was wrong and what to type instead.

`python -m attnlab` prints these without a traceback (the traceback goes to the run's log file);
anything else is a bug and is shown in full.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable
from typing import NoReturn


class AttnlabError(Exception):
    """An error the user can fix; its message names the problem and the fix."""


class ConfigError(AttnlabError, ValueError):
    """A configuration value is unknown, mistyped or out of range."""


class CapabilityError(AttnlabError, ValueError):
    """An attention variant was asked for something it declares it cannot do."""


class DataError(AttnlabError, ValueError):
    """The data cannot be used: missing files, columns or splits, or unusable content."""


class PluginError(AttnlabError, RuntimeError):
    """A third-party attention plugin is malformed."""


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The closest valid choice to a mistyped `word`, or None when nothing is close."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' when a close choice exists, else ''."""
    match = closest(word, choices)
    return f" (did you mean '{match}'?)" if match else ""


class TaskError(AttnlabError, TypeError):
    """A task's Lightning module or data module does not honour the task contract (attnlab.tasks.common)."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error:` line and exit status 2, like every attnlab error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")
