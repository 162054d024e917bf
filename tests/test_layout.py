"""The package layout's boundaries, read off the import graph: data flows one way through the stages, the library
imports neither the jobs nor Lightning, and the serving side imports the library only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["data", "graph", "embed", "store", "rank"]  # in the order data flows
SHARED = {"graphrec", "graphrec.errors", "graphrec.artifacts", "graphrec.metrics", "graphrec.exports", "graphrec.logs"}
HEAVY_TRAINING = ("lightning", "pytorch_lightning")


def imports_of(path: Path, package: str | None = None) -> set[str]:
    """Every module a file imports, at module level or inside functions (relative imports resolved against
    `package`, by default the file's own package in this repository)."""
    tree = ast.parse(path.read_text())
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def stage_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] == "graphrec" and len(parts) > 1 and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return None


def test_every_library_module_belongs_to_a_stage_or_is_shared():
    for path in modules("graphrec"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        assert stage_of(module) is not None or module in SHARED, f"{module}: not in a stage package nor shared"


@pytest.mark.parametrize("path", modules("graphrec"), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_imports_no_job_no_lightning_and_no_later_stage(path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own = stage_of(module)
    for imported in imports_of(path):
        top = imported.split(".")[0]
        assert top not in ("training", "serving"), f"{module} imports {imported}"
        assert top not in HEAVY_TRAINING, f"{module} imports {imported}"
        stage = stage_of(imported)
        if stage is None:
            continue
        if own is None:  # shared modules sit below every stage
            raise AssertionError(f"shared module {module} imports the stage module {imported}")
        assert stage <= own, f"{module} (stage {STAGES[own]}) imports the later stage {imported}"


@pytest.mark.parametrize("path", modules("serving"), ids=lambda p: str(p.relative_to(ROOT)))
def test_serving_imports_the_library_only(path):
    for imported in imports_of(path):
        assert imported.split(".")[0] not in ("training", *HEAVY_TRAINING), f"{path} imports {imported}"


def test_import_scan_sees_function_level_and_relative_imports(tmp_path):
    # The rules above would be hollow if the scan missed an import hidden in a function body.
    (tmp_path / "x.py").write_text(
        "def f():\n    from training.trainer import build_model\n    from ..embed import model\n"
    )
    found = imports_of(tmp_path / "x.py", package="graphrec.store")
    assert "training.trainer" in found and "graphrec.embed" in found


@pytest.mark.parametrize("stage", ["data", "graph", "embed", "store"])
def test_every_public_name_of_a_stage_resolves(stage):
    import importlib

    package = importlib.import_module(f"graphrec.{stage}")
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError):
        package.no_such_name  # noqa: B018
