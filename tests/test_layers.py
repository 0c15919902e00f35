"""Imports run one way: aios_cli -> profilers -> engines. The engines are the core and know
nothing of measurement or presentation; the profiler knows nothing of the CLI. Checked two
ways: every import statement in the source (at module level or inside a function), and what
importing each package actually loads.

Two rules more, on the import statements (relative ones resolved to absolute names): (a) no
module takes another module's underscore names, and (b) no `aios` command module imports
another command module; what commands share lives in modules that are no command."""

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


# --- what one module may take from another ------------------------------------------------

PACKAGES = ("aios_cli", "profilers", "engines")


def _module_name(root: Path, f: Path) -> str:
    return ".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _modules(root: Path) -> dict[str, Path]:
    """Every module of the three packages: dotted name -> file."""
    return {_module_name(root, f): f for pkg in PACKAGES if (root / pkg).is_dir()
            for f in sorted((root / pkg).rglob("*.py"))}


def _private(name: str) -> bool:
    """One leading underscore: the module's own. A dunder (`__version__`, `__future__`) is not."""
    return name.startswith("_") and not name.startswith("__")


def _from_module(package: str, node: ast.ImportFrom) -> str:
    """The absolute name of the module a `from ... import` reads from."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[:len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _import_nodes(name: str, path: Path, known: dict[str, Path]):
    """(node, alias, module, imported name or None) for every name every import statement in
    the file binds, at module level or in a function, relative ones resolved to absolute names.
    `from p import m`, where p.m is a module of the tree, imports the module p.m (None)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node, a, a.name, None
        elif isinstance(node, ast.ImportFrom):
            mod = _from_module(package, node)
            for a in node.names:
                if f"{mod}.{a.name}" in known:
                    yield node, a, f"{mod}.{a.name}", None
                else:
                    yield node, a, mod, a.name


def _imports(name: str, path: Path, known: dict[str, Path]):
    """(line, module, names) for every import statement in the file (see `_import_nodes`)."""
    for node, _, module, what in _import_nodes(name, path, known):
        yield node.lineno, module, (what,) if what else ()


def _reaches_into(importer: str, module: str, names: tuple[str, ...]) -> list[str]:
    """The private parts of `module` that `importer` takes: an underscore name from another
    module, or a module with an underscore name from outside the package that holds it."""
    out = [f"{module}.{n}" for n in names if _private(n) and module != importer]
    parts = module.split(".")
    for i, part in enumerate(parts):
        owner = ".".join(parts[:i])  # the package that holds the private module
        if _private(part) and not (importer == owner or importer.startswith(owner + ".")):
            out.append(".".join(parts[:i + 1]))
    return out


def private_imports(root: Path) -> list[str]:
    """Rule (a): no module of aios_cli, profilers or engines imports another module's
    underscore name (`from .x import _y`, `from a.b import _c`), or a module whose name starts
    with an underscore (`import a._b`, `from a import _b`) from outside the package holding
    it. A name with one leading underscore belongs to its module (or package): to share it,
    give it a public name where it lives, or move it to a shared module. Dunder names are
    public. Third-party modules count too: their private names may change without notice."""
    known = _modules(root)
    bad = []
    for name, path in known.items():
        for line, module, names in _imports(name, path, known):
            for what in _reaches_into(name, module, names):
                bad.append(f"{path.relative_to(root)}:{line} imports {what}")
    return sorted(bad)


def _registered(call: ast.Call) -> ast.expr | None:
    """`X.command(...)(fn)`: the fn registered as a command; else None."""
    f = call.func
    if (isinstance(f, ast.Call) and isinstance(f.func, ast.Attribute) and f.func.attr == "command"
            and len(call.args) == 1):
        return call.args[0]
    return None


def command_modules(root: Path) -> set[str]:
    """The aios_cli modules that define a Typer command: a function decorated `@x.command(...)`,
    or one registered as `x.command(...)(function)`, `x.command(...)(module.function)` or
    `x.command(...)(module.factory(...))`, here or in another module (main.py, a group's
    __init__.py). The modules that only register commands are not command modules themselves."""
    known = {k: v for k, v in _modules(root).items() if k.split(".")[0] == "aios_cli"}
    commands = set()
    for name, path in known.items():
        modules, functions = {}, {}  # a name an import binds here -> the module it is, or holds it
        for node, a, module, what in _import_nodes(name, path, known):
            if isinstance(node, ast.ImportFrom):
                (functions if what else modules)[a.asname or a.name] = module
            elif a.asname:  # `import a.b` binds only `a`
                modules[a.asname] = module
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "command"
                       for d in node.decorator_list):
                    commands.add(name)
            if isinstance(node, ast.Call) and (fn := _registered(node)) is not None:
                if isinstance(fn, ast.Call):
                    fn = fn.func
                if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id in modules:
                    commands.add(modules[fn.value.id])
                elif isinstance(fn, ast.Name):
                    commands.add(functions.get(fn.id, name))
    return commands


