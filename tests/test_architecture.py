"""The shape of the code: a thin CLI over the public API, and a package without import cycles."""

import ast
import re

import embstore

from .conftest import ROOT

SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP)\b[\s\S]*\b(FROM|INTO|SET|TABLE|VIEW)\b")


def _python_files(folder):
    return sorted((ROOT / folder).rglob("*.py"))


def _docstrings(tree):
    """id() of every docstring node: help text may show SQL examples."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_the_cli_holds_no_sql_and_uses_only_the_public_api():
    problems = []
    for path in _python_files("cli"):
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if SQL.search(node.value):
                    problems.append(f"{where}: SQL text {node.value[:60]!r}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("embstore") and node.level == 0:
                if node.module.startswith("embstore_cli"):
                    continue
                if node.module != "embstore":
                    problems.append(f"{where}: imports from {node.module} (use the public `embstore` API)")
                for alias in node.names:
                    if alias.name.startswith("_") or alias.name not in embstore.__all__:
                        problems.append(f"{where}: imports {alias.name}, which `embstore.__all__` does not export")
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("embstore.") and not alias.name.startswith("embstore_cli"):
                        problems.append(f"{where}: imports {alias.name} (use the public `embstore` API)")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "embstore"
                and (node.attr.startswith("_") and node.attr != "__version__")
            ):
                problems.append(f"{where}: uses embstore.{node.attr}")
    assert problems == []


def test_the_checks_above_catch_what_they_look_for(tmp_path):
    """The SQL pattern and the docstring exemption, on known text (so the CLI test cannot pass vacuously)."""
    assert SQL.search("SELECT count(*) FROM images")
    assert SQL.search("DELETE FROM runs WHERE x = 1")
    assert not SQL.search("Select the layers to store from the model")
    tree = ast.parse('def f():\n    """Example: embstore sql "SELECT 1 FROM t"."""\n    return "SELECT a FROM b"\n')
    docs = _docstrings(tree)
    flagged = [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docs and SQL.search(n.value)
    ]
    assert flagged == ["SELECT a FROM b"]


def _module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path, modules):
    """Modules of the package that `path` imports anywhere (also inside functions), except for type checking."""
    tree = ast.parse(path.read_text())
    type_only = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports the submodule; `from mod import name` imports mod
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def test_no_import_cycles_in_the_package():
    files = {_module_name(p): p for p in _python_files("embstore")}
    graph = {name: _imports(path, files) - {name} for name, path in files.items()}
    cycles = []

    def visit(node, stack):
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in done:
                visit(nxt, stack + [nxt])
        done.add(node)

    done = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert cycles == []
    assert "embstore.report.strips" in graph["embstore.report.figures"]  # the walk sees function-level imports
