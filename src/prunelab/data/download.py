"""Checksummed downloads and safe, atomic archive extraction.

Nothing here ever leaves a partial file where a complete one is expected: downloads go to a temporary
file in the destination directory and are renamed into place only after their MD5 matches, and archives
are extracted into a temporary directory beside the target and renamed into place in one step. Two
processes racing on the same dataset both end up with a complete copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from prunelab.errors import DataError

_CHUNK = 1 << 20  # bytes read per step while downloading / hashing


@dataclass(frozen=True)
class ArchiveSource:
    """Where a dataset archive comes from and what it unpacks to.

    Attributes:
        url: download address (``https://`` or ``file://``).
        md5: expected MD5 hex digest of the archive.
        filename: the archive's file name inside the data directory.
        folder: the top-level folder the archive extracts to, inside the data directory.
    """

    url: str
    md5: str
    filename: str
    folder: str


def md5sum(path: Path) -> str:
    """MD5 hex digest of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str, *, progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its MD5; return ``dest``.

    The bytes are written to a temporary file in ``dest``'s directory, hashed on the way, and renamed
    onto ``dest`` only when the digest equals ``md5``. On any failure (network, disk, checksum) the
    temporary file is removed and a :class:`DataError` is raised; an existing ``dest`` is left untouched.

    Args:
        url: any URL urllib opens, including ``file://`` (used by the tests).
        dest: final path of the file.
        md5: expected MD5 hex digest (case-insensitive).
        progress: show a progress bar on stderr.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DataError(f"cannot write to {dest.parent}: {exc}") from None
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                total = response.headers.get("Content-Length")
                bar = _progress_bar(dest.name, int(total) if total else None) if progress else None
                try:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                finally:
                    if bar is not None:
                        bar.close()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DataError(f"could not download {url} to {dest}: {reason}") from None
        actual = digest.hexdigest()
        if actual != md5.lower():
            raise DataError(
                f"checksum mismatch for {dest.name} (from {url}): expected md5 {md5.lower()}, got {actual}"
            )
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a dataset cache is shareable
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _progress_bar(name: str, total: int | None) -> _Bar:
    from tqdm import tqdm  # imported lazily: only interactive downloads need it

    return tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {name}", file=sys.stderr)


class _Bar(Protocol):
    """The part of tqdm's interface used above."""

    def update(self, n: float | None = 1) -> bool | None: ...
    def close(self) -> None: ...


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Reject members that could write outside the extraction directory or are not plain files/dirs."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or ".." in parts:
        raise DataError(f"unsafe path {name!r} in archive {archive}; refusing to extract it")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        # Symlink targets are relative to the link's folder; hard-link targets to the archive root.
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / target).parts if not target.is_absolute() else ("..",):
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                raise DataError(
                    f"link {name!r} -> {member.linkname!r} in archive {archive} points outside it; "
                    "refusing to extract it"
                )
    elif not (member.isfile() or member.isdir()):
        raise DataError(f"special file {name!r} in archive {archive}; refusing to extract it")


def extract_atomic(
    archive: Path,
    dest_dir: Path,
    expected_member: str,
    unpack: Callable[[Path, Path], None],
    errors: tuple[type[BaseException], ...],
    *,
    folder: bool = False,
) -> Path:
    """The frame of an atomic extraction: nothing is done if ``dest_dir / expected_member`` exists;
    otherwise ``unpack(archive, tmp_dir)`` (which checks every member first) extracts into a
    temporary folder inside ``dest_dir``, and ``expected_member`` (a folder when ``folder``) is
    renamed into place; on any failure the temporary folder is removed, and an error of ``errors``
    becomes a one-line :class:`DataError`.

    Returns:
        ``dest_dir / expected_member``.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    target = dest_dir / expected_member
    if target.exists():
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{expected_member}.", suffix=".extract", dir=dest_dir))
    try:
        try:
            unpack(archive, tmp_dir)
        except errors as exc:
            raise DataError(f"cannot extract {archive}: {exc}; delete it and download it again") from None
        extracted = tmp_dir / expected_member
        if not (extracted.is_dir() if folder else extracted.exists()):
            raise DataError(f"archive {archive} does not contain {expected_member!r}")
        try:
            os.rename(extracted, target)
        except OSError:
            # Another process finished first: its copy is complete, use it.
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def _unpack_tar(archive: Path, into: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        # The "data" filter repeats these checks in the standard library (defence in depth).
        tar.extractall(into, members=members, filter="data")


def extract_tar_atomic(archive: Path, dest_dir: Path, expected_member: str) -> Path:
    """Extract ``archive`` so that ``dest_dir / expected_member`` appears complete, in one rename
    (:func:`extract_atomic`).

    If ``dest_dir / expected_member`` already exists, nothing is done. Otherwise every member is checked
    first (no absolute paths, no ``..`` components, no links pointing outside, no device files), the
    archive is extracted into a temporary directory inside ``dest_dir`` and ``expected_member`` is
    renamed into place; members outside ``expected_member`` are discarded.

    Returns:
        ``dest_dir / expected_member``.
    """
    return extract_atomic(
        archive, dest_dir, expected_member, _unpack_tar, (tarfile.TarError, EOFError, OSError)
    )


def ensure_archive(
    source: ArchiveSource,
    root: Path,
    *,
    download: bool,
    progress: bool = False,
    extract: Callable[[Path, Path, str], Path] | None = None,
) -> Path:
    """The extracted folder ``root / source.folder``, obtaining it if needed.

    In order: use the extracted folder if it exists; else extract ``root / source.filename`` if it
    exists and its MD5 matches; else download it (when ``download``) and extract it; otherwise raise a
    :class:`DataError` saying which file is missing and where to get it. ``extract(archive, dest_dir,
    expected_member)`` unpacks atomically (default: :func:`extract_tar_atomic`; a zip passes its own).
    """
    extract = extract or extract_tar_atomic
    root = Path(root)
    folder = root / source.folder
    if folder.is_dir():
        return folder
    archive = root / source.filename
    if archive.is_file():
        actual = md5sum(archive)
        if actual == source.md5.lower():
            return extract(archive, root, source.folder)
        if not download:
            raise DataError(
                f"{archive} is corrupt (expected md5 {source.md5.lower()}, got {actual}); "
                "delete it or allow downloading to fetch it again"
            )
    elif not download:
        raise DataError(
            f"{archive} is missing and downloading is off; download it from {source.url} "
            f"(md5 {source.md5.lower()}) into {root}, or allow downloading"
        )
    download_file(source.url, archive, source.md5, progress=progress)
    return extract(archive, root, source.folder)
