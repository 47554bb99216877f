"""`lite-cpt data download` against a loopback server that serves a hub-shaped API (the fixture
repos, file for file) and the official VizWiz and GQA archives, zipped in their published
layouts: it fetches exactly what `data check` reports missing, resumes an interrupted archive,
and refuses (and names) one whose checksum is wrong."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lite_cpt.cli import app
from lite_cpt.data.check import data_check
from lite_cpt.data.download import hub_split_files, plan_downloads, run_downloads
from lite_cpt.data.fetch import download_file
from lite_cpt.data.fixtures import OFFICIAL_LAYOUT, dataset_spec, write_fixtures
from lite_cpt.errors import UserError
from lite_cpt.recipe import load_recipe
from lite_cpt.tasks.vqa import GQATask, VizWizTask
from tests.hub_server import HubServer, Served

TASKS = ["scienceqa", "textvqa", "vizwiz", "gqa", "geometry3k", "pathvqa", "clevr"]
BENCHMARKS = ["mmmu", "mmlu_pro", "pope"]
#: Files a repo holds besides what the recipe's splits read: a download must leave them.
EXTRA = "data/unused_split-00000-of-00001.parquet"


@pytest.fixture(autouse=True)
def _private_hf_home(private_hf_home, monkeypatch):
    """An empty cache of the test's own, and the hub client online (the suite runs offline)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def _tree(directory: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _published(source: Path) -> Served:
    """The fixtures as the world publishes them: hub repos, and the official zips (VizWiz's
    annotations in `Annotations/`, GQA's questions with its unbalanced files beside)."""
    served = Served()
    for name in TASKS + BENCHMARKS:
        spec = dataset_spec(name)
        if name in OFFICIAL_LAYOUT:
            continue
        repo = source / "hub" / f"datasets--{spec.hf_id.replace('/', '--')}" / "snapshots"
        files = _tree(next(repo.iterdir()))
        served.repos[spec.hf_id] = {**files, EXTRA: b"not read by any recipe"}
    viz = source / "vizwiz"
    served.files["Annotations.zip"] = _zip({f"Annotations/{s}.json": (viz / f"{s}.json").read_bytes()
                                            for s in ("train", "val")} | {"Annotations/test.json": b"[]"})
    for split in ("train", "val"):
        served.files[f"{split}.zip"] = _zip(_tree(viz / split, f"{split}/"))
    gqa = source / "gqa"
    served.files["questions1.2.zip"] = _zip(
        {f"{s}_balanced_questions.json": (gqa / f"{s}_balanced_questions.json").read_bytes()
         for s in ("train", "testdev")} | {"train_all_questions/train_all_questions_0.json": b"{}"})
    served.files["images.zip"] = _zip(_tree(gqa / "images", "images/"))
    return served


def _mirror(monkeypatch, url: str) -> None:
    """Point the official archives' URLs at the loopback server."""
    for cls in (VizWizTask, GQATask):
        archives = tuple(dataclasses.replace(a, url=f"{url}/files/{a.name}") for a in cls.dataset.archives)
        monkeypatch.setattr(cls, "dataset", dataclasses.replace(cls.dataset, archives=archives))


