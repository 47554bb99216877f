from pathlib import Path

from lite_cpt.recipe_docs import with_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_recipe_reference_matches_schema():
    text = README.read_text(encoding="utf-8")
    assert with_reference(text) == text, "run: python -m lite_cpt.recipe_docs README.md"
    assert "| `arms[].rif.budget` |" in text
