"""The course built from the lesson notebooks: its exercises, the student edition and the rendered site.

**Exercises** (the convention every lesson follows; docs/course.md): near the end of a lesson, before
``## Where next``, a section ``## Exercises`` holds 2–4 exercises. An exercise is one markdown cell tagged
``exercise`` whose source starts with ``### Exercise N.k — Title`` (N the lesson number without leading
zero, k = 1, 2, ...; an em dash), followed by one or more cells tagged ``solution``: code cells with the
worked, asserted solution and optionally a markdown cell with the explanation. :func:`parse_exercises`
reads and checks this structure.

**The student edition** (:func:`student_edition`, ``hashlib-vit student-edition``, ``make student``) is
the same notebooks run through nbconvert's :class:`~nbconvert.exporters.NotebookExporter` with two
preprocessors: :class:`StubSolutions` (each solution code cell becomes a stub that calls
:func:`hashlib_vit.notebook.exercise_unanswered`, each solution markdown cell a "your answer" placeholder)
and nbconvert's :class:`~nbconvert.preprocessors.ClearOutputPreprocessor` (outputs and execution counts).
Exercise cells and all tags are kept, so a teacher can still see which cells were solutions.

**The site** (:func:`build_site`, ``hashlib-vit site``, ``make site``): every lesson executed with
papermill (its defaults, or the smoke parameters ``configs/smoke/NN_name.yaml``) into a cache keyed by
the notebook's sha256 and the parameters, the docs staged into a build folder with their links mapped to
the site's layout, one API reference page per subpackage and top-level module (mkdocstrings), then
``mkdocs build`` with the material theme and its ``offline`` plugin and ``use_directory_urls: false``, so
the site opens from the file system with no server. The math (the lessons' ``$...$`` / ``$$...$$``, the docs
pages' through pymdownx.arithmatex) is converted to MathML at build time (:func:`render_site_math`), so it
needs no MathJax and no network when viewed. :func:`site_problems` checks the result (every
internal link and anchor resolves, no asset is fetched from the network).
"""
from __future__ import annotations

import hashlib
import html.parser
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import unquote, urlsplit

from .errors import DataError, HashlibVitError
from .utils import atomic_write_text

EXERCISE_TAG = "exercise"
SOLUTION_TAG = "solution"
HEADING = re.compile(r"^###\s+Exercise\s+(\d+)\.(\d+)\s+—\s+(\S.*?)\s*$")
LESSON_NAME = re.compile(r"^(\d\d)_\w+$")
# the WebWorker shim for file:// (npm iframe-worker 1.0.4, MIT; hashlib_vit/course_assets/README.txt)
SHIM = Path(__file__).resolve().parent / "course_assets" / "iframe-worker-shim.js"


class LessonFailed(HashlibVitError, RuntimeError):
    """A lesson notebook raised while the site was being built (names the notebook, the cell index and its
    first source line, and the error)."""


# ----------------------------------------------------------------------------- exercises
@dataclass
class Exercise:
    """One exercise of a lesson: ``id`` ``"N.k"``, its title, the index of its markdown cell and the
    indices of its solution cells (code and markdown) in the notebook's ``cells``."""

    id: str
    title: str
    cell: int
    solutions: list[int] = field(default_factory=list)
    solution_code: list[int] = field(default_factory=list)


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def lesson_number(path: str | os.PathLike) -> int | None:
    """The lesson number of ``NN_name.ipynb`` (``3`` for ``03_aevit_hsc.ipynb``); None for other names."""
    m = LESSON_NAME.match(Path(path).stem)
    return int(m.group(1)) if m else None


def parse_exercises(nb, name: str = "notebook", lesson: int | None = None) -> list[Exercise]:
    """The exercises of a notebook (a dict or nbformat node), in order, with their solution cells.

    ``name`` is used in messages; ``lesson`` is the expected N of ``Exercise N.k`` (None: not checked).
    Raises :class:`~hashlib_vit.errors.DataError` naming the notebook and the cell index for: an
    ``exercise`` cell that is not markdown or does not start with ``### Exercise N.k — Title``; a wrong
    number (N not the lesson's, or k not the next one); a duplicate id; a cell tagged both ``exercise``
    and ``solution``; a ``solution`` cell with no exercise before it; an exercise with no solution code
    cell.
    """
    out: list[Exercise] = []
    seen: dict[str, int] = {}
    for i, cell in enumerate(nb["cells"]):
        tags = _tags(cell)
        where = f"{name}, cell {i}"
        if EXERCISE_TAG in tags and SOLUTION_TAG in tags:
            raise DataError(f"{where} is tagged both '{EXERCISE_TAG}' and '{SOLUTION_TAG}'; an exercise's task "
                            "and its solution are separate cells")
        if EXERCISE_TAG in tags:
            first = _source(cell).lstrip("\n").split("\n", 1)[0]
            if cell["cell_type"] != "markdown":
                raise DataError(f"{where} is tagged '{EXERCISE_TAG}' but is a {cell['cell_type']} cell; the "
                                "exercise's task is a markdown cell starting '### Exercise N.k — Title'")
            m = HEADING.match(first)
            if not m:
                raise DataError(f"{where} is tagged '{EXERCISE_TAG}' but starts {first[:60]!r}; expected "
                                "'### Exercise N.k — Title' (N the lesson number, k = 1, 2, ..., an em dash)")
            n, k, title = int(m.group(1)), int(m.group(2)), m.group(3)
            ex_id = f"{n}.{k}"
            if ex_id in seen:
                raise DataError(f"{where}: duplicate exercise id {ex_id} (already at cell {seen[ex_id]})")
            if lesson is not None and n != lesson:
                raise DataError(f"{where}: Exercise {ex_id} has the wrong lesson number {n}; this is lesson "
                                f"{lesson}, so its exercises are {lesson}.1, {lesson}.2, ...")
            expected_k = len(out) + 1
            if k != expected_k:
                raise DataError(f"{where}: Exercise {ex_id} has the wrong number; the exercises are numbered "
                                f"1, 2, ... in order, so this one should be {n}.{expected_k}")
            seen[ex_id] = i
            out.append(Exercise(ex_id, title, i))
        elif SOLUTION_TAG in tags:
            if not out:
                raise DataError(f"{where} is tagged '{SOLUTION_TAG}' but no exercise cell comes before it "
                                "(a markdown cell tagged 'exercise' starting '### Exercise N.k — Title')")
            out[-1].solutions.append(i)
            if cell["cell_type"] == "code":
                out[-1].solution_code.append(i)
    for ex in out:
        if not ex.solution_code:
            raise DataError(f"{name}, cell {ex.cell}: Exercise {ex.id} has no solution code cell (a code cell "
                            f"tagged '{SOLUTION_TAG}' after it, holding the worked solution and its assert)")
    return out


