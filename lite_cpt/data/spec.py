"""What identifies a dataset: where it is published, its splits, and how to download it.

Each real task type states its dataset once, as its `dataset` class attribute; a recipe's
`source` block only overrides parts of it, and the fixtures are written from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Archive:
    """One file of an official release that `lite-cpt data download` fetches and unpacks into
    the dataset's directory.

    `members[split]`: the archive members that split needs (shell patterns, `*` crossing `/`);
    `targets[split]`: what they become under the dataset directory (a file, or a folder that
    must not be empty) — present targets mean the split needs nothing from this archive.
    `flatten` drops the members' folders (`unzip -j`). The official sites publish no checksums:
    `sha256` and `size` are checked when given, and every member's own CRC-32 always."""

    url: str
    members: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    flatten: bool = False
    sha256: str | None = None
    size: int | None = None

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's identity.

    `path` is the directory under `data.root` that is read first (the official release's layout
    for datasets that are not on the hub, or a `--local-dir` download); `hf_id` the hub repo read
    from a local hub cache otherwise. `download` is the one command that fetches it to where
    `data.root` (default `data/`) expects it."""

    path: str
    hf_id: str | None
    train_split: str | None
    test_split: str
    download: str
    hf_config: str | None = None
    layout: str = "hub"  # "hub" (the repo's parquet files) or the name of an official release layout
    #: The official release's archives (`lite-cpt data download` fetches them into `path`).
    archives: tuple[Archive, ...] = ()

    def source(self) -> dict:
        """The recipe `source` block this spec stands for."""
        out = {"path": self.path, "hf_id": self.hf_id, "hf_config": self.hf_config,
               "train_split": self.train_split, "test_split": self.test_split}
        return {k: v for k, v in out.items() if v is not None}


def hub_download(hf_id: str, include: str | None = None) -> str:
    """`hf download` into `data/hub`, the hub cache lite-cpt reads under the default data.root."""
    pattern = f" --include '{include}'" if include else ""
    return f"hf download {hf_id} --repo-type dataset{pattern} --cache-dir data/hub"
