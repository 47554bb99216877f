"""Read one split of a real dataset from local files or the local Hugging Face cache.

Where a task's data comes from (`DataSourceConfig`):

* `path`: a local directory (relative paths resolve against `data.root`). Inside it, a split
  is found as the first of these that exists, for the first format that has any
  (parquet, arrow, jsonl, json):
  `<dir>/<split>.<ext>`, `<dir>/<split>-*.<ext>`, `<dir>/<split>/*.<ext>`, and the same under
  `<dir>/data/` (the layout of `huggingface-cli download ... --local-dir <dir>`). With a
  `hf_config`, `<dir>/<config>/` is searched first; without one, when nothing matches, every
  sub-directory (one per config, e.g. MMMU's subjects) that has the split is concatenated.
  `save_to_disk` directories (`<dir>/<split>/*.arrow`) match the same patterns. A path to a
  single file serves every split.
* `hf_id`: a Hugging Face dataset, read from the local cache only, never the network: the hub
  snapshot that `huggingface-cli download <id> --repo-type dataset` leaves in `$HF_HUB_CACHE`
  (read with the layout rules above), else the arrow files a previous `load_dataset` prepared
  in `$HF_DATASETS_CACHE`. Cache locations are read from the environment at call time.
* Both set: the local path when it exists, else the cache.

`hf_config` and `path` may contain `{split}` (lmms-lab/GQA keeps each split in its own config,
`{split}_balanced_instructions`). A split may carry a slice, `train[:80%]`, `val[100:]`, for
datasets that publish a single labelled split.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from lite_cpt.errors import UserError

DATA_EXTENSIONS = ("parquet", "arrow", "jsonl", "json")
_BUILDERS = {"parquet": "parquet", "arrow": "arrow", "jsonl": "json", "json": "json"}


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


def hub_snapshot(hf_id: str) -> Path | None:
    """The cached hub snapshot of a dataset repo: the one `refs/main` names, else the newest."""
    repo = hf_hub_cache() / f"datasets--{hf_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        named = snapshots / ref.read_text().strip()
        if named.is_dir():
            return named
    candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def prepared_cache_dir(hf_id: str) -> Path | None:
    """`$HF_DATASETS_CACHE/<namespace>___<snake_name>` when a previous `load_dataset` filled it."""
    from datasets.naming import camelcase_to_snakecase

    parts = hf_id.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    path = hf_datasets_cache() / "___".join(parts)
    return path if path.is_dir() else None


def hf_cached(hf_id: str) -> bool:
    """Cheap presence check (no dataset is opened)."""
    repo = f"datasets--{hf_id.replace('/', '--')}"
    if (hf_hub_cache() / repo / "snapshots").is_dir():
        return True
    return prepared_cache_dir(hf_id) is not None


def hf_download_hint(hf_id: str) -> str:
    return (
        f"run `huggingface-cli download {hf_id} --repo-type dataset` on a machine with internet and "
        f"copy its Hugging Face hub cache to {hf_hub_cache()}, or download with `--local-dir DIR` "
        f"and set source.path to DIR"
    )


# ---------------------------------------------------------------------------------------------
# Where a task's data is


@dataclass(frozen=True)
class DataLocation:
    """A resolved data source: a local path, a Hugging Face id, or both (path first)."""

    path: Path | None
    hf_id: str | None
    config: str | None

    def local(self, split: str) -> Path | None:
        return Path(str(self.path).replace("{split}", split)) if self.path else None

    def config_for(self, split: str) -> str | None:
        return self.config.replace("{split}", split) if self.config else None

    def describe(self) -> str:
        parts = [str(self.path)] if self.path else []
        if self.hf_id:
            parts.append(f"hf:{self.hf_id}" + (f" ({self.config})" if self.config else ""))
        return " or ".join(parts)

    def local_exists(self) -> bool:
        if self.path is None:
            return False
        return _template_exists(self.path) if "{split}" in str(self.path) else self.path.exists()

    def available(self) -> str | None:
        """Which source will be read: 'local', 'hf cache', or None when neither exists."""
        if self.local_exists():
            return "local"
        if self.hf_id and hf_cached(self.hf_id):
            return "hf cache"
        return None

    def missing_message(self) -> str:
        lines = []
        if self.path is not None:
            lines.append(f"no data at {self.path}")
        if self.hf_id:
            lines.append(f"{self.hf_id} is not in the Hugging Face cache ({hf_hub_cache()})")
        fixes = []
        if self.path is not None:
            fixes.append(f"put the dataset files at {self.path}")
        if self.hf_id:
            fixes.append(hf_download_hint(self.hf_id))
        return "; ".join(lines) + ". To fix: " + ", or ".join(fixes)


def _template_exists(path: Path) -> bool:
    """A `{split}` path exists when any file matches it with the placeholder as a wildcard."""
    text = str(path)
    parent = Path(text.split("{split}")[0]).parent
    pattern = Path(text).relative_to(parent).as_posix().replace("{split}", "*")
    return parent.is_dir() and any(parent.glob(pattern))


def resolve_location(
    source: Any, data_root: Path | None, *, default_path: str, default_hf_id: str
) -> DataLocation:
    """The location a `DataSourceConfig` describes; with neither `path` nor `hf_id` set, the
    task's default directory under `data.root` (when `data.root` is set) and its default id."""
    path_text, hf_id = getattr(source, "path", None), getattr(source, "hf_id", None)
    if path_text is None and hf_id is None:
        path_text = default_path if data_root is not None else None
        hf_id = default_hf_id
    path = None
    if path_text is not None:
        path = Path(os.path.expanduser(path_text))
        if not path.is_absolute() and data_root is not None:
            path = Path(data_root) / path
    return DataLocation(path=path, hf_id=hf_id, config=getattr(source, "hf_config", None))


