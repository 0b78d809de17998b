"""Notebooks: hygiene, the quickstart through papermill, and every notebook under nbval.

Each notebook ``notebooks/NN_name.ipynb`` has smoke parameters in ``configs/smoke/NN_name.yaml``;
the tests run papermill-prepared copies with those parameters, so CI stays fast.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def smoke_params(nb: Path) -> dict:
    return yaml.safe_load((ROOT / "configs" / "smoke" / f"{nb.stem}.yaml").read_text()) or {}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(nb):
    data = json.loads(nb.read_text())
    assert data["metadata"]["kernelspec"]["name"] == "python3"
    cells = data["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert tagged[0]["cell_type"] == "code"
    for c in cells:
        if c["cell_type"] == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, "outputs must be stripped in git"
    assert cells[0]["cell_type"] == "markdown", "a notebook starts with its explanation"
    assert (ROOT / "configs" / "smoke" / f"{nb.stem}.yaml").is_file(), "smoke parameters for CI"
    # smoke parameters must be parameters the notebook declares
    import papermill

    declared = set(papermill.inspect_notebook(str(nb)))
    assert set(smoke_params(nb)) <= declared, set(smoke_params(nb)) - declared


@pytest.mark.notebook
def test_quickstart_through_papermill_beats_random_codes(tmp_path):
    import papermill

    from hashlib_vit.retrieval import map_at_k

    run_dir = tmp_path / "run"
    out = tmp_path / "00_quickstart.out.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "00_quickstart.ipynb"), str(out),
                               parameters={**smoke_params(ROOT / "notebooks" / "00_quickstart.ipynb"),
                                           "run_dir": str(run_dir)},
                               kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    codes = np.load(run_dir / "codes.npz")
    # random codes measured here, on the same queries and database
    rng = np.random.default_rng(12345)
    rand_q = np.where(rng.random(codes["query_codes"].shape) < 0.5, -1, 1)
    rand_db = np.where(rng.random(codes["db_codes"].shape) < 0.5, -1, 1)
    random_map = map_at_k(rand_q, rand_db, codes["query_labels"], codes["db_labels"])
    assert metrics["map"] >= 3 * random_map, (metrics["map"], random_map)
    assert metrics["map"] == pytest.approx(map_at_k(codes["query_codes"], codes["db_codes"], codes["query_labels"],
                                                    codes["db_labels"]))
    for name in ("config.json", "env.json", "train_log.csv"):
        assert (run_dir / name).is_file()


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_under_nbval(nb, tmp_path):
    import papermill

    # every notebook writes below run_dir, except the tables notebook, whose output folder is out_dir
    out_param = "out_dir" if nb.stem == "06_map_tables" else "run_dir"
    params = {**smoke_params(nb), out_param: str(tmp_path / "run")}
    prepared = tmp_path / nb.name
    papermill.execute_notebook(str(nb), str(prepared), parameters=params, prepare_only=True, kernel_name="python3")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", str(prepared)],
        cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
