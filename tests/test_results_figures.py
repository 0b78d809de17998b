"""The figures module: the one training-curve plot and the retrieval grid ranked by the engine's index."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from hashlib_vit.results import figures

matplotlib.use("Agg")


def test_training_curve_columns_epochs_and_evals():
    steps = pd.DataFrame({"step": range(8), "epoch": [0] * 4 + [1] * 4, "loss": [4.0, 3, 2, 1, 1, 1, 1, 1],
                          "loss_q": [1.0] * 8})
    fig = figures.training_curve(steps, [{"step": 3, "epoch": 0, "map": 0.5}, {"step": 7, "epoch": 1, "map": 0.7}],
                                 columns=["loss", "loss_q"], logy=True)
    ax, ax2 = fig.axes
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 4  # raw + smoothed per column
    assert list(ax2.get_lines()[0].get_ydata()) == [0.5, 0.7] and ax2.get_ylim() == (0, 1)
    fig2 = figures.training_curve(steps, per_epoch=True, label="csq 16b")
    (line,) = fig2.axes[0].get_lines()
    assert list(line.get_xdata()) == [0, 1] and list(line.get_ydata()) == [2.5, 1.0]
    assert line.get_label() == "csq 16b loss" and fig2.axes[0].get_xlabel() == "epoch"
    with pytest.raises(ValueError, match=r"no column\(s\) \['loss_x'\]"):
        figures.training_curve(steps, columns=["loss_x"])


def test_retrieval_grid_ranks_with_the_engine_ties_by_index():
    q = np.array([[1, 1, 1, 1]], dtype=np.int8)
    db = np.array([[-1, -1, 1, 1], [1, 1, 1, 1], [-1, 1, 1, 1], [1, 1, 1, 1], [-1, -1, -1, 1]], dtype=np.int8)
    onehot = lambda c: torch.nn.functional.one_hot(torch.tensor(c), 3).float()  # noqa: E731
    data = SimpleNamespace(query=SimpleNamespace(images=torch.zeros(1, 3, 4, 4, dtype=torch.uint8), labels=onehot([0])),
                           database=SimpleNamespace(images=torch.zeros(5, 3, 4, 4, dtype=torch.uint8),
                                                    labels=onehot([0, 1, 0, 0, 2])))
    fig = figures.retrieval_grid(data, q, db, n_queries=1, k=4)
    titles = [(a.get_title(), a.title.get_color()) for a in fig.axes[1:5]]
    # distances 2, 0, 1, 0, 3: ranked 1, 3 (tie at 0, by index), 2, 0; item 1 has another label (red)
    assert titles == [("d=0", "red"), ("d=0", "green"), ("d=1", "green"), ("d=2", "green")]


def write_run(path, method, losses, evals):
    """A hand-made run directory: train_log.csv (4 steps per epoch), evals.json and metrics.json."""
    from conftest import fake_curves

    from hashlib_vit.results import RunDir

    rd = RunDir(path).prepare()
    n = len(losses)
    pd.DataFrame({"step": range(1, n + 1), "epoch": [i // 4 for i in range(n)], "loss": losses,
                  "loss_quant": [0.5] * n, "lr": [1e-3] * n}).to_csv(rd.file("train_log.csv"), index=False)
    rd.write_json("evals.json", evals)
    rd.write_metrics({"method": method, "backbone": "vit32_test", "protocol": "digits", "bits": 4, "topk": "all",
                      "map": evals[-1]["map"], "epochs": 2, "seed": 0, "pretrained": False, "curves": fake_curves(4)})
    return rd


def test_training_curve_of_several_runs_with_their_evaluations(tmp_path):
    a = write_run(tmp_path / "a", "csq", [4.0, 3, 2, 1, 1, 1, 1, 1], [{"epoch": 1, "step": 4, "map": 0.3},
                                                                      {"epoch": 2, "step": 8, "map": 0.6}])
    b = write_run(tmp_path / "b", "dpsh", [2.0] * 8, [{"epoch": 2, "step": 8, "map": 0.2}])
    fig = figures.training_curve([a, str(b.path)], per_epoch=True)  # RunDir and a path, labelled by method
    ax, ax2 = fig.axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert list(lines["csq loss"].get_ydata()) == [2.5, 1.0] and list(lines["dpsh loss"].get_ydata()) == [2.0, 2.0]
    maps = {ln.get_label(): list(ln.get_ydata()) for ln in ax2.get_lines()}
    assert maps == {"csq mAP": [0.3, 0.6], "dpsh mAP": [0.2]}
    assert lines["csq loss"].get_color() == ax2.get_lines()[0].get_color()  # one colour per run
    # {label: run} on a given axes, per step, with a derived bound line
    fig2 = figures.training_curve({"16 bits": a}, columns=["loss_quant"], bound={"cap": np.full(8, 0.7)},
                                  title="t")
    labels = [ln.get_label() for ln in fig2.axes[0].get_lines()]
    assert labels == ["16 bits loss_quant (smoothed)", "_child1", "cap"]
    assert list(fig2.axes[0].get_lines()[2].get_ydata()) == [0.7] * 8
    with pytest.raises(ValueError, match=r"no column\(s\) \['loss_x'\]"):
        figures.training_curve({"a": a}, columns=["loss_x"])


def test_training_curve_panels_one_axes_per_group(tmp_path):
    a = write_run(tmp_path / "a", "csq", [4.0, 3, 2, 1, 1, 1, 1, 1], [{"epoch": 2, "step": 8, "map": 0.6}])
    b = write_run(tmp_path / "b", "csq", [2.0] * 8, [{"epoch": 2, "step": 8, "map": 0.2}])
    c = write_run(tmp_path / "c", "dpsh", [1.0] * 8, [{"epoch": 2, "step": 8, "map": 0.1}])
    runs = pd.DataFrame({"method": ["csq", "csq", "dpsh"], "bits": [16, 32, 16],
                         "run_dir": [str(r.path) for r in (a, b, c)]})
    fig = figures.training_curve_panels(runs)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["csq", "dpsh"]
    assert [ln.get_label() for ln in axes[0].get_lines()] == ["16b loss", "32b loss"]
    assert list(axes[0].get_lines()[0].get_ydata()) == [2.5, 1.0]
    with pytest.raises(ValueError, match="runs have no column 'seed'"):
        figures.training_curve_panels(runs, label="seed")


def test_tables_training_figure_is_the_one_plot_per_panel():
    rows = [{"protocol": "digits", "bits": b, "method": "csq", "backbone": "vit", "seed": s, "step": t,
             "loss": float(t + s + b)} for b in (8, 16) for s in (0, 1) for t in range(1, 5)]
    fig = figures.plot_training_curves(pd.DataFrame(rows))
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["digits · 8 bits", "digits · 16 bits"]
    line = axes[0].get_lines()[0]
    assert line.get_label() == "csq · vit loss (smoothed)"
    assert list(line.get_ydata()) == [t + 0.5 + 8 for t in range(1, 5)]  # the mean over the two seeds
