"""Regenerate the tiny-testbed tables of docs/results.md from runs, so they cannot drift from the code.

    python -m lite_cpt.tiny.tables            # row 0: the shipped tiny base on every task (~1 min)
    python -m lite_cpt.tiny.tables --arms     # also the arms over seeds 0, 1, 2 (hours on 2 cores)

Each table sits in docs/results.md between `<!-- tiny:<name> -->` and `<!-- /tiny:<name> -->`; the
command replaces what is between them and nothing else. Row 0 is the shipped base's (see
lite_cpt.tiny.base), so it is the same on every machine; tests/test_tiny_reproducible.py checks
the document's row against a fresh evaluation.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_RECIPE = "recipes/tiny.yaml"  # resolved like any recipe path (the checkout, else the package)
README = ROOT / "docs" / "results.md"  # the document that holds the tables
ARM_SEEDS = (0, 1, 2)


def base_row(recipe_path: str | Path = TINY_RECIPE) -> dict[str, float]:
    """The tiny base's score on every task and general benchmark of the recipe (row 0)."""
    from lite_cpt.run.evaluate import evaluate_adapter

    return evaluate_adapter(recipe_path, [], None, None)


def render_base_row(scores: dict[str, float]) -> str:
    header = "| " + " | ".join(scores) + " |"
    values = "| " + " | ".join(f"{v:.3f}" for v in scores.values()) + " |"
    return "\n".join([header, "|" + "---|" * len(scores), values])


def parse_base_row(block: str) -> dict[str, float]:
    """The scores of a rendered base-row table."""
    lines = [line for line in block.strip().splitlines() if line.startswith("|")]
    names = [cell.strip() for cell in lines[0].strip("|").split("|")]
    values = [float(cell) for cell in lines[2].strip("|").split("|")]
    return dict(zip(names, values))


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{round(value, 3) + 0.0:+.3f}".replace("-", "−")


def _with_interval(metric: dict, signed: bool = False) -> str:
    value, ci = metric.get("value"), metric.get("ci95")
    if value is None:
        return "–"
    text = _signed(value) if signed else f"{value:.3f}"
    if ci:
        low, high = (_signed(c) if signed else f"{c:.3f}" for c in ci)
        text += f" [{low}, {high}]"
    return text


def render_arms(summary: dict) -> str:
    """The arms table of a run's summary.json: ACC and BWT with their intervals, forgetting,
    FWT, each general benchmark's Δ, and BWT per seed."""
    arms = summary["arms"]
    deltas = list(dict.fromkeys(m for arm in arms.values() for m in arm["metrics"] if m.startswith("Δ ")))
    seeds = summary["seeds"]
    header = ["arm", "ACC", "BWT", "forgetting", "FWT", *deltas, f"BWT per seed ({' / '.join(map(str, seeds))})"]
    rows = []
    for name, arm in arms.items():
        m = arm["metrics"]
        per_seed = m["BWT"].get("per_seed") or {}
        rows.append([name, _with_interval(m["ACC"]), _with_interval(m["BWT"], True),
                     "–" if m["forgetting"]["value"] is None else f"{m['forgetting']['value']:.3f}",
                     _signed(m["FWT"]["value"]), *(_signed(m[d]["value"]) for d in deltas),
                     " / ".join(_signed(per_seed.get(str(s))) for s in seeds) if per_seed else "–"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _markers(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- tiny:{name} -->\n)(.*?)(<!-- /tiny:{name} -->)", re.DOTALL)


def readme_block(text: str, name: str) -> str:
    found = _markers(name).search(text)
    if found is None:
        raise ValueError(f"the document has no <!-- tiny:{name} --> ... <!-- /tiny:{name} --> block")
    return found.group(2)


def replace_block(text: str, name: str, body: str) -> str:
    readme_block(text, name)  # the markers must be there
    return _markers(name).sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(3), text, count=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", action="store_true", help="also run the arms over seeds 0, 1, 2 (hours)")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    from lite_cpt.io import atomic_write_text

    text = replace_block(args.readme.read_text(encoding="utf-8"), "base-row", render_base_row(base_row()))
    if args.arms:
        import json

        from lite_cpt.run.continual import run_recipe
        from lite_cpt.recipe import load_recipe

        recipe = load_recipe(TINY_RECIPE, [f"seeds=[{', '.join(map(str, ARM_SEEDS))}]"])
        run_dir = run_recipe(recipe)
        text = replace_block(text, "arms", render_arms(json.loads((run_dir / "summary.json").read_text())))
    atomic_write_text(args.readme, text)
    print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