def read_exercises(path: str | os.PathLike) -> list[Exercise]:
    """:func:`parse_exercises` of the notebook file ``path`` (its lesson number from its name)."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read notebook {path}: {e}") from e
    return parse_exercises(nb, name=str(path), lesson=lesson_number(path))


# ----------------------------------------------------------------------------- student edition
def stub_code(exercise_id: str, part: int = 1, parts: int = 1) -> str:
    """The student edition's code cell in place of a solution code cell of exercise ``exercise_id``."""
    which = f" (part {part} of {parts})" if parts > 1 else ""
    return (f"# Exercise {exercise_id}{which}: replace the two lines below by your answer (the task is in the "
            f"exercise's cell above), then run this cell.\n"
            f"from hashlib_vit.notebook import exercise_unanswered\n"
            f'exercise_unanswered("{exercise_id}")')


def stub_markdown(exercise_id: str) -> str:
    """The student edition's markdown cell in place of a solution markdown cell (the explanation)."""
    return (f"**Your answer to Exercise {exercise_id}:** *double-click this cell and replace this line by your "
            f"explanation.*")


def _preprocessor_base():
    from nbconvert.preprocessors import Preprocessor

    return Preprocessor


class StubSolutions(_preprocessor_base()):
    """nbconvert preprocessor: replace every ``solution`` cell by the student's stub.

    Code cells get :func:`stub_code` (a call to :func:`hashlib_vit.notebook.exercise_unanswered`, which
    stops the notebook with a message for the student) and lose the solution's outputs; markdown cells get
    :func:`stub_markdown`. The
    exercise structure is checked first (:func:`parse_exercises`; ``resources["metadata"]["name"]`` names
    the notebook and gives the lesson number). Tags and the exercise cells are kept.
    """

    def preprocess(self, nb, resources):
        name = (resources or {}).get("metadata", {}).get("name") or "notebook"
        path = (resources or {}).get("metadata", {}).get("path") or ""
        self._owner: dict[int, tuple[str, int, int]] = {}
        for ex in parse_exercises(nb, name=str(Path(path) / f"{name}.ipynb") if path else name,
                                  lesson=lesson_number(name)):
            for part, i in enumerate(ex.solution_code, 1):
                self._owner[i] = (ex.id, part, len(ex.solution_code))
            for i in ex.solutions:
                self._owner.setdefault(i, (ex.id, 1, 1))
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if SOLUTION_TAG in _tags(cell):
            ex_id, part, parts = self._owner[index]
            if cell.cell_type == "code":  # a stub never shows the solution's outputs
                cell.source, cell.outputs, cell.execution_count = stub_code(ex_id, part, parts), [], None
            else:
                cell.source = stub_markdown(ex_id)
            cell.pop("attachments", None)
        return cell, resources


def student_notebook(path: str | os.PathLike) -> str:
    """The student edition of one notebook, as notebook JSON text (nbformat 4, ``indent=1``)."""
    from nbconvert.exporters import NotebookExporter
    from nbconvert.preprocessors import ClearOutputPreprocessor

    exporter = NotebookExporter()
    exporter.register_preprocessor(StubSolutions(), enabled=True)
    exporter.register_preprocessor(ClearOutputPreprocessor(), enabled=True)
    body, _ = exporter.from_filename(str(path))
    return body if body.endswith("\n") else body + "\n"


STUDENT_README = """# The student edition of the hashlib_vit course

Built by `make student` (`hashlib-vit student-edition`) from the lesson notebooks in `notebooks/`;
rebuilt from scratch each time, so do not edit here what you want to keep (copy it first).

* Every worked solution is replaced by a cell that stops with *"Exercise N.k is not answered yet"*:
  write your answer in that cell in place of the stub and run it. Explanations go in the
  *"Your answer"* markdown cells. The task of each exercise is in the `### Exercise N.k` cell above it.
* Outputs are cleared: run each lesson from the top (JupyterLab: `make lab LAB_DIR=student` from the
  project root).
  Paths such as `results/...` are taken from the project root, as in the teacher's notebooks.
* The order of the lessons, their goals and how long each takes are in `docs/course.md`.
"""


