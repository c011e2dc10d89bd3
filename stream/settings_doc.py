"""The configuration reference, generated from the settings models so docs cannot drift from code."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from inference.settings import InferenceSettings
from stream.settings import StreamSettings

COMPONENTS: tuple[tuple[str, type[BaseSettings]], ...] = (
    ("Stream worker (`stream/settings.py`)", StreamSettings),
    ("Inference runtime (`inference/settings.py`)", InferenceSettings),
)


def settings_markdown() -> str:
    lines = []
    for title, model in COMPONENTS:
        prefix = model.model_config.get("env_prefix", "")
        lines += [f"#### {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            default = "" if field.default is None else str(field.default)
            meaning = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{name.upper()}` | `{default}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def with_settings_block(readme: str) -> str:
    """The README text with the block between the settings markers regenerated."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{settings_markdown()}\n{END}{tail}"
