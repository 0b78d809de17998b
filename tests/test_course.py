"""The course (issue 20): the exercise convention, the student edition and the rendered site.

Synthetic notebooks made here check the machinery in the default run; the tests over the real
``notebooks/`` check every lesson follows the convention (2–4 exercises, each with a solution code cell).
The student edition of every lesson run through papermill, and the full site built at the smoke
parameters, are under the marker ``course`` (``pytest -m course``, run by ``.ci/run``).
"""
from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from hashlib_vit import course
from hashlib_vit.errors import DataError, ExerciseNotAnswered, HashlibVitError
from hashlib_vit.notebook import exercise_unanswered

ROOT = Path(__file__).resolve().parents[1]
LESSONS = course.lesson_notebooks(ROOT)
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def md(text, *tags):
    c = nbformat.v4.new_markdown_cell(text)
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def code(text, *tags):
    c = nbformat.v4.new_code_cell(text)
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def exercise_cells(n: int, count: int = 2) -> list:
    """``count`` exercises of lesson ``n`` following the convention (each with an asserted solution)."""
    cells = [md("## Exercises\n\nTry these before reading on.")]
    for k in range(1, count + 1):
        cells += [md(f"### Exercise {n}.{k} — Square number {k}\n\nCompute {k} squared and check it.", "exercise"),
                  code(f"answer_{k} = sum([{k}] * {k})  # worked solution {k}\n"
                       f"assert answer_{k} == {k} ** 2, f'expected {k * k}, got {{answer_{k}}}'", "solution"),
                  md(f"Multiplication is repeated addition: {k} added {k} times gives the square.", "solution")]
    return cells


