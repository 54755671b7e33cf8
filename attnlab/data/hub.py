"""Hugging Face hub datasets by name (task.data.source=hf), failing in seconds when offline.

Before `datasets.load_dataset` (which retries for ~25 s without a network), the hub endpoint is
probed with a 3 s TCP connect; an unreachable hub is one DataError pointing at the offline sources.
With HF_HUB_OFFLINE=1 the probe is skipped and `datasets` reads its local cache. With an HTTP(S)
proxy configured the probe is skipped too (the proxy, not a direct connection, decides).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from attnlab.data.splits import canonical_split
from attnlab.errors import DataError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
OFFLINE_HINT = "for offline runs use task.data.source=builtin or task.data.source=files task.data.path=<file>"


def load_hub(name: str | None, subset: str | None, *, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """{canonical split: datasets.Dataset} of a hub dataset; splits that are not train/validation/test are dropped."""
    if not name:
        raise DataError("task.data.source=hf needs a dataset name: task.data.name=<hub dataset>, e.g. imdb")
    import datasets

    if not datasets.config.HF_HUB_OFFLINE and not _proxy_configured():
        reason = unreachable_reason(endpoint())
        if reason:
            raise DataError(_message(name, f"{reason}; with a cached copy set HF_HUB_OFFLINE=1"))
    try:
        loaded = datasets.load_dataset(name, subset, cache_dir=None if cache_dir is None else str(cache_dir))
    except (OSError, ValueError) as err:  # ConnectionError, DatasetNotFoundError, unknown config names
        raise DataError(_message(name, _short(err))) from err
    tables: dict[str, Any] = {}
    for split_name, table in loaded.items():
        split = canonical_split(split_name)
        if split is None or split in tables:
            log.info("hub dataset '%s': ignoring split '%s'", name, split_name)
        else:
            tables[split] = table
    return tables


def endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def unreachable_reason(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the endpoint opens within `timeout`, else why not (short)."""
    parsed = urlparse(url)
    host = parsed.hostname or url
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as err:
            result.append(f"cannot reach {host}: {err.strerror or err}")

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo itself has no timeout
    thread.start()
    thread.join(timeout + 1.0)
    return result[0] if result else f"no answer from {host} within {timeout:g} s"


def _proxy_configured() -> bool:
    return any(
        os.environ.get(v)
        for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    )


def _message(name: str, reason: str) -> str:
    return f"could not load hub dataset '{name}' (no network or unknown name: {reason}); {OFFLINE_HINT}"


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0][:200] if text else type(err).__name__).rstrip(".")
