"""`lite-cpt compare`: recipe differences from saved recipes, the table, partial runs."""

import shutil
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from lite_cpt.cli import app
from lite_cpt.results.compare import _table, compare_runs, flatten_recipe, recipe_differences, render_comparison, write_comparison
from lite_cpt.recipe import recipe_from_dict, recipe_to_yaml
from tests.helpers import tiny_recipe
from tests.test_estimates import BASE, RFT, SFT, write_unit

ARMS = [{"name": "sft", "lr": 5e-3}, {"name": "rft", "lr": 1e-3, "rft": {"group_size": 4}}]
KEEP = {"a": [1, 1, 1, 1], "b": [1, 1, 1, 1], "g": [1, 1, 1, 0]}


def saved_run(tmp_path: Path, name: str, rft_kl: bool, rows_by_seed: dict[int, dict[str, list]]) -> Path:
    """A run directory as `lite-cpt run` leaves it: the resolved recipe and seed_<k>/<arm>/ units."""
    raw = tiny_recipe(tmp_path, arms=[dict(a) for a in ARMS], name=name, seeds=sorted(rows_by_seed))
    raw["arms"][1]["rft"]["kl"] = rft_kl
    recipe = recipe_from_dict(raw)
    run = recipe.run_dir
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    for seed, arms in rows_by_seed.items():
        for arm, rows in arms.items():
            write_unit(run / f"seed_{seed}", arm, rows)
    return run


def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    kl = saved_run(tmp_path, "tiny", True, {s: {"sft": SFT, "rft": RFT} for s in (0, 1, 2)})
    # Without KL, rft ends with task a at 1.0 on seeds 0 and 1; seed 2 stopped after task 1.
    no_kl = {0: {"sft": SFT, "rft": [BASE, RFT[1], KEEP]}, 1: {"sft": SFT, "rft": [BASE, RFT[1], KEEP]},
             2: {"sft": SFT, "rft": [BASE, RFT[1]]}}
    return kl, saved_run(tmp_path, "tiny-nokl", False, no_kl)


def test_recipe_differences_name_the_changed_keys(tmp_path):
    kl, no_kl = two_runs(tmp_path)
    recipes = [compare_runs([kl]).runs[0].recipe, compare_runs([no_kl]).runs[0].recipe]
    assert recipe_differences(recipes) == [("arms.rft.rft.kl", [True, False])]
    flat = flatten_recipe(recipes[0])
    assert flat["arms[order]"] == ["sft", "rft"] and flat["tasks.clevr.train_size"] == 16
    assert flat["seeds"] == [0, 1, 2] and "name" not in flat and "output_dir" not in flat
    reordered = dict(recipes[0], arms=list(reversed(recipes[0]["arms"])))
    assert recipe_differences([recipes[0], reordered]) == [("arms[order]", [["sft", "rft"], ["rft", "sft"]])]
    assert recipe_differences([recipes[0], dict(recipes[0], seeds=[0])]) == [("seeds", [[0, 1, 2], [0]])]


def test_compare_table_differences_and_missing_units(tmp_path):
    kl, no_kl = two_runs(tmp_path)
    comparison = compare_runs([kl, no_kl], metric="bwt")
    assert comparison.metric == "BWT"
    assert [(r.run, r.arm, r.seeds) for r in comparison.rows] == [
        ("tiny", "sft", "3/3"), ("tiny", "rft", "3/3"), ("tiny-nokl", "sft", "3/3"), ("tiny-nokl", "rft", "2/3")]
    differences = dict(comparison.differences)
    across = differences["tiny-nokl/rft − tiny/rft"]
    # paired over the two seeds both finished: BWT(no KL) = 1.0 - 0.5, BWT(KL) = 0.5 - 0.5 on each
    assert across.value == 0.5 and across.method == "paired t, 2 seeds" and across.excludes_zero
    assert differences["tiny/rft − tiny/sft"].value == 0.5
    assert comparison.missing == ["tiny-nokl/rft seed 2 (1/2 tasks)"]


def test_compare_command_prints_the_table_and_writes_markdown_and_plot(tmp_path):
    kl, no_kl = two_runs(tmp_path)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(kl), str(no_kl), "--arms", "rft", "--out", str(out)],
                                terminal_width=250)
    assert result.exit_code == 0, result.output
    assert "| arms.rft.rft.kl | `True` | `False` |" in result.output
    assert "| tiny-nokl/rft − tiny/rft | +0.500 [+0.500, +0.500] | paired t, 2 seeds | yes |" in result.output
    assert "| tiny | sft |" not in result.output, "--arms keeps only the arms asked for"
    assert "| arms.rft.rft.kl | `True` | `False` |" in (out / "compare.md").read_text()
    with Image.open(out / "compare.png") as image:
        assert image.format == "PNG"
    bad = CliRunner().invoke(app, ["compare", str(kl), "--metric", "nope"])
    assert bad.exit_code == 1 and "unknown metric 'nope'; allowed values: ACC, BWT" in bad.output
    unknown_arm = CliRunner().invoke(app, ["compare", str(kl), "--arms", "ewc"])
    assert unknown_arm.exit_code == 1 and "no run has arm ewc" in unknown_arm.output


