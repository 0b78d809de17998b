"""Issue 18, kind 7: notebook parameters arrive as meant. Plain papermill passes ``-p x '[1, 2]'`` as a string
and warns only about unknown names; every notebook's first code cell (check_parameters) parses and checks
them before any work."""
import json
from pathlib import Path

import pytest

from hashlib_vit.errors import ConfigError
from hashlib_vit.notebook import check_parameters, injected_names
from hashlib_vit.typecheck import coerce, fits, parse_annotation

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def namespace(declared: dict, values: dict, injected: str | None = None) -> dict:
    ns = {"__annotations__": dict(declared), **values, "In": [""]}
    if injected is not None:
        ns["In"].append(injected)
        exec(injected, {}, ns)
    return ns


def test_strings_are_parsed_for_every_annotation_form():
    declared = {"study_losses": list, "timing_sizes": list, "overrides": dict, "bits": int, "lr": float,
                "run_study": bool, "weights": "Optional[str]", "data_root": "Optional[str]", "name": str}
    ns = namespace(declared, {"study_losses": ["csq"], "timing_sizes": [10], "overrides": {}, "bits": 32, "lr": 1e-3,
                              "run_study": True, "weights": None, "data_root": None, "name": "x"},
                   injected="# Parameters\nstudy_losses = '[\"dpsh\", \"hsc\"]'\ntiming_sizes = '[2000, 20000]'\n"
                            "overrides = '{\"loss_params.gamma\": 5}'\nbits = '16'\nlr = 1\nrun_study = 'false'\n"
                            "weights = 'hub'\nname = '[not a list]'\n")
    out = check_parameters(ns)
    assert ns["study_losses"] == ["dpsh", "hsc"] and ns["timing_sizes"] == [2000, 20000]
    assert ns["overrides"] == {"loss_params.gamma": 5} and ns["bits"] == 16 and ns["lr"] == 1
    assert ns["run_study"] is False and ns["weights"] == "hub" and ns["data_root"] is None
    assert ns["name"] == "[not a list]", "a str parameter keeps its text"
    assert out == {k: ns[k] for k in declared}


@pytest.mark.parametrize("name, value, expected", [
    ("bits", "sixteen", "bits='sixteen' (str) must be int"),
    ("timing_sizes", "2000, 20000", "timing_sizes='2000, 20000' (str) must be list"),
    ("run_study", 1, "run_study=1 (int) must be bool"),
    ("bits", True, "bits=True (bool) must be int"),
    ("lr", "fast", "lr='fast' (str) must be float"),
])
def test_a_value_of_the_wrong_type_names_the_parameter(name, value, expected):
    ns = namespace({"bits": int, "timing_sizes": list, "run_study": bool, "lr": float},
                   {"bits": 32, "timing_sizes": [1], "run_study": True, "lr": 1e-3}, injected=f"# Parameters\n{name} = {value!r}\n")
    with pytest.raises(ConfigError, match="notebook parameter " + expected.replace("(", r"\(").replace(")", r"\)")):
        check_parameters(ns)


def test_an_unknown_injected_name_is_refused_with_the_close_match():
    ns = namespace({"bits": int, "epochs": int}, {"bits": 32, "epochs": 3}, injected="# Parameters\nbitz = 16\n")
    with pytest.raises(ConfigError, match=r"unknown notebook parameter\(s\) 'bitz' \(did you mean bits\?\).*bits, epochs"):
        check_parameters(ns)


def test_names_defined_by_later_cells_are_not_mistaken_for_injected_ones():
    """Re-running the check cell in JupyterLab after the whole notebook ran must not refuse the notebook's
    own variables: only the names of papermill's injected cell count."""
    ns = namespace({"bits": int}, {"bits": 32, "config": object(), "RUN_DIR": "x"})
    ns["In"] += ["# Parameters: papermill overrides these\nbits: int = 32\n", "config = 1\nRUN_DIR = 2\n"]
    assert check_parameters(ns) == {"bits": 32}
    assert injected_names(ns) == []


