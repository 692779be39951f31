"""The dependency arrows of the README's layout, read from every module's imports."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"vae_core", "model_refs", "pipelines", "serving", "vae_cli"}
# What each package may import of the project and of the heavy frameworks.
ALLOWED = {
    "vae_core": {"vae_core"},
    "model_refs": {"vae_core", "model_refs", "mlflow"},
    "pipelines": {"vae_core", "model_refs", "pipelines", "ray", "mlflow"},
    "serving": {"vae_core", "model_refs", "serving", "ray", "mlflow", "fastapi", "starlette"},
    "vae_cli": PROJECT | {"ray", "mlflow"},
}
WATCHED = PROJECT | {"ray", "mlflow", "fastapi", "starlette", "httpx", "requests", "urllib3"}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every import in a file, at any depth (lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_its_arrows_allow(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules in {package}/"
    wrong = {f"{f.relative_to(ROOT)} imports {name}"
             for f in files for name in imported_packages(f) & WATCHED - ALLOWED[package]}
    assert not wrong, sorted(wrong)


def test_the_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    import mlflow.tracking\n    from ray import serve\n")
    assert imported_packages(bad) & WATCHED - ALLOWED["vae_core"] == {"mlflow", "ray"}
