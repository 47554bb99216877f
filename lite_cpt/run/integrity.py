"""Manifests of saved directories: every file's size and sha256, checked before a resume trusts it.

A task adapter or a mid-phase checkpoint is written into a temporary directory, its files are
fsynced, `manifest.json` is written last, and only then is the directory renamed into place.
A directory whose manifest is missing, or whose files are shorter (truncated) or differ
(corrupted) from what the manifest recorded, is never loaded: a resume falls back to the
previous good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a directory's fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: str | os.PathLike) -> dict:
    """fsync every file under `directory` and record its size and sha256 in manifest.json."""
    directory = Path(directory)
    files = {}
    for path in _files(directory):
        fsync_path(path)
        files[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"format": 1, "files": files}
    target = directory / MANIFEST
    with open(target, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_path(directory)
    return manifest


def verify_directory(directory: str | os.PathLike) -> list[str]:
    """Problems found in a saved directory against its manifest (empty: intact).

    Each problem names the file: missing, truncated (shorter than recorded), resized, corrupted
    (checksum differs), or the manifest itself missing or unreadable.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return [f"{directory} does not exist"]
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        return [f"{directory / MANIFEST} is missing (the save did not complete)"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{directory / MANIFEST} is unreadable"]
    problems = []
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        size = path.stat().st_size
        if size != expected["size"]:
            kind = "truncated" if size < expected["size"] else "resized"
            problems.append(f"{path} is {kind}: {size} bytes, {expected['size']} recorded")
        elif file_sha256(path) != expected["sha256"]:
            problems.append(f"{path} is corrupted: its sha256 differs from the manifest")
    return problems


@contextmanager
def sealed_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success write its manifest, then rename
    it to `path` (an existing `path` is moved aside first and removed only after the rename).

    A crash at any point leaves either the old directory, or the new complete one, plus at
    most a hidden temporary directory (cleaned by `remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp."))
    try:
        yield tmp
        write_manifest(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old.{os.getpid()}"
            path.rename(old)
        tmp.rename(path)
        fsync_path(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(parent: str | os.PathLike) -> None:
    """Clean what an interrupted save left in `parent`: temporary directories are removed; a
    directory moved aside whose replacement never arrived is moved back."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    for entry in sorted(parent.iterdir()):
        if not (entry.is_dir() and entry.name.startswith(".")):
            continue
        if ".tmp." in entry.name:
            shutil.rmtree(entry, ignore_errors=True)
        elif ".old." in entry.name:
            original = parent / entry.name[1:].rsplit(".old.", 1)[0]
            if original.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.rename(original)