def tiny_lesson(n: int = 0, exercises: int = 2, body: list | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNEL
    body = body if body is not None else [code("x = n * 2\nprint('x is', x)")]
    nb.cells = [md(f"# Lesson {n}\n\nA tiny lesson."), code("n: int = 3  # a parameter", "parameters"), *body,
                *exercise_cells(n, exercises), md("## Where next\n\nThe next lesson.")]
    return nb


def write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# ----------------------------------------------------------------------------- the unanswered stub
def test_exercise_unanswered_raises_a_clear_student_message():
    with pytest.raises(ExerciseNotAnswered) as e:
        exercise_unanswered("3.2")
    assert isinstance(e.value, HashlibVitError)
    msg = str(e.value)
    assert msg.startswith("Exercise 3.2 is not answered yet: write your answer in this cell in place of this line")
    assert exercise_unanswered.__code__.co_varnames[0] == "exercise_id"
    assert "__tracebackhide__" in exercise_unanswered.__code__.co_varnames
    # IPython shows _render_traceback_ in place of its traceback: one line, no library frame
    rendered = e.value._render_traceback_()
    assert len(rendered) == 1 and msg in rendered[0] and "notebook.py" not in rendered[0]


# ----------------------------------------------------------------------------- parsing
def test_parse_exercises_of_a_conforming_notebook():
    exs = course.parse_exercises(tiny_lesson(3, 3), name="03_x.ipynb", lesson=3)
    assert [e.id for e in exs] == ["3.1", "3.2", "3.3"]
    assert [e.title for e in exs] == ["Square number 1", "Square number 2", "Square number 3"]
    assert all(len(e.solutions) == 2 and len(e.solution_code) == 1 for e in exs)


@pytest.mark.parametrize("case, expected", [
    ("solution_first", "no exercise cell comes before it"),
    ("no_solution_code", "has no solution code cell"),
    ("duplicate", "duplicate exercise id 0.1"),
    ("wrong_lesson", "wrong lesson number 4"),
    ("wrong_k", "should be 0.2"),
    ("hyphen", "expected '### Exercise N.k — Title'"),
    ("code_exercise", "is a code cell"),
    ("both_tags", "tagged both"),
])
def test_parse_exercises_names_the_malformed_structure(case, expected):
    nb = tiny_lesson(0, 2)
    ex = [i for i, c in enumerate(nb.cells) if "exercise" in c.metadata.get("tags", [])]
    if case == "solution_first":
        nb.cells.insert(1, code("y = 1", "solution"))
    elif case == "no_solution_code":
        nb.cells[ex[1] + 1].metadata["tags"] = []
    elif case == "duplicate":
        nb.cells[ex[1]].source = nb.cells[ex[1]].source.replace("0.2", "0.1")
    elif case == "wrong_lesson":
        nb.cells[ex[0]].source = nb.cells[ex[0]].source.replace("0.1", "4.1")
    elif case == "wrong_k":
        nb.cells[ex[1]].source = nb.cells[ex[1]].source.replace("0.2", "0.3")
    elif case == "hyphen":
        nb.cells[ex[0]].source = nb.cells[ex[0]].source.replace(" — ", " - ")
    elif case == "code_exercise":
        nb.cells[ex[0]] = code("# ### Exercise 0.1 — x", "exercise")
    elif case == "both_tags":
        nb.cells[ex[0]].metadata["tags"] = ["exercise", "solution"]
    with pytest.raises(DataError, match=re.escape(expected)) as e:
        course.parse_exercises(nb, name="00_tiny.ipynb", lesson=0)
    assert "00_tiny.ipynb, cell" in str(e.value)


# ----------------------------------------------------------------------------- every lesson follows the convention
def check_lesson_exercises(path: Path) -> None:
    """The convention: 2–4 exercises in a '## Exercises' section just before '## Where next', each with a
    solution code cell holding an assert; no later non-solution cell uses a name a solution cell defines."""
    import ast

    exs = course.read_exercises(path)
    assert 2 <= len(exs) <= 4, f"{path.name}: {len(exs)} exercises (the convention: 2 to 4)"
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    src = [course._source(c) for c in cells]
    for ex in exs:
        asserted = [i for i in ex.solution_code if any(isinstance(n, ast.Assert) for n in ast.walk(ast.parse(
            "\n".join(line for line in src[i].split("\n") if not line.lstrip().startswith(("%", "!"))))))]
        assert asserted, f"{path.name}: Exercise {ex.id} has no solution code cell with an assert"
    heads = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and src[i].lstrip().startswith("## ")]
    section = [i for i in heads if src[i].lstrip().startswith("## Exercises")]
    assert len(section) == 1, f"{path.name}: one '## Exercises' section"
    where = [i for i in heads if src[i].lstrip().startswith("## Where next")]
    if where:
        later = [i for i in heads if section[0] < i < where[0]]
        assert not later, f"{path.name}: '## Exercises' comes just before '## Where next'"
    assert section[0] < exs[0].cell
    defined = set()
    solution_cells = {i for ex in exs for i in ex.solutions}
    for i, c in enumerate(cells):
        if c["cell_type"] != "code" or i <= exs[0].cell:
            continue
        body = "\n".join(line for line in src[i].split("\n") if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(body)
        if i in solution_cells:
            defined |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        else:
            used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            assert not used & defined, f"{path.name}, cell {i} uses {used & defined} defined by a solution cell"


@pytest.mark.parametrize("nb", LESSONS, ids=lambda p: p.name)
def test_every_lesson_has_two_to_four_asserted_exercises(nb):
    check_lesson_exercises(nb)


def test_the_syllabus_lists_every_lesson_and_exercise():
    """docs/course.md names every lesson and every exercise (id and title) as the notebooks have them."""
    syllabus = (ROOT / "docs" / "course.md").read_text()
    for nb in LESSONS:
        assert f"`{nb.stem}`" in syllabus, f"docs/course.md does not list the lesson {nb.stem}"
        for ex in course.read_exercises(nb):
            assert f"{ex.id} — {ex.title}".replace("|", "\\|") in syllabus, \
                f"docs/course.md does not list Exercise {ex.id} — {ex.title} ({nb.name})"


def test_the_convention_check_passes_on_a_conforming_notebook(tmp_path):
    check_lesson_exercises(write(tiny_lesson(5, 3), tmp_path / "05_tiny.ipynb"))
    with pytest.raises(AssertionError, match="1 exercises"):
        check_lesson_exercises(write(tiny_lesson(5, 1), tmp_path / "05_one.ipynb"))


# ----------------------------------------------------------------------------- the student edition
def solution_lines(path: Path) -> list[str]:
    """Every non-trivial line of the solution cells that appears in no other cell of the notebook."""
    nb = json.loads(path.read_text())
    sol = [course._source(c) for c in nb["cells"] if "solution" in course._tags(c)]
    other = "\n".join(course._source(c) for c in nb["cells"] if "solution" not in course._tags(c))
    lines = {ln.strip() for s in sol for ln in s.split("\n")}
    return sorted(ln for ln in lines if len(re.sub(r"[\W_]", "", ln)) >= 4 and ln not in other)


def check_student_notebook(teacher: Path, student: Path) -> None:
    t, s = json.loads(teacher.read_text()), json.loads(student.read_text())
    text = "\n".join(course._source(c) for c in s["cells"])
    leaked = [ln for ln in solution_lines(teacher) if ln in text]
    assert not leaked, f"{student.name}: solution text survives: {leaked[:5]}"
    assert len(s["cells"]) == len(t["cells"])
    exs = course.read_exercises(teacher)
    for ex in exs:  # every exercise cell, unchanged, in order
        assert course._source(s["cells"][ex.cell]) == course._source(t["cells"][ex.cell])
        assert course._tags(s["cells"][ex.cell]) == ["exercise"]
        for part, i in enumerate(ex.solution_code, 1):
            assert f'exercise_unanswered("{ex.id}")' in course._source(s["cells"][i])
            assert "solution" in course._tags(s["cells"][i]), "tags kept for the teacher"
        for i in set(ex.solutions) - set(ex.solution_code):
            assert course._source(s["cells"][i]) == course.stub_markdown(ex.id)
    assert [course._source(s["cells"][e.cell]).split("\n")[0] for e in exs] == \
        [f"### Exercise {e.id} — {e.title}" for e in exs]
    for c in s["cells"]:
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None, "outputs cleared"


def test_student_edition_of_a_synthetic_lesson(tmp_path):
    nb = tiny_lesson(2, 3)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="x is 6\n")]
    nb.cells[2].execution_count = 4
    teacher = write(nb, tmp_path / "notebooks" / "02_tiny.ipynb")
    out = tmp_path / "student"
    written = course.student_edition([teacher], out, log=None)
    assert written == [out / "02_tiny.ipynb"] and (out / "README.md").is_file()
    check_student_notebook(teacher, out / "02_tiny.ipynb")
    student = json.loads((out / "02_tiny.ipynb").read_text())
    assert student["cells"][2]["outputs"] == [] and student["cells"][2]["execution_count"] is None
    assert course._tags(student["cells"][1]) == ["parameters"]
    for f in written + [out / "README.md"]:  # a handout others can read (a temporary file's 0600 would not be)
        assert f.stat().st_mode & 0o044 == 0o044, (f, oct(f.stat().st_mode))