def lesson_notebooks(root: str | os.PathLike) -> list[Path]:
    """The lesson notebooks ``notebooks/NN_name.ipynb`` under the project ``root``, in lesson order."""
    return sorted(p for p in (Path(root) / "notebooks").glob("*.ipynb") if LESSON_NAME.match(p.stem))


def student_edition(notebooks: Iterable[str | os.PathLike], out: str | os.PathLike,
                    log: Callable[[str], None] | None = print) -> list[Path]:
    """Write the student edition of ``notebooks`` into the folder ``out`` (plus a README.md); returns the
    written notebooks. Every notebook is checked and converted before anything is written, so a malformed
    one (:class:`~hashlib_vit.errors.DataError`) leaves ``out`` as it was."""
    notebooks = [Path(p) for p in notebooks]
    if not notebooks:
        raise DataError("no notebooks given for the student edition")
    converted = [(nb, student_notebook(nb)) for nb in notebooks]
    out = Path(out)
    written = []
    for nb, text in converted:
        atomic_write_text(out / nb.name, text)
        written.append(out / nb.name)
        if log:
            log(f"student edition: {out / nb.name} ({len(read_exercises(nb))} exercises)")
    atomic_write_text(out / "README.md", STUDENT_README)
    return written


# ----------------------------------------------------------------------------- executing the lessons
def _output_params(nb_path: Path) -> list[str]:
    import papermill

    declared = papermill.inspect_notebook(str(nb_path))
    return [p for p in ("run_dir", "out_dir") if p in declared]


def lesson_parameters(nb_path: str | os.PathLike, params: str = "defaults", root: str | os.PathLike = ".") -> dict:
    """The parameters a lesson runs with for the site: ``{}`` (its own defaults) or ``"smoke"`` (the file
    ``configs/smoke/NN_name.yaml`` under ``root``). Raises ConfigError for another value, DataError for
    a missing smoke file."""
    from .config import load_yaml
    from .errors import bad_choice

    if params == "defaults":
        return {}
    if params != "smoke":
        raise bad_choice("--params", params, ["defaults", "smoke"])
    f = Path(root) / "configs" / "smoke" / f"{Path(nb_path).stem}.yaml"
    if not f.is_file():
        raise DataError(f"no smoke parameters for {nb_path}: {f} is missing")
    return dict(load_yaml(f, what="smoke parameters") or {})


def _cache_key(nb_path: Path, parameters: dict) -> str:
    h = hashlib.sha256(nb_path.read_bytes()).hexdigest()
    p = json.dumps(parameters, sort_keys=True, default=str)
    return hashlib.sha256(f"{h}\n{p}".encode()).hexdigest()[:20]


def _failed_cell(executed: Path, err) -> tuple[int | None, str]:
    """(index in the source notebook, first source line) of the cell that raised, from papermill's
    executed copy (its injected-parameters and error-marker cells left out)."""
    try:
        cells = json.loads(executed.read_text(encoding="utf-8"))["cells"]
        cells = [c for c in cells if not {"injected-parameters", "papermill-error-cell-tag"} & set(_tags(c))]
        for i, c in enumerate(cells):
            if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
                return i, _source(c).strip().split("\n", 1)[0]
    except (OSError, ValueError, KeyError):
        pass
    src = getattr(err, "source", "") or ""
    return None, src.strip().split("\n", 1)[0]


def execute_lesson(nb_path: str | os.PathLike, cache_dir: str | os.PathLike, parameters: dict | None = None,
                   root: str | os.PathLike = ".", force: bool = False,
                   log: Callable[[str], None] | None = print) -> Path:
    """The executed copy of one lesson, from the cache when the notebook and parameters are unchanged.

    Runs papermill (kernel ``python3``, working directory ``root``) with ``parameters`` plus the lesson's
    output folder (``run_dir`` / ``out_dir``) redirected to ``cache_dir/runs/NN_name`` (emptied first) so the
    site never writes into ``results/``. The cache file is ``cache_dir/executed/NN_name.<key>.ipynb``, ``key`` from the
    notebook's sha256 and the parameters. Raises :class:`LessonFailed` naming the notebook, the failing
    cell's index (in the notebook as stored) and first line, and the error.
    """
    import papermill

    nb_path, cache_dir = Path(nb_path), Path(cache_dir).resolve()
    parameters = dict(parameters or {})
    for p in _output_params(nb_path):
        parameters[p] = str(cache_dir / "runs" / nb_path.stem)
    key = _cache_key(nb_path, parameters)
    cached = cache_dir / "executed" / f"{nb_path.stem}.{key}.ipynb"
    if cached.is_file() and not force:
        if log:
            log(f"site: {nb_path.name}: unchanged, executed copy from the cache")
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    runs = cache_dir / "runs" / nb_path.stem
    if runs.exists():  # a fresh run: an earlier build's run directory would be resumed or refused
        shutil.rmtree(runs)
    tmp = cached.with_name(f".{nb_path.stem}.{key}.running.ipynb")  # not matched by the cache glob
    if log:
        log(f"site: executing {nb_path.name} with {parameters or 'its defaults'}")
    try:
        papermill.execute_notebook(str(nb_path), str(tmp), parameters=parameters, kernel_name="python3",
                                   progress_bar=False, cwd=str(root), log_output=False)
    except papermill.PapermillExecutionError as e:
        index, first = _failed_cell(tmp, e)
        cell = f"cell {index}" if index is not None else f"execution count {e.exec_count}"
        raise LessonFailed(f"lesson {nb_path} failed at {cell} ({first!r}): {e.ename}: {e.evalue} "
                           f"(the executed copy with the error is {tmp})") from None
    for old in cached.parent.glob(f"{nb_path.stem}.*.ipynb"):
        old.unlink()
    os.replace(tmp, cached)
    return cached


