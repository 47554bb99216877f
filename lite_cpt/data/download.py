"""`lite-cpt data download`: fetch exactly the data `lite-cpt data check` reports missing, into
the places the loaders read (lite_cpt.data.loaders).

* A dataset on the Hugging Face hub goes into the hub cache `<data.root>/hub` through
  `huggingface_hub.snapshot_download`, restricted to the files of the splits the recipe uses
  (the loaders' own layout rules applied to the repo's file list, e.g. `data/train-*.parquet`),
  so a 10-split repository is not fetched whole. The hub checks each file itself (its ETag) and
  resumes an interrupted file.
* A dataset read from its official release (VizWiz, GQA) gets the release's archives fetched
  into its directory (`data.root/vizwiz`, `data.root/gqa`) with resume and a size/checksum
  check (lite_cpt.data.fetch), and only the members its missing splits need unpacked.

A split counts as missing when `data check` cannot open it: its dataset is nowhere, or its
files are not there (hub datasets), or its targets are absent (official releases: e.g.
`train.json` and the `train/` image folder). `HF_ENDPOINT` points the hub client elsewhere.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lite_cpt.data import loaders
from lite_cpt.data.fetch import download_file, unpack
from lite_cpt.data.location import hf_hub_cache
from lite_cpt.data.preflight import recipe_sections
from lite_cpt.data.spec import Archive
from lite_cpt.errors import UserError
from lite_cpt.tasks import build_task
from lite_cpt.tasks.real import RealTask


@dataclass
class Fetch:
    """What one task or benchmark is missing and where it goes."""

    key: str  # e.g. "tasks.2 (vizwiz)"
    task: Any
    splits: list[str]
    dest: Path  # the hub cache (hub) or the dataset's directory (archives)
    hf_id: str | None = None
    archives: dict[str, tuple[Archive, list[str]]] = field(default_factory=dict)  # name -> (archive, splits)

    def describe(self) -> str:
        what = (f"{self.hf_id} ({', '.join(self.splits)}) from the hub" if self.hf_id else
                ", ".join(f"{name} ({', '.join(splits)})" for name, (_, splits) in self.archives.items()))
        return f"{self.key}: {what} → {self.dest}"


@dataclass
class DownloadPlan:
    fetches: list[Fetch]
    problems: list[str]  # missing data a download cannot fix, each with its fix


def _split_names(cfg: Any, benchmark: bool) -> list[str]:
    splits = [cfg.source.test_split] if benchmark else [cfg.source.train_split, cfg.source.test_split]
    return list(dict.fromkeys(loaders.parse_split(s)[0] for s in splits if s))


def _opens(task: RealTask, split: str) -> bool:
    try:
        task.count(split)
    except UserError:
        return False
    return True


def _present(target: Path) -> bool:
    return target.is_file() or (target.is_dir() and any(target.iterdir()))


def _archive_fetch(key: str, task: RealTask, location, splits: list[str]) -> Fetch | None:
    needed: dict[str, tuple[Archive, list[str]]] = {}
    for split in splits:
        for archive in task.dataset.archives:
            targets = archive.targets.get(split, ())
            if targets and not all(_present(location.local(split) / t) for t in targets):
                needed.setdefault(archive.name, (archive, []))[1].append(split)
    if not needed:
        return None
    missing = sorted({s for _, ss in needed.values() for s in ss}, key=splits.index)
    return Fetch(key, task, missing, location.local(missing[0]), archives=needed)


def _section_fetch(recipe: Any, key: str, cfg: Any, benchmark: bool) -> Fetch | str | None:
    """What one section misses: a Fetch, a problem a download cannot fix, or None."""
    task = build_task(cfg, recipe.data.root, recipe.seed, benchmark=benchmark)
    if not isinstance(task, RealTask):
        return None
    where, location, splits = f"{key} ({cfg.name})", task.location(), _split_names(cfg, benchmark)
    available = location.available()
    if task.dataset.archives and location.path is not None and available != "hf cache":
        return _archive_fetch(where, task, location, splits)
    missing = splits if available is None else [s for s in splits if not _opens(task, s)]
    if not missing:
        return None
    if available == "local" or not location.hf_id:
        return (f"{where}: split(s) {', '.join(missing)} missing at {location.path}, which lite-cpt does not "
                f"download into; {location.download_command() or 'put the files there'}")
    cache = Path(recipe.data.root) / "hub" if recipe.data.root else hf_hub_cache()
    return Fetch(where, task, missing, cache, hf_id=location.hf_id)


def plan_downloads(recipe: Any) -> DownloadPlan:
    """Every task's and benchmark's missing splits, as fetches (and problems no fetch fixes)."""
    fetches, problems = [], []
    for key, cfg, benchmark in recipe_sections(recipe):
        found = _section_fetch(recipe, key, cfg, benchmark)
        if isinstance(found, Fetch):
            fetches.append(found)
        elif found:
            problems.append(found)
    return DownloadPlan(fetches, problems)


# ---------------------------------------------------------------------------------------------
# Hub files of a split


def hub_split_files(listing: list[str], split: str, config: str | None) -> list[str]:
    """The repo files the loaders read for `split` (lite_cpt.data.loaders.split_files on a file
    list): the first base of `<config>/`, the top, `data/` with `<split>.<ext>`, `<split>-*.<ext>`
    or `<split>/*.<ext>` for the first extension that has any; without a config and no match,
    those of every top-level folder (one per config, e.g. MMMU's subjects)."""
    paths = [PurePosixPath(p) for p in listing]

    def in_base(base: str) -> list[str]:
        for ext in loaders.DATA_EXTENSIONS:
            found = [str(p) for p in paths if p.suffix == f".{ext}" and (
                (str(p.parent) == base and (p.stem == split or p.name.startswith(f"{split}-")))
                or str(p.parent) == str(PurePosixPath(base) / split))]
            if found:
                return sorted(found)
        return []

    has_config = config and any(p.parts[0] == config for p in paths if len(p.parts) > 1)
    for base in ([config] if has_config else []) + [".", "data"]:
        if found := in_base(base):
            return found
    if config:
        return []
    folders = sorted({p.parts[0] for p in paths if len(p.parts) > 1 and p.parts[0] != "data"})
    return [f for folder in folders for f in in_base(folder)]


def _hub_error(hf_id: str, error: Exception) -> UserError:
    name = type(error).__name__
    if "RepositoryNotFound" in name or "GatedRepo" in name:
        return UserError(f"{hf_id}: the hub refuses it ({name}); check the id, or log in with "
                         "`hf auth login` (or set HF_TOKEN) if the dataset is gated")
    if "Offline" in name or os.environ.get("HF_HUB_OFFLINE"):
        return UserError(f"{hf_id}: the hub is not reachable offline; unset HF_HUB_OFFLINE, or download "
                         "on a machine with internet and copy data/hub here")
    return UserError(f"{hf_id}: download failed ({name}: {error}); run the same command again to resume")


def fetch_hub(fetch: Fetch, endpoint: str | None = None) -> list[str]:
    """Download the fetch's split files into its hub cache; the files, as repo paths."""
    from huggingface_hub import HfApi, snapshot_download

    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    try:
        listing = HfApi(endpoint=endpoint).list_repo_files(fetch.hf_id, repo_type="dataset")
        files = sorted({f for split in fetch.splits for config in fetch.task.hub_configs(split)
                        for f in hub_split_files(listing, split, config)})
        if not files:
            raise UserError(f"{fetch.hf_id} has no files for split(s) {', '.join(fetch.splits)} (files: "
                            f"{', '.join(listing[:8])}{' …' if len(listing) > 8 else ''}); set the split names "
                            "in the recipe's source block")
        snapshot_download(fetch.hf_id, repo_type="dataset", cache_dir=str(fetch.dest), endpoint=endpoint,
                          allow_patterns=[glob.escape(f) for f in files])
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - the hub client's many error types, said in one line
        raise _hub_error(fetch.hf_id, error) from None
    return files


def fetch_archives(fetch: Fetch, keep: bool = False) -> list[Path]:
    """Download (resuming) and unpack each archive the fetch needs; the targets made."""
    made = []
    for archive, splits in fetch.archives.values():
        path = download_file(archive.url, fetch.dest / archive.name, sha256=archive.sha256, size=archive.size)
        made += unpack(path, archive, splits, fetch.dest)
        if not keep:
            path.unlink()
    return made


def run_downloads(plan: DownloadPlan, *, keep_archives: bool = False, say=print) -> None:
    """Carry out a plan, one fetch after another, saying each."""
    for fetch in plan.fetches:
        say(f"fetching {fetch.describe()}")
        if fetch.hf_id:
            files = fetch_hub(fetch)
            say(f"  {len(files)} file(s) of {fetch.hf_id} in {fetch.dest}")
        else:
            made = fetch_archives(fetch, keep=keep_archives)
            say(f"  unpacked {', '.join(p.name for p in made)} in {fetch.dest}")


def download_missing(recipe: Any, console, err_console, *, dry_run: bool = False, keep_archives: bool = False) -> bool:
    """`lite-cpt data download`: plan, say, fetch; False when something cannot be downloaded."""
    plan = plan_downloads(recipe)
    for problem in plan.problems:
        err_console.print(f"cannot download {problem}", highlight=False, markup=False)
    if not plan.fetches:
        console.print("nothing to download: every split the recipe reads is there" if not plan.problems
                      else "nothing lite-cpt can download; see above", highlight=False)
    elif dry_run:
        for fetch in plan.fetches:
            console.print(f"would fetch {fetch.describe()}", highlight=False, markup=False)
    else:
        run_downloads(plan, keep_archives=keep_archives,
                      say=lambda text: console.print(text, highlight=False, markup=False))
    return not plan.problems
