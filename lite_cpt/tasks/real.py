"""Base of the task types that read a real, public dataset (see lite_cpt.data.loaders).

A dataset-specific subclass says where the data lives by default and maps one raw row of the
published schema to a `Sample` (`to_sample`); loading, sub-sampling, image decoding and the
prompt are shared here.
"""

from __future__ import annotations

from typing import Any

from lite_cpt.data import loaders
from lite_cpt.data.loaders import DataLocation, SplitTable
from lite_cpt.tasks.base import COT_INSTRUCTION, Sample, Task

SHORT_ANSWER = "Answer the question using a single word or phrase."


class RealTask(Task):
    """A task over a real dataset; subclasses set the class attributes and `to_sample`."""

    #: Directory under `data.root` used when the recipe gives neither `path` nor `hf_id`.
    default_path = ""
    #: Hugging Face dataset id used when the recipe gives neither `path` nor `hf_id`.
    default_hf_id = ""
    #: Column holding the image (None: a text-only dataset).
    image_column: str | None = "image"
    #: Column holding a stable sample id (else `<task>/<split>/<row index>`).
    id_column: str | None = None
    #: Rows where one of these columns is null are skipped (e.g. ScienceQA's text-only rows).
    required_columns: tuple[str, ...] = ()
    answer_instruction = SHORT_ANSWER

    # -- where the data is -----------------------------------------------------------------
    def location(self) -> DataLocation:
        return loaders.resolve_location(
            getattr(self.config, "source", None),
            self.data_root,
            default_path=self.default_path,
            default_hf_id=self.default_hf_id,
        )

    def open(self, split: str) -> SplitTable:
        return loaders.open_split(self.location(), split)

    def count(self, split: str) -> int:
        """How many rows `load(split, None)` returns."""
        table = self.open(split)
        return len(loaders.non_null_rows(table, self.required_columns))

    # -- samples ---------------------------------------------------------------------------
    def load(self, split: str, size: int | None) -> list[Sample]:
        """`size` rows of `split` (the dataset's own split name, optionally sliced), drawn with
        the recipe seed; images are decoded here so that a bad file fails before training."""
        table = self.open(split)
        indices = loaders.subsample(
            loaders.non_null_rows(table, self.required_columns), size, self.seed, split
        )
        rows = loaders.read_rows(table, indices)
        images = self.row_images(table, rows)
        search_dirs = [table.base_dir, table.base_dir / "images", table.base_dir / table.split]
        samples = []
        for index, row, raw_image in zip(indices, rows, images):
            sample_id = self.sample_id(row, table.split, index)
            image = loaders.open_image(raw_image, sample_id=sample_id, search_dirs=search_dirs)
            sample = self.to_sample(row, sample_id, image)
            sample.meta.setdefault("split", table.split)
            sample.meta.setdefault("row", index)
            samples.append(sample)
        return samples

    def sample_id(self, row: dict, split: str, index: int) -> str:
        value = row.get(self.id_column) if self.id_column else None
        return str(value) if value not in (None, "") else f"{self.name}/{split}/{index}"

    def row_images(self, table: SplitTable, rows: list[dict]) -> list[Any]:
        """The raw image value of each row (decoded by `loaders.open_image`)."""
        return [row.get(self.image_column) if self.image_column else None for row in rows]

    def to_sample(self, row: dict, sample_id: str, image: Any) -> Sample:
        raise NotImplementedError

    # -- prompt ----------------------------------------------------------------------------
    def instruction(self, sample: Sample) -> str:
        return self.answer_instruction

    def prompt(self, sample: Sample, cot: bool = False) -> str:
        """Question (or the recipe's template around it), then what form the answer takes; in
        chain-of-thought mode that form is kept and the think/answer tags are asked for."""
        template = getattr(self.config, "prompt", None)
        body = template.format(question=sample.question) if template else sample.question
        suffix = self.instruction(sample)
        if cot:
            suffix = f"{suffix} {COT_INSTRUCTION}" if suffix else COT_INSTRUCTION
        return f"{body}\n{suffix}" if suffix else body


def is_real_task_type(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, RealTask)
