import json
from pathlib import Path

import pytest

from ddpm_helpers.make_exercises import main, render, strip_solutions, student_copy

REPO = Path(__file__).resolve().parents[1]


def _notebook(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _code(source, tags=(), **nbgrader):
    cell = {"cell_type": "code", "execution_count": 3, "id": "c", "metadata": {"tags": list(tags)},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "42\n"}], "source": source}
    if nbgrader:
        cell["metadata"]["nbgrader"] = nbgrader
    return cell


def test_solution_region_becomes_not_implemented_at_its_indentation():
    lines = ["def f(x):\n", "    ### BEGIN SOLUTION\n", "    return x + 1\n", "    ### END SOLUTION\n", "\n", "y = 2"]
    assert strip_solutions(lines, code=True, where="cell 0") == [
        "def f(x):\n", "    # YOUR CODE HERE\n", "    raise NotImplementedError()\n", "\n", "y = 2",
    ]


def test_markdown_answers_are_blanked():
    lines = ["**Answer:**\n", "### BEGIN SOLUTION\n", "Because SNR falls.\n", "### END SOLUTION"]
    assert strip_solutions(lines, code=False, where="cell 1") == ["**Answer:**\n", "YOUR ANSWER HERE"]


def test_hidden_tests_are_removed_from_the_student_copy():
    lines = ["ok = check(f)\n", "### BEGIN HIDDEN TESTS\n", "assert ok\n", "### END HIDDEN TESTS"]
    assert strip_solutions(lines, code=True, where="cell 2") == ["ok = check(f)"]


@pytest.mark.parametrize(
    "lines, message",
    [
        (["### BEGIN SOLUTION\n", "x = 1\n"], "never closed"),
        (["x = 1\n", "### END SOLUTION\n"], "without"),
        (["### BEGIN SOLUTION\n", "### BEGIN SOLUTION\n", "### END SOLUTION\n"], "second"),
        (["### BEGIN HIDDEN TESTS\n", "assert ok\n"], "never closed"),
        (["### BEGIN SOLUTION\n", "x = 1\n", "### END HIDDEN TESTS\n"], "without"),
        (["Answers sit between `### BEGIN SOLUTION` and its end marker.\n"], "never closed"),
    ],
)
def test_unbalanced_markers_name_the_cell_and_line(lines, message):
    with pytest.raises(ValueError, match=message):
        strip_solutions(lines, code=True, where="cell 7")


def test_markers_are_read_anywhere_in_a_line_as_nbgrader_reads_them():
    lines = ["def f():\n", "    x = 0  # BEGIN SOLUTION here\n", "    return 1\n", "    pass  # END SOLUTION\n"]
    assert strip_solutions(lines, code=True, where="cell 0") == [
        "def f():\n", "    # YOUR CODE HERE\n", "    raise NotImplementedError()\n",
    ]


def test_student_copy_clears_outputs_and_keeps_the_source_intact():
    source = _notebook(_code("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n", solution=True))
    before = json.dumps(source)
    student = student_copy(source)
    assert json.dumps(source) == before
    cell = student["cells"][0]
    assert cell["outputs"] == [] and cell["execution_count"] is None
    assert "return 1" not in "".join(cell["source"])


def test_a_solution_cell_without_markers_becomes_the_stub_as_in_nbgrader():
    student = student_copy(_notebook(_code("x = 42\n", solution=True), _code("y = 1\n")))
    assert [c["source"] for c in student["cells"]] == [["# YOUR CODE HERE\n", "raise NotImplementedError()"], ["y = 1\n"]]


@pytest.mark.parametrize("cell, message", [
    (_code("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n"), "solution: true"),
    (_code("ok = 1\n### BEGIN HIDDEN TESTS\nassert ok\n### END HIDDEN TESTS\n", solution=True), "grade: true"),
])
def test_regions_outside_the_cells_nbgrader_allows_them_in_are_errors(cell, message):
    with pytest.raises(ValueError, match=message):
        student_copy(_notebook(cell))


def test_student_copy_drops_execution_timestamps_and_keeps_nbgrader_metadata():
    cell = _code("print(2)\n", tags=["keep"])
    cell["metadata"]["execution"] = {"iopub.status.busy": "2026-11-25T07:04:33Z"}
    cell["metadata"]["nbgrader"] = {"grade": False, "solution": True}
    student = student_copy(_notebook(cell))
    assert student["cells"][0]["metadata"] == {"tags": ["keep"], "nbgrader": {"grade": False, "solution": True}}


def test_check_mode_detects_a_stale_copy(tmp_path, capsys):
    src, out = tmp_path / "sol.ipynb", tmp_path / "student.ipynb"
    src.write_text(json.dumps(_notebook(_code("x = 1\n"))))
    assert main(["--source", str(src), "--out", str(out), "--check"]) == 1
    assert main(["--source", str(src), "--out", str(out)]) == 0
    assert main(["--source", str(src), "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("x = 1", "x = 2"))
    assert main(["--source", str(src), "--out", str(out), "--check"]) == 1
    assert "stale" in capsys.readouterr().out


@pytest.mark.skipif(not (REPO / "notebooks" / "06_exercises_solutions.ipynb").is_file(), reason="no exercises yet")
def test_committed_student_copy_is_generated_from_the_solutions():
    solutions = json.loads((REPO / "notebooks" / "06_exercises_solutions.ipynb").read_text(encoding="utf-8"))
    committed = (REPO / "notebooks" / "06_exercises.ipynb").read_text(encoding="utf-8")
    assert committed == render(student_copy(solutions)), "run `python -m ddpm_helpers.make_exercises` and commit"
    assert "### BEGIN SOLUTION" not in committed and "HIDDEN TESTS" not in committed
