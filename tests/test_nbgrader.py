"""The exercise notebook graded by the real nbgrader, offline, in a fresh course directory: the
solutions notebook is the assignment source unchanged, `generate_assignment` releases the committed
student copy (same cells, same sources), and `autograde` gives the solutions full marks and the
untouched student copy zero on every auto-graded cell. nbgrader comes from requirements-dev.txt;
without it this file is skipped."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbgrader")
from nbgrader.api import Gradebook  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "notebooks" / "06_exercises_solutions.ipynb"
STUDENT = REPO / "notebooks" / "06_exercises.ipynb"
NAME = "06_exercises"  # the notebook's name in the course: students get 06_exercises.ipynb
CONFIG = """\
c = get_config()
c.CourseDirectory.course_id = "ddpm"
c.CourseDirectory.db_assignments = [dict(name="ps1")]
c.CourseDirectory.db_students = [dict(id="solver"), dict(id="untouched")]
c.Execute.timeout = 600  # the training-loop check trains for up to a minute: nbgrader's default is 30 s
"""


def _nbgrader(course: Path, *args: str) -> str:
    env = {**os.environ, "DDPM_QUICK": "1", "MPLBACKEND": "Agg", "JUPYTER_PLATFORM_DIRS": "1"}
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--force"], cwd=course, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout + run.stderr


def _cells(path: Path) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"]).strip()) for c in json.loads(path.read_text())["cells"]]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    course = tmp_path_factory.mktemp("course")
    (course / "nbgrader_config.py").write_text(CONFIG)
    (course / "source" / "ps1").mkdir(parents=True)
    shutil.copy(SOLUTIONS, course / "source" / "ps1" / f"{NAME}.ipynb")
    _nbgrader(course, "generate_assignment", "ps1")
    for student, notebook in [("solver", SOLUTIONS), ("untouched", STUDENT)]:
        (course / "submitted" / student / "ps1").mkdir(parents=True)
        shutil.copy(notebook, course / "submitted" / student / "ps1" / f"{NAME}.ipynb")
    _nbgrader(course, "autograde", "ps1")
    return course


def _grades(course: Path, student: str) -> dict[str, tuple[str, float | None, float]]:
    """{grade cell: (cell type, auto score, max score)}; code cells are the auto-graded checks."""
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook(NAME, "ps1", student)
        return {g.name: (g.cell.cell_type, g.auto_score, g.max_score) for g in notebook.grades}


def test_generate_assignment_releases_the_committed_student_copy(course):
    released = course / "release" / "ps1" / f"{NAME}.ipynb"
    assert _cells(released) == _cells(STUDENT)


def test_autograde_gives_the_solutions_full_marks_and_leaves_the_written_answers_to_a_grader(course):
    grades = _grades(course, "solver")
    checks = {name: (got, top) for name, (kind, got, top) in grades.items() if kind == "code"}
    assert len(checks) == 11
    assert all(got == top for got, top in checks.values()), checks
    assert all(got is None for kind, got, _ in grades.values() if kind == "markdown"), grades


def test_autograde_gives_the_untouched_student_copy_zero(course):
    grades = _grades(course, "untouched")  # unchanged written answers get 0 automatically as well
    assert grades.keys() == _grades(course, "solver").keys()
    assert {name: got for name, (_, got, _) in grades.items()} == dict.fromkeys(grades, 0.0)
