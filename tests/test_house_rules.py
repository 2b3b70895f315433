"""House rules the code keeps: no function in spotwatch/ takes more than eight
parameters (self and cls not counted): what travels together (clocks and the
logger, a runner's callbacks, the parts a watcher is built from) travels as one
object; and no comment or docstring names an issue number (say why, not when)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import spotwatch

MAX_PARAMETERS = 8
PACKAGE = Path(spotwatch.__file__).parent


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return [name for name in names if name not in ("self", "cls")]


def wide_functions(source: str) -> dict[str, int]:
    """Qualified name -> parameter count, for every def over MAX_PARAMETERS."""
    wide: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                if len(parameters(child)) > MAX_PARAMETERS:
                    wide[name] = len(parameters(child))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return wide


def test_the_check_sees_a_wide_function_and_a_wide_method() -> None:
    source = (
        "def f(a, b, c, d, e, f, g, h, *, i): pass\n"
        "def g(a, b, c, d, e, f, g, h): pass\n"
        "class C:\n    def m(self, a, b, c, d, e, f, g, h, *rest): pass\n"
    )
    assert wide_functions(source) == {"f": 9, "C.m": 9}


def test_no_function_in_spotwatch_takes_more_than_eight_parameters() -> None:
    found = {
        f"{path.relative_to(PACKAGE.parent)}: {name} ({count})": name
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, count in wide_functions(path.read_text()).items()
    }
    assert sorted(found) == []


ISSUE_NUMBER = re.compile(r"\bissue\s+#?[0-9]+", re.IGNORECASE)


def test_no_issue_numbers_in_the_code() -> None:
    assert ISSUE_NUMBER.search("# Issue 12: which cloud") and ISSUE_NUMBER.search("(issue #3)")
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if ISSUE_NUMBER.search(line)
    ]
    assert found == []