# ---------------------------------------------------------------------------------------------
# Splits


_SLICE = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<start>-?\d*%?):(?P<stop>-?\d*%?)\])?$")


def parse_split(split: str) -> tuple[str, str | None, str | None]:
    """`train[:80%]` -> ('train', None, '80%'); `test` -> ('test', None, None)."""
    found = _SLICE.match(split.strip())
    if not found:
        raise UserError(f"split '{split}' is not a split name or `name[start:stop]` (e.g. train[:80%])")
    return found["name"], found["start"] or None, found["stop"] or None


def _bound(text: str | None, n: int, default: int) -> int:
    """A slice bound: an index (negative counts from the end) or a percentage, floor(n * p / 100)."""
    if text is None:
        return default
    value = int(text.rstrip("%"))
    if text.endswith("%"):
        value = (n * value) // 100 if value >= 0 else n - (n * -value) // 100
    elif value < 0:
        value += n
    return min(max(value, 0), n)


def split_range(split: str, n: int) -> range:
    _, start, stop = parse_split(split)
    return range(_bound(start, n, 0), _bound(stop, n, n))


@dataclass
class SplitTable:
    """Rows of one split (a `datasets.Dataset`, never re-indexed) and the part a slice keeps."""

    dataset: Any
    rows: range
    base_dir: Path  # relative image paths resolve here (and in its `images/` and `<split>/`)
    origin: str  # for messages: the directory or hub id the rows came from
    split: str


def open_split(location: DataLocation, split: str) -> SplitTable:
    """Open one split (`split` may carry a slice) of a resolved location."""
    name = parse_split(split)[0]
    local = location.local(name)
    config = location.config_for(name)
    if location.local_exists():
        if not local.exists():
            raise UserError(f"no data for split '{name}': {local} does not exist")
        dataset, base_dir = _open_local(local, name, config)
        origin = str(local)
    elif location.hf_id and hf_cached(location.hf_id):
        dataset, base_dir = _open_cached(location.hf_id, name, config)
        origin = f"hf:{location.hf_id}"
    else:
        raise UserError(location.missing_message())
    # absolute, so that image paths built from it stay valid whatever the working directory
    return SplitTable(dataset, split_range(split, len(dataset)), base_dir.absolute(), origin, name)


