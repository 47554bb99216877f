"""Image references and the one place they are decoded.

Loading a split keeps, per sample, a reference to each image, never its pixels: a cell of the
memory-mapped table the split was read from (`TableImage`: embedded bytes stay on disk until
read) or a file name with the directories to look for it in (`FileImage`). A batch decodes its
images with `decode_image`, the single point where a bad or missing image raises
`ImageDecodeError`; a caller that wants to skip such items catches it there.

Synthetic tasks generate PIL images directly; `decode_image` passes those through.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from PIL import Image, UnidentifiedImageError

from lite_cpt.errors import UserError


class ImageDecodeError(UserError):
    """An image of one sample cannot be read or decoded (names the sample and the file)."""


@dataclass(frozen=True, eq=False)
class TableImage:
    """The image in `column` of row `row` of a memory-mapped arrow table (a Hugging Face
    `Image` cell `{"bytes", "path"}`, or item `item` of a list of them)."""

    table: Any  # pyarrow.Table, shared by every reference into the same split
    row: int
    column: str
    item: int = 0

    def read(self) -> Any:
        value = self.table.column(self.column)[self.row].as_py()
        if isinstance(value, list):  # a list-of-images column: its item-th image
            value = value[self.item] if len(value) > self.item else None
        return value

    def describe(self) -> str:
        return f"row {self.row}, column {self.column}" + (f"[{self.item}]" if self.item else "")


@dataclass(frozen=True)
class FileImage:
    """An image file named relative to one of `search_dirs` (or an absolute path)."""

    name: str
    search_dirs: tuple[Path, ...] = ()

    def find(self) -> Path | None:
        path = Path(os.path.expanduser(self.name))
        if path.is_absolute():
            return path if path.is_file() else None
        return next((d / self.name for d in self.search_dirs if (d / self.name).is_file()), None)

    def describe(self) -> str:
        return self.name


ImageRef = Union[TableImage, FileImage, Image.Image]


def decode_image(ref: ImageRef, sample_id: str = "?") -> Image.Image:
    """An RGB PIL image from a reference; raises `ImageDecodeError` naming the sample and file."""
    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, FileImage):
        path = ref.find()
        if path is None:
            looked = ", ".join(str(d) for d in ref.search_dirs) or "no directories"
            raise ImageDecodeError(f"image of sample {sample_id} not found: {ref.name} (looked in {looked})")
        return _open(path, sample_id, str(path))
    value = ref.read()
    if isinstance(value, dict) and value.get("bytes"):
        return _open(io.BytesIO(value["bytes"]), sample_id, f"embedded bytes ({value.get('path') or ref.describe()})")
    if isinstance(value, (bytes, bytearray)):
        return _open(io.BytesIO(value), sample_id, f"embedded bytes ({ref.describe()})")
    raise ImageDecodeError(f"image of sample {sample_id} is empty ({ref.describe()})")


def _open(source: Any, sample_id: str, where: str) -> Image.Image:
    try:
        image = Image.open(source)
        image.load()
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ImageDecodeError(f"image of sample {sample_id} cannot be opened: {where} ({error})") from None


def held_image_bytes(ref: ImageRef) -> int:
    """Bytes of pixels a reference keeps in memory: a decoded image's, a reference's none."""
    if isinstance(ref, Image.Image):
        return ref.width * ref.height * len(ref.getbands())
    return 0