def command_to_command_imports(root: Path) -> list[str]:
    """Rule (b): an aios_cli command module imports no other command module; what two commands
    share lives in a module that is no command (request.py, batch_options.py, bench/report.py,
    compare/common.py, ...)."""
    known = _modules(root)
    commands = command_modules(root)
    bad = []
    for name in sorted(commands):
        for line, module, _ in _imports(name, known[name], known):
            if module in commands and module != name:
                bad.append(f"{known[name].relative_to(root)}:{line} imports the command module {module}")
    return list(dict.fromkeys(bad))  # one line per statement, however many names it takes


def test_no_module_takes_another_modules_private_names():
    """Rule (a), as `private_imports` states it."""
    assert private_imports(ROOT) == []


def test_no_command_module_imports_another():
    """Rule (b), as `command_to_command_imports` states it."""
    assert command_to_command_imports(ROOT) == []


def test_the_commands_are_found():
    """The scan of registrations finds the commands `aios --help` lists (so rule (b) is not
    vacuous)."""
    found = command_modules(ROOT)
    assert {"aios_cli.run", "aios_cli.top", "aios_cli.serve", "aios_cli.info", "aios_cli.models",
            "aios_cli.bench.latency", "aios_cli.bench.throughput", "aios_cli.bench.serve",
            "aios_cli.compare.kernels", "aios_cli.compare.passes", "aios_cli.compare.peak",
            "aios_cli.sim.attention"} <= found
    assert not found & {"aios_cli.main", "aios_cli.bench", "aios_cli.compare", "aios_cli.request",
                        "aios_cli.errors"}


def test_the_checks_see_private_and_command_imports(tmp_path):
    """The scans themselves, on a small tree: each kind of import each rule refuses is found,
    relative ones resolved, inside functions too; what the rules allow is not."""
    files = {
        "aios_cli/__init__.py": "",
        "aios_cli/main.py": ("from . import a as a_cmd\nfrom .grp import app as grp_app\nimport typer\n"
                             "from .d import d\napp = typer.Typer()\napp.command('a')(a_cmd.a)\n"
                             "app.command('d')(d)\n"),
        "aios_cli/d.py": "def d():\n    pass\n",
        "aios_cli/shared.py": "def helper():\n    pass\n_SECRET = 1\n",
        "aios_cli/a.py": ("from .shared import helper\nfrom .grp.b import cmd_b\n\n"
                          "def a():\n    from .shared import _SECRET\n"),
        "aios_cli/grp/__init__.py": ("import typer\nfrom . import b, c\napp = typer.Typer()\n"
                                     "app.command('b')(b.cmd_b)\napp.command('c')(c.make('c'))\n"),
        "aios_cli/grp/b.py": "from ..shared import helper\nfrom . import _impl\nfrom ._impl import thing\n",
        "aios_cli/grp/c.py": "def make(name):\n    from aios_cli.a import a\n",
        "aios_cli/grp/_impl.py": "thing = 1\n",
        "profilers/__init__.py": "",
        "profilers/p.py": ("from aios_cli.grp._impl import thing\nimport aios_cli.grp._impl\n"
                           "from engines.e import _x as x, __version__\n"),
        "engines/__init__.py": "",
        "engines/e.py": "from . import _private_mod\n__version__ = '1'\n_x = 2\n",
        "engines/_private_mod.py": "from .e import _x\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert command_modules(tmp_path) == {"aios_cli.a", "aios_cli.d", "aios_cli.grp.b", "aios_cli.grp.c"}
    assert private_imports(tmp_path) == [
        "aios_cli/a.py:5 imports aios_cli.shared._SECRET",
        "engines/_private_mod.py:1 imports engines.e._x",
        "profilers/p.py:1 imports aios_cli.grp._impl",
        "profilers/p.py:2 imports aios_cli.grp._impl",
        "profilers/p.py:3 imports engines.e._x",
    ]
    assert command_to_command_imports(tmp_path) == [
        "aios_cli/a.py:2 imports the command module aios_cli.grp.b",
        "aios_cli/grp/c.py:2 imports the command module aios_cli.a",
    ]
