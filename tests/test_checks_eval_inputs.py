"""Issue 18, kind 8: every evaluation entry point runs on every valid input form and gives the numpy
reference value (or a clear error naming the argument)."""
import numpy as np
import pytest
import torch

from hashlib_vit.errors import DataError
from hashlib_vit.retrieval import evaluate, map_at_k


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(0)
    q = rng.choice([-1, 1], (20, 16)).astype(np.int8)
    d = rng.choice([-1, 1], (200, 16)).astype(np.int8)
    ql, dl = rng.integers(0, 5, 20), rng.integers(0, 5, 200)
    return q, d, ql, dl, evaluate(q, d, ql, dl, topk=50, backend="numpy")["map"]


CODE_FORMS = {"int8 ±1": lambda x: x, "cpu tensor": torch.from_numpy, "float tensor": lambda x: torch.from_numpy(x).float(),
              "bool": lambda x: x > 0, "uint8 0/1": lambda x: (x > 0).astype(np.uint8)}
LABEL_FORMS = {"ids": lambda y: y, "id tensor": torch.from_numpy, "one-hot": lambda y: np.eye(5, dtype=np.uint8)[y],
               "one-hot float tensor": lambda y: torch.from_numpy(np.eye(5)[y])}


@pytest.mark.parametrize("backend", ["numpy", "torch", "numba", None])
@pytest.mark.parametrize("form", CODE_FORMS)
def test_every_backend_and_code_form_gives_the_numpy_value(case, backend, form):
    q, d, ql, dl, ref = case
    f = CODE_FORMS[form]
    assert evaluate(f(q), f(d), ql, dl, topk=50, backend=backend)["map"] == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch", "numba"])
@pytest.mark.parametrize("form", LABEL_FORMS)
def test_every_backend_and_label_form_gives_the_numpy_value(case, backend, form):
    q, d, ql, dl, ref = case
    g = LABEL_FORMS[form]
    assert evaluate(q, d, g(ql), g(dl), topk=50, backend=backend)["map"] == pytest.approx(ref, abs=1e-12)
    assert map_at_k(CODE_FORMS["cpu tensor"](q), d, g(ql), g(dl), topk=50) == pytest.approx(ref, abs=1e-12)


def test_torch_backend_on_cpu_arrays_runs_on_the_cpu(case):
    """Was a bare StopIteration: backend='torch' looked for a GPU tensor among CPU inputs."""
    q, d, ql, dl, ref = case
    out = evaluate(torch.from_numpy(q), torch.from_numpy(d), torch.from_numpy(ql), torch.from_numpy(dl), topk=50,
                   backend="torch")
    assert out["map"] == pytest.approx(ref, abs=1e-12)


def test_tiny_and_wrong_inputs(case):
    q, d, ql, dl, _ = case
    one = [evaluate(q[:1], d[:1], ql[:1], dl[:1], backend=b)["map"] for b in ("numpy", "torch", "numba")]
    assert one == [float(ql[0] == dl[0])] * 3
    with pytest.raises(DataError, match="query_codes must be a 2-D"):
        evaluate(q[0], d, ql[:1], dl)
    with pytest.raises(DataError, match=r"topk=500 must be an integer in 1\.\.200"):
        evaluate(q, d, ql, dl, topk=500)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_cuda_is_a_config_error(case):
    from hashlib_vit.errors import ConfigError

    q, d, ql, dl, _ = case
    with pytest.raises(ConfigError, match=r"device='cuda' was asked for but CUDA is not available"):
        evaluate(q, d, ql, dl, topk=50, backend="torch", device="cuda")
    assert evaluate(q, d, ql, dl, topk=50, backend="torch", device="cpu")["map"] == pytest.approx(case[4], abs=1e-12)
