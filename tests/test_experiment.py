"""run_experiment end to end on the digits: run-directory contract, determinism, bad parameters."""
import json

import numpy as np
import pytest

from hashlib_vit.errors import ConfigError, DataError
from hashlib_vit.experiment import RunConfig, run_experiment
from hashlib_vit.results import REQUIRED_METRICS, RunDir
from hashlib_vit.results.collect import collect

TINY = dict(backbone="vit32_test", bits=16, epochs=2, batch_size=64, progress=False, device="cpu")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    return run_experiment(**TINY, run_dir=str(run_dir), eval_every=1)


def test_run_directory_contract(tiny_run):
    rd = RunDir(tiny_run.run_dir)
    for name in ("metrics.json", "config.json", "env.json", "train_log.csv", "evals.json", "codes.npz"):
        assert rd.file(name).is_file(), name
    m = rd.metrics()
    for key in REQUIRED_METRICS:
        assert key in m, key
    assert m["schema_version"] == 2 and set(m["curves"]) == {"pr_hamming", "pr_rank", "empty_radius"}
    assert m["protocol"] == "digits" and m["bits"] == 16 and m["pretrained"] is False and m["topk"] == "all"
    assert 0.0 <= m["map"] <= 1.0
    cfg = rd.config()
    assert cfg["backbone"] == "vit32_test" and cfg["epochs"] == 2
    env = rd.env()
    for key in ("python", "torch", "timm", "hashlib_vit", "device", "git_commit", "split_checksums"):
        assert key in env, key
    assert set(env["split_checksums"]) == {"query", "train", "database"}
    evals = json.loads(rd.file("evals.json").read_text())
    assert [e["epoch"] for e in evals] == [1, 2]
    log = rd.file("train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,loss") and len(log) == 1 + 2 * 8  # 500 items / 64 = 8 steps per epoch
    codes = np.load(rd.file("codes.npz"))
    assert codes["query_codes"].shape == (100, 16) and codes["db_codes"].shape == (1697, 16)
    # no temporary files left behind by the atomic writes
    assert not [p for p in rd.path.iterdir() if p.name.endswith(".tmp")]


def test_metrics_agree_with_saved_codes(tiny_run):
    from hashlib_vit.retrieval import map_at_k

    c = np.load(tiny_run.run_dir / "codes.npz")
    assert map_at_k(c["query_codes"], c["db_codes"], c["query_labels"], c["db_labels"]) == pytest.approx(
        tiny_run.metrics["map"])


def test_curves_are_stored_with_the_run_and_match_the_codes(tiny_run):
    from hashlib_vit.retrieval import evaluate
    from hashlib_vit.results.figures import run_curves

    m = tiny_run.metrics
    c = np.load(tiny_run.run_dir / "codes.npz")
    want = evaluate(c["query_codes"], c["db_codes"], c["query_labels"], c["db_labels"], curves=True,
                    empty_radius="exclude")
    assert m["curves"]["empty_radius"] == "exclude"
    assert m["curves"]["pr_hamming"]["radius"] == list(range(17))
    assert m["curves"]["pr_hamming"]["recall"] == pytest.approx(want["pr_hamming"]["recall"])
    assert m["curves"]["pr_rank"]["precision"] == pytest.approx(want["pr_rank"]["precision"])
    (tiny_run.run_dir / "codes.npz").rename(tiny_run.run_dir / "codes.npz.bak")  # the figures need no codes
    try:
        got = run_curves(tiny_run.run_dir)
    finally:
        (tiny_run.run_dir / "codes.npz.bak").rename(tiny_run.run_dir / "codes.npz")
    assert got["source"] == "metrics.json"
    assert got["pr"]["recall"] == pytest.approx(want["pr_hamming"]["recall"])


def test_same_seed_same_codes(tmp_path, tiny_run):
    again = run_experiment(**TINY, run_dir=None, eval_every=1)
    assert np.array_equal(again.query_codes, tiny_run.query_codes)
    assert np.array_equal(again.db_codes, tiny_run.db_codes)
    assert again.metrics["map"] == tiny_run.metrics["map"]