def split_files(directory: Path, split: str, config: str | None = None) -> list[Path]:
    """Data files of `split` under `directory` by the layout rules in the module docstring."""
    bases = [directory / config] if config and (directory / config).is_dir() else []
    bases += [directory, directory / "data"]
    for base in bases:
        for ext in DATA_EXTENSIONS:
            files = sorted(
                {*base.glob(f"{split}.{ext}"), *base.glob(f"{split}-*.{ext}"), *base.glob(f"{split}/*.{ext}")}
            )
            if files:
                return files
    return []


_NOT_SPLITS = {"data", "state", "dataset_info", "dataset_dict"}  # save_to_disk bookkeeping


def _split_names(base: Path) -> set[str]:
    return {
        f.name.split(".")[0].split("-")[0]
        for f in base.iterdir()
        if f.is_file() and f.suffix.lstrip(".") in DATA_EXTENSIONS
    }


def available_splits(directory: Path) -> list[str]:
    """Split names found under a directory, for error messages: from file names at the top
    and under data/, from files inside config sub-directories, and split sub-directories."""
    names: set[str] = set()
    for base in (directory, directory / "data"):
        if not base.is_dir():
            continue
        names |= _split_names(base)
        for sub in (p for p in base.iterdir() if p.is_dir() and p.name != "data"):
            inner = _split_names(sub)
            names |= (inner - _NOT_SPLITS) or ({sub.name} if inner else set())
    return sorted(names - _NOT_SPLITS)


def _open_local(path: Path, split: str, config: str | None):
    if path.is_file():
        return _read_files([path]), path.parent
    files = split_files(path, split, config)
    if files:
        return _read_files(files), path
    # One sub-directory per config (MMMU's subjects): concatenate those that have the split.
    parts = []
    if config is None:
        for sub in sorted(p for p in path.iterdir() if p.is_dir() and p.name != "data"):
            sub_files = split_files(sub, split)
            if sub_files:
                parts.append(_read_files(sub_files))
    if parts:
        from datasets import concatenate_datasets

        return concatenate_datasets(parts), path
    where = path / config if config else path
    raise UserError(
        f"no data files for split '{split}' in {where} (looked for {split}.<ext>, {split}-*.<ext>, "
        f"{split}/*.<ext>, also under data/, with <ext> one of {', '.join(DATA_EXTENSIONS)}); "
        f"splits found: {', '.join(available_splits(path)) or 'none'}"
    )


def _open_cached(hf_id: str, split: str, config: str | None):
    snapshot = hub_snapshot(hf_id)
    if snapshot is not None:
        try:
            return _open_local(snapshot, split, config)
        except UserError as error:
            if prepared_cache_dir(hf_id) is None:
                raise UserError(f"{hf_id} (hub cache {snapshot}): {error}") from None
    return _open_prepared(hf_id, split, config)


def _open_prepared(hf_id: str, split: str, config: str | None):
    """Arrow files of `$HF_DATASETS_CACHE/<ns>___<name>/<config>/<version>/<hash>/` (newest hash)."""
    from datasets import Dataset, concatenate_datasets

    root = prepared_cache_dir(hf_id)
    config_dirs = [root / config] if config else sorted(p for p in root.iterdir() if p.is_dir())
    parts = []
    for config_dir in config_dirs:
        hashes = [h for h in config_dir.glob("*/*") if h.is_dir()]
        if not hashes:
            continue
        newest = max(hashes, key=lambda p: p.stat().st_mtime)
        files = sorted({*newest.glob(f"*-{split}.arrow"), *newest.glob(f"*-{split}-*-of-*.arrow")})
        if files:
            parts.append(concatenate_datasets([Dataset.from_file(str(f)) for f in files]))
    if not parts:
        raise UserError(
            f"split '{split}'{f' of config {config}' if config else ''} of {hf_id} is not in the datasets "
            f"cache {root}; {hf_download_hint(hf_id)}"
        )
    return (parts[0] if len(parts) == 1 else concatenate_datasets(parts)), root


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence datasets' progress bars and info logs while a split is prepared."""
    import datasets

    logging = datasets.utils.logging
    bars_were_on, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars_were_on:
            logging.enable_progress_bar()


