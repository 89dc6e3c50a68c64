"""The share of annotated parameters typed ``Any`` in mypy's strict set (pyproject's [tool.mypy] files).

``Any`` turns the checker off for everything that flows through the parameter, so this is the
part of the strict set mypy cannot vouch for. ``python bench/any_share.py [paths...]``
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def strict_set() -> list[Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [ROOT / entry for entry in config["tool"]["mypy"]["files"]]


def python_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def annotations(tree: ast.AST) -> Iterator[ast.expr]:
    """The annotation of every annotated parameter (``self`` and ``cls`` are never annotated)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]
            yield from (a.annotation for a in every if a is not None and a.annotation is not None)


def is_any(annotation: ast.expr) -> bool:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):  # a quoted annotation
        return annotation.value.strip() in ("Any", "typing.Any")
    return ast.unparse(annotation) in ("Any", "typing.Any")


def main(argv: list[str]) -> None:
    paths = [Path(arg).resolve() for arg in argv] or strict_set()
    total = typed_any = 0
    for file in python_files(paths):
        found = list(annotations(ast.parse(file.read_text(), filename=str(file))))
        total += len(found)
        typed_any += sum(map(is_any, found))
    share = typed_any / total if total else 0.0
    print(f"annotated parameters: {total}, typed Any: {typed_any}")
    print(f"any_share={share:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
