"""Checksums of a finished run's artefacts, so a result is never trusted blindly.

:func:`seal` adds to a result the SHA-256 of every file the run wrote (weights, mask, metrics, the
pruned model, rewinding points, its spec) and a checksum of the result itself; :func:`verify` says
what no longer matches (a truncated weights file, a hand-edited accuracy, a deleted metrics file).
Results written before sealing existed carry neither and are accepted as they are.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Files of a run directory that change after a run finishes, or are the result itself.
_UNSEALED = {"result.json", "checkpoint.pt", "error.json"}


#: Digests already computed in this process, by (path, size, mtime): a parent read back by every
#: ticket that builds on it is hashed once, and any rewrite of the file changes the key.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks; remembered while the file is unchanged)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _hash_file(path)
    return _DIGESTS[key]


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artefacts(run_dir: Path) -> dict[str, str]:
    """``{path relative to run_dir: sha256}`` of every sealed file (temporary files excluded)."""
    out: dict[str, str] = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and rel not in _UNSEALED and not path.name.endswith(".tmp"):
            out[rel] = file_sha256(path)
    return out


def result_checksum(result: Mapping[str, Any]) -> str:
    """SHA-256 of the result's canonical JSON, its own ``checksum`` field excluded."""
    body = {k: v for k, v in result.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def seal(result: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``result`` with ``artefacts`` (checksums of the run's files) and its own ``checksum``, in place."""
    result["artefacts"] = artefacts(run_dir)
    result["checksum"] = result_checksum(result)
    return result


def verify(result: Mapping[str, Any], run_dir: Path) -> list[str]:
    """What no longer matches a sealed result (empty: intact, or an unsealed legacy result)."""
    if "checksum" not in result:
        return []
    problems = []
    if result_checksum(result) != result["checksum"]:
        problems.append("result.json was modified after the run finished")
    for rel, expected in dict(result.get("artefacts", {})).items():
        path = run_dir / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif file_sha256(path) != expected:
            problems.append(f"{rel} does not match its checksum (truncated or modified)")
    return problems
