"""JupyterLab in a real browser (issue 20, marker ``browser``; run by .ci/run, not by ``make test``):

start JupyterLab headless on a free local port, open the quickstart (its smoke parameters) in headless
Chromium through Selenium, run every cell from JupyterLab's own Run menu, and check that every code cell ran
without an error output, that the figures rendered and that the training's progress bar rendered as an
ipywidgets progress widget. A screenshot is saved in the test's folder and copied to results/browser/.

Needs Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``;
``HASHLIB_VIT_CHROMIUM`` / ``HASHLIB_VIT_CHROMEDRIVER`` name others). The driver path is given to Selenium, so
Selenium Manager downloads nothing. When JupyterLab or Chromium cannot start, the test fails at once saying
which of the two and why (the server's log tail, the driver's error), never with a timeout.

    .venv/bin/python -m pytest -m browser tests/test_browser.py
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_quickstart.ipynb"
CHROMIUM = os.environ.get("HASHLIB_VIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HASHLIB_VIT_CHROMEDRIVER", "/usr/bin/chromedriver")
SERVER_START_S = 180  # a 2-core machine shared with other jobs: JupyterLab can take a minute to answer
RUN_ALL_S = 1200  # the quickstart at smoke parameters: about a minute alone on 2 cores
# ipywidgets 8's progress element (IntProgress / FloatProgress; tqdm.notebook puts one in an HBox)
PROGRESS_SELECTOR = ".jp-OutputArea-output .widget-hprogress, .jp-OutputArea-output .widget-vprogress"
APPLY_INSTALL = "apt-get install -y chromium chromium-driver"


# ----------------------------------------------------------------------------- JupyterLab
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _write_lab_settings(settings_dir: Path) -> None:
    """User settings for this server only: every cell in the page (no windowing, so every output can be
    found), no news or update notifications over the notebook."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                            "checkForUpdates": False},
    }
    for name, value in files.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


class Lab:
    """A JupyterLab server started headless in its own process group (see :func:`start_lab`)."""

    def __init__(self, proc: subprocess.Popen, port: int, token: str, log: Path):
        self.proc, self.port, self.token, self.log = proc, port, token, log
        self.url = f"http://127.0.0.1:{port}"

    def api(self, path: str, method: str = "GET", timeout: float = 10):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()

    def failed(self, why: str):
        pytest.fail(f"JupyterLab failed to start: {why}\n--- server log ({self.log}), last lines ---\n"
                    f"{_tail(self.log)}", pytrace=False)

    def wait_ready(self, timeout: float = SERVER_START_S) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.failed(f"the server exited with code {code}")
            try:
                status, _ = self.api("/api/status", timeout=5)
                if status == 200:
                    return
            except (urllib.error.URLError, OSError) as e:
                last = e
            time.sleep(1)
        self.failed(f"no answer on port {self.port} within {timeout:.0f} s (last error: {last})")

    def stop(self) -> None:
        """Shut the server (and its kernels) down: the API's shutdown, then SIGTERM, then SIGKILL of its group."""
        if self.proc.poll() is None:
            try:
                self.api("/api/shutdown", method="POST", timeout=10)
            except (urllib.error.URLError, OSError):
                pass
            for sig, wait in ((None, 30), (signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                if sig is not None:
                    try:
                        os.killpg(self.proc.pid, sig)
                    except ProcessLookupError:
                        break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # kernels left in the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start_lab(root_dir: Path, work: Path, *, port: int | None = None) -> Lab:
    """Start ``python -m jupyter lab`` headless on ``port`` (a free one by default) with a random token,
    serving ``root_dir``; its log goes to ``work/jupyterlab.log``. The kernels it starts see this worktree's
    package (PYTHONPATH), one thread, no hub downloads and the default progress policy. Fails the test with
    the reason when JupyterLab is not installed."""
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.fail(f"JupyterLab failed to start: the jupyterlab package is not installed in {sys.prefix} "
                    "(pip install -e '.[notebooks]')", pytrace=False)
    port = port or free_port()
    token = secrets.token_hex(24)
    settings = work / "lab-settings"
    _write_lab_settings(settings)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / "lab-workspaces"), "JUPYTER_CONFIG_DIR": str(work / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(work / "jupyter-runtime")}
    env.pop("HASHLIB_VIT_PROGRESS", None)
    log = work / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root_dir}",
           "--ServerApp.open_browser=False", "--LabApp.expose_app_in_browser=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers run as root, which the server refuses by default
        cmd.append("--allow-root")
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=root_dir, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return Lab(proc, port, token, log)


