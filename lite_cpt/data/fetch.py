"""Fetch one archive of an official release over HTTP and unpack what a split needs.

A download goes to `<name>.part` beside its final name and resumes there: a second attempt asks
for the remaining bytes (`Range: bytes=N-`) and appends them; a server that ignores the range
(a plain 200) restarts it from the first byte. A finished file is checked before it is renamed
into place: its length against the one the server declared (and the published `size`, when
there is one), its SHA-256 against the published one, when there is one. A file that fails is
removed and named, so the next run fetches it again. Unpacking reads every member through
`zipfile`, which checks the member's CRC-32: a damaged archive is named, never half-unpacked
(members land in a temporary folder, then are moved into place).
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from lite_cpt.data.spec import Archive
from lite_cpt.errors import UserError

CHUNK = 1 << 20


def _progress(total: int | None, done: int, label: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                disable=None)  # disabled when the output is not a terminal


def _open(url: str, start: int):
    request = urllib.request.Request(url, headers={"User-Agent": "lite-cpt"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(request, timeout=60)  # noqa: S310 - the spec's own https URL
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # the part is already whole (or longer than the file)
            return None
        raise UserError(f"cannot download {url}: HTTP {error.code} {error.reason}; check the address "
                        "or try again later") from None
    except (urllib.error.URLError, OSError) as error:
        raise UserError(f"cannot reach {url}: {getattr(error, 'reason', error)}; check the network "
                        "(a partial download resumes where it stopped)") from None


def _declared_total(response, start: int) -> int | None:
    """The whole file's length: from Content-Range on a 206, Content-Length on a 200."""
    if response.status == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def download_file(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None) -> Path:
    """`url` to `dest`, resuming `dest.part`, checked (see the module docstring); returns `dest`."""
    dest = Path(dest)
    if dest.exists():
        return dest
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    start = part.stat().st_size if part.exists() else 0
    response = _open(url, start)
    total = start if response is None else None
    if response is not None:
        with response:
            if response.status != 206:
                start = 0  # the server sent the whole file: start over
            total = _declared_total(response, start)
            with open(part, "ab" if start else "wb") as out, _progress(total, start, dest.name) as bar:
                try:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                except (http.client.HTTPException, OSError) as error:
                    out.flush()
                    raise UserError(f"the download of {url} stopped after {out.tell()} bytes "
                                    f"({type(error).__name__}); run the same command again: it resumes "
                                    f"from {part}") from None
    _check(part, url, total, size, sha256)
    os.replace(part, dest)
    return dest


def _check(part: Path, url: str, total: int | None, size: int | None, sha256: str | None) -> None:
    got = part.stat().st_size
    for expected, what in ((total, "the server declared"), (size, "published")):
        if expected is not None and got != expected:
            if got > expected:
                part.unlink()
            raise UserError(f"{url}: {got} bytes arrived, {expected} {what}; "
                            + ("the download stopped early: run the same command again to resume it"
                               if got < expected else f"{part} was removed: run the same command again"))
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(part, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != sha256.lower():
            part.unlink()
            raise UserError(f"{url}: checksum mismatch (sha256 {digest.hexdigest()}, expected {sha256}); "
                            f"the file was removed: run the same command again, and if it fails again "
                            f"the server holds another file than the one published")


def wanted_members(names: list[str], patterns: tuple[str, ...]) -> list[str]:
    """Archive member names matching any pattern (`*` crosses `/`), folders left out."""
    return [n for n in names if not n.endswith("/") and any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def unpack(archive_path: Path, archive: Archive, splits: list[str], dest: Path) -> list[Path]:
    """Unpack the members `splits` need from `archive_path` into `dest` (`flatten`: without their
    folders); returns the targets made. Nothing lands in `dest` unless every member checks out."""
    patterns = tuple(p for split in splits for p in archive.members.get(split, ()))
    staging = dest / f".unpacking-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive_path) as bundle:
            members = wanted_members(bundle.namelist(), patterns)
            if not members:
                raise UserError(f"{archive_path} holds none of {', '.join(patterns)}: it is not the "
                                f"published {archive.name}; remove it and run the same command again")
            for name in members:
                if name.startswith("/") or ".." in Path(name).parts:  # would land outside `dest`
                    raise UserError(f"{archive_path} holds a member outside its folder ({name}); it is not "
                                    f"the published {archive.name}: remove it")
                target = staging / (Path(name).name if archive.flatten else name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(name) as source, open(target, "wb") as out:  # checks the CRC-32
                    shutil.copyfileobj(source, out, CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"{archive_path} is damaged ({error}); remove it and run the same command "
                        "again to download it anew") from None
    except BaseException:  # nothing half-unpacked stays behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    made = []
    for entry in sorted(staging.iterdir()):
        final = dest / entry.name
        if entry.is_dir() and final.is_dir():  # a folder another split filled: merge into it
            for item in entry.rglob("*"):
                if item.is_file():
                    (final / item.relative_to(entry)).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(item, final / item.relative_to(entry))
        else:
            os.replace(entry, final)
        made.append(final)
    shutil.rmtree(staging, ignore_errors=True)
    return made
