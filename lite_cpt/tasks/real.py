"""Base of the task types that read a real, public dataset (see lite_cpt.data.loaders).

A dataset-specific subclass states its dataset's identity once (`dataset`, a `DatasetSpec`)
and maps one raw row of the published schema to a `Sample` (`to_sample`); opening a split,
drawing the seeded sample, reading the text columns and making image references are shared.

Memory: `load` keeps, per drawn row, its text fields and one small reference per image; the
images stay in the memory-mapped table (or in their files) until a batch decodes them, so what
a task holds grows with the rows it draws, never with the size of the split's images.
"""

from __future__ import annotations

from typing import Any

from lite_cpt.data import loaders
from lite_cpt.data.images import FileImage, ImageRef, TableImage
from lite_cpt.data.loaders import SplitTable
from lite_cpt.data.location import DataLocation, resolve_location
from lite_cpt.data.quality import UNREADABLE
from lite_cpt.data.rows import ROWS_PER_READ
from lite_cpt.data.spec import DatasetSpec
from lite_cpt.tasks.prompts import task_prompt
from lite_cpt.tasks.base import Sample, Task

SHORT_ANSWER = "Answer the question using a single word or phrase."


class RealTask(Task):
    """A task over a real dataset; subclasses set the class attributes and `to_sample`."""

    #: The dataset's identity: where it is published, its splits, how to download it.
    dataset: DatasetSpec
    #: Columns that hold the row's images, in prompt order: an embedded `Image` feature (read
    #: lazily) or a file name (found beside the data, in `images/` or in `<split>/`).
    image_columns: tuple[str, ...] = ("image",)
    #: Column holding a stable sample id (else `<task>/<split>/<row index>`).
    id_column: str | None = None
    #: Rows where one of these columns is null are skipped (e.g. ScienceQA's text-only rows).
    required_columns: tuple[str, ...] = ()
    answer_instruction = SHORT_ANSWER

    # -- where the data is -----------------------------------------------------------------
    def location(self) -> DataLocation:
        return resolve_location(self.config.source, self.data_root, download=self.dataset.download)

    def open(self, split: str) -> SplitTable:
        return loaders.open_split(self.location(), split)

    def hub_configs(self, split: str) -> list[str | None]:
        """The hub configurations (folders) a split is read from (`lite-cpt data download`)."""
        return [self.location().config_for(split)]

    def usable_rows(self, table: SplitTable) -> list[int]:
        """Row indices (after the split's slice) the task can use."""
        return loaders.non_null_rows(table, self.required_columns)

    def count(self, split: str) -> int:
        """How many rows `load(split, None)` returns."""
        return len(self.usable_rows(self.open(split)))

    # -- samples ---------------------------------------------------------------------------
    def load(self, split: str, size: int | None) -> list[Sample]:
        """`size` rows of `split` (the dataset's own split name, optionally sliced), drawn with
        the recipe seed: the same rows for every arm and every resume. Images stay references."""
        table = self.open(split)
        indices = loaders.subsample(self.usable_rows(table), size, self.seed, split)
        samples = []
        # A chunk of rows at a time: each row's dict (with every long text column, e.g. ScienceQA's
        # lectures) goes once its sample is made, so a whole-split draw never holds them all.
        for start in range(0, len(indices), ROWS_PER_READ):
            chunk = indices[start : start + ROWS_PER_READ]
            samples += [self.make_sample(table, i, row) for i, row in zip(chunk, loaders.read_text_rows(table, chunk))]
        return samples

    def make_sample(self, table: SplitTable, index: int, row: dict) -> Sample:
        sample_id = self.sample_id(row, table.split, index)
        try:
            sample = self.to_sample(row, sample_id, self.row_images(table, index, row))
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            # a row without its question or answer fields: kept as an unusable item, which the
            # run skips and `data check` counts (lite_cpt.data.quality)
            sample = Sample(id=sample_id, question="", answer="",
                            meta={UNREADABLE: f"row {index} cannot be read ({type(error).__name__}: {error})"})
        sample.meta.setdefault("split", table.split)
        sample.meta.setdefault("row", index)
        return sample

    def sample_id(self, row: dict, split: str, index: int) -> str:
        value = row.get(self.id_column) if self.id_column else None
        return str(value) if value not in (None, "") else f"{self.name}/{split}/{index}"

    def row_images(self, table: SplitTable, index: int, row: dict) -> tuple[ImageRef, ...]:
        """References to the row's images: file names found in the text row, or cells of the
        image columns (which `read_text_rows` leaves on disk)."""
        refs: list[ImageRef] = []
        for column in self.image_columns:
            if column in row:
                if row[column]:
                    refs.append(FileImage(str(row[column]), search_dirs(table)))
            elif column in table.dataset.column_names:
                refs.append(TableImage(loaders.table_arrow(table), index, column))
        return tuple(refs)

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        raise NotImplementedError

    # -- prompt ----------------------------------------------------------------------------
    def instruction(self, sample: Sample) -> str:
        return self.answer_instruction

    def prompt(self, sample: Sample, cot: bool = False) -> str:
        """Question, then what form the answer takes; in chain-of-thought mode that form is kept
        and the think/answer tags are asked for (or the recipe's templates, see tasks.prompts)."""
        return task_prompt(self.config, sample.question, self.instruction(sample), cot,
                                   cot_keeps_instruction=True)


def search_dirs(table: SplitTable) -> tuple:
    """Where relative image file names of a split are looked for."""
    return (table.base_dir, table.base_dir / "images", table.base_dir / table.split)


def is_real_task_type(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, RealTask)
