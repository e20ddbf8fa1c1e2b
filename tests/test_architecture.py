"""The shape of the package, from its source: the graph of medic's own imports has no cycle
(imports inside functions and under TYPE_CHECKING count), no module outside the torch folders
imports torch at module level, no module is over 400 lines, and each shared rule (liveness,
language, atomic write) is defined once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "medic"
# the folders that may import torch at module level (DESIGN.md's layout)
TORCH_FOLDERS = ("train", "integrations")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, tree: ast.AST) -> set[str]:
    """medic-internal imports of a module. ``from medic.x import y`` counts as an import of
    ``medic.x``, and of ``medic.x.y`` too when that is a module (importing it runs both)."""
    found: set[str] = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "medic")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "medic":
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    found.discard(name)
    return {m for m in found if m in MODULES}


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        edges[name] = imports_of(name, ast.parse(path.read_text(encoding="utf-8")))
    # the lazy re-exports of medic/__init__.py are names, not imports: the root imports nothing
    edges["medic"] = set()
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("from medic.store import paths\nif TYPE_CHECKING:\n    import medic.jobs\n"
                     "def f():\n    from medic.analysis.stats import x\n")
    assert imports_of("medic.cli", tree) == {"medic.store", "medic.store.paths", "medic.jobs",
                                             "medic.analysis.stats"}


def module_level_imports(tree: ast.Module):
    """Import statements that run when the module is imported (not in a function or class, not
    under ``if TYPE_CHECKING``)."""
    def walk(body):
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    yield from walk(node.body)
                yield from walk(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                    yield from walk(part)
            elif isinstance(node, ast.With):
                yield from walk(node.body)
    yield from walk(tree.body)


def test_only_the_torch_folders_import_torch_at_module_level():
    offenders = []
    for name, path in MODULES.items():
        if name.split(".")[1:2] and name.split(".")[1] in TORCH_FOLDERS:
            continue
        for node in module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n.split(".")[0] in ("torch", "monai", "lightning", "ignite") for n in names):
                offenders.append(f"{name} (line {node.lineno})")
    assert not offenders, "torch imported at module level outside train/: " + ", ".join(offenders)


def test_torch_free_folders_reach_torch_only_lazily():
    """No torch-free module imports a torch module at module level (else it imports torch)."""
    torch_modules = {n for n in MODULES if n.split(".")[1:2] and n.split(".")[1] in TORCH_FOLDERS}
    offenders = []
    for name, path in MODULES.items():
        if name in torch_modules:
            continue
        for node in module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            target = node.names[0].name if isinstance(node, ast.Import) else node.module or ""
            if any(target == t or target.startswith(t + ".") for t in torch_modules
                   if t not in ("medic.train", "medic.integrations")):
                offenders.append(f"{name} imports {target}")
    assert not offenders, ", ".join(offenders)


def test_no_module_is_over_400_lines():
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    big = {n: s for n, s in sizes.items() if s > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


@pytest.mark.parametrize("function", ["pid_alive", "default_lang", "pick_lang", "write_atomic", "shown_path"])
def test_shared_rules_are_defined_once(function):
    where = [name for name, path in MODULES.items()
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function]
    assert len(where) == 1, f"{function} is defined in {where}"


def test_os_replace_only_in_the_atomic_write():
    users = [name for name, path in MODULES.items() if "os.replace(" in path.read_text(encoding="utf-8")
             or ".replace(path)" in path.read_text(encoding="utf-8")]
    assert users == ["medic.store.files"], users


# which parts may import which: the layers of DESIGN.md, lowest first. A part imports only
# itself and the parts listed for it; nothing imports upwards.
# the column registry imports nothing and every layer asks it, the trainer's options included
BASE = {"medic", "medic.errors", "medic.lang", "medic.procs", "medic.squeue", "medic.config", "medic.cli", "medic.store.columns"}
ALLOWED = {
    "base": {"base"},
    "store": {"base", "store"},
    "slurm": {"base", "store", "slurm"},
    "train": {"base", "store", "slurm", "train"},
    "analysis": {"base", "store", "analysis"},
    "jobs": {"base", "store", "slurm"},
    "integrations": {"base", "store", "integrations"},
    "export": {"base", "store", "analysis", "export"},
    "live": {"base", "store", "analysis", "jobs", "slurm", "live"},
    "sweeps": {"base", "store", "analysis", "jobs", "slurm", "live", "sweeps"},
    "notebooks": {"base", "store", "analysis", "jobs", "slurm", "live", "sweeps", "notebooks"},
    "commands": {"base", "store", "train", "slurm", "analysis", "jobs", "live", "sweeps", "integrations", "export", "commands"},
}


def part_of(module: str) -> str:
    if module in BASE:
        return "base"
    part = module.split(".")[1]
    if part in ("analyze",):  # ``python -m medic.analyze``: a command, kept at the path users type
        return "commands"
    return part


def test_imports_run_only_downwards():
    wrong = [f"{m} -> {t}" for m, targets in graph().items() for t in targets
             if part_of(t) not in ALLOWED[part_of(m)]]
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


def test_the_launch_side_of_training_imports_no_torch():
    """``medic.train.launch`` (the roles, the checks before start, torchrun) and the data checks
    it runs load no torch: a bad flag or a bad data set is reported before torch's seconds of
    import, and the launcher process stays small. Imported for real, in a fresh interpreter."""
    import subprocess
    import sys
    launch = sorted(n for n in MODULES if n.startswith("medic.train.launch"))
    checks = ["medic.train.data.folders", "medic.train.data.layouts", "medic.train.data.splits"]
    assert "medic.train.launch.roles" in launch and len(launch) >= 4
    code = ("import importlib, sys\n"
            f"for name in {launch + checks!r}:\n"
            "    importlib.import_module(name)\n"
            "    assert 'torch' not in sys.modules, name + ' imports torch'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