# ----------------------------------------------------------------------------- staging the site
_MD_LINK = re.compile(r"(!?\[[^\]\n]*\]\()([^)\s]+)(\s+\"[^\"]*\")?\)")
_CODE_PATH = re.compile(r"`((?:docs/[\w./-]+\.md|notebooks/\d\d_\w+\.ipynb|README\.md)(?:#[\w-]+)?)`")


def _site_path(repo_path: str) -> str | None:
    """Where a repository file lives in the staged docs folder (None: not part of the site)."""
    repo_path = posixpath.normpath(repo_path)
    if repo_path == "README.md":
        return "index.md"
    if repo_path.startswith("docs/"):
        return repo_path[len("docs/"):]
    if repo_path.startswith("notebooks/") and LESSON_NAME.match(Path(repo_path).stem) and repo_path.endswith(".ipynb"):
        return "lessons/" + Path(repo_path).name
    return None


def _is_external(target: str) -> bool:
    return bool(urlsplit(target).scheme) or target.startswith(("#", "//", "mailto:"))


def rewrite_links(text: str, page_repo_path: str, html_targets: bool = False,
                  linkify: Callable[[str], bool] | None = None) -> str:
    """Markdown ``text`` of the repository file ``page_repo_path`` with its relative links pointing where
    the targets are in the site (``docs/X.md`` -> ``X.md``, ``notebooks/NN.ipynb`` -> ``lessons/NN.ipynb``,
    ``README.md`` -> ``index.md``); links to files outside the site become plain text naming the path.
    ``html_targets``: write the built page names (``.html``) — for notebook markdown, which mkdocs does not
    rewrite. ``linkify``: also turn inline-code paths of site pages (`` `docs/X.md` ``, repository-relative)
    into links where ``linkify(repo_path)`` is true (e.g. the file exists).
    Fenced code blocks are left alone."""
    page_dir = posixpath.dirname(page_repo_path)
    page_site = _site_path(page_repo_path) or page_repo_path
    site_dir = posixpath.dirname(page_site)

    def target_for(target: str) -> str | None:
        path, _, anchor = target.partition("#")
        repo = posixpath.normpath(posixpath.join(page_dir, unquote(path)))
        site = _site_path(repo)
        if site is None:
            return None
        if html_targets:
            site = re.sub(r"\.(md|ipynb)$", ".html", site)
        rel = posixpath.relpath(site, site_dir or ".")
        return rel + (f"#{anchor}" if anchor else "")

    def link(m):
        prefix, target, title = m.group(1), m.group(2), m.group(3) or ""
        if _is_external(target):
            return m.group(0)
        new = target_for(target)
        if new is None:
            label = prefix[1:-2] if not prefix.startswith("!") else prefix[2:-2]
            return f"{label} (`{posixpath.normpath(posixpath.join(page_dir, target))}` in the repository)"
        return f"{prefix}{new}{title})"

    def code(m):
        if not linkify(m.group(1).partition("#")[0]):
            return m.group(0)
        new = target_for(posixpath.relpath(m.group(1), page_dir or "."))
        return f"[`{m.group(1)}`]({new})" if new else m.group(0)

    out, fence = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        elif not fence:
            line = _MD_LINK.sub(link, line)
            if linkify:
                line = re.sub(r"(?<!\[)" + _CODE_PATH.pattern, code, line)
        out.append(line)
    return "\n".join(out)


# ----------------------------------------------------------------------------- math on the site
# The lessons' TeX ($...$, $$...$$) is rendered at build time to MathML (latex2mathml), which Chromium and
# Firefox draw natively (MathML Core): no script, no font or file from a server, works from file://.
# Both sources mark their math up the way pymdownx.arithmatex's generic mode does -- the docs pages through
# arithmatex itself, the notebooks' markdown cells through mark_math -- and render_math_html converts every
# marked expression of the built pages.
_MATH_TOKENS = re.compile(
    r"(?P<fence>^[ \t]*(?P<f>`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*(?P=f)[ \t]*$|\Z))"  # fenced code: left alone
    r"|(?P<span>(?P<ticks>`+)(?!`)(?:(?!\n[ \t]*\n).)*?(?<!`)(?P=ticks)(?!`))"  # a code span: left alone
    r"|(?P<esc>\\\$)"  # an escaped dollar: a dollar sign
    r"|(?P<display>\$\$(?P<dtex>[^`]+?)\$\$)"
    # inline: no space inside the dollars, no digit after the closing one ("$5 and $10" is not math);
    # no backtick inside math, so a code span after a lone dollar stays code
    r"|(?P<inline>(?<![\\$])\$(?=[^\s$])(?P<itex>[^\n$`]*?[^\s\\$`])\$(?![\d$]))",
    re.M | re.S)
_MATH_ESCAPES = {c: f"&#{ord(c)};" for c in "\\$*_`[]|~^#!{}"}
_MATH_MARKUP = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
_MATHJAX_LEFTOVER = re.compile(r'<!-- Load mathjax -->\s*<script src="">\s*</script>\s*'
                               r'(?:<!-- MathJax configuration -->\s*<script type="text/x-mathjax-config">.*?</script>\s*'
                               r'<!-- End of mathjax configuration -->)?', re.S)