# ----------------------------------------------------------------------------- Chromium
def _driver_errors(path: Path) -> str:
    """The lines of chromedriver's log that say what went wrong (not its long capability dumps)."""
    lines = _tail(path, 200_000).splitlines()
    keep = [ln for ln in lines if any(w in ln for w in ("SEVERE", "ERROR", "WARNING", "exited", "failed", "Failed"))]
    return "\n".join(keep[-15:])[-2000:] or "\n".join(lines[-10:])[-2000:]


def start_chromium(work: Path, *, chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER):
    """Headless Chromium under Selenium with the given driver (Selenium Manager never runs) and a fresh
    profile in ``work``. Fails the test saying why when either program is missing or does not start."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.fail(f"Chromium failed to start: selenium is not installed ({e}; pip install -e '.[test]')",
                    pytrace=False)
    for what, path in (("chromium", chromium), ("chromedriver", chromedriver)):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"Chromium failed to start: {what} not found at {path} (Debian: {APPLY_INSTALL}; or set "
                        f"HASHLIB_VIT_{what.upper()})", pytrace=False)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager, were it ever asked, downloads nothing
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={work / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver_log = work / "chromedriver.log"
    try:
        return webdriver.Chrome(service=Service(executable_path=chromedriver, log_output=str(driver_log)),
                                options=opts)
    except (WebDriverException, OSError, ValueError) as e:
        msg = getattr(e, "msg", None) or str(e)
        pytest.fail(f"Chromium failed to start (chromium {chromium}, chromedriver {chromedriver}): "
                    f"{type(e).__name__}: {msg}\n--- driver log ({driver_log}), its errors ---\n{_driver_errors(driver_log)}",
                    pytrace=False)


# ----------------------------------------------------------------------------- the page
_STATE_JS = """
const cells = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')];
const code = cells.filter(c => c.classList.contains('jp-CodeCell'));
const prompts = code.map(c => (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '');
const ind = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
return {n_cells: cells.length, prompts: prompts, status: ind ? ind.getAttribute('data-status') : null};
"""


def _wait(driver, what: str, fn, timeout: float, lab: Lab, interval: float = 1.0):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if lab.proc.poll() is not None:
            lab.failed(f"the server exited with code {lab.proc.returncode} while waiting for {what}")
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; page state {driver.execute_script(_STATE_JS)}"
                f"\n--- server log ---\n{_tail(lab.log, 3000)}", pytrace=False)


def _run_all_from_menu(driver) -> None:
    """JupyterLab's Run menu -> Run All Cells, clicked as a user would (the menu item's command is
    ``runmenu:run-all``, which runs ``notebook:run-all-cells`` on the notebook in focus)."""
    from selenium.webdriver.common.by import By

    for item in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item"):
        if item.text.strip() == "Run":
            item.click()
            break
    else:
        raise AssertionError("no Run menu in JupyterLab's menu bar")
    selector = ", ".join(f'.lm-Menu-item[data-command="{c}"]' for c in ("runmenu:run-all", "notebook:run-all-cells"))
    deadline = time.monotonic() + 20
    while not (entries := driver.find_elements(By.CSS_SELECTOR, selector)) and time.monotonic() < deadline:
        time.sleep(0.5)
    menu = driver.execute_script("return [...document.querySelectorAll('.lm-Menu-item')]"
                                 ".map(e => e.getAttribute('data-command'))")
    assert entries, f"no Run All Cells item in the Run menu; its items: {menu}"
    entries[0].click()


@pytest.mark.notebook
def test_quickstart_runs_in_jupyterlab_in_chromium(tmp_path):
    import papermill
    from selenium.webdriver.common.by import By

    root, work = tmp_path / "root", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    params = yaml.safe_load((ROOT / "configs" / "smoke" / "00_quickstart.yaml").read_text()) or {}
    papermill.execute_notebook(str(NOTEBOOK), str(root / NOTEBOOK.name), prepare_only=True, kernel_name="python3",
                               parameters={**params, "run_dir": str(tmp_path / "run")})
    source = json.loads((root / NOTEBOOK.name).read_text())
    code_src = ["".join(c["source"]) for c in source["cells"] if c["cell_type"] == "code"]
    figure_cells = [i for i, s in enumerate(code_src) if "plt.show()" in s]

    t0 = time.monotonic()
    lab = start_lab(root, work)
    driver = None
    try:
        driver = start_chromium(work)  # while the server starts
        lab.wait_ready()
        driver.set_page_load_timeout(120)
        driver.get(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")

        def state():
            return driver.execute_script(_STATE_JS)

        _wait(driver, "the notebook to open with an idle kernel",
              lambda: (s := state())["n_cells"] == len(source["cells"]) and s["status"] == "idle", 300, lab)
        _run_all_from_menu(driver)
        _wait(driver, "the run to start", lambda: any("*" in p for p in state()["prompts"])
              or all(p.strip("[]: ").isdigit() for p in state()["prompts"]), 120, lab, 0.2)
        stalled_since = [None]

        def finished():
            s = state()
            done = all(p.strip().strip("[]:").strip().isdigit() for p in s["prompts"])
            if s["status"] == "idle" and done:
                return s
            if s["status"] == "idle" and not any("*" in p for p in s["prompts"]):  # stopped early (an error)
                stalled_since[0] = stalled_since[0] or time.monotonic()
                if time.monotonic() - stalled_since[0] > 15:
                    return s
            else:
                stalled_since[0] = None
            return None

        final = _wait(driver, "every cell to finish", finished, RUN_ALL_S, lab, 2.0)
        run_s = time.monotonic() - t0

        # save what the page shows, then read the outputs as JupyterLab recorded them
        driver.execute_script("return window.jupyterapp.commands.execute('docmanager:save')")
        time.sleep(2)
        saved = json.loads((root / NOTEBOOK.name).read_text())
        errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(saved["cells"])
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]

        # the screenshot: the training cell (its progress widget) at the top
        widgets = driver.find_elements(By.CSS_SELECTOR, PROGRESS_SELECTOR)
        if widgets:
            driver.execute_script("arguments[0].closest('.jp-Cell').scrollIntoView({block: 'start'});", widgets[0])
            time.sleep(1)
        shot = tmp_path / "jupyterlab_quickstart.png"
        driver.save_screenshot(str(shot))
        stable = ROOT / "results" / "browser"
        stable.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, stable / shot.name)
        shutil.copy(root / NOTEBOOK.name, stable / "00_quickstart.lab.ipynb")
        print(f"\nscreenshot: {shot} (copy: {stable / shot.name}); notebook run in the browser in {run_s:.0f} s "
              f"(server start and page load included)")

        assert not errors, f"cells with an error output: {errors}"
        assert all(p.strip().strip("[]:").strip().isdigit() for p in final["prompts"]), \
            f"cells without an execution count: {final['prompts']}"
        code_cells = driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
        no_figure = [i for i in figure_cells
                     if not code_cells[i].find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")]
        assert figure_cells and not no_figure, f"code cells (0-based) whose figure did not render: {no_figure}"
        train_cell = next((i for i, src in enumerate(code_src) if "run_experiment(" in src), None)
        assert widgets, ("no ipywidgets progress bar rendered in the outputs (the training bar); the training "
                         "cell's output area: " + (code_cells[train_cell].find_element(
                             By.CSS_SELECTOR, ".jp-OutputArea").get_attribute("outerHTML")[:3000]
                             if train_cell is not None else "(no cell calls run_experiment)"))
        bar_text = widgets[0].find_element(By.XPATH, "./ancestor::div[contains(@class, 'widget-hbox')][1]").text
        assert "train" in bar_text and "100%" in bar_text, f"the first progress widget is not the finished " \
                                                           f"training bar: {bar_text!r}"
        print(f"progress widget: {bar_text!r}")
        stderr_bars = [o for c in saved["cells"] for o in c.get("outputs", [])
                       if o.get("output_type") == "stream" and "it/s" in "".join(o.get("text", ""))]
        assert not stderr_bars, f"text progress bars next to the widgets: {stderr_bars[:2]}"
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001 - the browser may be gone already
                pass
        lab.stop()


# ----------------------------------------------------------------------------- bad input
def test_a_port_in_use_fails_naming_jupyterlab(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        (tmp_path / "work").mkdir()
        lab = start_lab(tmp_path, tmp_path / "work", port=port)
        try:
            with pytest.raises(pytest.fail.Exception, match=r"(?s)JupyterLab failed to start: .*exited.*in use"):
                lab.wait_ready(timeout=120)
        finally:
            lab.stop()


@pytest.mark.parametrize("missing", ["chromium", "chromedriver"])
def test_a_missing_browser_or_driver_fails_naming_it(tmp_path, missing):
    paths = {"chromium": CHROMIUM, "chromedriver": CHROMEDRIVER, missing: str(tmp_path / f"no-{missing}")}
    with pytest.raises(pytest.fail.Exception, match=f"Chromium failed to start: {missing} not found"):
        start_chromium(tmp_path, **paths)


def test_a_driver_that_cannot_start_chromium_fails_with_its_error(tmp_path):
    fake = tmp_path / "fake-chromium"
    fake.write_text("#!/bin/sh\necho 'this is no browser' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(pytest.fail.Exception, match=r"(?s)Chromium failed to start \(chromium .*fake-chromium.*\): \w+"):
        driver = start_chromium(tmp_path, chromium=str(fake))
        driver.quit()
