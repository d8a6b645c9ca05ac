"""The package as its import names see it, for the static tools that cannot read ``package-dir``.

``pyproject.toml`` maps the design card's top-level folders (``pipeline/``,
``consumers/``, ``producers/``, ``schemas/``) to subpackages of ``sada``.
Python, pip, setuptools' editable installs, ruff and coverage follow that map;
mypy and grimp (under import-linter) resolve modules by directory names only.
This module reads the map once and gives those two tools the same view:

- :func:`modules` lists every module of the package with the real file behind it
  (mypy is handed these pairs, so it reads and reports the real files);
- :func:`mirror` copies the modules into a directory laid out by import name
  (import-linter reports module names, never paths, so a copy is enough).

Run as ``python tests/package_view.py mypy`` or ``… lint-imports`` from the
repository root; the lint tests do the same.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        table: dict[str, object] = tomllib.load(f)["tool"]["setuptools"]
    return table


def package_dirs() -> dict[str, Path]:
    """Import name of each declared package → its directory in the tree."""
    table = _setuptools()
    mapping: dict[str, str] = table["package-dir"]  # type: ignore[assignment]
    packages: list[str] = table["packages"]  # type: ignore[assignment]
    found: dict[str, Path] = {}
    for package in packages:
        # The longest mapped prefix decides where a package lives.
        prefix = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len)
        rest = package[len(prefix) :].lstrip(".")
        found[package] = (
            ROOT / mapping[prefix] / Path(*rest.split(".")) if rest else ROOT / mapping[prefix]
        )
    return found


def modules() -> Iterator[tuple[str, Path]]:
    """(module name, file) for every Python module of every declared package."""
    for package, directory in sorted(package_dirs().items()):
        for path in sorted(directory.glob("*.py")):
            yield (package if path.stem == "__init__" else f"{package}.{path.stem}"), path


def undeclared_packages() -> list[Path]:
    """Directories that hold an ``__init__.py`` but are missing from ``packages``."""
    declared = set(package_dirs().values())
    roots = {d for d in declared if d.parent == ROOT or d.parent.parent == ROOT}
    found = {p.parent for r in roots for p in r.rglob("__init__.py")}
    return sorted(found - declared)


def mirror(target: Path) -> Path:
    """Copy every module to ``target`` laid out by import name; returns ``target``."""
    for name, path in modules():
        parts = name.split(".")
        dest = (
            target.joinpath(*parts, "__init__.py")
            if path.stem == "__init__"
            else target.joinpath(*parts[:-1], parts[-1] + ".py")
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    return target


def run_mypy() -> tuple[int, str]:
    """Strict mypy (settings from ``pyproject.toml``) over the package's real files."""
    from mypy import build
    from mypy.errors import CompileError
    from mypy.main import process_options
    from mypy.modulefinder import BuildSource

    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), "-c", "pass"])
    sources = [BuildSource(str(path), name) for name, path in modules()]
    try:
        result = build.build(sources, options)
    except CompileError as e:
        return 2, "\n".join(e.messages)
    return (1 if result.errors else 0), "\n".join(result.errors)


def run_lint_imports() -> tuple[int, str]:
    """import-linter's contracts (from ``pyproject.toml``) over a mirror of the package."""
    with tempfile.TemporaryDirectory(prefix="sada-view-") as tmp:
        view = mirror(Path(tmp) / "view")
        env = {"PYTHONPATH": str(view), "PATH": str(Path(sys.executable).parent)}
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("lint-imports")),
                "--config",
                str(ROOT / "pyproject.toml"),
                "--no-cache",
            ],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    return done.returncode, done.stdout + done.stderr


if __name__ == "__main__":
    tool = sys.argv[1] if len(sys.argv) > 1 else ""
    runners = {"mypy": run_mypy, "lint-imports": run_lint_imports}
    if tool not in runners:
        raise SystemExit(f"usage: python tests/package_view.py {{{'|'.join(runners)}}}")
    code, output = runners[tool]()
    print(output)
    raise SystemExit(code)
