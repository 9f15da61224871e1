"""The layout holds: packages import only downhill, no private name crosses modules, no command
imports a command, no import circle, and files and functions stay short enough to read whole.

Everything is read from the source with ``ast`` (nothing is imported), so a violation is named by
file and line. The rules are docs/ARCHITECTURE.md's picture.
"""

import ast
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Rank of each part: a module may import only from parts of lower rank and from its own part.
# nn and data share a rank but may not import each other.
LIBRARY_RANKS = {
    "zfkeras.version": 0,
    "zfkeras.io": 0,
    "zfkeras.nn": 1,
    "zfkeras.data": 1,
    "zfkeras.training": 2,
    "zfkeras.export": 3,
    "zfkeras.analysis": 4,
    "zfkeras.experiments": 5,
    "zfkeras": 6,  # the package's __init__: the curated public API, imported by nothing inside
}
PIPELINE_RANKS = {
    "pipelines.registry": 0,
    "pipelines.runtime": 0,
    "pipelines.output": 0,
    "pipelines.options": 1,
    "pipelines.loading": 2,
    "pipelines.figures": 2,
    "pipelines.records": 2,
    "pipelines.commands": 3,
    "pipelines.cli": 4,
    "pipelines": 5,
}
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_name(path, root=ROOT):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def python_files(*tops, root=ROOT):
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            yield path


