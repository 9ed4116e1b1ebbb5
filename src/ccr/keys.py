"""Names of outputs from what made them: canonical settings, short hashes, encoder keys.

Standard library only: the Snakemake scheduler imports this module at parse time (it must not need
torch), and the library uses the same functions, so a path the workflow plans and the key a stage
writes into its output's metadata always agree.

* :func:`canonical` orders every mapping by key, so the order of keys in a config never matters.
* :func:`stable_hash` is a short SHA-1 of the canonical JSON of a value.
* :func:`encoder_key` names a feature cache from its backend and the settings that change numbers.
* :func:`content_stamp` stands for the content of outside files (a dataset's source data).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Settings that change speed or placement but not the numbers a backend produces: left out of keys.
RUNTIME_PARAMS = frozenset({"batch_size", "threads", "num_threads", "device", "shard_size", "local_files_only"})


def canonical(value: Any) -> Any:
    """``value`` with every mapping sorted by key (recursively) and tuples as lists: a stable JSON value."""
    if isinstance(value, Mapping):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise TypeError(f"not a JSON value (str, number, bool, null, list, mapping): {type(value).__name__} {value!r}")


def canonical_json(value: Any) -> str:
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stable_hash(value: Any, length: int = 10) -> str:
    """Short hex SHA-1 of the canonical JSON of ``value`` (the same for any key order)."""
    return hashlib.sha1(canonical_json(value).encode("utf-8")).hexdigest()[:length]


def numeric_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` without the run-time settings of :data:`RUNTIME_PARAMS`."""
    return {k: v for k, v in (params or {}).items() if k not in RUNTIME_PARAMS}


def safe_name(text: str) -> str:
    """``text`` reduced to a file-name-safe token (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def backend_key(backend: str, params: Mapping[str, Any] | None, length: int = 8) -> str:
    """``<backend>-<hash of the numeric params>``: names a stage output by the backend that made it."""
    try:
        digest = stable_hash(numeric_params(params), length)
    except TypeError as err:
        raise ValueError(f"backend '{backend}': params must be JSON values: {err}") from err
    return f"{safe_name(backend)}-{digest}"


def encoder_key(backend: str, params: Mapping[str, Any] | None) -> str:
    """Feature cache key of an encoder: ``<backend>-<sha1 of the numeric settings>[:8]``.

    Run-time settings (:data:`RUNTIME_PARAMS`) are ignored, so changing the batch size or the device
    reuses the cached features.
    """
    return backend_key(backend, params)


def content_stamp(paths: Iterable[str], cache: str | os.PathLike | None = None) -> str:
    """A short hash of the SHA-256 of every file under ``paths`` (files, or folders walked in name order),
    each named by its path as given: the same data gives the same stamp wherever it was copied from and
    whatever its mtimes, and an edit anywhere gives another.

    ``cache``: a JSON file of digests by (path, size, mtime, inode), so a file is read again only when
    one of those changed; a missing or unreadable cache is rebuilt. Written atomically; two processes
    that write it at once lose nothing but the other's new entries.
    """
    try:
        known = json.loads(Path(cache).read_text()) if cache else {}
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    entries, seen = [], {}
    for root in paths:
        files = [Path(root)] if os.path.isfile(root) else sorted(p for p in Path(root).rglob("*") if p.is_file())
        for path in files:
            st = path.stat()
            signature = [st.st_size, st.st_mtime_ns, st.st_ino]
            cached = known.get(str(path))
            if isinstance(cached, list) and len(cached) == 2 and cached[0] == signature:
                digest = cached[1]
            else:
                with open(path, "rb") as fh:
                    digest = hashlib.file_digest(fh, "sha256").hexdigest()
            seen[str(path)] = [signature, digest]
            entries.append([str(path), digest])
    if cache and seen != {k: known.get(k) for k in seen}:
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, **seen}))
        tmp.replace(cache)
    return stable_hash(entries)
