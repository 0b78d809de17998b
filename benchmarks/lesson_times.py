"""How long each lesson takes on this machine's CPU: the times quoted in the syllabus (docs/course.md).

Executes every lesson notebook through papermill exactly as a student or a teacher preparing a class
would — at its **default parameters** (the laptop-CPU defaults of its ``parameters`` cell; only
``run_dir`` / ``out_dir`` move to a temporary folder) and at its **smoke parameters**
(``configs/smoke/<lesson>.yaml``, what CI runs) — and times the whole notebook, exercises' solutions
included. The execution is the site's (:func:`hashlib_vit.course.execute_lesson` with
:func:`~hashlib_vit.course.lesson_parameters`, forced, into a temporary cache). Writes ``results/benchmarks/lessons.json`` and ``lessons.md``, and rewrites the table between
the markers ``<!-- lesson-times:start -->`` / ``<!-- lesson-times:end -->`` in docs/course.md, so the
syllabus quotes measured numbers, never typed ones.

    python benchmarks/lesson_times.py                       # every lesson, defaults and smoke
    python benchmarks/lesson_times.py --only 00_quickstart --scales smoke
    python benchmarks/lesson_times.py --no-update-syllabus  # measure only

A lesson that fails is recorded with its error and the script exits non-zero after the others ran.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hashlib_vit.course import execute_lesson, lesson_parameters  # noqa: E402
from hashlib_vit.utils import atomic_write_text  # noqa: E402

START, END = "<!-- lesson-times:start -->", "<!-- lesson-times:end -->"


def time_lesson(nb: Path, scale: str) -> dict:
    """Execute one lesson at one scale in a temporary folder; returns its row (seconds, ok, error)."""
    params = lesson_parameters(nb, scale, ROOT)
    with tempfile.TemporaryDirectory(prefix=f"lesson-{nb.stem}-") as tmp:
        t0 = time.perf_counter()
        try:
            execute_lesson(nb, tmp, params, root=ROOT, force=True, log=None)
            error = None
        except Exception as e:  # recorded; the other lessons still run
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        seconds = time.perf_counter() - t0
    row = {"lesson": nb.stem, "scale": scale, "seconds": round(seconds, 1), "ok": error is None, "error": error}
    print(f"{nb.stem:22s} {scale:8s} {seconds:7.1f} s {'ok' if error is None else error}", flush=True)
    return row


def minutes(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def table(rows: list[dict], machine: dict) -> str:
    by = {(r["lesson"], r["scale"]): r for r in rows}
    lessons = sorted({r["lesson"] for r in rows})
    lines = [f"Measured by `python benchmarks/lesson_times.py` on {machine['cpu']} ({machine['cores']} CPU "
             f"cores, no GPU), {machine['date']}; the whole notebook, exercises' solutions included.", "",
             "| lesson | default parameters | smoke parameters (CI) |", "|---|---|---|"]
    for stem in lessons:
        cells = []
        for scale in ("defaults", "smoke"):
            r = by.get((stem, scale))
            cells.append("—" if r is None else minutes(r["seconds"]) if r["ok"] else f"failed ({r['error']})")
        lines.append(f"| `{stem}` | {cells[0]} | {cells[1]} |")
    total = {s: sum(r["seconds"] for r in rows if r["scale"] == s and r["ok"]) if any(r["scale"] == s for r in rows)
             else None for s in ("defaults", "smoke")}
    lines.append(f"| **all lessons** | {minutes(total['defaults'])} | {minutes(total['smoke'])} |")
    return "\n".join(lines)


def update_syllabus(path: Path, text: str) -> None:
    doc = path.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{path}: the markers {START} / {END} are missing; the table was not written there")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(path, f"{head}{START}\n{text}\n{END}{tail}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="lesson stems (default: every notebook)")
    ap.add_argument("--scales", nargs="+", default=["defaults", "smoke"], choices=["defaults", "smoke"])
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--no-update-syllabus", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.only:
        unknown = set(args.only) - {nb.stem for nb in notebooks}
        if unknown:
            raise SystemExit(f"unknown lesson(s) {sorted(unknown)}; lessons: {[nb.stem for nb in notebooks]}")
        notebooks = [nb for nb in notebooks if nb.stem in args.only]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or platform.machine()) \
        if Path("/proc/cpuinfo").exists() else platform.processor() or platform.machine()
    machine = {"cpu": cpu, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
               "python": platform.python_version()}
    rows = [time_lesson(nb, scale) for nb in notebooks for scale in args.scales]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "lessons.json", json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    text = table(rows, machine)
    atomic_write_text(out / "lessons.md", "# Lesson times\n\n" + text + "\n")
    if not args.no_update_syllabus and not args.only:
        update_syllabus(ROOT / "docs" / "course.md", text)
    print(text)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
