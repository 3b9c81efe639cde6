"""The package's import structure (STYLE habits 8 and 12): every module imports cleanly and does
nothing on import; the module graph built from the source (late imports inside functions
included) has no cycle; no module imports another's `_private` name."""

import ast
import importlib
import pkgutil
from pathlib import Path

import hybridpo

PACKAGE = Path(hybridpo.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import statement in the file, wherever it is (late imports too);
    relative imports resolved against the file's package."""
    out = []
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            out.append((module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def graph() -> dict[str, set[str]]:
    """module -> the hybridpo modules it imports (a name that is itself a module counts as that module)."""
    edges = {}
    for name, path in MODULES.items():
        deps = set()
        for module, names in imports(path):
            if not module.startswith("hybridpo"):
                continue
            subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            deps |= set(subs) if subs and len(subs) == len(names) else {module} | set(subs)
        edges[name] = {d for d in deps if d in MODULES and d != name}
    return edges


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(hybridpo.__path__, prefix="hybridpo.")]
    assert "hybridpo.losses" in names and set(names) >= set(MODULES) - {"hybridpo"}
    for name in names:
        importlib.import_module(name)


def test_no_import_cycle_in_the_package():
    edges = graph()
    assert "hybridpo.forward.hf" in edges["hybridpo.forward.logprobs"]  # the graph is read
    assert "hybridpo.evaluate" in edges["hybridpo.loop"]  # late imports count
    state: dict[str, str] = {}

    def visit(name, stack):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"import cycle: {' -> '.join(stack[stack.index(name):] + [name])}"
        state[name] = "open"
        for dep in sorted(edges[name]):
            visit(dep, stack + [name])
        state[name] = "done"

    for name in sorted(edges):
        visit(name, [])


def test_no_private_names_imported_from_another_module():
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = set()
        for module, names in imports(path):
            if module.startswith("hybridpo"):
                found += [f"{name}: from {module} import {n}" for n in names if n.startswith("_") and n != "__version__"]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hybridpo"):
                aliases |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname or a.name for a in node.names if a.name.startswith("hybridpo")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{name}: {node.value.id}.{node.attr}")
    assert not found, found