def _recipe(tmp_path: Path, root: Path) -> Path:
    raw = {
        "name": "download", "data": {"root": str(root)},
        "tasks": [{"name": t, "type": t, "train_size": 3, "test_size": 2} for t in TASKS],
        "arms": [{"name": "sft"}],
        "evaluation": {"general": [{"name": b, "type": b, "size": 3} for b in BENCHMARKS]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _comparable(rows: list[dict]) -> list[tuple]:
    return [(r["name"], r["status"], r["train"], r["train_available"], r["test"], r["test_available"], r["prompt"])
            for r in rows]


def test_download_fetches_what_data_check_misses_and_nothing_else(tmp_path, monkeypatch):
    source = write_fixtures(tmp_path / "published", n=4, seed=3)
    served = _published(source)
    root = tmp_path / "data"
    recipe_path = _recipe(tmp_path, root)
    with HubServer(served) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        _mirror(monkeypatch, url)
        # half of VizWiz is there already: only the val split is fetched
        (root / "vizwiz" / "train").mkdir(parents=True)
        (root / "vizwiz" / "train.json").write_bytes((source / "vizwiz" / "train.json").read_bytes())
        for image in (source / "vizwiz" / "train").iterdir():
            (root / "vizwiz" / "train" / image.name).write_bytes(image.read_bytes())
        result = CliRunner().invoke(app, ["data", "download", str(recipe_path)])
        assert result.exit_code == 0, result.output
        fetched = {path for method, path, _ in served.log if method == "GET"}
        again = CliRunner().invoke(app, ["data", "download", str(recipe_path)])
    assert again.exit_code == 0 and "nothing to download" in again.output, again.output

    recipe = load_recipe(recipe_path, [], check_data=False)
    rows = data_check(recipe)
    assert all(r["status"] == "found" for r in rows), [(r["name"], r["problem"]) for r in rows]
    reference = data_check(load_recipe(recipe_path, [f"data.root={source}"], check_data=False))
    assert _comparable(rows) == _comparable(reference)  # the same rows, counts and prompts
    # only the files the splits read: no extra split, no unbalanced GQA questions, no test.json
    assert not any(path.endswith(EXTRA) for path in fetched)
    assert "/files/train.zip" not in fetched and "/files/val.zip" in fetched
    assert not list(root.rglob("unused_split*")) and not (root / "gqa" / "train_all_questions_0.json").exists()
    assert not (root / "vizwiz" / "test.json").exists()
    assert sorted(p.name for p in (root / "gqa").iterdir()) == [
        "images", "testdev_balanced_questions.json", "train_balanced_questions.json"]
    assert not list(root.rglob("*.zip")) and not list(root.rglob("*.part"))  # archives removed when unpacked


def test_an_interrupted_archive_resumes_with_a_range_request(tmp_path):
    data = bytes(range(256)) * 4000  # about 1 MB
    served = Served(files={"images.zip": data}, cut_after={"images.zip": 300_000})
    dest = tmp_path / "gqa" / "images.zip"
    with HubServer(served) as url:
        with pytest.raises(UserError, match="300000 bytes arrived, 1024000 the server declared.*resume"):
            download_file(f"{url}/files/images.zip", dest)
        assert (dest.with_name("images.zip.part")).stat().st_size == 300_000 and not dest.exists()
        download_file(f"{url}/files/images.zip", dest)
    assert dest.read_bytes() == data
    assert [r for m, p, r in served.log if m == "GET"] == [None, "bytes=300000-"]


def test_a_bad_checksum_is_refused_and_named(tmp_path):
    served = Served(files={"Annotations.zip": b"not the published bytes"})
    dest = tmp_path / "vizwiz" / "Annotations.zip"
    with HubServer(served) as url:
        with pytest.raises(UserError) as refused:
            download_file(f"{url}/files/Annotations.zip", dest, sha256="0" * 64)
    message = str(refused.value)
    assert "Annotations.zip" in message and "checksum mismatch" in message and "0" * 64 in message
    assert not dest.exists() and not dest.with_name("Annotations.zip.part").exists()


def test_a_damaged_archive_is_named_and_nothing_is_unpacked(tmp_path, monkeypatch):
    good = _zip({"val/VizWiz_val_00000000.jpg": b"x" * 5000})
    damaged = good.replace(b"x" * 100, b"y" * 100, 1)  # same length, a member's CRC-32 fails
    served = Served(files={"val.zip": damaged})
    root = tmp_path / "data"
    with HubServer(served) as url:
        _mirror(monkeypatch, url)
        recipe = load_recipe(_recipe(tmp_path, root), ["tasks=[{name: vizwiz, type: vizwiz, test_size: 1}]",
                                                       "evaluation.general=[]"], check_data=False)
        (root / "vizwiz").mkdir(parents=True)
        for name in ("train.json", "val.json"):
            (root / "vizwiz" / name).write_text("[]")
        (root / "vizwiz" / "train").mkdir()
        (root / "vizwiz" / "train" / "a.jpg").write_bytes(b"a")
        plan = plan_downloads(recipe)
        assert [(f.splits, list(f.archives)) for f in plan.fetches] == [(["val"], ["val.zip"])]
        with pytest.raises(UserError, match=r"val\.zip is damaged"):
            run_downloads(plan, say=lambda _: None)
    assert not (root / "vizwiz" / "val").exists()


def test_hub_split_files_follow_the_loaders_layout_rules():
    listing = ["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
               "data/test-00000-of-00001.parquet", "Art/validation-00000-of-00001.parquet",
               "Art/dev-00000-of-00001.parquet", "Math/validation-00000-of-00001.parquet",
               "testdev_balanced_instructions/testdev-00000-of-00001.parquet",
               "testdev_balanced_images/testdev-00000-of-00001.parquet"]
    assert hub_split_files(listing, "train", None) == ["data/train-00000-of-00002.parquet",
                                                      "data/train-00001-of-00002.parquet"]
    assert hub_split_files(listing, "validation", None) == ["Art/validation-00000-of-00001.parquet",
                                                           "Math/validation-00000-of-00001.parquet"]
    assert hub_split_files(listing, "testdev", "testdev_balanced_images") == [
        "testdev_balanced_images/testdev-00000-of-00001.parquet"]
    assert hub_split_files(listing, "val", None) == []


def test_dry_run_says_what_and_where_and_names_what_it_cannot_fetch(tmp_path):
    root = tmp_path / "data"
    (root / "mine").mkdir(parents=True)  # a local directory the recipe points at, without the split
    raw = {"name": "d", "data": {"root": str(root)}, "arms": [{"name": "sft"}],
           "tasks": [{"name": "vizwiz", "type": "vizwiz", "train_size": 2, "test_size": 2},
                     {"name": "pathvqa", "type": "pathvqa", "test_size": 2, "source": {"path": "mine"}}],
           "evaluation": {"general": [{"name": "pope", "type": "pope", "size": 2}]}}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["data", "download", str(recipe), "--dry-run"], terminal_width=400)
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert (f"would fetch tasks.0 (vizwiz): Annotations.zip (train, val), train.zip (train), val.zip (val) "
            f"→ {root / 'vizwiz'}") in out
    assert f"would fetch evaluation.general.0 (pope): lmms-lab/POPE (test) from the hub → {root / 'hub'}" in out
    assert f"cannot download tasks.1 (pathvqa): split(s) train, test missing at {root / 'mine'}" in out
    assert not list(root.rglob("*.part")) and not (root / "vizwiz").exists()  # nothing fetched


def test_a_member_outside_the_archive_folder_is_refused(tmp_path):
    from lite_cpt.data.fetch import unpack
    from lite_cpt.data.spec import Archive

    path = tmp_path / "val.zip"
    path.write_bytes(_zip({"val/a.jpg": b"a", "val/../../escaped.jpg": b"b"}))
    with pytest.raises(UserError, match=r"member outside its folder \(val/\.\./\.\./escaped\.jpg\)"):
        unpack(path, Archive("https://x/val.zip", members={"val": ("val/*",)}), ["val"], tmp_path / "vizwiz")
    assert not (tmp_path / "escaped.jpg").exists() and not list((tmp_path / "vizwiz").glob("*"))
