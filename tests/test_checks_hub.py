"""Issue 18, kind 5: ``weights="hub"`` on a machine without a network, and without ``HF_HUB_OFFLINE``.

huggingface_hub retries for about a minute before it gives up; the package checks the local cache first,
then probes the network (a name lookup and a TCP connection, 2 s at most) and gives its message at once,
before anything is written. The network "that is not there" is simulated with ``HF_ENDPOINT`` / a proxy
pointing at a closed port (refused at once) or at an address that never answers (the probe's time-out).
"""
from __future__ import annotations

import shutil
import socket
import time

import pytest

from hashlib_vit.errors import ConfigError
from hashlib_vit.models.backbones import create_backbone
from hashlib_vit.models.standin import make_fake_hf_cache
from hashlib_vit.models.weights import PROBE_TIMEOUT_S, network_problem

TAGGED = "vit_tiny_patch16_224.augreg_in21k"


def _closed_port() -> int:
    with socket.socket() as s:  # a port nothing listens on: the connection is refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_network(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    return tmp_path


def test_hub_without_network_fails_fast_with_the_message(no_network, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        create_backbone(TAGGED, img_size=32, weights="hub")
    took = time.perf_counter() - t0
    msg = str(e.value)
    assert took < 5, f"took {took:.1f} s"
    for part in (f"backbone '{TAGGED}'", "not reachable", "cannot connect to http://127.0.0.1", f"'timm/{TAGGED}'",
                 str(tmp_path / "empty_cache"), "weights='/path/to/file.pth'"):
        assert part in msg, part


def test_run_without_network_fails_before_the_run_directory_is_written(no_network, tmp_path):
    from hashlib_vit.experiment import run_experiment

    with pytest.raises(ConfigError, match="not reachable"):  # how fast: the test above
        run_experiment(backbone=TAGGED, img_size=32, weights="hub", bits=16, epochs=1, batch_size=64,
                       device="cpu", progress=False, run_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_the_local_cache_is_used_without_any_probe(no_network, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    make_fake_hf_cache(cache, TAGGED)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import hashlib_vit.models.weights as W

    monkeypatch.setattr(W, "network_problem", lambda *a, **k: pytest.fail("probed the network with a cached file"))
    bb = create_backbone(TAGGED, img_size=32, weights="hub")
    assert bb.weights_info["source"] == "hf-cache"


def test_probe_of_a_network_that_never_answers_is_bounded(monkeypatch):
    """A name lookup or a connection that hangs (no time-out of its own) is cut at the probe's time-out."""
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: time.sleep(30))
    t0 = time.perf_counter()
    why = network_problem("https://hub.example/", timeout=0.5)
    took = time.perf_counter() - t0
    assert why == "no answer from https://hub.example/ within 0.5 s" and took < 1.5
    assert PROBE_TIMEOUT_S <= 3


def test_probe_names_the_https_proxy_when_one_is_set(monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    why = network_problem("https://hub.example/")
    assert why is not None and f"through the HTTPS proxy http://127.0.0.1:{port}" in why


def test_probe_of_a_server_that_answers_is_none(monkeypatch):
    """Any HTTP answer counts, even an error status (here a tiny local server answering 404)."""
    import http.server
    import threading

    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=srv.handle_request, daemon=True).start()
    try:
        assert network_problem(f"http://127.0.0.1:{srv.server_port}/") is None
    finally:
        srv.server_close()


def test_torch_hub_url_weights_probe_too(no_network, tmp_path, monkeypatch):
    """A timm model whose pretrained_cfg has only a url (torch hub cache): same fast message."""
    import torch

    import hashlib_vit.models.weights as W

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))

    class M:
        pretrained_cfg = {"url": f"http://127.0.0.1:{_closed_port()}/w.pth"}

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"not in the torch hub cache, and cannot connect"):
        W.find_hub_file(M(), "some_net")
    assert time.perf_counter() - t0 < 5
    assert not (tmp_path / "torch_hub").exists()
    shutil.rmtree(tmp_path / "torch_hub", ignore_errors=True)