def test_student_edition_refuses_a_malformed_notebook_and_writes_nothing(tmp_path):
    nb = tiny_lesson(1, 2)
    nb.cells.insert(1, code("y = 1", "solution"))
    bad = write(nb, tmp_path / "01_bad.ipynb")
    good = write(tiny_lesson(0, 2), tmp_path / "00_good.ipynb")
    with pytest.raises(DataError, match="01_bad.ipynb, cell 1 is tagged 'solution' but no exercise"):
        course.student_edition([good, bad], tmp_path / "student", log=None)
    assert not (tmp_path / "student").exists()


def test_student_edition_command(tmp_path, monkeypatch, capsys):
    from hashlib_vit.cli import main

    teacher = write(tiny_lesson(0, 2), tmp_path / "00_tiny.ipynb")
    monkeypatch.chdir(tmp_path)
    assert main(["student-edition", "--out", "stu", str(teacher)]) == 0
    check_student_notebook(teacher, tmp_path / "stu" / "00_tiny.ipynb")
    bad = tiny_lesson(0, 2)
    bad.cells[-2].metadata["tags"] = []
    bad.cells[-3].metadata["tags"] = []
    write(bad, tmp_path / "00_bad.ipynb")
    assert main(["student-edition", "--out", "stu", str(tmp_path / "00_bad.ipynb")]) == 2
    assert "Exercise 0.2 has no solution code cell" in capsys.readouterr().err


def run_student(student: Path, out: Path, parameters: dict):
    """Execute a student notebook with papermill; returns (the PapermillExecutionError, executed nb)."""
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(student), str(out), parameters=parameters, kernel_name="python3",
                                   progress_bar=False, cwd=str(ROOT))
    return e.value, json.loads(out.read_text())


