"""Generate the student copy of the exercise notebook from its single source, the solutions.

    python -m ddpm_helpers.make_exercises           # writes notebooks/06_exercises.ipynb
    python -m ddpm_helpers.make_exercises --check   # exits 1 if the committed copy is stale

The rules are nbgrader's (`nbgrader generate_assignment`, version 0.9), so that an instructor who
uses nbgrader can take the solutions notebook unchanged and gets the same student notebook:
- a line that contains `BEGIN SOLUTION` opens a solution region and a line that contains
  `END SOLUTION` closes it (anywhere in the line, as nbgrader reads them: so never write these
  words in a cell's text); in code cells the region becomes `# YOUR CODE HERE` +
  `raise NotImplementedError()` at the indentation of the BEGIN line, in Markdown cells
  `YOUR ANSWER HERE`; a solution cell (nbgrader metadata `solution: true`) without a region is
  replaced whole by that stub, and a region outside a solution cell is an error;
- a `BEGIN HIDDEN TESTS` ... `END HIDDEN TESTS` region is removed (e.g. the `assert` that makes a
  check cell an nbgrader autograder test; the student copy must run without raising); it may
  only sit in a grade cell (`grade: true`);
- every output, execution count and execution timestamp is cleared; nbgrader metadata stays.
  (nbval does not compare the outputs of a cell whose execution count is None, so under nbval the
  student copy only has to run every cell without an error.)
Hints stay: write them as collapsible `<details>` Markdown in the source.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
CODE_STUB, TEXT_STUB = ["# YOUR CODE HERE\n", "raise NotImplementedError()\n"], ["YOUR ANSWER HERE\n"]
SOURCE = Path("notebooks/06_exercises_solutions.ipynb")
STUDENT = Path("notebooks/06_exercises.ipynb")


def _marker(line: str) -> str | None:
    """The delimiter a line holds, nbgrader's way: as a substring, BEGIN tested before END."""
    return next((m for m in (BEGIN, BEGIN_HIDDEN, END, END_HIDDEN) if m in line), None)


def strip_solutions(lines: list[str], code: bool, where: str) -> list[str]:
    """Replace every solution region and drop every hidden-test region of one cell's lines (kept
    with their newlines)."""
    out: list[str] = []
    indent = opened = None
    closing = {BEGIN: END, BEGIN_HIDDEN: END_HIDDEN}
    for number, line in enumerate(lines, start=1):
        marker = _marker(line)
        if marker in closing:
            if opened is not None:
                raise ValueError(f"{where}, line {number}: a second {marker!r} before {closing[opened]!r} "
                                 f"(nbgrader reads the words anywhere in a line: {line.strip()!r})")
            indent, opened = line[: len(line) - len(line.lstrip())], marker
        elif marker is not None:
            if opened is None or closing[opened] != marker:
                begin = BEGIN if marker == END else BEGIN_HIDDEN
                raise ValueError(f"{where}, line {number}: {marker!r} without a {begin!r} before it")
            if opened == BEGIN:
                out += [indent + stub for stub in (CODE_STUB if code else TEXT_STUB)]
            indent = opened = None
        elif opened is None:
            out.append(line)
    if opened is not None:
        raise ValueError(f"{where}: {opened!r} is never closed by {closing[opened]!r} (nbgrader reads the "
                         "words anywhere in a line, so a cell's text must not mention them)")
    if out and not lines[-1].endswith("\n"):
        out[-1] = out[-1].rstrip("\n")
    return out


def _student_source(cell: dict, where: str) -> list[str]:
    source = cell["source"]
    lines = source.splitlines(keepends=True) if isinstance(source, str) else list(source)
    code = cell["cell_type"] == "code"
    meta = cell.get("metadata", {}).get("nbgrader", {})
    markers = {_marker(line) for line in lines} - {None}
    if markers & {BEGIN, END} and not meta.get("solution"):
        raise ValueError(f"{where}: a solution region in a cell without nbgrader metadata `solution: true`")
    if markers & {BEGIN_HIDDEN, END_HIDDEN} and not meta.get("grade"):
        raise ValueError(f"{where}: hidden tests in a cell without nbgrader metadata `grade: true`")
    if meta.get("solution") and BEGIN not in markers:  # nbgrader replaces the whole cell
        stub = CODE_STUB if code else TEXT_STUB
        return [*stub[:-1], stub[-1].rstrip("\n")]
    return strip_solutions(lines, code, where)


def student_copy(notebook: dict) -> dict:
    """The student version of a solutions notebook (given as parsed JSON)."""
    result = copy.deepcopy(notebook)
    for index, cell in enumerate(result["cells"]):
        cell["source"] = _student_source(cell, f"cell {index}")
        cell.get("metadata", {}).pop("execution", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return result


def render(notebook: dict) -> str:
    """Serialise like Jupyter does (one-space indent, trailing newline), so diffs stay small."""
    return json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddpm_helpers.make_exercises",
                                     description="Generate the student exercise notebook from the solutions.")
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=STUDENT)
    parser.add_argument("--check", action="store_true", help="only check that --out is up to date")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        parser.error(f"{args.source} not found; run this from the repository root or pass --source")
    expected = render(student_copy(json.loads(args.source.read_text(encoding="utf-8"))))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != expected:
            print(f"{args.out} is stale: run `python -m ddpm_helpers.make_exercises` and commit it.")
            return 1
        print(f"{args.out} is up to date.")
        return 0
    args.out.write_text(expected, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
