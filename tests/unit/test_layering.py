"""Imports only go down: each package imports only the packages below it (ARCHITECTURE.md, "Layout").

Every import counts, module level or inside a function, under ``TYPE_CHECKING`` or not: a lazy import upward is
still a dependency upward (and an ``ImportError`` in a deployment that lacks the upper package). The Triton python
models of ``model_repository/`` run inside Triton and may import only what runs there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.source_tree import PROJECT

INSIDE_TRITON = frozenset({"nemo_protocol", "nemo_chat_core", "nemo_serving", "nemo_runtime"})
ALLOWED: dict[str, frozenset[str]] = {
    "nemo_protocol": frozenset(),
    "nemo_chat_core": frozenset({"nemo_protocol"}),
    "nemo_serving": frozenset({"nemo_protocol", "nemo_chat_core"}),
    "nemo_runtime": frozenset({"nemo_protocol", "nemo_chat_core"}),
    "nemo_client": frozenset({"nemo_protocol", "nemo_chat_core"}),
    "nemo_gateway": frozenset({"nemo_protocol", "nemo_chat_core", "nemo_client"}),
    "nemo_bench": frozenset({"nemo_protocol", "nemo_chat_core", "nemo_client"}),
    "nemo_build": frozenset({"nemo_protocol", "nemo_chat_core", "nemo_runtime"}),
    "nemo_ops": frozenset({"nemo_protocol", "nemo_chat_core", "nemo_client", "nemo_build"}),
}
"""What each package may import besides itself."""
SOURCE_ROOTS = {"client": PROJECT / "client", "build": PROJECT / "build"}


def first_party_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every ``nemo_*`` import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top.startswith("nemo_"):
                yield node.lineno, top


def package_sources() -> list[tuple[str, Path]]:
    found = []
    for root in SOURCE_ROOTS.values():
        for package_dir in sorted(p for p in root.iterdir() if (p / "__init__.py").is_file()):
            found += [(package_dir.name, path) for path in sorted(package_dir.rglob("*.py"))]
    return found


def test_every_package_has_a_place_in_the_layers() -> None:
    packages = {name for name, _ in package_sources()}
    assert packages == set(ALLOWED), "a new package needs its row in ALLOWED (and ARCHITECTURE.md's layout)"


def test_nothing_under_client_imports_a_package_under_build() -> None:
    client_packages = {p.name for p in SOURCE_ROOTS["client"].iterdir() if (p / "__init__.py").is_file()}
    build_packages = {p.name for p in SOURCE_ROOTS["build"].iterdir() if (p / "__init__.py").is_file()}
    upward = [
        f"{path.relative_to(PROJECT)}:{line} imports {imported}"
        for package, path in package_sources()
        if package in client_packages
        for line, imported in first_party_imports(path)
        if imported in build_packages
    ]
    assert upward == []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_only_go_down(package: str) -> None:
    upward = [
        f"{path.relative_to(PROJECT)}:{line} imports {imported}"
        for owner, path in package_sources()
        if owner == package
        for line, imported in first_party_imports(path)
        if imported != package and imported not in ALLOWED[package]
    ]
    assert upward == [], f"{package} may import only {sorted(ALLOWED[package])}"


def test_the_triton_models_import_only_what_runs_inside_triton() -> None:
    models = sorted((PROJECT / "model_repository").rglob("model.py"))
    assert models
    outside = [
        f"{path.relative_to(PROJECT)}:{line} imports {imported}"
        for path in models
        for line, imported in first_party_imports(path)
        if imported not in INSIDE_TRITON
    ]
    assert outside == []


def test_the_check_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "import nemo_protocol.tekken\n"
        "if TYPE_CHECKING:\n    from nemo_build.errors import BuildError\n"
        "def lazy():\n    import nemo_serving.triton_io\n    from . import sibling\n",
        encoding="utf-8",
    )
    assert list(first_party_imports(sample)) == [(2, "nemo_protocol"), (4, "nemo_build"), (6, "nemo_serving")]