def check_stops_at_first_stub(teacher: Path, err, executed: dict) -> None:
    first = course.read_exercises(teacher)[0]
    assert err.ename == "ExerciseNotAnswered", (err.ename, err.evalue)
    assert err.evalue.startswith(f"Exercise {first.id} is not answered yet: write your answer in this cell")
    cells = [c for c in executed["cells"]
             if not {"injected-parameters", "papermill-error-cell-tag"} & set(course._tags(c))]
    stub = first.solution_code[0]
    for i, c in enumerate(cells[:stub]):
        if c["cell_type"] == "code":
            assert c["execution_count"] is not None, f"cell {i} before the first exercise did not run"
            assert not [o for o in c["outputs"] if o["output_type"] == "error"], f"cell {i} raised"
    errors = [o for o in cells[stub]["outputs"] if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "ExerciseNotAnswered"
    shown = "\n".join(errors[0]["traceback"])
    assert "hashlib_vit/notebook.py" not in shown and "is not answered yet" in shown, shown
    assert all(c.get("execution_count") is None for c in cells[stub + 1:] if c["cell_type"] == "code")


@pytest.mark.notebook
def test_student_edition_runs_to_the_first_stub_synthetic(tmp_path):
    teacher = write(tiny_lesson(0, 2), tmp_path / "00_tiny.ipynb")
    course.student_edition([teacher], tmp_path / "student", log=None)
    err, executed = run_student(tmp_path / "student" / "00_tiny.ipynb", tmp_path / "out.ipynb", {"n": 5})
    check_stops_at_first_stub(teacher, err, executed)
    assert "x is 10" in json.dumps(executed["cells"])  # the lesson ran with the injected parameter


def quickstart_with_exercises(tmp_path: Path) -> Path:
    """The real quickstart; while it has no exercises yet, a copy with two following the convention
    inserted before '## Where next' (so the real lesson's cells all run before the first stub)."""
    qs = ROOT / "notebooks" / "00_quickstart.ipynb"
    if course.read_exercises(qs):
        return qs
    nb = nbformat.read(str(qs), as_version=4)
    where = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## Where next"))
    nb.cells[where:where] = exercise_cells(0, 2)
    return write(nb, tmp_path / "teacher" / "00_quickstart.ipynb")


def smoke(stem: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / "smoke" / f"{stem}.yaml").read_text()) or {}


def output_params(nb: Path, tmp_path: Path) -> dict:
    return {p: str(tmp_path / "run") for p in course._output_params(nb)}


@pytest.mark.notebook
def test_student_quickstart_runs_to_the_first_exercise_and_stops_clearly(tmp_path):
    teacher = quickstart_with_exercises(tmp_path)
    course.student_edition([teacher], tmp_path / "student", log=None)
    check_student_notebook(teacher, tmp_path / "student" / teacher.name)
    err, executed = run_student(tmp_path / "student" / teacher.name, tmp_path / "out.ipynb",
                                {**smoke(teacher.stem), **output_params(teacher, tmp_path)})
    check_stops_at_first_stub(teacher, err, executed)


@pytest.mark.course
@pytest.mark.parametrize("nb", LESSONS, ids=lambda p: p.name)
def test_student_edition_of_every_lesson(nb, tmp_path):
    assert course.read_exercises(nb), f"{nb.name} has no exercises (the convention: 2 to 4)"
    course.student_edition([nb], tmp_path / "student", log=None)
    check_student_notebook(nb, tmp_path / "student" / nb.name)
    err, executed = run_student(tmp_path / "student" / nb.name, tmp_path / "out.ipynb",
                                {**smoke(nb.stem), **output_params(nb, tmp_path)})
    check_stops_at_first_stub(nb, err, executed)


# ----------------------------------------------------------------------------- the site
# math as the lessons write it (Jupyter's $...$ and $$...$$), with dollars that are not math around it
LESSON_MATH = ("Codes $b \\in \\{-1,+1\\}^{K}$ are compared by $d_H(b_i,b_j)=\\tfrac12(K-b_i^\\top b_j)$:\n\n"
               "$$\\mathbb E[\\mathrm{AP}] = \\frac{R-1}{N-1}.$$\n\n"
               "1. in a list item,\n   $$\\|\\tilde v\\|^2 = 2K\\,\\big(1-\\cos(v,c)\\big)$$\n   still in it.\n\n"
               "Not math: a price of $5 and $10, `$HOME` in code, and an escaped \\$ sign.")
DOC_MATH = ("## Math\n\nA docs page with $x_i^2$ inline and a display\n\n$$\\sum_{r\\le K} \\frac{1}{r}$$\n\n"
            "and no math in `$PATH`, in\n\n```bash\necho \"$HOME $x$\"\n```\n\nor in a price of $5 and $10.\n")