def imports(path, root=ROOT):
    """``[(line, imported module, imported names or None)]`` of every import statement in ``path``
    (at any depth: an import inside a function counts), with relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base, [alias.name for alias in node.names]))
    return found


def targets(module, names, root=ROOT):
    """The modules an import statement reaches: ``from zfkeras import data`` reaches ``zfkeras.data``."""
    if names is None:
        return [module]
    reached = []
    for name in names:
        candidate = f"{module}.{name}"
        path = root / candidate.replace(".", "/")
        reached.append(candidate if path.with_suffix(".py").exists() or (path / "__init__.py").exists() else module)
    return reached


def part_of(module, ranks):
    """The longest key of ``ranks`` that ``module`` is or lies under (None if none)."""
    best = None
    for part in ranks:
        if (module == part or module.startswith(part + ".")) and (best is None or len(part) > len(best)):
            best = part
    return best


def downhill_violations(tops, ranks, root=ROOT):
    problems = []
    for path in python_files(*tops, root=root):
        here = module_name(path, root)
        mine = part_of(here, ranks)
        for line, module, names in imports(path, root):
            for target in targets(module, names, root):
                theirs = part_of(target, ranks)
                if theirs is None or theirs == mine:
                    continue
                siblings = {mine, theirs} == {"zfkeras.nn", "zfkeras.data"}
                if ranks[theirs] > ranks[mine] or (ranks[theirs] == ranks[mine] and not siblings) or siblings:
                    problems.append(f"{path.relative_to(root)}:{line}: {here} ({mine}) imports {target} ({theirs})")
    return problems


def test_library_packages_import_only_downhill():
    assert not downhill_violations(["zfkeras"], LIBRARY_RANKS)


def test_pipeline_modules_import_only_downhill_and_the_library_never_imports_pipelines():
    assert not downhill_violations(["pipelines"], PIPELINE_RANKS)
    upward = [
        f"{p.relative_to(ROOT)}:{line}" for p in python_files("zfkeras") for line, module, _ in imports(p) if module.split(".")[0] == "pipelines"
    ]
    assert not upward


def command_crossings(root=ROOT):
    problems = []
    for path in python_files("pipelines/commands", root=root):
        here = module_name(path, root)
        own = ".".join(here.split(".")[:3])  # pipelines.commands.NAME (a package's modules share it)
        for line, module, names in imports(path, root):
            for target in targets(module, names, root):
                if target.startswith("pipelines.commands.") and not (target == own or target.startswith(own + ".")):
                    problems.append(f"{path.relative_to(root)}:{line}: {here} imports {target}")
    return problems


def test_no_command_imports_another_command():
    assert (ROOT / "pipelines" / "commands").is_dir()
    assert not command_crossings()


def private_crossings(path, root=ROOT):
    """Imports of, and attribute reads of, an underscore name of another module (dunders aside)."""
    tree = ast.parse(path.read_text(), str(path))
    modules = {}  # local name -> imported first-party module
    problems = []
    first_party = ("zfkeras", "pipelines", "benchmarks", "tests")
    for node in ast.walk(tree):
        local = isinstance(node, ast.ImportFrom) and (path.parent / f"{(node.module or '').split('.')[0]}.py").exists()
        if local and node.module.startswith("_"):  # a helper module beside this one (tests/, benchmarks/)
            problems.append(f"{path.relative_to(root)}:{node.lineno}: imports from private module {node.module}")
        if isinstance(node, ast.ImportFrom) and ((node.module or "").split(".")[0] in first_party or local):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    problems.append(f"{path.relative_to(root)}:{node.lineno}: imports {node.module}.{alias.name}")
                modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if any(part.startswith("_") and not part.startswith("__") for part in node.module.split(".")):
                problems.append(f"{path.relative_to(root)}:{node.lineno}: imports from private module {node.module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in first_party:
                    if any(part.startswith("_") and not part.startswith("__") for part in alias.name.split(".")):
                        problems.append(f"{path.relative_to(root)}:{node.lineno}: imports private module {alias.name}")
                    if alias.asname:
                        modules[alias.asname] = alias.name
                    else:  # import a.b.c binds a
                        modules.setdefault(alias.name.split(".")[0], alias.name.split(".")[0])

    def module_of(node):
        """The first-party module an expression names (``data``, ``zfkeras.io.atomic``), or None."""
        if isinstance(node, ast.Name):
            return modules.get(node.id)
        if isinstance(node, ast.Attribute):
            base = module_of(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def private(name):
        return isinstance(name, str) and name.startswith("_") and not name.startswith("__")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr) and module_of(node.value):
            problems.append(f"{path.relative_to(root)}:{node.lineno}: reads {module_of(node.value)}.{node.attr}")
        # setattr(module, "_name", ...), monkeypatch.setattr(module, "_name", ...) and getattr alike
        if isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and private(node.args[1].value):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("setattr", "getattr", "delattr") and module_of(node.args[0]):
                problems.append(f"{path.relative_to(root)}:{node.lineno}: {called} of {module_of(node.args[0])}.{node.args[1].value}")
    return problems


def test_no_private_name_crosses_modules_tests_and_benchmarks_included():
    problems = [problem for path in python_files("zfkeras", "pipelines", "tests", "benchmarks") for problem in private_crossings(path)]
    assert not problems


def test_no_import_circle_in_the_library():
    graph = {}
    for path in python_files("zfkeras"):
        here = module_name(path)
        graph[here] = {t for _, module, names in imports(path) for t in targets(module, names) if t.startswith("zfkeras") and t != here}
    # A package's __init__ re-exporting its own modules is not a circle through them.
    for node in graph:
        graph[node] = {t for t in graph[node] if not (t == node.rpartition(".")[0] or node.startswith(t + "."))}
    state, circle = {}, []

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                circle.append(trail + [node, target])
            elif target in graph and target not in state:
                visit(target, trail + [node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not circle


def long_functions(path):
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} is {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_files_and_functions_are_short_enough_to_read_whole():
    files = [
        f"{p.relative_to(ROOT)}: {n} lines" for p in python_files("zfkeras", "pipelines") if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    ]
    functions = [problem for path in python_files("zfkeras", "pipelines") for problem in long_functions(path)]
    assert not files and not functions


def test_the_library_has_packages_by_concern():
    packages = [name for name in os.listdir(ROOT / "zfkeras") if (ROOT / "zfkeras" / name / "__init__.py").exists()]
    assert {"io", "nn", "data", "training", "export", "analysis", "experiments"} <= set(packages)


@pytest.mark.parametrize(
    "planted, source",
    [
        ("zfkeras/nn/planted.py", "from zfkeras.analysis.occlusion import occlusion_map\n"),  # nn -> analysis: uphill
        ("zfkeras/nn/planted.py", "from zfkeras.data import load_source\n"),  # nn -> data: siblings
        ("zfkeras/nn/planted.py", "from zfkeras.nn.adjoint import _inside\n"),
        ("zfkeras/analysis/planted.py", "import zfkeras.data.sources\nzfkeras.data.sources._online()\n"),
        ("zfkeras/nn/planted.py", "from zfkeras.nn import adjoint\nsetattr(adjoint, '_inside', None)\n"),
        ("pipelines/commands/planted.py", "from pipelines.commands import visualize\n"),
    ],
)
def test_the_checks_catch_a_planted_violation(tmp_path, planted, source):
    """Each rule fails on a module that breaks it, in a small tree laid out like this one."""
    for module in ("zfkeras/nn/adjoint.py", "zfkeras/analysis/occlusion.py", "zfkeras/data/sources/__init__.py", "pipelines/commands/visualize.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text("")
    path = tmp_path / planted
    path.write_text(source)
    found = downhill_violations(["zfkeras"], LIBRARY_RANKS, tmp_path) + private_crossings(path, tmp_path) + command_crossings(tmp_path)
    assert len(found) == 1, found
