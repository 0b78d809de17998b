"""Tables from run directories (hashlib_vit.results): aggregation over seeds, the papers' numbers beside ours,
formats, and curves read from metrics.json (never recomputed by the tables)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hashlib_vit.results import RunDir
from hashlib_vit.results.collect import collect
from hashlib_vit.results.figures import run_curves
from hashlib_vit.results.migrate import migrate_run
from hashlib_vit.results.reference import reference_results
from hashlib_vit.results.tables import aggregate, build_tables, to_latex, to_markdown, wide_table
from hashlib_vit.results.tables import paper_comparison_table as comparison_table


def fake_run(path: Path, *, method: str, loss: str | None = None, protocol: str = "cifar10", bits: int = 32,
             seed: int = 0, map_value: float = 0.5, backbone: str = "vit32_tiny", topk=54000, epochs: int = 30,
             codes: bool = False, extra_config: dict | None = None, metrics_extra: dict | None = None,
             curves: dict | None = None) -> RunDir:
    """A run directory as run_experiment writes it (no training). With ``curves`` (a schema-2 ``curves``
    block) metrics.json is written by ``RunDir.write_metrics`` (schema 2); without, as a schema-1 file
    without curves, like the runs committed before the engine stored them."""
    rd = RunDir(path).prepare()
    rd.write_json("config.json", {"protocol": protocol, "backbone": backbone, "loss": loss or method, "bits": bits,
                                  "epochs": epochs, "batch_size": 64, "lr": 0.001, "seed": seed, "method": method,
                                  "weights": None, **(extra_config or {})})
    rd.write_json("env.json", {"git_commit": "abc123", "protocol": {"train": 5000}})
    steps = np.arange(20)
    pd.DataFrame({"step": steps, "epoch": steps // 10, "loss": 1.0 / (1 + steps + seed)}).to_csv(
        rd.file("train_log.csv"), index=False)
    if codes:
        rng = np.random.default_rng(seed)
        ql, dl = rng.integers(0, 3, 12), rng.integers(0, 3, 40)
        centers = np.where(rng.random((3, bits)) < 0.5, -1, 1)
        flip = lambda lab: centers[lab] * np.where(rng.random((len(lab), bits)) < 0.2, -1, 1)  # noqa: E731
        rd.write_codes(query_codes=flip(ql).astype(np.int8), db_codes=flip(dl).astype(np.int8), query_labels=ql,
                       db_labels=dl)
    metrics = {"method": method, "loss": loss or method, "backbone": backbone, "protocol": protocol, "bits": bits,
               "topk": topk, "map": map_value, "epochs": epochs, "seed": seed, "pretrained": False, "device": "cpu",
               **(metrics_extra or {})}
    if curves is not None:
        rd.write_metrics({**metrics, "curves": curves})
    else:
        rd.write_json("metrics.json", metrics)  # schema 1
    return rd


@pytest.fixture
def cifar_runs(tmp_path):
    root = tmp_path / "cifar10_scratch"
    for method, base in (("transhash", 0.40), ("dsh", 0.30)):
        for bits in (16, 32):
            for seed in (0, 1):
                fake_run(root / f"{method}_{bits}_{seed}", method=method, bits=bits, seed=seed,
                         map_value=base + bits / 1000 + 0.02 * seed)
    return root


def test_reference_csv_is_transcribed_with_sources():
    ref = reference_results()
    assert {"source", "method", "backbone", "pretraining", "protocol", "metric", "topk", "bits", "value"} <= set(ref)
    assert (ref["source"] != "").all() and ref["value"].between(0, 1).all()
    th = ref[(ref["method"] == "TransHash") & (ref["table"] == "Table 1")].set_index(["protocol", "bits"])["value"]
    assert th[("cifar10", 16)] == 0.9075 and th[("cifar10", 64)] == 0.9166 and th[("imagenet100", 32)] == 0.8733
    assert len(th) == 12
    ae = ref[ref["method_key"] == "hsc"].set_index("family")["value"]
    assert ae["cifar10"] == 0.968 and ae["nuswide"] == 0.868
    ortho = ref[ref["method"] == "OrthoHash (Bernoulli codebook)"].set_index(["protocol", "bits"])["value"]
    assert ortho[("imagenet100", 64)] == 0.711 and ortho[("coco", 128)] == 0.777
    # no numbers for VTS or Pei & Wang exist in the sources: none may appear
    assert not ref["source"].str.contains("VTS|Pei", regex=True).any()
    assert not ref["method"].str.contains("VTS|SL-ViT", regex=True).any()
    # 235 table values + the ImageNet-100 average stated in the TransHash paper's text (moved from the former
    # reported_transhash.py into the CSV)
    assert len(ref) == 236


def test_aggregate_and_wide_table(cifar_runs):
    runs = collect(cifar_runs)
    assert len(runs) == 8 and set(runs["pretraining"]) == {"none (from scratch)"}
    agg = aggregate(runs)
    row = agg[(agg["method"] == "dsh") & (agg["bits"] == 32)].iloc[0]
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.342) and row["std"] == pytest.approx(np.std([0.332, 0.352], ddof=1))
    assert row["seeds"] == "0,1"
    table = wide_table(agg)
    assert list(table.columns) == [("cifar10", 16), ("cifar10", 32)]
    assert [i[0] for i in table.index] == ["dsh", "transhash"]
    assert table.loc[table.index[1], ("cifar10", 16)] == "0.426 ± 0.014 (n=2)"
    md = to_markdown(table)
    assert "| method | backbone | pretraining | training | cifar10 16 bits | cifar10 32 bits |" in md
    tex = to_latex(table, caption="x_y")
    assert "\\toprule" in tex and "0.426 $\\pm$ 0.014 (n=2)" in tex and "x\\_y" in tex


def test_differing_configs_are_not_averaged(tmp_path):
    for lr in (0.001, 0.01):
        fake_run(tmp_path / f"csq_{lr}", method="csq", extra_config={"lr": lr}, map_value=0.3 if lr == 0.01 else 0.5)
    agg = aggregate(collect(tmp_path))
    assert sorted(agg["variant"]) == ["lr=0.001", "lr=0.01"] and (agg["n"] == 1).all()


def test_comparison_places_paper_numbers_with_differences(cifar_runs):
    comp = comparison_table(collect(cifar_runs))
    ours = comp[comp["source"] == "ours"]
    assert list(ours["method"]) == ["dsh", "transhash"]
    paper = comp[comp["source"] != "ours"].set_index(["source", "method", "protocol"])
    th = paper.loc[("TransHash", "TransHash", "cifar10 mAP@54000")]
    assert th["cifar10 16 bits"] == "0.9075" and th["cifar10 32 bits"] == "0.9108"
    assert "backbone: paper ViT-L/32" in th["differences"] and "ours vit32_tiny" in th["differences"]
    assert "pretraining: paper ImageNet-pretrained" in th["differences"] and "none (from scratch)" in th["differences"]
    assert "protocol: same (cifar10, mAP@54000)" in th["differences"]
    assert "30 ep, 5000 train imgs, batch 64" in th["differences"]
    dsh = paper.loc[("TransHash", "DSH", "cifar10 mAP@54000")]
    assert dsh["cifar10 32 bits"] == "0.6815"
    # DeepHash-pytorch's DSH on cifar10-1 has only 48 bits: not in our columns, so not shown
    assert not comp["protocol"].str.contains("cifar10-1").any()
    # methods we did not run are left out with select="matched", shown with "all"
    assert "HashNet" not in set(comp["method"])
    full = comparison_table(collect(cifar_runs), select="all")
    assert {"HashNet", "SH"} & set(full["method"]) == {"HashNet"}  # SH has no CIFAR-10 numbers
    assert "AE-ViT + HSC-Loss" in set(full["method"])  # its mean-over-bits value gets a 'mean' column
    ae = full[full["method"] == "AE-ViT + HSC-Loss"].iloc[0]
    assert ae["cifar10 mean"] == "0.968" and "split not stated" in ae["differences"]
    assert comparison_table(collect(cifar_runs), select="none")["source"].eq("ours").all()


def test_tables_command_on_fake_runs(cifar_runs, tmp_path):
    from hashlib_vit.cli import main

    out = tmp_path / "tables"
    assert main(["tables", str(cifar_runs), "--out", str(out)]) == 0
    for name in ("runs.csv", "summary_long.csv", "map_table.csv", "map_table.md", "map_table.tex", "comparison.csv",
                 "comparison.md", "comparison.tex", "provenance.json", "README.md", "figures/map_vs_bits.png",
                 "figures/training_curves.png"):
        assert (out / name).is_file(), name
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["n_runs"] == 8 and prov["command"].startswith("hashlib-vit tables") and prov["machine"]
    assert any("precision-recall figure skipped" in n for n in prov["notes"])  # no codes.npz, no curves
    csv = pd.read_csv(out / "comparison.csv")
    assert "0.9075" in csv["cifar10 16 bits"].astype(str).tolist()


def test_curves_come_from_metrics_json_and_codes_only_through_the_migration(tmp_path):
    rd = fake_run(tmp_path / "a", method="csq", protocol="digits", bits=16, codes=True, topk="all")
    assert run_curves(rd.path)["source"] == "none"  # schema 1 without curves: the tables recompute nothing
    assert migrate_run(rd.path) == "curves from codes.npz"  # the one-off migration computes them once
    c = run_curves(rd.path)
    assert c["source"] == "metrics.json"
    assert json.loads(rd.file("metrics.json").read_text())["schema_version"] == 2
    with np.load(rd.file("codes.npz")) as z:
        qc, dc, ql, dl = z["query_codes"], z["db_codes"], z["query_labels"], z["db_labels"]
    # naive reference: per query, per radius
    d = (16 - qc.astype(int) @ dc.T.astype(int)) // 2
    rel = ql[:, None] == dl[None, :]
    r = 3
    within = d <= r
    has = within.sum(1) > 0
    prec = np.mean([(within[i] & rel[i]).sum() / within[i].sum() for i in range(len(qc)) if has[i]])
    rec = np.mean([(within[i] & rel[i]).sum() / rel[i].sum() for i in range(len(qc)) if rel[i].any()])
    assert c["pr"]["precision"][r] == pytest.approx(prec) and c["pr"]["recall"][r] == pytest.approx(rec)
    assert c["pr"]["recall"][-1] == pytest.approx(1.0)
    order = np.argsort(d, axis=1, kind="stable")
    p10 = np.mean([rel[i, order[i, :10]].mean() for i in range(len(qc))])
    assert c["pn"]["precision"][c["pn"]["n"].index(10)] == pytest.approx(p10)
    assert migrate_run(rd.path) == "schema 2 already"
    # curves stored by the evaluation engine are read back as they are
    rd3 = fake_run(tmp_path / "c", method="csq", protocol="digits", bits=2, curves={
        "pr_hamming": {"radius": [0, 1, 2], "precision": [0.9, 0.8, 0.7], "recall": [0.1, 0.3, 0.6]},
        "pr_rank": {"rank": [100, 500], "precision": [0.6, 0.5], "recall": [0.2, 0.4]}, "empty_radius": "exclude"})
    c3 = run_curves(rd3.path)
    assert c3["pr"]["recall"] == [0.1, 0.3, 0.6] and c3["pn"] == {"n": [100, 500], "precision": [0.6, 0.5]}
    rd4 = fake_run(tmp_path / "d", method="csq", protocol="digits", bits=1, curves={
        "pr_hamming": {"radius": [0, 1], "precision": [None, 0.5], "recall": [0.0, 1.0]},
        "pr_rank": {"rank": [5, 10], "precision": [0.9, 0.8], "recall": [0.1, 0.2]}, "empty_radius": "exclude"})
    c4 = run_curves(rd4.path)
    assert c4["pn"] == {"n": [5, 10], "precision": [0.9, 0.8]}
    assert np.isnan(c4["pr"]["precision"][0]) and c4["pr"]["precision"][1] == 0.5  # null: no query retrieves
    # a schema-1 file with curves under other names is not guessed at: no curves
    rd2 = fake_run(tmp_path / "b", method="csq", protocol="digits", bits=16, metrics_extra={
        "pr_curve": {"radius": [0, 1], "precision": [1.0, 0.5], "recall": [0.1, 0.2]}})
    assert run_curves(rd2.path) == {"pr": None, "pn": None, "source": "none"}


def test_tables_never_recompute_curves_a_run_without_codes_keeps_its_curves(tmp_path):
    """build_tables draws the PR and P@N figures from metrics.json alone: no codes.npz anywhere."""
    from conftest import fake_curves

    for bits in (8, 16):
        fake_run(tmp_path / "runs" / f"csq_{bits}", method="csq", protocol="digits", bits=bits, topk="all",
                 curves=fake_curves(bits))
    fake_run(tmp_path / "runs" / "old", method="dpsh", protocol="digits", bits=8, topk="all")  # schema 1, no curves
    assert not list(tmp_path.rglob("codes.npz"))
    res = build_tables(tmp_path / "runs", tmp_path / "out")
    assert set(res["figures"]) >= {"pr_curves", "precision_at_n"}
    assert any("old: no curves in metrics.json" in n for n in res["notes"])
    from hashlib_vit.results.figures import collect_curves

    pr, pn, _ = collect_curves(res["runs"])
    assert sorted(pr["bits"].unique()) == [8, 16] and len(pr) == 9 + 17  # radius 0..K of both runs
    assert pn.groupby("bits")["n"].apply(list).to_dict() == {8: [1, 5, 10], 16: [1, 5, 10]}
    row = pr[(pr["bits"] == 16) & (pr["radius"] == 4)].iloc[0]
    assert row["precision"] == pytest.approx(1.0 - 0.5 * 4 / 16) and row["recall"] == pytest.approx(4 / 16)


def test_build_tables_errors(tmp_path):
    from hashlib_vit.errors import DataError

    with pytest.raises(DataError, match="does not exist"):
        build_tables(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no completed run directory"):
        build_tables(tmp_path / "empty", tmp_path / "out")


def test_comparison_without_any_paper_value(tmp_path):
    """Runs on a data set no paper reports (digits): our rows only, no error."""
    for bits in (16, 32):
        fake_run(tmp_path / f"csq_{bits}", method="quickstart-csq", loss="csq", protocol="digits", bits=bits, topk="all")
    for select in ("matched", "all"):
        comp = comparison_table(collect(tmp_path), select=select)
        assert list(comp["source"]) == ["ours"] and list(comp.columns[-3:]) == ["digits 16 bits", "digits 32 bits",
                                                                                 "differences"]


def test_training_logs_are_read_from_a_compressed_archive_copy(cifar_runs):
    from hashlib_vit.results.figures import collect_training_logs

    runs = collect(cifar_runs)
    before = collect_training_logs(runs)
    for p in sorted(cifar_runs.glob("*/train_log.csv"))[:3]:  # archived runs keep train_log.csv.gz instead
        pd.read_csv(p).to_csv(p.with_suffix(".csv.gz"), index=False)
        p.unlink()
    after = collect_training_logs(runs)
    assert len(after) == len(before) == 8 * 20
    pd.testing.assert_frame_equal(after.sort_values(["run_dir", "step"]).reset_index(drop=True),
                                  before.sort_values(["run_dir", "step"]).reset_index(drop=True))
