"""The progress-bar policy (hashlib_vit.utils.progress_mode / progress_bar): widgets in an interactive Jupyter
frontend, nothing when papermill / nbval / nbconvert drive the kernel, text bars on a terminal only, and the
HASHLIB_VIT_PROGRESS override. The notebook tests execute a tiny training notebook headless and check that it
carries no progress-bar fragment (the browser test, tests/test_browser.py, checks that the widget renders)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hashlib_vit.errors import ConfigError
from hashlib_vit.utils import PROGRESS_ENV, headless_parent, parent_program, progress_bar, progress_mode

ROOT = Path(__file__).resolve().parents[1]
PY = "/venv/bin/python3.12"


# ----------------------------------------------------------------------------- the policy
@pytest.mark.parametrize("cmdline, program", [
    ([PY, "/venv/bin/papermill", "in.ipynb", "out.ipynb"], "papermill"),
    ([PY, "-m", "papermill", "in.ipynb", "out.ipynb"], "papermill"),
    ([PY, "-m", "pytest", "--nbval-lax", "nb.ipynb"], "pytest"),
    ([PY, "-u", "-X", "utf8", "/venv/bin/pytest", "-q"], "pytest"),
    (["/venv/bin/pytest"], "pytest"),
    ([PY, "/venv/bin/jupyter-nbconvert", "--to", "notebook", "--execute", "a.ipynb"], "jupyter-nbconvert"),
    ([PY, "/venv/bin/jupyter", "nbconvert", "--execute", "a.ipynb"], "jupyter-nbconvert"),
    ([PY, "-m", "jupyter", "execute", "a.ipynb"], "jupyter-execute"),
    ([PY, "-m", "nbclient", "a.ipynb"], "nbclient"),
    ([PY, "-m", "jupyter", "lab", "--ServerApp.root_dir=/tmp/pytest-of-root/pytest-3/x"], "jupyter-lab"),
    ([PY, "/venv/bin/jupyter-lab", "--no-browser"], "jupyter-lab"),
    ([PY, "/venv/bin/jupyter-notebook"], "jupyter-notebook"),
    ([PY, "-c", "import pytest"], "-c"),
    (["C:\\Python312\\python.exe", "-m", "papermill", "a", "b"], "papermill"),
    ([PY, "/venv/bin/hashlib-vit", "run-grid", "configs/grids/smoke.yaml"], "hashlib-vit"),  # grids, reproduce, site
    ([PY, "-m", "hashlib_vit", "site", "--params", "smoke"], "hashlib_vit"),
    ([], ""),
])
def test_parent_program_names_the_program_not_its_arguments(cmdline, program):
    assert parent_program(cmdline) == program
    assert headless_parent(cmdline) == (program in {"papermill", "pytest", "jupyter-nbconvert", "jupyter-execute",
                                                    "nbclient", "hashlib-vit", "hashlib_vit"})


PAPERMILL = [PY, "/venv/bin/papermill", "a.ipynb", "b.ipynb"]
LAB = [PY, "-m", "jupyter", "lab", "--port", "8888"]


@pytest.mark.parametrize("setting, in_kernel, parent, tty, mode", [
    ("auto", True, PAPERMILL, False, "off"),      # papermill / nbval / nbconvert: nothing at all
    ("auto", True, LAB, False, "widget"),         # JupyterLab, Notebook, VS Code: ipywidgets
    ("auto", True, [], False, "widget"),          # an unknown parent: an interactive frontend
    ("auto", False, PAPERMILL, True, "text"),     # a terminal: text bars
    ("auto", False, [], False, "off"),            # a log file or CI: nothing
    ("", False, [], True, "text"),                # empty means auto
    ("0", True, LAB, True, "off"),                # the override, both ways
    ("off", False, [], True, "off"),
    ("1", True, PAPERMILL, False, "widget"),
    ("on", False, [], False, "text"),
    (" AUTO ", True, PAPERMILL, True, "off"),
])
def test_progress_mode_policy(setting, in_kernel, parent, tty, mode):
    assert progress_mode(setting=setting, in_kernel=in_kernel, parent_cmdline=parent, tty=tty) == mode


def test_progress_mode_in_a_kernel_without_ipywidgets_falls_back_to_text(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    assert progress_mode(setting="auto", in_kernel=True, parent_cmdline=LAB) == "text"


def test_progress_mode_reads_the_environment_and_refuses_bad_values(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "0")
    assert progress_mode(in_kernel=True, parent_cmdline=LAB) == "off"
    monkeypatch.setenv(PROGRESS_ENV, "1")
    assert progress_mode(in_kernel=False, tty=False) == "text"
    monkeypatch.setenv(PROGRESS_ENV, "sometimes")
    with pytest.raises(ConfigError, match="HASHLIB_VIT_PROGRESS='sometimes'"):
        progress_mode()


def test_progress_bar_outside_a_kernel(monkeypatch, capsys):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    # under pytest stderr is captured (no tty): a disabled bar that still counts and accepts postfixes
    bar = progress_bar(total=3, desc="t")
    assert bar.disable
    bar.update(2)
    bar.set_postfix(loss="1.0")
    bar.close()
    assert list(progress_bar(range(3), desc="t")) == [0, 1, 2]
    monkeypatch.setenv(PROGRESS_ENV, "1")
    bar = progress_bar(total=2, desc="forced")
    assert not bar.disable and type(bar).__module__ == "tqdm.std"
    bar.update(2)
    bar.close()
    assert "forced" in capsys.readouterr().err
    assert progress_bar(total=1, enabled=False).disable  # the caller's progress=False wins over the variable


# ----------------------------------------------------------------------------- executed notebooks
TRAIN_CELL = """\
import warnings