MATH_CSS = """/* math rendered at build time to MathML (hashlib_vit.course.render_math_html) */
math { font-family: "Latin Modern Math", "STIX Two Math", "DejaVu Math TeX Gyre", "Cambria Math", math; font-size: 1.1em; }
math[display="block"] { margin: 0.8em 0; overflow-x: auto; overflow-y: hidden; }
.math-fallback { border: 1px dashed #c62828; padding: 0 0.2em; white-space: pre-wrap; }
"""


def mark_math(text: str) -> str:
    """Markdown ``text`` with its TeX math (``$...$`` inline, ``$$...$$`` display, as in Jupyter) marked up
    like pymdownx.arithmatex's generic mode: ``<span class="arithmatex">\\(...\\)</span>`` (display:
    ``\\[...\\]``, still a span, so a formula inside a list item or a paragraph stays there), the TeX
    written with character references so no markdown parser changes it. Fenced code, code spans and
    ``\\$`` are left alone; a dollar followed by a space or a closing dollar followed by a digit is not
    math (prices such as "$5 and $10")."""
    def sub(m):
        if not (m.group("display") or m.group("inline")):
            return m.group(0)
        display = m.group("display") is not None
        tex = (m.group("dtex") if display else m.group("itex")).replace("\n", " ")
        body = ("\\[" + tex + "\\]") if display else ("\\(" + tex + "\\)")
        body = html.escape(body, quote=False)
        return '<span class="arithmatex">' + "".join(_MATH_ESCAPES.get(c, c) for c in body) + "</span>"

    return _MATH_TOKENS.sub(sub, text)


_VARIANT = re.compile(r'<(mi|mn|mo)( mathvariant="([a-z-]+)")>([^<]*)</\1>')
_VARIANT_NAMES = {"bold": "BOLD", "italic": "ITALIC", "bold-italic": "BOLD ITALIC", "script": "SCRIPT",
                  "bold-script": "BOLD SCRIPT", "fraktur": "FRAKTUR", "bold-fraktur": "BOLD FRAKTUR",
                  "double-struck": "DOUBLE-STRUCK", "sans-serif": "SANS-SERIF", "bold-sans-serif": "SANS-SERIF BOLD",
                  "sans-serif-italic": "SANS-SERIF ITALIC", "sans-serif-bold-italic": "SANS-SERIF BOLD ITALIC",
                  "monospace": "MONOSPACE"}
_DIGITS = "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE".split()


def _variant_char(c: str, variant: str) -> str:
    """``c`` (an ASCII letter or digit) as its Unicode mathematical alphanumeric symbol in ``variant``
    (``𝔼`` for double-struck E, ``ℒ`` for script L); ``c`` itself when there is none."""
    import unicodedata

    if not (c.isascii() and c.isalnum()):
        return c
    what = f"DIGIT {_DIGITS[int(c)]}" if c.isdigit() else f"{'CAPITAL' if c.isupper() else 'SMALL'} {c.upper()}"
    v = _VARIANT_NAMES[variant]
    names = [f"MATHEMATICAL {v} {what}", f"{v} {what}"]  # the letterlike symbols fill the block's holes
    if v == "FRAKTUR":
        names.append(f"BLACK-LETTER {what}")
    if (v, c) == ("ITALIC", "h"):
        names.append("PLANCK CONSTANT")
    for name in names:
        try:
            return unicodedata.lookup(name)
        except KeyError:
            pass
    return c


def _unicode_variants(mathml: str) -> str:
    """MathML Core (what Chromium draws) knows only ``mathvariant="normal"``: write the other variants
    (``\\mathbb``, ``\\mathcal``, ``\\mathbf``, ...) as Unicode mathematical alphanumeric characters."""
    def sub(m):
        tag, variant, text = m.group(1), m.group(3), m.group(4)
        if variant not in _VARIANT_NAMES:
            return m.group(0)
        return f'<{tag} mathvariant="normal">{"".join(_variant_char(c, variant) for c in text)}</{tag}>'

    return _VARIANT.sub(sub, mathml)


def tex_to_mathml(tex: str, display: bool = False) -> str:
    """MathML (a ``<math>`` element, ``display="block"`` or ``"inline"``) for the TeX ``tex``, by
    latex2mathml. Raises ValueError when it cannot convert it (a syntax error, or a command it does not
    know, which it would otherwise show as the command's name)."""
    from latex2mathml.converter import convert

    try:
        out = convert(tex, display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises its own exception types for malformed TeX
        raise ValueError(f"{type(e).__name__}: {e}".rstrip(": ")) from None
    unknown = re.search(r">[^<]*?(\\[A-Za-z]+)", out)
    if unknown:
        raise ValueError(f"unknown command {unknown.group(1)}")
    return _unicode_variants(out)


def render_math_html(page: str) -> tuple[str, int, list[str]]:
    """A built page's HTML with every arithmatex-marked expression (``\\(...\\)``, ``\\[...\\]``, or a bare
    ``$...$`` / ``$$...$$`` / ``\\begin{env}...\\end{env}``) replaced by MathML, and mkdocs-jupyter's
    MathJax loader (an empty ``src`` offline) removed. An expression that cannot be converted keeps its
    TeX in a visible ``<code class="math-fallback">``. Returns (html, expressions converted, one
    ``"TeX: reason"`` per failure)."""
    done, failed = 0, []

    def sub(m):
        nonlocal done
        tex = html.unescape(m.group(2)).strip()
        display = m.group(1) == "div"
        for left, right, disp in (("\\(", "\\)", False), ("\\[", "\\]", True), ("$$", "$$", True), ("$", "$", False)):
            if tex.startswith(left) and tex.endswith(right) and len(tex) >= len(left) + len(right):
                tex, display = tex[len(left):len(tex) - len(right)].strip(), disp
                break
        try:
            out = tex_to_mathml(tex, display)
        except ValueError as e:
            failed.append(f"{tex}: {e}")
            shown = f"$${tex}$$" if display else f"${tex}$"
            return (f'<code class="math-fallback" title="{html.escape(str(e))} (not rendered)">'
                    f"{html.escape(shown, quote=False)}</code>")
        done += 1
        return out

    page = _MATHJAX_LEFTOVER.sub("", page)
    return _MATH_MARKUP.sub(sub, page), done, failed


# Sphinx cross-reference roles in the docstrings (":func:`evaluate`") reach the API pages as the role's name
# before a code span; the code span alone is what a reader needs
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):(?=<code>)")


