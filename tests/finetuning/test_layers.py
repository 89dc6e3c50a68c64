"""The learning loop's layers, read from its source: tasks call the pipeline, the pipeline calls
services, and no module of finetuning/ reaches back up (a cycle makes every part depend on all)."""

from __future__ import annotations

import ast
from pathlib import Path

import finetuning

PACKAGE = Path(finetuning.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """The finetuning modules ``path`` imports anywhere (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {
                alias.name.removeprefix("finetuning.") for alias in node.names if alias.name.startswith("finetuning.")
            }
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 0 and not (base == "finetuning" or base.startswith("finetuning.")):
                continue
            base = base.removeprefix("finetuning").removeprefix(".") if node.level == 0 else base
            # ``from . import x`` names modules; ``from .x import y`` names the module x.
            found |= {alias.name for alias in node.names} if not base else {base.split(".")[0]}
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    return (found & modules) - {path.stem}


def graph() -> dict[str, set[str]]:
    return {path.stem: imported_modules(path) for path in PACKAGE.glob("*.py")}


def cycle_in(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as the path round it, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for target in sorted(edges.get(node, ())):
            if found := visit(target, path + [node]):
                return found
        done.add(node)
        return None

    return next((found for node in sorted(edges) if (found := visit(node, []))), None)


def test_it_reads_relative_absolute_and_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text(
        "from . import conf, events\nfrom .models import TrainingRun\nimport finetuning.selectors\n"
        "def f():\n    from finetuning import tasks\n    from finetuning.training import train\n"
        "from django.db import transaction\n"
    )
    assert imported_modules(source) == {"conf", "events", "models", "selectors", "tasks", "training"}


def test_it_finds_a_cycle() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"tasks": {"pipeline"}, "pipeline": {"services"}, "services": set()}) is None


def test_the_learning_loop_has_no_import_cycle() -> None:
    assert cycle_in(graph()) is None


def test_services_only_write_they_never_run_or_queue_a_run() -> None:
    assert graph()["services"] & {"tasks", "pipeline"} == set()


def test_tasks_run_the_pipeline_which_writes_through_services() -> None:
    edges = graph()
    assert "pipeline" in edges["tasks"] and "services" in edges["pipeline"]
    assert "tasks" not in edges["pipeline"]
