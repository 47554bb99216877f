"""The recipe reference table (docs/recipes.md, "Recipe reference"), generated from the schema itself:
the fields every arm (task, benchmark) entry holds, then those an arm method (task type) adds,
each marked with the methods (types) that take it."""

from __future__ import annotations

from pydantic import BaseModel

from lite_cpt.recipe import Recipe, plugin_field_owners


def _section(annotation) -> type[BaseModel] | None:
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section(arg)
        if found is not None:
            return found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _type_name(annotation) -> str:
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("Union[int, Literal['auto']]", "int | 'auto'")


def _fields(model: type[BaseModel]) -> list[tuple[str, object, str]]:
    """(name, field, what the meaning starts with) of a section: its own fields, then the plugin
    fields of an entry section, with the methods or types that take them."""
    fields = [(name, field, "") for name, field in model.model_fields.items()]
    for name, (field, owners) in plugin_field_owners(model).items():
        fields.append((name, field, f"({', '.join(owners)} only) "))
    return fields


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field, only in _fields(model):
        section, path = _section(field.annotation), f"{prefix}{name}"
        if section is not None:
            many = str(field.annotation).startswith("list")
            rows.append((path + ("[]" if many else ""), f"list of {section.__name__}" if many else "section",
                         "", only + (field.description or "")))
            rows += _rows(section, path + ("[]." if many else "."))
        else:
            default = "required" if field.is_required() else repr(field.default)
            rows.append((path, _type_name(field.annotation), default, only + (field.description or "")))
    return rows


def recipe_reference_markdown() -> str:
    """A markdown table of every recipe key: type, default and meaning."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, meaning in _rows(Recipe, ""):
        cells = [f"`{key}`", kind, f"`{default}`" if default else "", meaning]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


START, END = "<!-- recipe-reference:start -->", "<!-- recipe-reference:end -->"


def with_reference(readme: str) -> str:
    """Markdown text with the table between its recipe-reference markers regenerated."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{recipe_reference_markdown()}{END}{tail}"


if __name__ == "__main__":  # python -m lite_cpt.recipe_docs docs/recipes.md  (rewrites the table)
    import sys
    from pathlib import Path

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/recipes.md")
    path.write_text(with_reference(path.read_text(encoding="utf-8")), encoding="utf-8")
