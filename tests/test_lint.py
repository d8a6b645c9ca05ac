"""The code base stays in shape: lint, types, layers, dependencies and packaging fail the suite.

- ruff (lint and format) over every Python file;
- strict mypy over every module of the package, read from the real files
  (:mod:`package_view` hands mypy the ``package-dir`` map it cannot read);
- import-linter's contracts from ``pyproject.toml`` (folders are layers; the
  domain touches no broker, database, HTTP or process; stages see the store's
  port only);
- deptry: every declared dependency is imported, every import declared;
- the packaging map: no symbolic link in the tree, every package declared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import package_view

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["sada", "pipeline", "consumers", "producers", "schemas", "tests"]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_check_is_clean() -> None:
    result = _run("ruff", "check", *SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run("ruff", "format", "--check", *SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean_over_every_module() -> None:
    code, output = package_view.run_mypy()
    assert code == 0, output


def test_import_contracts_are_kept() -> None:
    code, output = package_view.run_lint_imports()
    assert code == 0, output
    assert " kept, 0 broken." in output, output


def test_declared_dependencies_are_the_imported_ones() -> None:
    deptry = Path(sys.executable).with_name("deptry")
    result = subprocess.run(
        [str(deptry), "."], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_symbolic_link_in_the_tree() -> None:
    skip = {".git", ".venv"}
    links = [
        Path(d, name).relative_to(ROOT)
        for d, dirs, files in os.walk(ROOT)
        if not skip.intersection(Path(d).relative_to(ROOT).parts)
        for name in dirs + files
        if Path(d, name).is_symlink()
    ]
    assert links == []


def test_every_package_directory_is_declared_and_every_module_is_seen() -> None:
    assert package_view.undeclared_packages() == []
    names = {name for name, _ in package_view.modules()}
    # The layers the contracts speak of exist, so a contract cannot pass vacuously.
    for layer in (
        "sada.app.cli",
        "sada.pipeline.worker",
        "sada.pipeline.domain.decide",
        "sada.pipeline.stages.projector_stage",
        "sada.consumers.store",
        "sada.producers.gateway",
        "sada.infra.topics",
    ):
        assert layer in names


def test_no_module_of_the_package_is_over_500_lines() -> None:
    """One concern per module: none grows past 500 lines (migrations aside: they are frozen)."""
    long = {
        name: n
        for name, path in package_view.modules()
        if ".migrations." not in name
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}