def check_math(page: str, name: str) -> None:
    """The page's math is MathML (inline and display, a fraction among it), no TeX or MathJax is left, and the
    dollars that are not math are still there."""
    assert re.search(r'<math [^>]*display="inline"', page), f"{name}: no inline MathML"
    assert re.search(r'<math [^>]*display="block"', page), f"{name}: no display MathML"
    assert "<mfrac>" in page, name
    assert 'class="arithmatex"' not in page and "math-fallback" not in page, f"{name}: math left as TeX"
    assert "\\frac" not in page and "\\tfrac" not in page, f"{name}: raw TeX on the page"
    assert "MathJax" not in page and '<script src="">' not in page, f"{name}: MathJax loader left"
    assert "$5 and $10" in page, f"{name}: a price became math"
    assert not re.search(r'mathvariant="(?!normal")', page), f"{name}: a mathvariant Chromium does not draw"


def test_mark_math_marks_tex_and_leaves_code_and_prices_alone():
    text = ("Inline $a_1 * b_2$ and $N$; display $$x^2\n+ [y]$$ here.\n\n"
            "Prices $5 and $10, US$5-$10; `$HOME` and ``a $x$ b`` in code; an escaped \\$ sign; $ x$ not math.\n\n"
            "```bash\necho $x $y$\n```\n")
    out = course.mark_math(text)
    spans = re.findall(r'<span class="arithmatex">(.*?)</span>', out)
    assert [html.unescape(s) for s in spans] == ["\\(a_1 * b_2\\)", "\\(N\\)", "\\[x^2 + [y]\\]"]
    assert all(not set(s) & set("\\$*_`[]^") for s in spans), "no markdown-active character left in the TeX"
    rest = _MARKED.sub("", out)
    assert "Prices $5 and $10, US$5-$10; `$HOME` and ``a $x$ b`` in code; an escaped \\$ sign; $ x$ not math" in rest
    assert "```bash\necho $x $y$\n```" in rest


_MARKED = re.compile(r'<span class="arithmatex">.*?</span>')


def test_tex_to_mathml_writes_letter_variants_as_unicode():
    """Chromium's MathML Core draws only mathvariant="normal": \\mathbb, \\mathcal, \\mathbf become characters."""
    out = course.tex_to_mathml(r"\mathbb E[\mathcal L] + \mathbb{R}^b + \mathbf 1 + \mathrm{AP} + \mathcal{H}", display=True)
    assert 'display="block"' in out
    for c in ("\U0001d53c", "\u2112", "\U0001d7cf", "\u210b"):  # 𝔼, ℒ (a hole in the block), bold 1, ℋ
        assert c in html.unescape(out), (c, out)
    assert not re.search(r'mathvariant="(?!normal")', out), out
    with pytest.raises(ValueError, match="unknown command \\\\nosuch"):
        course.tex_to_mathml(r"\nosuch x")
    with pytest.raises(ValueError, match="MissingSuperScriptOrSubscriptError"):
        course.tex_to_mathml("x^")


def test_render_math_html_converts_marked_math_and_keeps_what_it_cannot():
    page = ('<script src=""> </script><p>A <span class="arithmatex">\\(\\tfrac12 b^\\top b\\)</span> and</p>'
            '<div class="arithmatex">\\[\\sum_{r\\le K} \\frac{1}{r}\\]</div>'
            '<p><span class="arithmatex">\\(\\frac{1}{\\)</span>, <span class="arithmatex">\\(\\nosuch x\\)</span> '
            '<span class="arithmatex">\\(a &lt; b\\)</span></p>')
    out, done, failed = course.render_math_html('<!-- Load mathjax -->\n' + page)
    assert done == 3 and len(failed) == 2, (done, failed)
    assert failed[1] == "\\nosuch x: unknown command \\nosuch"
    assert out.count('display="inline"') == 2 and out.count('display="block"') == 1 and "<mfrac>" in out
    assert "<mo>&#x0003C;</mo>" in out or "<mo>&lt;</mo>" in out
    assert '<code class="math-fallback" title="unknown command \\nosuch (not rendered)">$\\nosuch x$</code>' in out
    assert "arithmatex" not in out and '<script src="">' not in out
    assert course.render_math_html(out)[1:] == (0, []), "rendering twice changes nothing"