def tidy_roles(html_text: str) -> str:
    """Drop the Sphinx role prefixes (``:func:``, ``:class:``, ...) left in front of code spans of a built
    page; the code span stays."""
    return _ROLE.sub("", html_text)


def render_site_math(site: str | os.PathLike, log: Callable[[str], None] | None = print) -> tuple[int, list[str]]:
    """:func:`render_math_html` (after :func:`tidy_roles`) over every page of a built site, in place; returns
    (expressions converted, ``"page: TeX: reason"`` per failure), and logs the counts and each failure."""
    site = Path(site)
    done, failed = 0, []
    for p in sorted(site.rglob("*.html")):
        text = p.read_text(encoding="utf-8")
        new, n, bad = render_math_html(tidy_roles(text))
        if new != text:
            p.write_text(new, encoding="utf-8")
        done += n
        failed += [f"{p.relative_to(site).as_posix()}: {b}" for b in bad]
    if log:
        log(f"site: math: {done} expressions rendered as MathML, {len(failed)} kept as TeX")
        for f in failed:
            log(f"site: math not rendered (its TeX is shown): {f}")
    return done, failed


def _site_notebook(executed: Path, dest: Path, repo_path: str, edition: str = "teacher") -> None:
    """Copy an executed lesson for mkdocs-jupyter: links mapped to the built pages, and the widget state and
    widget views dropped (they would load the widget manager from a CDN; the text fallback stays). With
    ``edition="student"`` every solution cell shows the student edition's stub (:class:`StubSolutions`) with
    its outputs cleared; the lesson's own outputs stay."""
    nb = json.loads(executed.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)
    if edition == "student":
        import nbformat

        nb, _ = StubSolutions().preprocess(nbformat.from_dict(nb), {"metadata": {"name": Path(repo_path).stem}})
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = mark_math(rewrite_links(_source(cell), repo_path, html_targets=True))
        outputs = []
        for o in cell.get("outputs", []):
            data = o.get("data")
            if data is not None:
                data.pop("application/vnd.jupyter.widget-view+json", None)
                if not data:
                    continue
            outputs.append(o)
        if "outputs" in cell:
            cell["outputs"] = outputs
    atomic_write_text(dest, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def api_modules(root: str | os.PathLike) -> list[str]:
    """The package's subpackages and top-level modules (one API reference page each), sorted."""
    pkg = Path(root) / "hashlib_vit"
    subs = sorted(p.name for p in pkg.iterdir() if (p / "__init__.py").is_file() and p.name != "reference")
    mods = sorted(p.stem for p in pkg.glob("*.py") if not p.stem.startswith("_"))
    return [f"hashlib_vit.{m}" for m in subs + mods]


def _title(md: Path) -> str:
    for line in md.read_text(encoding="utf-8").split("\n"):
        if line.startswith("# "):
            return line[2:].strip()
    return md.stem.replace("_", " ")


def _lesson_title(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            for line in _source(c).split("\n"):
                if line.startswith("# "):
                    return line[2:].strip()
    return nb_path.stem


def _index_page(root: Path, lessons: list[Path], pages: list[str], modules: list[str], has_course: bool,
                in_site: Callable[[str], bool], edition: str = "teacher", params: str = "defaults") -> str:
    readme = root / "README.md"
    body = readme.read_text(encoding="utf-8") if readme.is_file() else "# hashlib_vit\n"
    lines = body.split("\n")
    title = lines[0] if lines and lines[0].startswith("# ") else "# hashlib_vit"
    rest = "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines)
    toc = ["", "!!! info \"This site\"", "    Built by `make site` from the repository: "
           + ("the [course syllabus](course.md), " if has_course else "")
           + "the lessons executed, the documentation pages and the API reference.", "",
           "    * **Lessons:** " + ", ".join(f"[{p.stem}](lessons/{p.name})" for p in lessons),
           "    * **Documentation:** " + ", ".join(f"[{Path(p).stem}]({p})" for p in pages),
           "    * **API reference:** " + ", ".join(f"[{m.split('.')[-1]}](api/{m.split('.')[-1]}.md)"
                                                   for m in modules), ""]
    if edition == "teacher":
        toc += ["!!! warning \"Teacher edition: the exercises' worked solutions are shown\"",
                "    For a site to give students, build the student edition: `make site SITE_EDITION=student` "
                "(the lessons' outputs, every solution replaced by the student's stub).", ""]
    else:
        toc += ["!!! note \"Student edition\"",
                "    The lessons with their outputs; the exercises' solutions are left for you.", ""]
    if params == "smoke":
        toc += ["!!! warning \"Built at the smoke parameters\"",
                "    Every lesson ran at its CI-sized parameters (`configs/smoke/`): minutes of training at most, "
                "so the numbers and the warnings about chance-level runs say nothing about the methods. "
                "`make site` runs the lessons' own defaults.", ""]
    return title + "\n" + "\n".join(toc) + rewrite_links(rest, "README.md", linkify=in_site)


def stage_site(root: str | os.PathLike, executed: dict[Path, Path], stage: str | os.PathLike, site_dir: str | os.PathLike,
               modules: list[str] | None = None, edition: str = "teacher", params: str = "defaults") -> Path:
    """Write the mkdocs project (``mkdocs.yml`` and ``docs/``) into ``stage`` from the repository ``root``
    and the executed lessons ``{source notebook: executed copy}``; returns the mkdocs.yml path.
    ``edition`` ``"teacher"`` (solutions shown) or ``"student"`` (stubs); ``params`` names the scale the
    lessons ran at (the home page says so)."""
    import yaml

    root, stage = Path(root).resolve(), Path(stage)
    if stage.exists():
        shutil.rmtree(stage)
    docs = stage / "docs"
    docs.mkdir(parents=True)
    src_docs = root / "docs"
    pages = []
    lesson_names = {nb.name for nb in executed}

    def in_site(repo_path: str) -> bool:  # a page of this site: a docs file, README, or an executed lesson
        if repo_path.startswith("notebooks/"):
            return Path(repo_path).name in lesson_names
        return (root / repo_path).is_file()

    if src_docs.is_dir():
        for f in sorted(src_docs.rglob("*")):
            rel = f.relative_to(src_docs).as_posix()
            if f.is_dir():
                continue
            (docs / rel).parent.mkdir(parents=True, exist_ok=True)
            if f.suffix == ".md":
                (docs / rel).write_text(rewrite_links(f.read_text(encoding="utf-8"), f"docs/{rel}", linkify=in_site),
                                        encoding="utf-8")
                if rel != "course.md":
                    pages.append(rel)
            else:
                shutil.copy2(f, docs / rel)
    has_course = (docs / "course.md").is_file()
    lessons = sorted(executed)
    for nb in lessons:
        _site_notebook(executed[nb], docs / "lessons" / nb.name, f"notebooks/{nb.name}", edition)
    modules = api_modules(root) if modules is None else modules
    for m in modules:
        (docs / "api").mkdir(exist_ok=True)
        (docs / "api" / f"{m.split('.')[-1]}.md").write_text(f"# `{m}`\n\n::: {m}\n", encoding="utf-8")
    assets = docs / "assets"
    assets.mkdir(exist_ok=True)
    shutil.copy2(SHIM, assets / SHIM.name)  # search from file:// without unpkg.com (material's offline plugin)
    (assets / "math.css").write_text(MATH_CSS, encoding="utf-8")
    (docs / "index.md").write_text(_index_page(root, lessons, pages, modules, has_course, in_site, edition, params), encoding="utf-8")
    nav = [{"Home": "index.md"}]
    if has_course:
        nav.append({"Course": "course.md"})
    if lessons:
        nav.append({"Lessons": [{f"{nb.stem[:2]} · {_lesson_title(nb)}": f"lessons/{nb.name}"} for nb in lessons]})
    if pages:
        nav.append({"Documentation": [{_title(src_docs / p): p} for p in pages]})
    if modules:
        nav.append({"API reference": [{m: f"api/{m.split('.')[-1]}.md"} for m in modules]})
    config = {
        "site_name": "hashlib_vit — ViT deep hashing",
        "docs_dir": "docs",
        "site_dir": str(Path(site_dir).resolve()),
        "use_directory_urls": False,
        "theme": {"name": "material", "font": False, "features": ["navigation.sections", "navigation.top"]},
        "plugins": [
            "search",
            "offline",
            {"mkdocs-jupyter": {"execute": False, "include_source": True, "ignore_h1_titles": False}},
            {"mkdocstrings": {"handlers": {"python": {"paths": [str(root)], "options": {
                "docstring_style": None, "show_submodules": True, "show_source": False,
                "show_root_heading": False, "members_order": "source", "heading_level": 2}}}}},
        ],
        "markdown_extensions": ["admonition", "tables", {"toc": {"permalink": True}},
                                "pymdownx.superfences", "pymdownx.details",
                                {"pymdownx.arithmatex": {"generic": True}}],  # math: render_site_math
        "nav": nav,
        # a local copy, so the offline plugin does not add https://unpkg.com/iframe-worker/shim
        "extra": {"polyfills": [f"assets/{SHIM.name}"]},
        "extra_css": ["assets/math.css"],
    }
    cfg = stage / "mkdocs.yml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return cfg


def build_site(root: str | os.PathLike = ".", out: str | os.PathLike = "site", params: str = "defaults",
               notebooks: Iterable[str | os.PathLike] | None = None, cache_dir: str | os.PathLike | None = None,
               stage: str | os.PathLike | None = None, modules: list[str] | None = None, force: bool = False,
               log: Callable[[str], None] | None = print, edition: str = "teacher") -> Path:
    """Build the course site into ``out`` (relative paths from ``root``); returns its folder.

    ``params``: ``"defaults"`` (each lesson's own parameters) or ``"smoke"`` (``configs/smoke/NN.yaml``).
    ``edition``: ``"teacher"`` (the executed lessons as they are, worked solutions included; the home page
    says so) or ``"student"`` (the same outputs, every solution cell replaced by the student edition's stub).
    ``notebooks``: the lessons (default: every ``notebooks/NN_name.ipynb``). ``cache_dir`` (default
    ``root/.cache/site``) holds the executed lessons, keyed by notebook sha256 + parameters, so a rebuild
    re-executes only what changed (``force``: all of them). ``stage`` (default ``cache_dir/stage``) is the
    generated mkdocs project. ``modules``: the API reference pages (default :func:`api_modules`).
    The math of every page is rendered to MathML afterwards (:func:`render_site_math`; the count and any
    formula it could not convert are logged).
    Raises :class:`LessonFailed` when a lesson raises (naming it and the cell), and
    :class:`~hashlib_vit.errors.HashlibVitError` when mkdocs fails (with its output).
    """
    if edition not in ("teacher", "student"):
        raise DataError(f"site edition {edition!r}: expected 'teacher' or 'student'")
    root = Path(root).resolve()
    out = Path(out) if Path(out).is_absolute() else root / out
    cache_dir = Path(cache_dir) if cache_dir is not None else root / ".cache" / "site"
    stage = Path(stage) if stage is not None else cache_dir / "stage"
    lessons = [Path(p) for p in notebooks] if notebooks is not None else lesson_notebooks(root)
    lessons = [p if p.is_absolute() else root / p for p in lessons]
    for p in lessons:
        if not p.is_file():
            raise DataError(f"lesson notebook {p} does not exist")
    executed = {}
    for nb in lessons:
        executed[nb] = execute_lesson(nb, cache_dir, lesson_parameters(nb, params, root), root=root, force=force,
                                      log=log)
    cfg = stage_site(root, executed, stage, out, modules=modules, edition=edition, params=params)
    if log:
        log(f"site: mkdocs build -> {out}")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--clean", "-f", str(cfg)], cwd=stage,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    if proc.returncode != 0:
        raise HashlibVitError(f"mkdocs build of {cfg} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    # 404.html addresses everything from the server root ("/assets/..."); from the file system it is never shown
    (out / "404.html").unlink(missing_ok=True)
    render_site_math(out, log=log)
    return out


# ----------------------------------------------------------------------------- checking the site
class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key) and (key == "id" or tag == "a"):
                self.ids.add(a[key])
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.refs.append((tag, key, a[key] or ""))
        if tag == "link" and a.get("href"):
            self.refs.append(("link-asset" if "stylesheet" in (a.get("rel") or "") or "icon" in (a.get("rel") or "")
                              else "link", "href", a["href"]))


def site_problems(site: str | os.PathLike) -> list[str]:
    """What stops the built site from working from the file system, one line each (empty: none):
    an internal ``href``/``src`` (relative path, optional ``#anchor``) of a page that does not resolve to a
    file in the site or to an id on the target page; an asset (``src``, a stylesheet or icon ``href``)
    loaded from ``http(s)://``; a missing offline search index (``search/search_index.js``)."""
    site = Path(site)
    pages = sorted(site.rglob("*.html"))
    parsed: dict[Path, _Refs] = {}
    for p in pages:
        r = _Refs()
        r.feed(p.read_text(encoding="utf-8", errors="replace"))
        parsed[p.resolve()] = r
    problems = []
    if not (site / "search" / "search_index.js").is_file():
        problems.append(f"{site}/search/search_index.js is missing: search would need a server (offline plugin)")
    for p in pages:
        rel_page = p.relative_to(site).as_posix()
        for tag, attr, value in parsed[p.resolve()].refs:
            u = urlsplit(value)
            if u.scheme in ("http", "https") or value.startswith("//"):
                if attr == "src" or tag == "link-asset":
                    problems.append(f"{rel_page}: <{tag} {attr}={value!r}> loads an asset from the network")
                continue
            if u.scheme or not value:
                continue  # mailto:, data:, javascript:, ...
            target = (p.parent / unquote(u.path)).resolve() if u.path else p.resolve()
            if u.path and target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{rel_page}: <{tag} {attr}={value!r}> points to a missing file")
                continue
            if u.fragment and target.suffix == ".html":
                ids = parsed.get(target)
                if ids is not None and unquote(u.fragment) not in ids.ids:
                    problems.append(f"{rel_page}: <{tag} {attr}={value!r}>: no id {u.fragment!r} on that page")
    return problems


# ----------------------------------------------------------------------------- command line
def course_main(args) -> int:
    from .utils import project_root

    root = project_root() or Path.cwd()
    if args.command == "student-edition":
        notebooks = args.notebooks or lesson_notebooks(root)
        out = Path(args.out)
        student_edition(notebooks, out if out.is_absolute() else Path.cwd() / out)
        return 0
    out = build_site(root, out=Path(args.out).resolve(), params=args.params, notebooks=[
        Path(p).resolve() for p in args.notebooks] or None, force=args.force, edition=args.edition)
    problems = site_problems(out)
    for line in problems:
        print(f"site problem: {line}", file=sys.stderr)
    print(f"site: {out / 'index.html'} (open it in a browser; no server needed)")
    return 1 if problems else 0