def test_one_type_check_for_notebooks_grids_config_fields_and_model_options():
    assert fits(None, parse_annotation("Optional[str]")) and fits("a", "Optional[str]") and not fits(1, "Optional[str]")
    assert fits(3, "float | None") and not fits(True, "float | None") and fits(None, "int | str | None")
    assert fits([1, 2], "list[int]") and not fits([1, "a"], "list[int]") and fits((1,), list)
    assert coerce("x", "[1, 2]", "list[int]") == [1, 2]
    from hashlib_vit import models, runner
    from hashlib_vit.models import options

    assert not hasattr(runner, "_type_ok") and not hasattr(runner, "_field_type_ok") and not hasattr(options, "_type_ok")
    assert models  # the model options use typecheck.fits: a wrong type names the option
    with pytest.raises(ConfigError, match="model parameter groups='2' .* must be int"):
        models.resolve_model("mgvt", 16, {"groups": "2"}, "vit32_test")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_checks_its_parameters_first(nb):
    cells = json.loads(nb.read_text())["cells"]
    i = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    first = next(c for c in cells[i + 1:] if c["cell_type"] == "code")
    src = "".join(first["source"])
    assert src.startswith("from hashlib_vit.notebook import check_parameters\n\ncheck_parameters(globals())")
    import papermill

    declared = papermill.inspect_notebook(str(nb))
    assert declared and all(info["inferred_type_name"] != "None" for info in declared.values()), \
        "every parameter is annotated (check_parameters reads the annotations)"


def _run_head(nb: Path, tmp_path: Path, parameters: dict, report: list[str]) -> dict:
    """Execute a real notebook's parameters cell, papermill's injected cell and the first code cell's check
    (not the rest of the notebook), then report the named variables."""
    import nbformat
    import papermill

    prepared = tmp_path / f"prepared_{nb.name}"
    papermill.execute_notebook(str(nb), str(prepared), parameters=parameters, prepare_only=True, kernel_name="python3")
    src = nbformat.read(prepared, as_version=4)
    head = []
    for c in src.cells:
        if c.cell_type != "code":
            continue
        tags = c.metadata.get("tags", [])
        head.append(c)
        if "parameters" not in tags and "injected-parameters" not in tags:
            c.source = "\n".join(c.source.split("\n")[:3])  # the import and the check only
            break
    head.append(nbformat.v4.new_code_cell(f"import json; print(json.dumps({{k: globals()[k] for k in {report!r}}}))"))
    src.cells = head
    nbformat.write(src, prepared)
    out = tmp_path / f"out_{nb.name}"
    papermill.execute_notebook(str(prepared), str(out), kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    result = nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"]
    return json.loads(result)


def test_papermill_string_lists_reach_notebooks_03_and_07_as_lists(tmp_path):
    got = _run_head(ROOT / "notebooks" / "03_aevit_hsc.ipynb", tmp_path, {"study_losses": '["dpsh","hsc"]'},
                    ["study_losses"])
    assert got == {"study_losses": ["dpsh", "hsc"]}
    got = _run_head(ROOT / "notebooks" / "07_retrieval.ipynb", tmp_path, {"timing_sizes": "[2000, 20000]"},
                    ["timing_sizes"])
    assert got == {"timing_sizes": [2000, 20000]}


def test_list_items_are_checked_in_the_check_cell(tmp_path):
    """``-p timing_sizes '[2000, "x"]'``: the list parameters declare their items (``list[int]``, ``list[str]``),
    so a wrong item stops the notebook in its check cell, not after training."""
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError, match=r"timing_sizes=.*must be list\[int\]"):
        _run_head(ROOT / "notebooks" / "07_retrieval.ipynb", tmp_path, {"timing_sizes": '[2000, "x"]'},
                  ["timing_sizes"])
    with pytest.raises(PapermillExecutionError, match=r"study_losses=.*must be list\[str\]"):
        _run_head(ROOT / "notebooks" / "03_aevit_hsc.ipynb", tmp_path, {"study_losses": "[1, 2]"}, ["study_losses"])


def test_papermill_unknown_parameter_stops_the_notebook_before_any_run_directory(tmp_path):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    run_dir = tmp_path / "run"
    with pytest.raises(PapermillExecutionError, match=r"bitz.*did you mean bits"):
        papermill.execute_notebook(str(ROOT / "notebooks" / "00_quickstart.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"bitz": 16, "run_dir": str(run_dir)}, kernel_name="python3",
                                   progress_bar=False, cwd=str(ROOT))
    assert not run_dir.exists()
