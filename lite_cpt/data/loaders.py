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
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lite_cpt.data.location import (
    DataLocation,
    hf_cached,
    hf_datasets_cache,
    hf_download_hint,
    hub_snapshot,
    prepared_cache_dir,
)
from lite_cpt.errors import UserError

DATA_EXTENSIONS = ("parquet", "arrow", "jsonl", "json")
_BUILDERS = {"parquet": "parquet", "arrow": "arrow", "jsonl": "json", "json": "json"}


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
