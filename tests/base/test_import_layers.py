"""The packages of src/ form layers: no import cycles, nothing imports upwards, no import of the project's own
modules inside a function (the way a cycle is usually hidden). Read from the source with ast, not by importing."""
import ast
from collections import defaultdict

from tests.conftest import REPO

SRC = REPO / "src"
# Bottom to top; a module may import only from its own layer's package or from layers below it. The base layer
# holds the single modules every package may use.
LAYERS = [
    {"errors", "config", "seeding", "safe_pickle", "results_io", "provenance", "validation", "distributed",
     "allocator", "cli"},
    {"data"},
    {"features"},
    {"models"},
    {"similarity"},
    {"training"},
    {"compare"},
    {"stitching"},
    {"matrix"},
    {"api", "demo", "__init__"},
]


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _imports(name, path):
    """(imported src module, line, inside a function?) for every import of a project module in ``path``."""
    tree = ast.parse(path.read_text())
    in_function = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(fn))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # ``from package import module`` imports that module (and the package's __init__ first)
            targets = [f"{base}.{a.name}" if (SRC.parent / f"{base}.{a.name}".replace(".", "/")).with_suffix(".py").is_file()
                       else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            if target == "src" or target.startswith("src."):
                yield target, node.lineno, id(node) in in_function


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_every_module_belongs_to_a_layer():
    for name, _ in _modules():
        _layer(name)


def test_nothing_imports_upwards_or_inside_a_function():
    problems = []
    for name, path in _modules():
        for target, line, inner in _imports(name, path):
            if inner:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {target} inside a function")
            if target != "src" and _layer(target) > _layer(name):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {target} from a higher layer")
    assert not problems, "\n".join(problems)


def test_the_module_import_graph_has_no_cycle():
    known = {name for name, _ in _modules()}
    graph = defaultdict(set)
    for name, path in _modules():
        for target, _, _ in _imports(name, path):
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name and target != "src":
                graph[name].add(target)
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(known):
        if node not in state:
            visit(node)


def test_the_largest_package_holds_at_most_22_percent_of_the_code():
    lines = defaultdict(int)
    for name, path in _modules():
        lines[name.split(".")[1] if name.count(".") else "__init__"] += len(path.read_text().splitlines())
    total = sum(lines.values())
    largest = max(lines, key=lines.get)
    assert lines[largest] <= 0.22 * total, (largest, lines[largest], total)
