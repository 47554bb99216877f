"""The documentation stays true: the generated recipe reference, every relative link, every
`lite-cpt` command line quoted, and a README that fits on a few screens."""
import re
from pathlib import Path

import pytest
import typer.main

from lite_cpt.cli import app
from lite_cpt.recipe_docs import with_reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])


def test_recipe_reference_matches_schema():
    path = ROOT / "docs" / "recipes.md"
    text = path.read_text(encoding="utf-8")
    assert with_reference(text) == text, "run: python -m lite_cpt.recipe_docs docs/recipes.md"
    assert "| `arms[].rif.budget` |" in text


def test_readme_is_a_few_screens_with_the_two_commands_first():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:30])
    assert "lite-cpt run recipes/tiny.yaml" in first_screen and "python -m pytest" in first_screen


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        assert path.exists(), f"{doc.name}: link to {target} — no such file"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{doc.name}: link to {target} — no such heading"


def _quoted_commands(text: str) -> list[str]:
    """`lite-cpt ...` as written in inline code and at the start of code-block lines."""
    inline = re.findall(r"`(lite-cpt [^`]+)`", text)
    blocks = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S))
    lines = re.findall(r"^(?:[A-Z_]+=\S+ )*(lite-cpt [^#\n]+)", blocks, flags=re.M)
    return [c.strip() for c in inline + lines]


def _resolve(command: str) -> None:
    root = typer.main.get_command(app)
    # whitespace words are enough: only subcommand names and --flags are checked
    words = re.sub(r"[\[\]]", " ", command).split()[1:]
    node = root
    while hasattr(node, "commands") and words and not words[0].startswith("-"):
        name = words.pop(0)
        sub = node.commands.get(name)
        if sub is None:
            # a positional argument of a group (none exist) or an unknown command
            raise AssertionError(f"`{command}`: no command '{name}' (have {sorted(node.commands)})")
        node = sub
    assert not hasattr(node, "commands"), f"`{command}` names a group, not a command"
    options = {opt for param in node.params for opt in (*param.opts, *param.secondary_opts)}
    for word in words:
        flag = word.split("=", 1)[0]
        if flag.startswith("--"):
            assert flag in options, f"`{command}`: {node.name} has no option {flag} (has {sorted(options)})"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_quoted_command_resolves(doc):
    commands = _quoted_commands(doc.read_text(encoding="utf-8"))
    for command in commands:
        _resolve(command)


def test_the_command_check_catches_an_unknown_command_and_option():
    with pytest.raises(AssertionError, match="no command 'frobnicate'"):
        _resolve("lite-cpt frobnicate recipes/tiny.yaml")
    with pytest.raises(AssertionError, match="no option --gpu-tb"):
        _resolve("lite-cpt plan recipes/seven_tasks.yaml --gpu-tb 24")
    _resolve("lite-cpt plan recipes/seven_tasks.yaml --gpu-gb 24 --json")