def test_collect_reads_the_directory(tiny_run):
    df = collect(tiny_run.run_dir.parent)
    assert len(df) == 1 and df.loc[0, "map"] == tiny_run.metrics["map"]
    assert df.loc[0, "schema_version"] == 2 and df.loc[0, "map_random"] == tiny_run.metrics["map_random"]


@pytest.mark.parametrize("bad, match", [
    (dict(protocol="cifar99"), r"protocol='cifar99' is not a known value; allowed: .*digits"),
    (dict(loss="nope"), r"loss='nope' is not a known value; allowed: .*csq"),
    (dict(backbone="not_a_model"), r"backbone='not_a_model' is not a known value; allowed: .*vit32_tiny"),
    (dict(head="nope"), r"head='nope'"),
    (dict(bits=0), r"bits=0 must be an integer >= 1"),
    (dict(bits=-8), r"bits=-8"),
    (dict(epochs=0), r"epochs=0 must be an integer >= 1"),
    (dict(lr=0.0), r"lr=0.0"),
    (dict(loss_params={"gama": 2}), r"\['gama'\] are not hyper-parameters of loss='csq'"),
    (dict(optimizer="adagrad"), r"optimizer='adagrad'"),
    (dict(device="tpu"), r"device='tpu'"),
])
def test_bad_parameters_fail_before_training(bad, match, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=match):
        run_experiment(**{**TINY, **bad}, run_dir=str(run_dir))
    assert not run_dir.exists()  # nothing written, nothing trained


def test_unknown_parameter_name():
    with pytest.raises(ConfigError, match=r"unknown parameter 'epoch'"):
        RunConfig.from_dict({"epoch": 3})


def test_data_options_reach_the_protocol_loader(tmp_path):
    # a NUS-WIDE-21-shaped list-file data set with one listed database image missing: the loader's
    # missing= and list_dir= are set through RunConfig.data_options (and the CLI's --data-options)
    from PIL import Image

    root, lists = tmp_path / "imgs", tmp_path / "lists"
    root.mkdir()
    lists.mkdir()
    rng = np.random.default_rng(0)

    def write(ids):
        lines = []
        for i in ids:
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
            lines.append(f"{i}.png " + " ".join("1" if c == i % 3 else "0" for c in range(21)))
        return lines

    query, train = write(range(4)), write(range(10, 18))
    database = train + write(range(20, 26)) + ["missing.png " + " ".join(["1"] + ["0"] * 20)]
    for name, lines in (("test.txt", query), ("train.txt", train), ("database.txt", database)):
        (lists / name).write_text("\n".join(lines) + "\n")
    base = {**TINY, "epochs": 1, "batch_size": 4, "protocol": "nuswide21", "data_root": str(root), "run_dir": None,
            "save_codes": False, "topk": None}
    with pytest.raises(DataError, match="1 of 15 listed images do not exist"):
        run_experiment(**base, data_options={"list_dir": str(lists)})
    with pytest.warns(UserWarning, match="skipped 1 of 15"):
        r = run_experiment(**base, data_options={"list_dir": str(lists), "missing": "skip"})
    assert (r.metrics["n_query"], r.metrics["n_database"]) == (4, 14)
    # the protocol's mAP@5000 cannot be computed on 14 items: said before any training starts
    with pytest.warns(UserWarning), pytest.raises(DataError, match=r"topk=5000 \(the nuswide21 protocol's mAP "
                                                                  r"cut-off\) must be an integer in 1..14"):
        run_experiment(**{**base, "topk": "protocol"}, data_options={"list_dir": str(lists), "missing": "skip"})
    with pytest.raises(ConfigError, match=r"data_options \['mising'\] are not options of protocol='nuswide21'.*"
                                          r"allowed: \['list_dir', 'split_dir', 'missing', 'check_files'\]"):
        run_experiment(**base, data_options={"mising": "skip"})
