"""Generate the student copy of the exercise notebook from its single source, the solutions.

    python -m ddpm_helpers.make_exercises           # writes notebooks/06_exercises.ipynb
    python -m ddpm_helpers.make_exercises --check   # exits 1 if the committed copy is stale

Rules, the same as nbgrader's where they overlap, so that an instructor who uses nbgrader can take
the solutions notebook unchanged:
- in code cells, everything from a `### BEGIN SOLUTION` line to its `### END SOLUTION` line becomes
  `# YOUR CODE HERE` + `raise NotImplementedError()` at the indentation of the BEGIN line;
- in Markdown cells the same region becomes `_YOUR ANSWER HERE_`;
- a `### BEGIN HIDDEN TESTS` ... `### END HIDDEN TESTS` region is removed (e.g. the `assert` that
  makes a check cell an nbgrader autograder test; the student copy must run without raising);
- cells tagged `solution-only` are dropped (e.g. a note to instructors);
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

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
SOURCE = Path("notebooks/06_exercises_solutions.ipynb")
STUDENT = Path("notebooks/06_exercises.ipynb")


def strip_solutions(lines: list[str], code: bool, where: str) -> list[str]:
    """Replace every BEGIN/END SOLUTION region of one cell's lines (kept with their newlines)."""
    out: list[str] = []
    indent = opened = None
    closing = {BEGIN: END, BEGIN_HIDDEN: END_HIDDEN}
    for number, line in enumerate(lines, start=1):
        marker = line.strip()
        if marker in closing:
            if opened is not None:
                raise ValueError(f"{where}, line {number}: a second {marker!r} before {closing[opened]!r}")
            indent, opened = line[: len(line) - len(line.lstrip())], marker
        elif marker in closing.values():
            if opened is None or closing[opened] != marker:
                begin = BEGIN if marker == END else BEGIN_HIDDEN
                raise ValueError(f"{where}, line {number}: {marker!r} without a {begin!r} before it")
            if opened == BEGIN:
                out += [f"{indent}# YOUR CODE HERE\n", f"{indent}raise NotImplementedError()\n"] if code else [f"{indent}_YOUR ANSWER HERE_\n"]
            indent = opened = None
        elif opened is None:
            out.append(line)
    if opened is not None:
        raise ValueError(f"{where}: {opened!r} is never closed by {closing[opened]!r}")
    if out and not lines[-1].endswith("\n"):
        out[-1] = out[-1].rstrip("\n")
    return out


def student_copy(notebook: dict) -> dict:
    """The student version of a solutions notebook (given as parsed JSON)."""
    result = copy.deepcopy(notebook)
    cells = []
    for index, cell in enumerate(result["cells"]):
        if "solution-only" in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell["source"]
        lines = source.splitlines(keepends=True) if isinstance(source, str) else list(source)
        cell["source"] = strip_solutions(lines, cell["cell_type"] == "code", f"cell {index}")
        cell.get("metadata", {}).pop("execution", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cells.append(cell)
    result["cells"] = cells
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
