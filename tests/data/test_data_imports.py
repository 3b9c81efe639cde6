"""The data layer's imports point one way: no cycle between its modules (late imports inside
functions included), and no module reaches into another's `_private` names (STYLE habit 12)."""

import ast
from pathlib import Path

import hybridpo

PACKAGE = Path(hybridpo.__file__).parent
DATA = PACKAGE / "data"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import statement in the file, wherever it is (late imports too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_no_import_cycle_inside_the_data_layer():
    modules = {module_name(p): p for p in DATA.glob("*.py") if p.name != "__init__.py"}
    graph = {name: {m for m, _ in imports(path) if m in modules and m != name} for name, path in modules.items()}
    assert graph["hybridpo.data.config"] >= {"hybridpo.data.recipes"}  # the graph is read: config resolves recipes
    order, state = [], {}

    def visit(name, stack):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"import cycle: {' -> '.join(stack + [name])}"
        state[name] = "open"
        for dep in sorted(graph[name]):
            visit(dep, stack + [name])
        state[name] = "done"
        order.append(name)

    for name in sorted(graph):
        visit(name, [])
    assert len(order) == len(graph)


def test_no_private_names_imported_from_another_module():
    found = []
    for path in DATA.glob("*.py"):
        for module, names in imports(path):
            if module.startswith("hybridpo"):
                found += [f"{path.name}: from {module} import {n}" for n in names if n.startswith("_")]
        tree = ast.parse(path.read_text())
        hybridpo_aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                            and (node.module or "").startswith("hybridpo") for a in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in hybridpo_aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert found == []
