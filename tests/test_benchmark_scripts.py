"""The benchmark scripts import names from each other (bench_training's memory sampler,
synthetic_metrics' table specs): a name renamed in one must not leave another broken until
someone runs `make bench`. Read from the source, so the bench extras need not be installed."""

import ast
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def top_level_names(module: ast.Module) -> set[str]:
    names = set()
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_names_imported_from_another_benchmark_script_exist_there():
    scripts = {p.stem: ast.parse(p.read_text()) for p in BENCHMARKS.glob("*.py")}
    checked = 0
    for name, module in scripts.items():
        for node in ast.walk(module):
            if isinstance(node, ast.ImportFrom) and node.module in scripts:
                defined = top_level_names(scripts[node.module])
                for alias in node.names:
                    assert alias.name in defined, \
                        f"benchmarks/{name}.py imports {alias.name} from {node.module}.py, " \
                        "which has no such name"
                    checked += 1
    assert checked >= 10  # the scripts do import from each other
