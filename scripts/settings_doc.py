"""Print the settings table of the README (every field of robert_common.settings.Settings).

Usage: python scripts/settings_doc.py   (paste between the SETTINGS markers of README.md;
tests/test_readme.py fails when a setting is missing from the README)
"""

from __future__ import annotations

from robert_common.settings import Settings


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "(unset)" if default in (None, {}, []) else f"`{default}`"
        rows.append(f"| `ROBERT_{name.upper()}` | {shown} | {(field.description or '').replace('|', '/')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
