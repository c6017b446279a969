"""components/ must stay pure: no AWS SDK, web framework, ORM or ML import anywhere."""

import ast
from pathlib import Path

import pytest

COMPONENTS = Path(__file__).resolve().parents[2] / "components"
FORBIDDEN = {
    "boto3",
    "botocore",
    "pynamodb",
    "chalice",
    "chalicelib",
    "pydantic",
    "aws_lambda_powertools",
    "sklearn",
    "numpy",
    "scipy",
    "requests",
}


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in {
            "__import__",
            "import_module",
        }:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                roots.add(node.args[0].value.split(".")[0])
    return roots


MODULES = sorted(COMPONENTS.rglob("*.py"))


def test_components_exist():
    assert len(MODULES) >= 20


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(COMPONENTS)))
def test_module_imports_nothing_forbidden(path):
    bad = imported_roots(path.read_text()) & FORBIDDEN
    assert not bad, f"{path} imports {sorted(bad)}"


def test_detector_catches_every_import_form():
    source = "import boto3.session\nfrom pydantic import BaseModel\nimportlib.import_module('numpy')\n"
    assert imported_roots(source) >= {"boto3", "pydantic", "numpy"}