from hashlib_vit.config import build_config
from hashlib_vit.experiment import run_experiment

config = build_config(dict(protocol="digits", backbone="vit32_test", bits=16, epochs=2, batch_size=64,
                           device="cpu", seed=0, run_dir={run_dir!r}))
assert config.progress  # the library is asked for its bars: the policy decides what is drawn
with warnings.catch_warnings():  # a two-epoch run may warn that its mAP is near random codes
    warnings.simplefilter("ignore", UserWarning)
    result = run_experiment(config)"""
# tqdm's text (rate, bar, counters) and the widget's plain-text fallback
FRAGMENT = re.compile(r"it/s|s/it|step/s|\d+%\||\|\s*\d+/\d+|HBox\(|FloatProgress|IntProgress")


def _notebook(path: Path, run_dir: Path, *, expected_mode: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    check = nbformat.v4.new_code_cell("from hashlib_vit.utils import progress_mode\nprint(progress_mode())")
    # stored outputs: what a strict nbval run (outputs compared) must see; the training cell shows nothing
    check.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{expected_mode}\n")]
    nb.cells = [nbformat.v4.new_code_cell(TRAIN_CELL.format(run_dir=str(run_dir))), check]
    for i, cell in enumerate(nb.cells, start=1):
        cell.execution_count = i  # nbval compares the outputs of run cells only
    nbformat.write(nb, path)
    return path


def progress_fragments(nb: dict) -> list:
    """Every output of an executed notebook that is (part of) a progress bar: a widget view, or a stream
    or text with tqdm's marks."""
    found = []
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = out.get("text", "") or data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            if "application/vnd.jupyter.widget-view+json" in data or FRAGMENT.search(text):
                found.append((i, out))
    return found


def _kernel_env(monkeypatch, setting: str | None):
    # the kernel inherits this process's environment: the worktree's package and the variable under test
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if setting is None:
        monkeypatch.delenv(PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_ENV, setting)


@pytest.mark.notebook
@pytest.mark.parametrize("setting", [None, "1"], ids=["auto", "forced-on"])
def test_papermill_run_carries_no_progress_fragments(tmp_path, monkeypatch, setting):
    import papermill

    _kernel_env(monkeypatch, setting)
    mode = "off" if setting is None else "widget"
    nb = _notebook(tmp_path / "train.ipynb", tmp_path / "run", expected_mode=mode)
    out = tmp_path / "train.out.ipynb"
    papermill.execute_notebook(str(nb), str(out), kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    executed = json.loads(out.read_text())
    assert "".join(executed["cells"][1]["outputs"][0]["text"]) == f"{mode}\n"
    assert (tmp_path / "run" / "metrics.json").is_file()
    fragments = progress_fragments(executed)
    if setting is None:
        assert executed["cells"][0]["outputs"] == [], executed["cells"][0]["outputs"]
        assert not fragments, fragments
    else:  # the control: forced on, the same run does draw its widgets, and the detector sees them
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for _, o in fragments), fragments


@pytest.mark.notebook
@pytest.mark.parametrize("setting", [None, "1"], ids=["auto", "forced-on"])
def test_nbval_run_carries_no_progress_fragments(tmp_path, monkeypatch, setting):
    """nbval in its strict mode compares every output with the stored ones: the training cell's stored
    outputs are empty, so a single bar fragment (a stderr stream or a widget's display) fails the run; the
    second cell's stored output is the mode the kernel saw (``off``: nbval's pytest parent recognised)."""
    _kernel_env(monkeypatch, setting)
    nb = _notebook(tmp_path / "train.ipynb", tmp_path / "run", expected_mode="off" if setting is None else "widget")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "-q", "-p", "no:cacheprovider", str(nb)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert (tmp_path / "run" / "metrics.json").is_file()
    if setting is None:
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        assert "2 passed" in proc.stdout, proc.stdout[-3000:]
    else:  # the control: forced on, the widget's display makes the training cell differ from its stored outputs
        assert "1 failed, 1 passed" in proc.stdout and "Cell 0" in proc.stdout, proc.stdout[-3000:]
