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
* `hf_id`: a Hugging Face dataset, read from a local hub cache only, never the network: the
  snapshot `hf download <id> --repo-type dataset --cache-dir <data.root>/hub` leaves under
  `<data.root>/hub`, else the one in the default cache (`$HF_HUB_CACHE`), both found with
  `huggingface_hub.snapshot_download(local_files_only=True)` and read with the layout rules
  above; else the arrow files a previous `load_dataset` prepared in `$HF_DATASETS_CACHE`.
  Cache locations are read from the environment at call time.
* Both set: the local path when it exists, else the cache.

`hf_config` and `path` may contain `{split}` (lmms-lab/GQA keeps each split in its own config,
`{split}_balanced_instructions`). A split may carry a slice, `train[:80%]`, `val[100:]`, for
datasets that publish a single labelled split.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    elif location.hf_id and hf_cached(location.hf_id, location.caches):
        dataset, base_dir = _open_cached(location.hf_id, name, config, location.caches)
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


def _open_cached(hf_id: str, split: str, config: str | None, caches: tuple[Path | None, ...]):
    snapshot = hub_snapshot(hf_id, caches)
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


def non_null_rows(table: SplitTable, columns: tuple[str, ...]) -> np.ndarray:
    """Row indices of the split (after its slice) where every column in `columns` is set (an
    int64 array: the split's index, 8 bytes a row)."""
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
    return np.flatnonzero(keep)


def subsample(indices: Any, size: int | None, seed: int, split: str) -> list[int]:
    """`size` of `indices` (all, in file order, when size is None), drawn by a permutation
    seeded with (seed, split): deterministic, and a smaller size gives a prefix of a larger one."""
    indices = np.asarray(indices, dtype=np.int64)
    if size is None:
        return indices.tolist()
    key = [seed & 0xFFFFFFFF, *split.encode()]
    order = np.random.default_rng(key).permutation(len(indices))[:size]
    return indices[order].tolist()


def image_columns(table: SplitTable) -> list[str]:
    """Columns whose feature holds images (an `Image`, or a list of them): never read whole."""
    from datasets import Image as ImageFeature

    def holds_image(feature: Any) -> bool:
        if isinstance(feature, ImageFeature):
            return True
        inner = getattr(feature, "feature", None)
        return inner is not None and holds_image(inner)

    return [name for name, feature in table.dataset.features.items() if holds_image(feature)]


def read_text_rows(table: SplitTable, indices: list[int]) -> list[dict]:
    """The rows at `indices` as plain dicts of every column except the image columns (those
    stay on disk; `TableImage` references read one cell when a batch needs it); each row is
    read from its own record batch (`take_rows`), never the columns whole."""
    from lite_cpt.data.rows import take_rows

    skip = set(image_columns(table))
    arrow = table_arrow(table)
    return take_rows(arrow.select([c for c in arrow.column_names if c not in skip]), indices)


def table_arrow(table: SplitTable) -> Any:
    """The split's memory-mapped pyarrow table (rows in file order; splits are never re-indexed)."""
    return table.dataset.data.table


# ---------------------------------------------------------------------------------------------
# A JSON object keyed by id (official GQA questions): converted once, streamed


def iter_keyed_json(path: Path, chunk_size: int = 1 << 20) -> Iterator[tuple[str, Any]]:
    """(key, value) pairs of a file holding one JSON object, decoded one entry at a time, so a
    file of gigabytes (GQA's train questions) never sits in memory whole."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as handle:
        state = {"buffer": handle.read(chunk_size), "pos": 0}

        def peek() -> str:
            while True:
                buffer, pos = state["buffer"], state["pos"]
                while pos < len(buffer) and buffer[pos] in " \t\r\n,:":
                    pos += 1
                state["pos"] = pos
                if pos < len(buffer):
                    return buffer[pos]
                more = handle.read(chunk_size)
                if not more:
                    return ""
                state["buffer"], state["pos"] = more, 0

        def value() -> Any:  # an object or a string: a truncated one never decodes
            peek()
            while True:
                try:
                    decoded, end = decoder.raw_decode(state["buffer"], state["pos"])
                    state["pos"] = end
                    return decoded
                except json.JSONDecodeError:
                    more = handle.read(chunk_size)
                    if not more:
                        raise
                    state["buffer"] = state["buffer"][state["pos"] :] + more
                    state["pos"] = 0

        if peek() != "{":
            raise UserError(f"{path} does not hold a JSON object")
        state["pos"] += 1
        while peek() not in ("}", ""):
            key = value()
            yield str(key), value()
        if peek() != "}":  # every entry so far was whole, but the object never closes
            raise UserError(f"{path} ends before the object it holds is closed: the file is cut short; "
                            "download it again")


def _keyed_rows(path: str, key_column: str, fields: str, stamp: str) -> Iterator[dict]:
    names = fields.split(",")  # a string, not a list: `datasets` would shard a list argument
    for key, entry in iter_keyed_json(Path(path)):
        yield {key_column: key, **{name: _as_text(entry.get(name)) for name in names}}


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def open_keyed_json(path: Path, split: str, key_column: str, fields: tuple[str, ...]) -> SplitTable:
    """A split stored as one JSON object keyed by id: converted once (streamed) into an arrow
    file in `$HF_DATASETS_CACHE` and memory-mapped; `key_column` holds each key, and `fields`
    are kept as strings."""
    from datasets import Dataset, Features, Value
    from datasets.exceptions import DatasetGenerationError

    stat = path.stat()
    features = Features({name: Value("string") for name in (key_column, *fields)})
    with _quiet():
        try:
            dataset = Dataset.from_generator(
                _keyed_rows,
                gen_kwargs={"path": str(path.absolute()), "key_column": key_column, "fields": ",".join(fields),
                            "stamp": f"{stat.st_size}/{stat.st_mtime_ns}"},
                features=features,
                cache_dir=str(hf_datasets_cache()),
            )
        except DatasetGenerationError as error:  # what went wrong while reading the file, said plainly
            cause = error.__cause__ or error
            raise (cause if isinstance(cause, UserError) else UserError(f"cannot read {path}: {cause}")) from None
        except (ValueError, json.JSONDecodeError) as error:
            raise UserError(f"cannot read {path}: {error}") from None
    return SplitTable(dataset, split_range(split, len(dataset)), path.parent.absolute(), str(path),
                      parse_split(split)[0])
