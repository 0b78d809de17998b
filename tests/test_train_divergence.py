"""The divergence check (train/divergence.py, run at StepBuffer.flush): the rule on synthetic loss
sequences, the non-finite grad norm, resume, the setting, no false alarm for any registered loss at a
sane learning rate, and a run at an absurd learning rate stopping with the last good state kept."""
import math
import re

import numpy as np
import pytest
import torch

from hashlib_vit.config import RunConfig
from hashlib_vit.errors import ConfigError, DivergenceError, HashlibVitError
from hashlib_vit.experiment import run_experiment
from hashlib_vit.losses import LOSSES
from hashlib_vit.train import StepBuffer, StepLog, TrainConfig, load_checkpoint
from hashlib_vit.train import distributed as D
from hashlib_vit.train.divergence import DivergenceGuard


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # every test here (tests/conftest.py)
    yield


class Bar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass


def feed(losses, *, factor=100.0, history=None, start=1, grad_norms=None, overflow_ok=False, every=7):
    """Run `losses` (steps start, start+1, ...) through a StepBuffer flushed every `every` steps;
    returns (history rows, the DivergenceError or None)."""
    history = list(history or [])
    guard = DivergenceGuard(factor, history, overflow_ok=overflow_ok)
    buf = StepBuffer(StepLog(None), history, Bar(), D.SINGLE, every=every, batch_size=4, guard=guard)
    try:
        for i, v in enumerate(losses):
            g = None if grad_norms is None else torch.tensor(grad_norms[i], dtype=torch.float64)
            buf.append(step=start + i, epoch=0, batch=start + i - 1, total=torch.tensor(v, dtype=torch.float64),
                       parts={}, grad_norm=g, lr=0.5)
            if buf.due(start + i):
                buf.flush(lambda: "LAST")
        buf.flush(lambda: "LAST")
    except DivergenceError as e:
        return history, e
    return history, None


EARLY = [1.0, 0.8, 0.7, 0.75, 0.72, 0.71, 0.7, 0.69, 0.7, 0.68]  # steps 1-10: the lowest is 0.68


def test_a_climbing_loss_stops_at_the_first_step_above_the_limit():
    losses = EARLY + [0.7, 1.5, 10.0, 99.0, 102.0, 1e3, 1e6]  # limit 0.68 + 100 * max(0.68, 1) = 100.68
    rows, err = feed(losses)
    assert isinstance(err, FloatingPointError) and isinstance(err, HashlibVitError)
    assert [r["step"] for r in rows] == list(range(1, 15))  # the rows before step 15 are kept
    msg = str(err)
    assert msg.startswith("loss 102 at step 15 (epoch 0, batch 14) is far above its early value: the reference is "
                          "0.68 (the lowest loss of steps 1-10) and the limit 100.68 = reference + divergence_factor "
                          "100 x max(|reference|, 1); lr was 0.5 at that step.")
    assert "learning rate too high" in msg and "grad_clip" in msg and msg.endswith("LAST.")
    assert feed(losses, factor=200.0)[1] is not None and "at step 16 " in str(feed(losses, factor=200.0)[1])


def test_a_blow_up_inside_the_early_window_is_caught():
    rows, err = feed([2.0, 2.1, 500.0, 3.0])
    assert [r["step"] for r in rows] == [1, 2]
    assert "loss 500 at step 3 " in str(err) and "the lowest loss of steps 1-2) and the limit 202" in str(err)
    _, err = feed([2.0, 500.0])
    assert "(the lowest loss of step 1)" in str(err)


def test_noisy_but_stable_losses_are_not_stopped():
    rng = np.random.default_rng(0)
    noisy = 5.0 * np.exp(rng.normal(0, 0.5, 400))  # log-normal noise, up to ~20x the median
    noisy[[50, 200, 333]] = [90.0, 150.0, 200.0]  # spikes below 5 + 100 * 5 (the reference is lower still)
    rows, err = feed(noisy.tolist())
    assert err is None and len(rows) == 400
    decreasing = (3.0 * np.exp(-np.arange(300) / 30) + 1e-4 * rng.random(300)).tolist()  # to ~1e-4: floor 1
    assert feed(decreasing + [50.0, 0.2])[1] is None
    near_zero = (1e-3 * rng.normal(size=300)).tolist() + [0.5, 60.0]  # |reference| << 1: the scale is 1
    assert feed(near_zero)[1] is None


def test_negative_losses():
    rng = np.random.default_rng(1)
    stable = (-3.0 - np.linspace(0, 7, 300) + 0.5 * rng.normal(size=300)).tolist()  # falls to -10, noisy
    assert feed(stable)[1] is None
    rows, err = feed([-3.0] * 10 + [-1.0, 100.0, 296.0, 298.0])  # limit -3 + 100 * 3 = 297
    assert [r["step"] for r in rows] == list(range(1, 14)) and "loss 298 at step 14 " in str(err)
    assert "the reference is -3 " in str(err) and "limit 297 " in str(err)


