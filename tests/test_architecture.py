"""The layer rules, checked on the source: scoring (evals/) never reaches into loop's stages or
the store, the low layers stay low, the stage packages import only earlier stages, no module
imports another module's `_private` names, SQL lives only in loop/store/, no import cycles, and
no module in loop/ over 400 lines.

A small AST pass (no import-linter dependency): every `import` counts, also the lazy ones inside
functions, and importing `a.b.c` also runs the package `__init__` files `a` and `a.b`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("loop", "evals")
TOP_MODULES = ("app.py",)

# importer prefix -> the only `loop` modules it may import (by prefix)
LOOP_ALLOWED = {
    "evals": ("loop.core", "loop.models"),
    "loop.core": ("loop.core",),
    "loop.models": ("loop.core", "loop.models"),
    "loop.store": ("loop.core", "loop.store"),
}
BELOW_SCORING = ("loop.core", "loop.models", "loop.store")  # never import evals
# The stage packages, earliest first: a module may import a stage of its own tier or an earlier
# one, never a later one. failures comes before evaluation because every evaluation computes
# and stores its failures (evaluation/evaluate.py calls failures/stage.record_failures); the
# entry points (the app and its shim app.py, the CLI and its commands) come last; modules
# outside the stages (loop.core, loop.models, loop.store, evals, loop.tracking, loop.exports,
# loop.adapter_export) import none of them.
STAGES = (("loop.data",), ("loop.failures",), ("loop.evaluation",), ("loop.targeted",),
          ("loop.train",), ("loop.cycle",), ("loop.app", "app", "loop.commands", "loop.cli"))
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|"
                 r"DELETE\s+FROM|CREATE\s+(OR\s+REPLACE\s+)?(TABLE|INDEX|VIEW)|ALTER\s+TABLE)\b",
                 re.DOTALL)
SQL_HOME = "loop.store"
MAX_LINES = 400  # a module in loop/ longer than this is split by responsibility


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    implicit: bool = False  # a package __init__ that importing `imported`'s submodule runs


@dataclass(frozen=True)
class Source:
    module: str
    path: Path
    tree: ast.Module


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(root: Path) -> list[Source]:
    paths = [p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))]
    paths += [root / m for m in TOP_MODULES if (root / m).is_file()]
    return [Source(module_name(p, root), p, ast.parse(p.read_text(encoding="utf-8"), str(p)))
            for p in paths]


def _absolute(source: Source, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = source.module.split(".")
    if source.path.name != "__init__.py":
        package = package[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, modules: set[str]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in modules:
            return ".".join(parts[:k])
    return None


def _with_parents(module: str, modules: set[str]) -> Iterator[str]:
    """Importing `a.b.c` runs `a/__init__`, `a/b/__init__`, then `a/b/c`."""
    parts = module.split(".")
    for k in range(1, len(parts) + 1):
        name = ".".join(parts[:k])
        if name in modules:
            yield name


def import_edges(all_sources: list[Source]) -> list[Edge]:
    modules = {s.module for s in all_sources}
    edges: dict[Edge, None] = {}
    for source in all_sources:
        for node in ast.walk(source.tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(source, node)
                # `from pkg import mod` imports the module pkg.mod when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                         for a in node.names]
            for name in names:
                target = _known(name, modules)
                if target is None:
                    continue
                edges.update((Edge(source.module, m, node.lineno, m != target), None)
                             for m in _with_parents(target, modules) if m != source.module)
    return list(edges)


def _inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(edges: list[Edge]) -> list[str]:
    out = []
    for e in (e for e in edges if not e.implicit):
        for importer, allowed in LOOP_ALLOWED.items():
            if (_inside(e.importer, importer) and _inside(e.imported, "loop")
                    and e.imported != "loop"  # the package itself: its version string
                    and not any(_inside(e.imported, a) for a in allowed)):
                out.append(f"{e.importer}:{e.line} imports {e.imported} (a {importer} module may "
                           f"import from loop only {', '.join(allowed)})")
        below = next((b for b in BELOW_SCORING if _inside(e.importer, b)), None)
        if below and _inside(e.imported, "evals"):
            out.append(f"{e.importer}:{e.line} imports {e.imported} ({below} is below the "
                       "scoring layer)")
    return out


def _tier(module: str) -> int | None:
    return next((k for k, tier in enumerate(STAGES) if any(_inside(module, p) for p in tier)),
                None)


def stage_order_violations(edges: list[Edge]) -> list[str]:
    out = []
    for e in (e for e in edges if not e.implicit):
        mine, theirs = _tier(e.importer), _tier(e.imported)
        if theirs is not None and (mine is None or theirs > mine):
            where = (f"the stage {', '.join(STAGES[mine])}" if mine is not None
                     else "a module outside the stages")
            out.append(f"{e.importer}:{e.line} imports {e.imported}, a later stage than "
                       f"{where} (stages, earliest first: "
                       f"{' < '.join('/'.join(t) for t in STAGES)})")
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_import_violations(all_sources: list[Source]) -> list[str]:
    """`from mod import _name`, `import mod._name` and `mod._name` on an imported module of
    ours, in any module but `mod` itself: a helper two modules share is public."""
    modules = {s.module for s in all_sources}
    out = []
    for source in all_sources:
        imported: dict[str, str] = {}  # local name -> our module it is bound to
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if any(_private(part) for part in a.name.split(".")[1:]):
                        out.append(f"{source.module}:{node.lineno} imports {a.name}, a private "
                                   "module")
                    if a.asname and a.name in modules:
                        imported[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(source, node)
                if _known(base, modules) is None or base == source.module:
                    continue
                for a in node.names:
                    if _private(a.name):
                        out.append(f"{source.module}:{node.lineno} imports {a.name} from "
                                   f"{base}: a private name of another module")
                    elif f"{base}.{a.name}" in modules:
                        imported[a.asname or a.name] = f"{base}.{a.name}"
        for node in ast.walk(source.tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported and _private(node.attr)
                    and imported[node.value.id] != source.module):
                out.append(f"{source.module}:{node.lineno} uses {imported[node.value.id]}."
                           f"{node.attr}: a private name of another module")
    return out


def sql_violations(all_sources: list[Source], root: Path) -> list[str]:
    out = []
    for source in all_sources:
        if _inside(source.module, SQL_HOME):
            continue
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and SQL.search(node.value):
                out.append(f"{source.path.relative_to(root)}:{node.lineno}: SQL outside "
                           f"loop/store/: {node.value.strip()[:60]!r}")
    return out


def raw_insert_violations(all_sources: list[Source], root: Path) -> list[str]:
    """`store.insert("table", dicts)` outside loop/store/: stages write typed rows
    (loop/store/rows.py) through store functions."""
    out = []
    for source in all_sources:
        if _inside(source.module, SQL_HOME):
            continue
        for node in ast.walk(source.tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "insert" and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                out.append(f"{source.path.relative_to(root)}:{node.lineno}: insert into "
                           f"'{node.args[0].value}' outside loop/store/ (write typed rows)")
    return out


def import_cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def check(root: Path) -> list[str]:
    all_sources = sources(root)
    edges = import_edges(all_sources)
    return (layer_violations(edges) + stage_order_violations(edges)
            + private_import_violations(all_sources) + sql_violations(all_sources, root)
            + raw_insert_violations(all_sources, root)
            + [f"import cycle: {' <-> '.join(c)}" for c in import_cycles(edges)])


# ---------------------------------------------------------------------------- the real tree

def test_the_source_tree_keeps_its_layers():
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def long_modules(root: Path, limit: int = MAX_LINES) -> list[str]:
    """The modules under loop/ longer than `limit` lines, longest first."""
    sizes = [(len(p.read_text(encoding="utf-8").splitlines()), p.relative_to(root))
             for p in (root / "loop").rglob("*.py")]
    return [f"{path}: {n} lines" for n, path in sorted(sizes, reverse=True) if n > limit]


def test_no_module_in_loop_is_over_400_lines():
    """docs/architecture.md: split a module when it passes ~400 lines, by responsibility."""
    long = long_modules(ROOT)
    assert not long, (f"over {MAX_LINES} lines (split it by job, docs/architecture.md): "
                      + "; ".join(long))


# ---------------------------------------------------------------------------- the checker

def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in {"loop/__init__.py": "", "loop/core/__init__.py": "",
                       "loop/store/__init__.py": "", "evals/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


CLEAN = {
    "loop/core/records.py": "import json\n",
    "loop/store/db.py": "from loop.core import records\nQ = 'SELECT * FROM runs WHERE x = ?'\n"
                        "def _connect():\n    return _connect\n",
    "loop/stage.py": "from loop.store.db import Q\nfrom evals import score\n",
    "evals/score.py": "from loop.core.records import json\n",
    "loop/data/__init__.py": "", "loop/train/__init__.py": "",
    "loop/data/tasks.py": "from loop.core import records\n",
    "loop/train/sft.py": "from loop.data.tasks import records\nfrom loop.store import db\n"
                         "from ..data import tasks\n",
}


def test_a_clean_synthetic_tree_passes(tmp_path):
    assert check(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize("planted, expected", [
    ({"evals/score.py": "def f():\n    from loop.store.db import Q\n"},
     "evals.score:2 imports loop.store.db"),
    ({"evals/score.py": "from loop import stage\n"}, "evals.score:1 imports loop.stage"),
    ({"loop/core/records.py": "from ..store import db\n"}, "loop.core.records:1 imports "
                                                           "loop.store.db"),
    ({"loop/core/records.py": "import evals.score\n"}, "loop.core is below the scoring layer"),
    ({"loop/store/db.py": "from evals.score import x\n"}, "loop.store is below the scoring"),
    ({"loop/store/db.py": "import loop.stage\n"}, "loop.store.db:1 imports loop.stage"),
    ({"loop/stage.py": "SQL = ('UPDATE runs '\n       'SET status = ?')\n"},
     "loop/stage.py:1: SQL outside loop/store/"),
    ({"evals/score.py": "x = f'DELETE FROM {name} WHERE 1'\n"}, "evals/score.py:1: SQL outside"),
    ({"loop/stage.py": "def f(store):\n    store.insert('runs', [{}])\n"},
     "loop/stage.py:2: insert into 'runs' outside loop/store/"),
    ({"loop/store/a.py": "from loop.store import b\n", "loop/store/b.py": "def f():\n"
      "    from loop.store.a import x\n"}, "import cycle: loop.store.a <-> loop.store.b"),
    ({"loop/store/__init__.py": "from loop.stage import x\n"},
     "import cycle: loop.stage <-> loop.store"),
    # the stages in order: a later one may import an earlier one, not the reverse
    ({"loop/data/tasks.py": "from loop.train.sft import train\n"},
     "loop.data.tasks:1 imports loop.train.sft, a later stage than the stage loop.data"),
    ({"loop/data/tasks.py": "def f():\n    from ..train import sft\n"},
     "loop.data.tasks:2 imports loop.train.sft, a later stage"),
    ({"loop/store/db.py": "import loop.data.tasks\n"},
     "loop.store.db:1 imports loop.data.tasks, a later stage than a module outside the stages"),
    # no module takes another's private names
    ({"loop/train/sft.py": "from loop.store.db import _connect\n"},
     "loop.train.sft:1 imports _connect from loop.store.db: a private name"),
    ({"loop/store/q.py": "def f():\n    from .db import Q, _connect\n"},
     "loop.store.q:2 imports _connect from loop.store.db"),
    ({"loop/train/sft.py": "from loop.store import db\nx = db._connect()\n"},
     "loop.train.sft:2 uses loop.store.db._connect"),
    ({"loop/train/sft.py": "import loop.store.db as d\nx = d._connect\n"},
     "loop.train.sft:2 uses loop.store.db._connect"),
])
def test_the_checker_finds_a_planted_violation(tmp_path, planted, expected):
    problems = check(_tree(tmp_path, {**CLEAN, **planted}))
    assert any(expected in p for p in problems), problems


def test_the_length_check_finds_a_planted_long_module(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "loop/train/long.py": "x = 1\n" * (MAX_LINES + 1),
                            "loop/train/fits.py": "x = 1\n" * MAX_LINES})
    assert long_modules(root) == [f"{Path('loop/train/long.py')}: {MAX_LINES + 1} lines"]


def test_own_private_names_and_dunders_are_not_private_imports(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "loop/store/q.py": "from loop.store import __doc__\n"
                                                        "from loop import __version__\n"})
    assert private_import_violations(sources(root)) == []


def test_relative_imports_resolve_to_their_modules(tmp_path):
    root = _tree(tmp_path, {**CLEAN, "loop/store/q.py": "from . import db\nfrom .db import Q\n"})
    edges = {(e.importer, e.imported) for e in import_edges(sources(root))}
    assert ("loop.store.q", "loop.store.db") in edges and ("loop.store.q", "loop.store") in edges
