"""The shape of the house (docs/architecture.md): imports go one way through the layers, no cycles,
and one implementation of each step (one runner, one collector, one figure module, one copy of the
paper numbers)."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hashlib_vit"

# docs/architecture.md "The import order": a module imports only from its own layer or an earlier one
LAYERS = [
    # reference: the data files (paper numbers, throughput); typecheck: the one type check and text parser
    {"errors", "registry", "utils", "__version__", "reference", "typecheck"},
    {"models"},
    {"data"},
    {"losses"},
    {"config"},
    {"train"},  # train/ holds the loop, optimiser, checkpoints, step log and distributed
    {"retrieval"},
    {"results"},
    {"baselines"},
    {"experiment"},
    {"runner"},
    {"reproduce"},
    # notebook: the check a notebook's first code cell runs; course: exercises, student edition, site
    {"cli", "__main__", "__init__", "notebook", "course"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every hashlib_vit module ``path`` imports, at the top or inside a function."""
    mod = _module(path)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = (".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1]) if node.level else "")
            target = ".".join(p for p in (base, node.module or "") if p)
            if target.startswith("hashlib_vit"):
                out |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("hashlib_vit")}
    return out


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


FILES = sorted(PKG.rglob("*.py"))
GRAPH = {_module(p): {t for t in _imports(p)} for p in FILES}


def test_every_top_level_module_has_a_layer():
    assert {_top(m) for m in GRAPH} <= set(LAYER), sorted({_top(m) for m in GRAPH} - set(LAYER))


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_imports(module):
    here = LAYER[_top(module)]
    upward = sorted(t for t in GRAPH[module] if LAYER[_top(t)] > here)
    assert not upward, f"{module} (layer {here}) imports from later layers: {upward}"


def test_no_import_cycles_between_top_level_modules():
    edges = {}
    for m, targets in GRAPH.items():
        edges.setdefault(_top(m), set()).update(_top(t) for t in targets if _top(t) != _top(m))
    seen, stack, cycles = {}, [], []

    def visit(n):
        seen[n] = "open"
        stack.append(n)
        for t in edges.get(n, ()):
            if seen.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in seen:
                visit(t)
        stack.pop()
        seen[n] = "done"

    for n in list(edges):
        if n not in seen:
            visit(n)
    assert not cycles, cycles


def test_one_implementation_of_each_step():
    names = {p.relative_to(PKG).as_posix() for p in FILES}
    for gone in ("compare.py", "aevit.py", "tables.py", "plots.py", "diagrams.py", "reported_transhash.py",
                 "results.py"):
        assert gone not in names, f"{gone} is a second implementation of a step (see docs/architecture.md)"
    defs: dict[str, list[str]] = {}
    for p in FILES:
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                defs.setdefault(node.name, []).append(p.relative_to(PKG).as_posix())
    for name in ("collect", "run_grid", "comparison_table", "training_curve", "map_vs_bits", "RunConfig",
                 "TrainConfig", "load_yaml", "evaluate"):
        assert len(defs.get(name, [])) <= 1, f"{name} is defined in {defs[name]}"
