"""The shape of the code: a thin CLI over the public API, a package without import cycles, and its layering.

The package's layering, read from its source: each layer imports only the layers below it.

    base:      errors, resources, results, labels, spec   (no embstore layer above them)
    store      + base                                     (the catalog, the table, StoreCore)
    ingest     + store
    search     + ingest
    analysis   + search
    report     + analysis
    api, the package itself, testing, __main__, serve: anything (api is the one module that joins them;
    serve, a client of the public Store like the CLI, imports api for types only)

Every import counts, the lazy ones inside functions too: a lazy upward import is still a cycle in
the design. The public façade's verbs agree with the functions they call (names and defaults).
"""

import ast
import inspect
import re
from pathlib import Path

import pytest

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
                    if not _exported(alias.name):
                        problems.append(f"{where}: imports {alias.name}, which the `embstore` package does not export")
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


def _exported(name: str) -> bool:
    """What `embstore` exports: its `__all__` (what `help(embstore)` documents) and the types its verbs
    return and it raises (`embstore.IngestResult`, `embstore.EmbstoreError`, …); never a submodule."""

    if name.startswith("_"):
        return False
    return name in embstore.__all__ or inspect.isclass(getattr(embstore, name, None))


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
    assert _exported("Store") and _exported("EmbstoreError") and _exported("IngestResult")
    assert not _exported("store") and not _exported("api") and not _exported("_RESULTS")


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


# -- the layering -------------------------------------------------------------------------
PACKAGE = Path(embstore.__file__).parent
BASE = {"errors", "resources", "results", "labels", "spec"}
STACK = ["store", "ingest", "search", "analysis", "report"]
TOP = {"api", "__init__", "testing", "__main__", "_cli", "serve"}


def allowed(layer: str) -> set[str]:
    """The embstore layers `layer` may import (itself included)."""
    if layer in BASE:
        return BASE  # the base modules may use one another (labels reads resources, all raise errors)
    return BASE | set(STACK[: STACK.index(layer) + 1])


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def embstore_imports(source: str) -> list[tuple[int, str]]:
    """(line, the embstore layer imported) of every import statement in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "embstore":
                names = [f"embstore.{a.name}" for a in node.names]
            elif node.module.startswith("embstore."):
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("embstore.")]
        found += [(node.lineno, name.split(".")[1]) for name in names]
    return found


def violations(path: Path, source: str) -> list[str]:
    layer = layer_of(path)
    if layer in TOP:
        return []
    if layer not in BASE and layer not in STACK:
        return [f"{path.relative_to(PACKAGE)}: module {layer!r} has no place in the layering (add it to this test)"]
    ok = allowed(layer)
    return [
        f"{path.relative_to(PACKAGE)}:{line} ({layer}) imports embstore.{target}"
        for line, target in embstore_imports(source)
        if target not in ok
    ]


def test_each_layer_imports_only_the_layers_below_it():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += violations(path, path.read_text(encoding="utf-8"))
    assert found == [], "\n".join(found)


@pytest.mark.parametrize(
    ("module", "planted"),
    [
        ("store/catalog.py", "    from embstore.ingest.models import available_models\n"),
        ("ingest/run.py", "from embstore.analysis import similarity\n"),
        ("analysis/similarity.py", "    import embstore.report.figures\n"),
        ("search.py", "from embstore import api\n"),
        ("labels/imagenet.py", "from embstore.store.catalog import Catalog\n"),
    ],
)
def test_a_planted_upward_import_is_found(module, planted):
    """The check above can fail: one upward import planted in a real module (top level or lazy)."""
    path = PACKAGE / module
    source = path.read_text(encoding="utf-8")
    assert violations(path, source) == []
    tree = ast.parse(source)
    last_def = max((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))), key=lambda n: n.lineno)
    lines = source.splitlines(keepends=True)
    if planted.startswith(" "):  # lazy: first in the body of the module's last function or class
        lines.insert(last_def.body[0].lineno - 1, planted)
    else:
        lines.insert(0, planted)
    found = violations(path, "".join(lines))
    assert len(found) == 1 and "imports embstore." in found[0], found


def _pairs():
    """(façade verb, the function it calls, {façade parameter: that function's name for it})."""
    from embstore.analysis import rsatables, similarity, tasks
    from embstore.ingest import run
    from embstore.report import html
    from embstore.store import sql, tablecheck

    return [
        ("ingest", run.ingest, {}),
        ("similar_classes", similarity.similar_classes, {}),
        ("nearest_images", embstore.search.nearest_images, {}),
        ("run_sql", sql.run_sql, {}),
        ("verify", tablecheck.verify, {}),
        ("match_triplets", tasks.matching, {}),
        ("failures", tasks.failures, {}),
        ("class_pair", tasks.class_pair, {}),
        ("rsa", rsatables.run_rsa, {"permutations": "n_permutations"}),
        ("report", html.build_report, {}),
    ]


def test_the_store_verbs_have_the_defaults_of_the_functions_they_call():
    import embstore.search  # noqa: F401  (named in _pairs)

    drift = []
    for verb, function, renamed in _pairs():
        ours = inspect.signature(getattr(embstore.Store, verb)).parameters
        theirs = inspect.signature(function).parameters
        for name, param in ours.items():
            if name == "self":
                continue
            other = theirs.get(renamed.get(name, name))
            assert other is not None, f"Store.{verb}({name}=…) is no parameter of {function.__qualname__}"
            if param.default is not inspect.Parameter.empty and other.default is not inspect.Parameter.empty:
                if param.default != other.default:
                    drift.append(f"Store.{verb}: {name}={param.default!r}, {function.__qualname__}: {other.default!r}")
    assert drift == []


def test_help_fits_on_a_few_screens_and_the_result_types_are_exported():
    import pydoc

    text = pydoc.render_doc(embstore, renderer=pydoc.plaintext)
    assert len(text.splitlines()) <= 200
    for name in ("IngestResult", "Vectors", "Answer", "VerifyReport", "CompactReport", "MatchingReport",
                 "FailureReport", "RsaReport", "Materialised", "Report", "EmbstoreError"):  # fmt: skip
        assert isinstance(getattr(embstore, name), type), name
        assert name in text  # named in the overview, documented by its own help()
    from embstore.errors import UnknownClassError

    assert embstore.UnknownClassError is UnknownClassError  # the others stay where they were