def _read_files(files: list[Path]):
    """One `datasets.Dataset` over files of one format (arrow is memory-mapped in place; the
    others are prepared once into `$HF_DATASETS_CACHE`, as `load_dataset` does)."""
    from datasets import Dataset, concatenate_datasets, load_dataset

    ext = files[0].suffix.lstrip(".")
    with _quiet():
        try:
            if ext == "arrow":
                return concatenate_datasets([Dataset.from_file(str(f)) for f in files])
            return load_dataset(
                _BUILDERS[ext],
                data_files={"rows": [str(f) for f in files]},
                split="rows",
                cache_dir=str(hf_datasets_cache()),
            )
        except Exception as error:  # noqa: BLE001 - a corrupt or mis-typed file: name it, briefly
            names = ", ".join(f.name for f in files[:3])
            raise UserError(f"cannot read {files[0].parent} ({names}): {error}") from None


# ---------------------------------------------------------------------------------------------
# Rows


def non_null_rows(table: SplitTable, columns: tuple[str, ...]) -> list[int]:
    """Row indices of the split (after its slice) where every column in `columns` is set."""
    keep = np.zeros(len(table.dataset), dtype=bool)
    keep[table.rows.start : table.rows.stop] = True
    data = table.dataset.data
    for column in columns:
        if column not in data.column_names:
            raise UserError(
                f"{table.origin}: split '{table.split}' has no column '{column}' "
                f"(has: {', '.join(data.column_names)})"
            )
        keep &= np.asarray(data.column(column).is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    return np.flatnonzero(keep).tolist()


def subsample(indices: list[int], size: int | None, seed: int, split: str) -> list[int]:
    """`size` of `indices` (all, in file order, when size is None), drawn by a permutation
    seeded with (seed, split): deterministic, and a smaller size gives a prefix of a larger one."""
    if size is None:
        return list(indices)
    key = [seed & 0xFFFFFFFF, *split.encode()]
    order = np.random.default_rng(key).permutation(len(indices))[:size]
    return [indices[i] for i in order]


def read_rows(table: SplitTable, indices: list[int]) -> list[dict]:
    """The rows at `indices` as plain dicts; images stay undecoded (`{"bytes", "path"}`)."""
    if not indices:
        return []
    return table.dataset.with_format("arrow")[indices].to_pylist()


# ---------------------------------------------------------------------------------------------
# Images


def open_image(value: Any, *, sample_id: str, search_dirs: list[Path]) -> Image.Image | None:
    """An RGB PIL image from what a dataset stores: a PIL image, `{"bytes", "path"}` (the HF
    Image feature), raw bytes, a file path (relative ones searched in `search_dirs`), or a list
    of those (its first). None stays None."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    where = "embedded bytes"
    try:
        if isinstance(value, dict) and value.get("bytes"):
            where = f"embedded bytes ({value.get('path') or 'no file name'})"
            image = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, (bytes, bytearray)):
            image = Image.open(io.BytesIO(value))
        else:
            name = value.get("path") if isinstance(value, dict) else value
            if not name:
                return None
            path = _find_image(str(name), search_dirs)
            where = str(path)
            if path is None:
                looked = ", ".join(str(d) for d in search_dirs)
                raise UserError(f"image of sample {sample_id} not found: {name} (looked in {looked})")
            image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserError(f"image of sample {sample_id} cannot be opened: {where} ({error})") from None
    return image.convert("RGB")


def _find_image(name: str, search_dirs: list[Path]) -> Path | None:
    path = Path(os.path.expanduser(name))
    if path.is_absolute():
        return path if path.is_file() else None
    return next((d / name for d in search_dirs if (d / name).is_file()), None)
