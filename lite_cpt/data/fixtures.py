"""Small stand-ins for the real datasets, written in each one's published schema and layout.

`write_fixtures(root)` fills `root` the way the real data sits under `data.root` after each
dataset's download command (see each task type's `dataset`, the one place its identity lives):

    hub/datasets--derek-thomas--ScienceQA/...            a Hugging Face hub cache (blobs, refs/main,
    hub/datasets--lmms-lab--textvqa/...                  snapshots/<commit>/ linking to the blobs), with
    hub/datasets--hiyouga--geometry3k/...                each repo's parquet file names, e.g.
    hub/datasets--flaviagiammarino--path-vqa/...         data/train-00000-of-00001-<hash>.parquet,
    hub/datasets--leonardPKU--clevr_cogen_a_train/...    MMMU's <Subject>/validation-00000-of-00001.parquet
    hub/datasets--MMMU--MMMU/...
    hub/datasets--TIGER-Lab--MMLU-Pro/...
    hub/datasets--lmms-lab--POPE/...
    vizwiz/{train,val}.json + vizwiz/{train,val}/VizWiz_<split>_<n>.jpg     the official VizWiz release
    gqa/{train,testdev}_balanced_questions.json + gqa/images/<imageId>.jpg  the official GQA release

Parquet files carry Hugging Face `Image` features with embedded PNG bytes, as the hub's do;
ScienceQA has text-only rows (null image), Geometry3K a `choices` column, MMMU questions that
reference several images. Contents are drawn from small banks of realistic rows, seeded.

Writers: `fixtures_hub` (the hub's parquet layout and the training tasks on the hub),
`fixtures_benchmarks` (the general benchmarks, on the hub), `fixtures_official` (VizWiz, GQA).
"""

from __future__ import annotations

import hashlib
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from lite_cpt.data.fixtures_benchmarks import write_mmlu_pro, write_mmmu, write_pope
from lite_cpt.data.fixtures_hub import (
    publish_to_hub_cache,
    write_clevr,
    write_geometry3k,
    write_pathvqa,
    write_scienceqa,
    write_textvqa,
)
from lite_cpt.data.fixtures_official import write_gqa, write_vizwiz

WRITERS: dict[str, Callable[[Path, int, random.Random, int], None]] = {
    "scienceqa": write_scienceqa,
    "textvqa": write_textvqa,
    "vizwiz": write_vizwiz,
    "gqa": write_gqa,
    "geometry3k": write_geometry3k,
    "pathvqa": write_pathvqa,
    "clevr": write_clevr,
    "mmmu": write_mmmu,
    "mmlu_pro": write_mmlu_pro,
    "pope": write_pope,
}
#: The layout of GQA the fixtures write (the official release); the hub one is tested on its own.
OFFICIAL_LAYOUT = {"vizwiz", "gqa"}


def dataset_spec(type_name: str):
    """The `DatasetSpec` a task (or benchmark) type states: what the fixtures are written from."""
    from lite_cpt.tasks import BENCHMARK_TYPES, TASK_TYPES

    return (TASK_TYPES.get(type_name) or BENCHMARK_TYPES[type_name]).dataset


def write_fixtures(root: Path, n: int = 8, seed: int = 0, image_size: int = 56) -> Path:
    """Write every dataset's fixture under `root` (see the module docstring) and return `root`.
    `n` rows per split (ScienceQA adds text-only rows; CLEVR's single split has 2n)."""
    root = Path(root)
    for name, writer in WRITERS.items():
        rng = random.Random(f"{seed}/{name}")
        spec = dataset_spec(name)
        if name in OFFICIAL_LAYOUT:
            writer(root / spec.path, n, rng, image_size)
            continue
        staging = root / ".staging" / name
        shutil.rmtree(staging, ignore_errors=True)
        writer(staging, n, rng, image_size)
        publish_to_hub_cache(staging, root / "hub", spec.hf_id, hashlib.sha1(f"{seed}/{name}".encode()).hexdigest())
        shutil.rmtree(staging)
    shutil.rmtree(root / ".staging", ignore_errors=True)
    return root
