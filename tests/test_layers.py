"""Imports run one way: aios_cli -> profilers -> engines. The engines are the core and know
nothing of measurement or presentation; the profiler knows nothing of the CLI. Checked two
ways: every import statement in the source (at module level or inside a function), and what
importing each package actually loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"engines": ("profilers", "aios_cli"), "profilers": ("aios_cli",)}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def wrong_way_imports(root: Path) -> list[str]:
    bad = []
    for pkg, banned in FORBIDDEN.items():
        for f in sorted((root / pkg).rglob("*.py")):
            for line, mod in imported_packages(f):
                if mod in banned:
                    bad.append(f"{f.relative_to(root)}:{line} imports {mod}")
    return bad


def test_no_import_runs_the_wrong_way():
    assert wrong_way_imports(ROOT) == []


def test_the_check_sees_a_wrong_way_import(tmp_path):
    """The scan itself: a wrong-way import hidden inside a function is found."""
    for pkg in ("engines", "profilers", "aios_cli"):
        (tmp_path / pkg).mkdir()
    (tmp_path / "engines" / "core.py").write_text("def f():\n    from profilers.probe import Probe\n")
    (tmp_path / "profilers" / "ok.py").write_text("import engines.ops\n")
    assert wrong_way_imports(tmp_path) == ["engines/core.py:2 imports profilers"]


@pytest.mark.parametrize("package,banned", list(FORBIDDEN.items()))
def test_importing_a_layer_loads_nothing_above_it(package, banned):
    """Import every module of the package in a fresh interpreter: no module of a layer above
    may end up loaded."""
    mods = sorted(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for f in (ROOT / package).rglob("*.py"))
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module(m)\n"
            f"print(sorted({{k.split('.')[0] for k in sys.modules}} & {set(banned)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
