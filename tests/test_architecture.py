"""The package's import rules: which room may import which, no lazy project imports
outside the command line, no Amaranth in the runtime, no import cycles.

The rules are data (``LAYERS`` and the sets below) and docs/architecture.md explains
them.  Every import of every module is read with :mod:`ast` -- at module level and
inside functions and classes, absolute and relative, ``from . import submodule`` and
``importlib.import_module("hetaccel...")`` -- so a rule cannot be dodged by moving an
import into a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "hetaccel"
ROOT = Path(__file__).resolve().parents[1]

#: room -> the rooms its modules may import (a room may always import itself).
#: ``""`` is the top-level package (``hetaccel/__init__.py``), ``"__main__"`` is
#: ``python -m hetaccel``.
_EVERY_ROOM = frozenset({"", "spec", "rtl", "sim", "host", "workloads", "verify", "bench",
                         "boards", "cli"})
LAYERS: dict[str, frozenset[str]] = {
    "spec": frozenset(),
    "rtl": frozenset({"spec"}),
    "sim": frozenset({"spec"}),
    "host": frozenset({"spec", "sim"}),
    "workloads": frozenset({"spec", "sim", "host"}),
    "verify": frozenset({"spec", "rtl", "sim", "host"}),
    "bench": frozenset({"spec", "rtl", "sim", "host", "workloads", "verify"}),
    "boards": frozenset({"spec", "rtl", "verify"}),
    "cli": _EVERY_ROOM,
    "": frozenset({"spec"}),
    "__main__": frozenset({"cli"}),
}

#: rooms whose functions may import project modules: the command line loads a
#: command's module only when that command runs, so a missing optional tool only
#: matters to the commands that need it.
LAZY_PROJECT_IMPORTS = frozenset({"cli", "__main__"})

#: rooms that import other rooms only inside functions: ``hetaccel --help`` and a
#: command's argument parsing load no generator, simulator or plotting library.
LAZY_ONLY = frozenset({"cli"})

#: rooms that must work without Amaranth installed (the runtime against a board or
#: the emulator needs only NumPy and pyserial).
NO_AMARANTH = frozenset({"spec", "sim", "host"})


@dataclass(frozen=True)
class Import:
    path: str        # the importing file, relative to the package root
    line: int
    source: str      # the importing module
    target: str      # the imported module (project or third-party)
    lazy: bool       # inside a function body


def _modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package: .py files in directories that are packages."""
    mods: dict[str, Path] = {}
    if not (root / "__init__.py").is_file():
        return mods
    stack = [root]
    while stack:
        d = stack.pop()
        for p in sorted(d.iterdir()):
            if p.is_dir():
                if (p / "__init__.py").is_file():
                    stack.append(p)
            elif p.suffix == ".py":
                parts = list(p.relative_to(root).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                mods[".".join([package, *parts])] = p
    return mods


def _room(module: str, package: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, path: str, package: str,
                 project: set[str]):
        self.module, self.path, self.package, self.project = module, path, package, project
        self.pkg = module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, node, target: str) -> None:
        self.found.append(Import(self.path, node.lineno, self.module, target, self.depth > 0))

    def _is_project(self, name: str) -> bool:
        return name == self.package or name.startswith(self.package + ".")

    def _relative(self, level: int, name: str | None) -> str:
        base = self.pkg.split(".")
        if level > 1:
            base = base[: len(base) - (level - 1)]
        return ".".join(base + ([name] if name else []))

    def _function(self, node) -> None:
        for d in node.decorator_list:
            self.visit(d)
        self.depth += 1
        for stmt in node.body:
            self.visit(stmt)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Lambda(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._relative(node.level, node.module) if node.level else node.module
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            # ``from pkg import name``: the submodule when there is one, else the package
            self._add(node, sub if self._is_project(sub) and sub in self.project else base)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            target = node.args[0].value
            if target.startswith("."):
                level = len(target) - len(target.lstrip("."))
                target = self._relative(level, target.lstrip(".") or None)
            self._add(node, target)
        self.generic_visit(node)


def collect_imports(root: Path, package: str = PACKAGE) -> tuple[dict[str, Path], list[Import]]:
    mods = _modules(root, package)
    project = set(mods)
    found: list[Import] = []
    for module, path in sorted(mods.items()):
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        c = _Collector(module, path.name == "__init__.py", rel, package, project)
        c.visit(tree)
        found.extend(c.found)
    return mods, found


def _cycles(edges: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One shortest cycle per strongly connected component of the import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        # iterative Tarjan: deep import chains must not hit the recursion limit
        work = [(v, iter(sorted(edges.get(v, {}))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, {})))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    sccs.append(comp)

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)

    out = []
    for comp in sccs:
        if len(comp) < 2:
            continue
        members = set(comp)
        start = min(comp)
        # breadth-first from start back to start, inside the component
        prev: dict[str, str] = {}
        frontier = [start]
        seen = {start}
        end = None
        while frontier and end is None:
            nxt = []
            for u in frontier:
                for w in sorted(edges.get(u, {})):
                    if w == start:
                        end = u
                        break
                    if w in members and w not in seen:
                        seen.add(w)
                        prev[w] = u
                        nxt.append(w)
                if end is not None:
                    break
            frontier = nxt
        chain = [start] if end == start else [end]
        while chain[-1] != start:
            chain.append(prev[chain[-1]])
        chain.reverse()          # start ... end
        out.append([edges[a][b] for a, b in zip(chain, chain[1:] + [start])])
    return out


def check_tree(root: Path, package: str = PACKAGE) -> list[str]:
    """Every violation of the import rules under ``root`` (the package directory)."""
    mods, imports = collect_imports(root, package)
    problems: list[str] = []
    edges: dict[str, dict[str, Import]] = {}
    for module, path in mods.items():
        room = _room(module, package)
        if room not in LAYERS:
            problems.append(f"{path.relative_to(root).as_posix()}:1: room '{room}' is not in "
                            f"the layer table of tests/test_architecture.py")
    for imp in imports:
        where = f"{imp.path}:{imp.line}"
        src_room = _room(imp.source, package)
        if imp.target == package or imp.target.startswith(package + "."):
            target = imp.target
            while target not in mods and "." in target:
                target = target.rpartition(".")[0]
            if target != imp.target and target == package:
                problems.append(f"{where}: {imp.target} does not exist")
                continue
            dst_room = _room(target, package)
            allowed = LAYERS.get(src_room, frozenset())
            if dst_room != src_room and dst_room not in allowed:
                problems.append(f"{where}: {src_room or package} may not import "
                                f"{dst_room or package} ({imp.target})")
            if not imp.lazy and src_room in LAZY_ONLY and dst_room != src_room:
                problems.append(f"{where}: {src_room} imports other rooms only inside "
                                f"functions ({imp.target})")
            if imp.lazy and src_room not in LAZY_PROJECT_IMPORTS:
                problems.append(f"{where}: project import inside a function ({imp.target}); "
                                f"only cli/ imports project modules lazily, elsewhere they "
                                f"go at module level")
            if target != imp.source:
                edges.setdefault(imp.source, {}).setdefault(target, imp)
            # Importing a.b.c first runs a/b/__init__.py: an edge to each package on the
            # way that is not already being imported around the importing module itself.
            parent = target.rpartition(".")[0]
            while parent and parent != package:
                if parent in mods and not (imp.source == parent
                                           or imp.source.startswith(parent + ".")):
                    edges.setdefault(imp.source, {}).setdefault(parent, imp)
                parent = parent.rpartition(".")[0]
        else:
            top = imp.target.split(".")[0]
            if top.startswith("amaranth") and src_room in NO_AMARANTH:
                problems.append(f"{where}: {src_room} must work without Amaranth "
                                f"({imp.target})")
    for cycle in _cycles(edges):
        problems.append("import cycle: " + " -> ".join(
            f"{e.path}:{e.line} imports {e.target}" for e in cycle))
    # ``from m import a, b`` is one import statement, one line of the report
    return list(dict.fromkeys(problems))


def test_import_rules():
    problems = check_tree(ROOT)
    assert not problems, "import rule violations:\n" + "\n".join(problems)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))


