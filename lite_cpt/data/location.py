"""Where a task's data is: the Hugging Face caches on this machine (hub snapshots, the datasets
cache), looked up offline, and a recipe's data source resolved against `data.root` into a
`DataLocation`. The rules for which files of a location make a split are in `loaders`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


# ---------------------------------------------------------------------------------------------
# Cache locations (read from the environment on every call, so a changed HF_HOME is honoured)


def hf_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(os.path.expanduser(os.environ.get("HF_HOME", str(Path(xdg) / "huggingface"))))


def hf_hub_cache() -> Path:
    """Where `huggingface-cli download` stores repositories (`$HF_HUB_CACHE`, else `$HF_HOME/hub`)."""
    return Path(os.path.expanduser(os.environ.get("HF_HUB_CACHE", str(hf_home() / "hub"))))


def hf_datasets_cache() -> Path:
    """Where `datasets` keeps prepared arrow files (`$HF_DATASETS_CACHE`, else `$HF_HOME/datasets`)."""
    return Path(os.path.expanduser(os.environ.get("HF_DATASETS_CACHE", str(hf_home() / "datasets"))))


def hub_caches(data_root: Path | None) -> tuple[Path | None, ...]:
    """Hub caches searched in order: `<data.root>/hub` (when it exists), then the default
    (None: `$HF_HUB_CACHE`)."""
    local = Path(data_root) / "hub" if data_root is not None else None
    return (local, None) if local is not None and local.is_dir() else (None,)


def hub_snapshot(hf_id: str, caches: tuple[Path | None, ...] = (None,)) -> Path | None:
    """The cached snapshot of a dataset repo (the revision `main` points to), from the first
    cache that has it; None when none has."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for cache in caches:
        try:
            found = snapshot_download(  # the default cache as the environment says now, not at import
                hf_id, repo_type="dataset", local_files_only=True, cache_dir=str(cache or hf_hub_cache())
            )
        except LocalEntryNotFoundError:
            found = _partial_snapshot(hf_id, cache or hf_hub_cache())
            if found is None:
                continue
        return Path(found)
    return None


def _partial_snapshot(hf_id: str, cache: Path) -> Path | None:
    """The snapshot `main` points to when it holds only some of the repo's files (`hf download
    --include`, `lite-cpt data download`): huggingface_hub >= 1.x refuses such a snapshot offline,
    but the split's own files are all the loaders need (they say which are missing)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir(cache).repos
    except CacheNotFound:
        return None
    for repo in repos:
        if repo.repo_id == hf_id and repo.repo_type == "dataset":
            return next((rev.snapshot_path for rev in repo.revisions if "main" in rev.refs), None)
    return None


def prepared_cache_dir(hf_id: str) -> Path | None:
    """`$HF_DATASETS_CACHE/<namespace>___<snake_name>` when a previous `load_dataset` filled it."""
    from datasets.naming import camelcase_to_snakecase

    parts = hf_id.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    path = hf_datasets_cache() / "___".join(parts)
    return path if path.is_dir() else None


def hf_cached(hf_id: str, caches: tuple[Path | None, ...] = (None,)) -> bool:
    """Cheap presence check (no dataset is opened)."""
    return hub_snapshot(hf_id, caches) is not None or prepared_cache_dir(hf_id) is not None


def hf_download_hint(hf_id: str, data_root: Path | None = None) -> str:
    target = f"{data_root}/hub" if data_root is not None else str(hf_hub_cache())
    return (
        f"run `hf download {hf_id} --repo-type dataset --cache-dir {target}` (on a machine with internet, "
        f"then copy {target} here), or download with `--local-dir DIR` and set source.path to DIR"
    )


# ---------------------------------------------------------------------------------------------
# Where a task's data is


@dataclass(frozen=True)
class DataLocation:
    """A resolved data source: a local path, a Hugging Face id, or both (path first)."""

    path: Path | None
    hf_id: str | None
    config: str | None
    data_root: Path | None = None
    download: str | None = None  # the dataset's own download command, when it has one

    @property
    def caches(self) -> tuple[Path | None, ...]:
        return hub_caches(self.data_root)

    def local(self, split: str) -> Path | None:
        return Path(str(self.path).replace("{split}", split)) if self.path else None

    def config_for(self, split: str) -> str | None:
        return self.config.replace("{split}", split) if self.config else None

    def describe(self) -> str:
        parts = [str(self.path)] if self.path else []
        if self.hf_id:
            parts.append(f"hf:{self.hf_id}" + (f" ({self.config})" if self.config else ""))
        return " or ".join(parts)

    def download_command(self) -> str:
        """The dataset's download command, writing under this recipe's data.root."""
        if self.download is None or self.data_root is None:
            return self.download or ""
        return self.download.replace(" data/", f" {self.data_root}/")

    def local_exists(self) -> bool:
        if self.path is None:
            return False
        return _template_exists(self.path) if "{split}" in str(self.path) else self.path.exists()

    def available(self) -> str | None:
        """Which source will be read: 'local', 'hf cache', or None when neither exists."""
        if self.local_exists():
            return "local"
        if self.hf_id and hf_cached(self.hf_id, self.caches):
            return "hf cache"
        return None

    def missing_message(self) -> str:
        lines = []
        if self.path is not None:
            lines.append(f"no data at {self.path}")
        if self.hf_id:
            # every place searched, `<data.root>/hub` (where the download commands write) included
            # even when it does not exist yet
            caches = [self.data_root / "hub"] if self.data_root is not None else []
            where = ", ".join(str(c) for c in dict.fromkeys([*caches, hf_hub_cache()]))
            lines.append(f"{self.hf_id} is not in a Hugging Face hub cache (searched {where}) nor in the "
                         f"datasets cache ({hf_datasets_cache()})")
        fixes = ["`lite-cpt data download RECIPE` fetches it"] if self.hf_id or self.download else []
        if self.download:
            fixes.append(self.download_command())
        elif self.path is not None:
            fixes.append(f"put the dataset files at {self.path}")
        if self.hf_id and self.hf_id in (self.download or ""):
            fixes.append("download it with `--local-dir DIR` and set source.path to DIR")
        elif self.hf_id:
            fixes.append(hf_download_hint(self.hf_id, self.data_root))
        return "; ".join(lines) + ". To fix: " + ", or ".join(fixes)


def _template_exists(path: Path) -> bool:
    """A `{split}` path exists when any file matches it with the placeholder as a wildcard."""
    text = str(path)
    parent = Path(text.split("{split}")[0]).parent
    pattern = Path(text).relative_to(parent).as_posix().replace("{split}", "*")
    return parent.is_dir() and any(parent.glob(pattern))


def resolve_location(source: Any, data_root: Path | None, *, download: str | None = None) -> DataLocation:
    """The location a (filled-in) `DataSourceConfig` describes: `path` relative to `data.root`,
    `hf_id` looked up in `<data.root>/hub` and then the default hub cache."""
    path_text, hf_id = getattr(source, "path", None), getattr(source, "hf_id", None)
    path = None
    if path_text is not None:
        path = Path(os.path.expanduser(path_text))
        if not path.is_absolute() and data_root is not None:
            path = Path(data_root) / path
    root = Path(data_root) if data_root is not None else None
    return DataLocation(path=path, hf_id=hf_id, config=getattr(source, "hf_config", None), data_root=root,
                        download=download)