#: compare.md for the two runs' rft arms, every figure checked by hand: with KL, rft's rows are
#: a = 0, 0.5, 0.5 and b = 0.5, 0.5, 0.75 on each seed (ACC 0.625, BWT 0, FWT 0, Δ g 0.75 - 0.75);
#: without KL, a and b end at 1.0 on the two finished seeds (ACC 1, BWT 0.5, forgetting -0.5).
EXPECTED_MARKDOWN = """# lite-cpt compare: tiny, tiny-nokl

## Recipe differences

| key | tiny | tiny-nokl |
|---|---|---|
| arms.rft.rft.kl | `True` | `False` |

## Metrics (95 % intervals)

| run | arm | seeds | ACC | BWT | forgetting | FWT | Δ g | interval |
|---|---|---|---|---|---|---|---|---|
| tiny | rft | 3/3 | 0.625 [0.625, 0.625] | 0.000 [0.000, 0.000] | 0.000 [0.000, 0.000] | 0.000 [0.000, 0.000] | 0.000 [0.000, 0.000] | t, 3 seeds |
| tiny-nokl | rft | 2/3 | 1.000 [1.000, 1.000] | 0.500 [0.500, 0.500] | -0.500 [-0.500, -0.500] | 0.000 [0.000, 0.000] | 0.000 [0.000, 0.000] | t, 2 seeds |

## Differences in BWT

| difference | BWT | interval | excludes 0 |
|---|---|---|---|
| tiny-nokl/rft − tiny/rft | +0.500 [+0.500, +0.500] | paired t, 2 seeds | yes |

Missing (left out of the intervals): tiny-nokl/rft seed 2 (1/2 tasks).

![BWT per run and arm](compare.png)
"""


def test_compare_markdown_whole_and_a_plot_row_per_run_and_arm(tmp_path):
    kl, no_kl = two_runs(tmp_path)
    path, text = write_comparison([kl, no_kl], tmp_path / "cmp", arms=["rft"])
    assert path == tmp_path / "cmp" / "compare.md" and path.read_text() == text == EXPECTED_MARKDOWN
    # One run: no recipe section; one (run, arm): nothing to difference, said so.
    alone = render_comparison(compare_runs([kl], ["rft"]))
    assert "## Recipe differences" not in alone and "Nothing to difference: one (run, arm) only." in alone
    same = render_comparison(compare_runs([kl, kl], ["rft"]))
    assert "The runs' recipes are the same (apart from name, output directory and logging)." in same
    # The plot grows a row per (run, arm) and carries no software stamp (same bytes every time).
    write_comparison([kl, no_kl], tmp_path / "both")
    with Image.open(tmp_path / "cmp" / "compare.png") as two, Image.open(tmp_path / "both" / "compare.png") as four:
        assert four.height > two.height and "Software" not in four.info
    write_comparison([kl, no_kl], tmp_path / "again")
    assert (tmp_path / "again" / "compare.png").read_bytes() == (tmp_path / "both" / "compare.png").read_bytes()


def test_a_table_cell_with_a_pipe_stays_in_its_column():
    assert _table(["key", "value"], [["a|b", "c"]]) == ["| key | value |", "|---|---|", "| a\\|b | c |"]


def test_one_seed_runs_without_item_scores_have_no_interval_and_say_so(tmp_path):
    """One seed and no per-item predictions (a run saved before they were written): neither a
    t interval nor an item bootstrap exists, and the tables say so instead of inventing one."""
    one = saved_run(tmp_path, "one", True, {0: {"sft": SFT, "rft": RFT}})
    other = saved_run(tmp_path, "other", False, {0: {"sft": SFT, "rft": RFT}})
    for run in (one, other):
        for predictions in [*run.rglob("predictions"), *run.rglob("base_predictions*")]:
            shutil.rmtree(predictions) if predictions.is_dir() else predictions.unlink()
    text = render_comparison(compare_runs([one, other], ["rft"]))
    assert "| one | rft | 1/1 | 0.625 | 0.000 | 0.000 | 0.000 | 0.000 | none |" in text
    assert "| other/rft − one/rft | +0.000 | none | n/a |" in text