def test_checker_reports_each_kind_of_violation(tmp_path):
    root = tmp_path / "pkg"
    _write(root, {
        "__init__.py": "from .spec import X\n",
        "spec/__init__.py": "X = 1\n",
        "sim/__init__.py": "",
        "sim/model.py": "import numpy\nimport amaranth\n",
        "rtl/__init__.py": "",
        "rtl/engine.py": "from ..spec import X\nfrom ..sim.model import numpy\n",
        "rtl/a.py": "from . import b\n",
        "rtl/b.py": "import math\n\nfrom .a import thing\n",
        "host/__init__.py": "from .api import A\n",
        "host/api.py": "from ..sim.model2 import B\nA = 1\n",
        "host/plan.py": "P = 1\n",
        "sim/model2.py": "from ..host.plan import P\nB = 1\n",
        "host/run.py": "def go():\n    from amaranth.hdl import Signal\n",
        "workloads/__init__.py": "",
        "workloads/job.py": ("import numpy\n\n\ndef go():\n    import matplotlib\n"
                             "    from ..host import run\n"),
        "workloads/dyn.py": ("import importlib\n\n"
                             "M = importlib.import_module('hetaccel.verify.bench')\n"),
        "verify/__init__.py": "",
        "verify/bench.py": "",
        "cli/__init__.py": ("import importlib\n\n\ndef main():\n"
                            "    from ..workloads import job\n"
                            "    importlib.import_module('hetaccel.bench.x')\n"),
        "cli/build.py": "from . import main\nfrom ..boards import make\n",
        "boards/__init__.py": "",
        "boards/make.py": "",
        "bench/__init__.py": "",
        "bench/x.py": "from hetaccel.cli import main\n",
        "extra/__init__.py": "",
    })
    problems = check_tree(root)
    text = "\n".join(problems)

    def has(line: str) -> bool:
        return any(p.startswith(line) or line in p for p in problems)

    assert has("rtl/engine.py:2: rtl may not import sim (hetaccel.sim.model)"), text
    assert not has("rtl/engine.py:1:"), text                       # rtl -> spec is fine
    assert has("sim/model.py:2: sim must work without Amaranth (amaranth)"), text
    assert has("host/run.py:2: host must work without Amaranth (amaranth.hdl)"), text
    assert has("workloads/job.py:6: project import inside a function (hetaccel.host.run)"), text
    assert not has("workloads/job.py:5"), text                     # lazy third-party is fine
    assert has("workloads/dyn.py:3: workloads may not import verify (hetaccel.verify.bench)"), \
        text
    # cli imports lazily by design, and its own modules at module level
    assert not any(p.startswith(("cli/__init__.py", "cli/build.py:1")) for p in problems), text
    assert has("cli/build.py:2: cli imports other rooms only inside functions "
               "(hetaccel.boards.make)"), text
    assert has("extra/__init__.py:1: room 'extra' is not in the layer table"), text
    cycles = [p for p in problems if p.startswith("import cycle")]
    assert "rtl/a.py:1 imports hetaccel.rtl.b -> rtl/b.py:3 imports hetaccel.rtl.a" in text, text
    # cli -> bench (lazy, by name) -> cli: a cycle even though each edge is allowed
    assert any("cli/__init__.py:6 imports hetaccel.bench.x" in c and
               "bench/x.py:1 imports hetaccel.cli" in c for c in cycles), text
    # importing host.plan runs host/__init__.py, which imports host.api -> sim.model2
    assert any("sim/model2.py:1 imports hetaccel.host.plan" in c and
               "host/__init__.py:1 imports hetaccel.host.api" in c for c in cycles), text
    assert len(cycles) == 3, text


_NO_OPTIONAL = textwrap.dedent("""
    import importlib.abc, sys

    BLOCKED = {"amaranth", "amaranth_boards", "cocotb", "cocotb_tools", "matplotlib",
               "tokenizers", "safetensors"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the runtime must not need it")
            return None

    sys.meta_path.insert(0, Block())

    import numpy as np
    import hetaccel.host
    from hetaccel.host import Accelerator

    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (13, 21), dtype=np.int8)
    b = rng.integers(-128, 128, (21, 11), dtype=np.int8)
    with Accelerator.open("emu") as acc:
        c = acc.matmul(a, b)
    assert np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64)), "matmul differs"
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("ok")
""")


def test_runtime_needs_no_amaranth_or_optional_packages(tmp_path):
    out = subprocess.run([sys.executable, "-c", _NO_OPTIONAL], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