def site_repo(tmp_path: Path, failing: bool = False) -> Path:
    """A small repository: README, two docs pages linking each other and the lesson, one tiny lesson
    with a figure, its smoke parameters."""
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "guide.md").write_text(
        "# A guide\n\nSee [the other page](other.md#second-part), [lesson 0](../notebooks/00_tiny.ipynb) and "
        "[the code](../hashlib_vit/course.py).\n\n## First part\n\nText.\n\n" + DOC_MATH)
    (repo / "docs" / "other.md").write_text("# Other\n\n## Second part\n\nBack to [the guide](guide.md) and "
                                            "[home](../README.md).\n")
    (repo / "README.md").write_text("# hashlib_vit\n\nRead `docs/guide.md` and run `notebooks/00_tiny.ipynb`.\n\n"
                                    "```bash\nmake docs/guide.md\n```\n")
    (repo / "configs" / "smoke").mkdir(parents=True)
    (repo / "configs" / "smoke" / "00_tiny.yaml").write_text("n: 5\n")
    body = [md("Read [the guide](../docs/guide.md#first-part) first.\n\n" + LESSON_MATH),
            code("import matplotlib.pyplot as plt\n%matplotlib inline\nplt.plot(range(n))\nplt.title('a figure')\n"
                 "plt.show()")]
    if failing:
        body.append(code("values = [1, 2]\nvalues[n]  # fails\nprint('never')"))
    write(tiny_lesson(0, 2, body=body), repo / "notebooks" / "00_tiny.ipynb")
    return repo


def png_outputs(executed: Path) -> int:
    nb = json.loads(executed.read_text())
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))


def check_site(site: Path, figures: dict[str, int]) -> None:
    """No problem from site_problems, and each lesson page shows (at least) its executed copy's figures."""
    problems = course.site_problems(site)
    assert not problems, "\n".join(problems[:30])
    assert (site / "index.html").is_file() and not (site / "404.html").exists()
    for name, n in figures.items():
        page = (site / "lessons" / f"{name}.html").read_text()
        shown = len(re.findall(r'<img[^>]+src="data:image/png;base64,', page))
        assert shown >= n, f"{name}: {shown} figures on its page, {n} in the executed notebook"
    for p in site.rglob("*.html"):
        text = p.read_text()
        assert not re.search(r'<(?:script|img|link)\b[^>]*\b(?:src|href)="(?:https?:)?//', text), \
            f"{p.name} loads something from the network"


@pytest.mark.notebook
def test_site_of_a_small_repository(tmp_path):
    repo = site_repo(tmp_path)
    log = []
    out = course.build_site(repo, out="site", params="smoke", modules=["hashlib_vit.errors"], log=log.append)
    check_site(out, {"00_tiny": 1})
    assert any("executing 00_tiny.ipynb with {'n': 5" in line for line in log)
    guide = (out / "guide.html").read_text()
    assert 'href="other.html#second-part"' in guide and 'href="lessons/00_tiny.html"' in guide
    assert "<code>hashlib_vit/course.py</code> in the repository" in guide
    assert 'href="guide.html"' in (out / "index.html").read_text()
    assert 'href="../guide.html#first-part"' in (out / "lessons" / "00_tiny.html").read_text()
    assert "ExerciseNotAnswered" in (out / "api" / "errors.html").read_text()  # mkdocstrings rendered it
    assert (out / "search" / "search_index.js").is_file()
    lesson = (out / "lessons" / "00_tiny.html").read_text()
    check_math(lesson, "lesson")
    check_math(guide, "guide")
    assert re.search(r"<code>\$HOME</code>", lesson) and re.search(r"<code>\$PATH</code>", guide)
    assert '<span class="nv">$HOME</span>' in guide, "the fenced code block is left alone"
    assert re.search(r'<li>in a list item,\s*<math [^>]*display="block"', lesson), "display math stays in its list item"
    assert any(re.search(r"math: [1-9]\d* expressions rendered as MathML, 0 kept as TeX", line) for line in log), log
    assert (out / "assets" / "math.css").is_file() and 'href="../assets/math.css"' in lesson
    # a rebuild re-executes only what changed
    log.clear()
    course.build_site(repo, out="site", params="smoke", modules=[], log=log.append)
    assert any("unchanged, executed copy from the cache" in line for line in log), log
    nb = nbformat.read(str(repo / "notebooks" / "00_tiny.ipynb"), as_version=4)
    nb.cells[0].source += "\n\nChanged."
    write(nb, repo / "notebooks" / "00_tiny.ipynb")
    log.clear()
    course.build_site(repo, out="site", params="smoke", modules=[], log=log.append)
    assert any("executing 00_tiny.ipynb" in line for line in log), log
    assert len(list((repo / ".cache" / "site" / "executed").glob("00_tiny.*.ipynb"))) == 1