def test_non_finite_values():
    rows, err = feed([1.0, 0.9, 0.8, 0.8], grad_norms=[1.0, 2.0, math.inf, 1.0])
    assert [r["step"] for r in rows] == [1, 2] and isinstance(err, FloatingPointError)
    assert str(err).startswith("the gradient norm became inf at step 3 (epoch 0, batch 2) (loss 0.8); LAST. ")
    assert "learning rate too high" in str(err)
    assert "gradient norm became nan at step 2 " in str(feed([1.0, 0.9], grad_norms=[1.0, math.nan])[1])
    rows, err = feed([1.0, 0.9, 0.8, 0.8], grad_norms=[1.0, 2.0, math.inf, 1.0], overflow_ok=True)  # fp16 scaling
    assert err is None and [r["grad_norm"] for r in rows] == [1.0, 2.0, math.inf, 1.0]
    rows, err = feed([1.0, math.nan], factor=None)  # a non-finite loss stops the run even with the check off
    assert str(err).startswith("loss became nan at step 2 (epoch 0, batch 1); LAST. Lower the learning rate")
    assert feed(EARLY + [1e6, 1e12], factor=None)[1] is None  # divergence_factor=None: no limit


def test_resume_rebuilds_the_window_from_the_logged_rows():
    losses = EARLY + [0.7, 1.5, 10.0, 99.0, 102.0, 1e3]
    whole, err = feed(losses)
    for cut in (3, 12):  # resumed inside and after the early window: the same step, the same message
        rows, err2 = feed(losses[cut:], history=whole[:cut], start=cut + 1, every=3)
        assert str(err2) == str(err) and [r["step"] for r in rows] == list(range(1, 15))
    assert DivergenceGuard(100.0, whole).reference == 0.68


def test_divergence_factor_is_validated():
    assert TrainConfig().divergence_factor == 100.0
    for ok in (None, 5, 1e3):
        TrainConfig(divergence_factor=ok).validate()
    for bad in (0, -1.0, math.inf, math.nan, "x", True):
        with pytest.raises(ConfigError, match=r"divergence_factor=.* must be a positive finite number, or None"):
            TrainConfig(divergence_factor=bad).validate()
    assert RunConfig.from_dict({"divergence_factor": "None"}).divergence_factor is None  # papermill / CLI text
    assert RunConfig.from_dict({"train.divergence_factor": 20}).train.divergence_factor == 20


SANE = {"adamw": dict(), "sgd": dict(optimizer="sgd", lr=0.05, warmup_steps=0)}


@pytest.mark.parametrize("loss", LOSSES.names())
def test_no_false_alarm_for_any_loss_at_a_sane_learning_rate(loss):
    """Every registered loss, 3 epochs of the digits (48 steps) per setting: no divergence error, and
    the highest loss a quarter of the default limit away at most (the largest rise seen is 6.5)."""
    for opt, kw in SANE.items():
        res = run_experiment(protocol="digits", backbone="vit32_test", bits=16, epochs=3, batch_size=32,
                             progress=False, device="cpu", run_dir=None, loss=loss, save_codes=False, **kw)
        losses = [r["loss"] for r in res.history["steps"]]
        ref = min(losses[:10])
        rise = (max(losses) - ref) / max(abs(ref), 1.0)  # in the rule's units: the default limit is 100
        assert len(losses) == 48 and all(math.isfinite(v) for v in losses) and rise < 25, (loss, opt, rise)


def test_an_absurd_learning_rate_stops_the_run_and_keeps_the_last_good_state(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(DivergenceError) as info:
        run_experiment(protocol="digits", backbone="vit32_test", bits=16, epochs=4, batch_size=32, progress=False,
                       device="cpu", run_dir=str(run_dir), loss="dsh", optimizer="sgd", lr=10.0, warmup_steps=5,
                       checkpoint_every_steps=2, log_every_steps=1)
    msg = str(info.value)
    step = int(re.search(r" at step (\d+) \(epoch 0, batch \d+\) is far above its early value", msg).group(1))
    assert 2 < step < 64 and "learning rate too high" in msg  # 64 steps in all: it stopped long before the end
    last = load_checkpoint(run_dir / "checkpoint.pt")["step"]
    assert last == (step - 1) // 2 * 2 and f"checkpoint.pt (step {last};" in msg
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "codes.npz").exists()
    log = (run_dir / "train_log.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in log[1:]] == list(range(1, step))


@pytest.mark.parametrize("loss", ["dch", "hashnet"])
def test_a_bounded_loss_that_saturates_completes_with_a_chance_level_warning(loss):
    """A bounded loss at SGD lr=10 does not explode (the divergence rule cannot see it): the run completes,
    but not without a word — its mAP is at the random-codes level and a warning says so."""
    with pytest.warns(UserWarning, match=r"mAP 0\.\d+ is at the chance level of random codes \(map_random 0\.\d+\)"
                                         r": the model learned nothing usable \(loss .* at step 1, .* at the end\)"):
        r = run_experiment(backbone="vit32_test", bits=16, epochs=2, batch_size=64, loss=loss, optimizer="sgd", lr=10.0,
                           progress=False, device="cpu")
    assert r.metrics["map"] <= 1.1 * r.metrics["map_random"]


def test_a_run_that_learns_gives_no_chance_level_warning(recwarn):
    r = run_experiment(backbone="vit32_test", bits=16, epochs=15, batch_size=64, loss="csq", lr=1e-3, progress=False,
                       device="cpu")
    assert r.metrics["map"] > 1.5 * r.metrics["map_random"]  # 0.20 vs 0.105 on 1 thread
    assert not [w for w in recwarn if "chance level" in str(w.message)]
