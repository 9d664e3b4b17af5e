"""The chart README's value table, generated from the `## @param` comments of values.yaml.

values.yaml documents every key with a line `## @param <dotted.path> [type] <description>` (the
bitnami readme-generator convention: a documented key covers its children) and groups keys with
`## @section <title>`. `python tests/helm/values_doc.py --write` rewrites the table between the markers
in helm/mistral-nemo/README.md; the chart tests fail when the table is stale or a key is undocumented.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART_DIR = Path(__file__).resolve().parents[2] / "helm" / "mistral-nemo"
BEGIN = "<!-- values-table:begin -->"
END = "<!-- values-table:end -->"
_PARAM = re.compile(r"^\s*## @param (?P<path>[\w.]+)(?: \[(?P<kind>\w+)\])? (?P<text>.+)$")
_SECTION = re.compile(r"^\s*## @section (?P<title>.+)$")


@dataclass(frozen=True)
class Param:
    path: str
    description: str
    section: str


def params(values_text: str) -> list[Param]:
    """The documented keys, in file order."""
    found: list[Param] = []
    section = ""
    for line in values_text.splitlines():
        if match := _SECTION.match(line):
            section = match["title"].strip()
        elif match := _PARAM.match(line):
            found.append(Param(match["path"], match["text"].strip(), section))
    return found


def lookup(values: dict[str, Any], path: str) -> Any:
    """The value at a dotted path; KeyError when a segment is missing."""
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def undocumented(values: dict[str, Any], documented: set[str], prefix: str = "") -> list[str]:
    """Keys that neither carry an @param nor sit under one (non-empty maps are walked into)."""
    missing: list[str] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if path in documented:
            continue
        if isinstance(value, dict) and value:
            missing += undocumented(value, documented, f"{path}.")
        else:
            missing.append(path)
    return missing


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(values_text: str) -> str:
    """Markdown tables, one per section: key, description, default."""
    values = yaml.safe_load(values_text)
    lines: list[str] = []
    section = None
    for param in params(values_text):
        if param.section != section:
            section = param.section
            lines += ["", f"### {section}", "", "| Key | Description | Default |", "| --- | --- | --- |"]
        default = json.dumps(lookup(values, param.path), ensure_ascii=False)
        lines.append(f"| `{param.path}` | {_cell(param.description)} | `{_cell(default)}` |")
    return "\n".join(lines).strip() + "\n"


def splice(readme: str, generated: str) -> str:
    """The README with the text between the markers replaced."""
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{generated}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the README table in place")
    args = parser.parse_args(argv)
    readme_path = CHART_DIR / "README.md"
    readme = readme_path.read_text()
    updated = splice(readme, table((CHART_DIR / "values.yaml").read_text()))
    if args.write:
        readme_path.write_text(updated)
        return 0
    if updated != readme:
        print(f"{readme_path} is stale: run python {Path(__file__).name} --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