def test_tidy_roles_keeps_the_code_span_of_a_sphinx_role():
    page = '<p>one entry point: :func:<code>evaluate</code>, a :py:class:<code>HashIndex</code>; a:b <code>x</code></p>'
    assert course.tidy_roles(page) == ('<p>one entry point: <code>evaluate</code>, a <code>HashIndex</code>; '
                                       'a:b <code>x</code></p>')


def test_site_editions_of_an_executed_lesson_and_the_home_page_banners(tmp_path):
    """The student site keeps the lesson's outputs and shows the stubs in place of the solutions (their outputs
    cleared); the home page says which edition and which scale the site is."""
    nb = tiny_lesson(0, 2)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = [nbformat.v4.new_output("stream", text=f"output of {c.source.splitlines()[0]}\n")]
            c.execution_count = 1
    executed = write(nb, tmp_path / "executed" / "00_tiny.ipynb")
    solutions = solution_lines(executed)
    assert solutions
    for edition in ("teacher", "student"):
        dest = tmp_path / edition / "00_tiny.ipynb"
        course._site_notebook(executed, dest, "notebooks/00_tiny.ipynb", edition)
        got = json.loads(dest.read_text())
        text = "\n".join(course._source(c) for c in got["cells"])
        outputs = [o for c in got["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
        sol_outputs = [o for c in got["cells"] if "solution" in course._tags(c) and c["cell_type"] == "code"
                       for o in c["outputs"]]
        if edition == "teacher":
            assert all(ln in text for ln in solutions) and sol_outputs
        else:
            assert not [ln for ln in solutions if ln in text], "no solution text on the student site"
            assert 'exercise_unanswered("0.1")' in text and not sol_outputs
            assert any("x = n * 2" in "".join(o["text"]) for o in outputs), "the lesson's own outputs stay"
    root = tmp_path / "repo"
    root.mkdir()
    page = course._index_page(root, [], [], [], False, lambda p: False, "teacher", "smoke")
    assert "Teacher edition: the exercises' worked solutions are shown" in page and "SITE_EDITION=student" in page
    assert "Built at the smoke parameters" in page
    page = course._index_page(root, [], [], [], False, lambda p: False, "student", "defaults")
    assert "Student edition" in page and "Teacher edition" not in page and "smoke" not in page
    with pytest.raises(DataError, match="site edition 'answers'"):
        course.build_site(root, edition="answers", log=None)


@pytest.mark.notebook
def test_site_build_names_the_failing_notebook_and_cell(tmp_path):
    repo = site_repo(tmp_path, failing=True)
    with pytest.raises(course.LessonFailed) as e:
        course.build_site(repo, out="site", params="smoke", modules=[], log=None)
    msg = str(e.value)
    assert "00_tiny.ipynb failed at cell 4 ('values = [1, 2]')" in msg, msg
    assert "IndexError: list index out of range" in msg
    assert not (repo / "site").exists()
    assert not list((repo / ".cache" / "site" / "executed").glob("00_tiny.*.ipynb")), "a failed run is not cached"


def test_site_params_must_be_known(tmp_path):
    from hashlib_vit.errors import ConfigError

    with pytest.raises(ConfigError, match="--params='fast' is not a known value; allowed: defaults, smoke"):
        course.lesson_parameters(tmp_path / "00_x.ipynb", "fast", tmp_path)
    with pytest.raises(DataError, match="00_x.yaml is missing"):
        course.lesson_parameters(tmp_path / "00_x.ipynb", "smoke", tmp_path)


def test_site_problems_finds_broken_links_missing_anchors_and_network_assets(tmp_path):
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "search_index.js").write_text("var __index = {}")
    (tmp_path / "b.html").write_text('<h2 id="there">x</h2>')
    (tmp_path / "a.html").write_text(
        '<a href="b.html#there">ok</a><a href="#top" id="top">ok</a><a href="https://example.org">ok</a>'
        '<a href="c.html">missing</a><a href="b.html#nowhere">anchor</a>'
        '<script src="https://unpkg.com/x.js"></script><link rel="stylesheet" href="https://cdn/x.css">')
    problems = course.site_problems(tmp_path)
    assert len(problems) == 4, problems
    assert any("c.html" in p and "missing file" in p for p in problems)
    assert any("no id 'nowhere'" in p for p in problems)
    assert sum("from the network" in p for p in problems) == 2


@pytest.mark.course
def test_full_site_at_smoke_parameters(tmp_path):
    """The real site, every lesson executed at its smoke parameters (about as `make site SITE_PARAMS=smoke`)."""
    t0 = time.time()
    out = course.build_site(ROOT, out=tmp_path / "site", params="smoke", cache_dir=tmp_path / "cache", log=None)
    executed = sorted((tmp_path / "cache" / "executed").glob("*.ipynb"))
    assert len(executed) == len(LESSONS)
    check_site(out, {p.name.split(".")[0]: png_outputs(p) for p in executed})
    assert sum(png_outputs(p) for p in executed) >= len(LESSONS) // 2, "the lessons' figures"
    for m in course.api_modules(ROOT):
        assert (out / "api" / f"{m.split('.')[-1]}.html").is_file()
    for p in sorted((ROOT / "docs").glob("*.md")):
        assert (out / p.with_suffix(".html").name).is_file()
    assert re.search(r'<math [^>]*display="block"', (out / "lessons" / "00_quickstart.html").read_text())
    unrendered = [p.relative_to(out).as_posix() for p in out.rglob("*.html")
                  if '<code class="math-fallback"' in p.read_text()]  # the element, not a docstring naming it
    assert not unrendered, f"math left as TeX on {unrendered}"
    print(f"site built in {time.time() - t0:.0f} s")


@pytest.mark.notebook
def test_site_command_reports_the_failing_lesson(tmp_path, monkeypatch, capsys):
    import hashlib_vit.utils
    from hashlib_vit.cli import main

    repo = site_repo(tmp_path, failing=True)
    monkeypatch.setattr(hashlib_vit.utils, "project_root", lambda: repo)
    monkeypatch.chdir(repo)
    assert main(["site", "--params", "smoke"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^error: lesson .*00_tiny\.ipynb failed at cell 4 \('values = \[1, 2\]'\): IndexError", err,
                     re.M), err


# the layout Chromium gave each page's math: a fraction's numerator above its denominator (MathML laid out,
# not shown as a row of letters), the display formulas as blocks, and every resource the page loaded
_MATH_LAYOUT_JS = """
const maths = [...document.querySelectorAll('math')];
const fracs = [...document.querySelectorAll('math mfrac')].map(f => {
  const [n, d] = [...f.children].map(c => c.getBoundingClientRect());
  return {stacked: n.bottom <= d.top + 1, height: f.getBoundingClientRect().height};
});
const blocks = maths.filter(m => m.getAttribute('display') === 'block').map(m => getComputedStyle(m).display);
return {n: maths.length, visible: maths.filter(m => m.getBoundingClientRect().width > 0).length, fracs: fracs,
        blocks: blocks, fallback: document.querySelectorAll('.math-fallback').length,
        resources: performance.getEntriesByType('resource').map(r => r.name)};
"""


@pytest.mark.browser
@pytest.mark.notebook
def test_site_math_typesets_in_headless_chromium(tmp_path):
    """The small site opened from file:// in headless Chromium (Debian chromium + chromedriver, as in
    tests/test_browser.py): the lesson page's and the docs page's math is laid out as MathML, and no
    resource comes from anywhere but the file system. A screenshot of the lesson is saved in tmp_path."""
    from tests.test_browser import start_chromium  # the one way the tests start Chromium (and say why it fails)

    out = course.build_site(site_repo(tmp_path), out="site", params="smoke", modules=[], log=None)
    driver = start_chromium(tmp_path)
    try:
        for page, n_min in (("lessons/00_tiny.html", 4), ("guide.html", 2)):
            driver.get((out / page).as_uri())
            got = driver.execute_script(_MATH_LAYOUT_JS)
            assert got["n"] >= n_min and got["visible"] == got["n"], (page, got)
            assert got["fracs"] and all(f["stacked"] for f in got["fracs"]), (page, got["fracs"])
            assert got["blocks"] and all(d.split()[0] == "block" for d in got["blocks"]), (page, got["blocks"])
            assert got["fallback"] == 0, page
            assert all(r.startswith("file://") for r in got["resources"]), (page, got["resources"])
            if page.startswith("lessons/"):
                driver.save_screenshot(str(tmp_path / "lesson_math.png"))
    finally:
        driver.quit()
