"""Many classes (1,000 and 10,000): the package's paths vs a naive reference, timed in the same run.

* hash centres (CSQ Bernoulli, 64 bits): ``hash_centers`` (row-blocked XOR + popcount distances, a draw
  abandoned as soon as a pair rules it out, closed-form mean) vs the original all-pairs code (C x C int64
  products, 20 draws); both return the same centres. The naive path is run at 1,000 classes only unless
  ``--naive-10k`` (it needs about 3 GB and minutes at 10,000);
* MaxHD codebook (OrthoHash): popcount greedy vs the original int64 mat-vec greedy, same pool, same codes;
* evaluation labels: ``evaluate`` on one-hot (N, C) float32 labels (checked in row blocks, compared by class
  index) vs the same call on a naive one-hot -> class conversion done first (``argmax``), i.e. the ratio of
  the label handling overhead; and a naive dense relevance ``(Yq Yd^T > 0)`` matmul for the same queries.

Measured on the 2-core development machine (shared, busy), 64 bits, one run:

    hash_centers  C=1000   package 0.46 s   naive 1.97 s   (x4.3)  same centres
    hash_centers  C=10000  package 2.7 s    naive: ~3 GB and minutes (not run by default)
    maxhd         C=1000   package 0.036 s  naive 0.36 s   (x10)   same codes
    maxhd         C=10000  package 0.58 s   (pool 40,000)
    evaluate, one-hot labels vs class indices (500 x 20,000): C=1000 0.155 / 0.124 s, C=10000 0.45 / 0.20 s
      (the one-hot path reads the 800 MB label matrix once, in row blocks); a naive dense relevance
      Yq Yd^T at C=10000 alone takes 4.1 s (x9 the whole one-hot evaluation).

(run it for the numbers on your machine). Writes results/benchmarks/many_classes.md.

    python benchmarks/bench_many_classes.py
    python benchmarks/bench_many_classes.py --classes 1000 --naive-10k
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hashlib_vit.losses.centers import CenterDistanceWarning  # noqa: E402
from hashlib_vit.losses.csq import hadamard, hash_centers  # noqa: E402
from hashlib_vit.losses.orthohash import maxhd_codebook  # noqa: E402
from hashlib_vit.retrieval import evaluate  # noqa: E402
from hashlib_vit.utils import atomic_write_text  # noqa: E402


def naive_centers(num_classes, bits, seed=0):
    if bits & (bits - 1) == 0 and 2 * bits >= num_classes:
        h = hadamard(bits)
        return torch.from_numpy(np.concatenate([h, -h])[:num_classes]).float()
    rng = np.random.default_rng(seed)
    best, best_score = None, -1.0
    for _ in range(20):
        c = np.full((num_classes, bits), -1, dtype=np.int64)
        for i in range(num_classes):
            c[i, rng.choice(bits, bits // 2, replace=False)] = 1
        d = (bits - c @ c.T) / 2
        off = d[~np.eye(num_classes, dtype=bool)] if num_classes > 1 else np.array([bits])
        if off.min() > bits / 4 and off.mean() >= bits / 2:
            return torch.from_numpy(c).float()
        if off.min() > best_score:
            best, best_score = c, off.min()
    return torch.from_numpy(best).float()


def naive_maxhd(num_classes, bits, seed=0, pool=4096):
    rng = np.random.default_rng(seed)
    pool = max(int(pool), num_classes, 4 * num_classes if num_classes > 1024 else 0)
    cand = np.where(rng.random((pool, bits)) < 0.5, -1, 1).astype(np.int64)
    chosen = [0]
    min_d = (bits - cand @ cand[0]) // 2
    min_d[0] = -1
    for _ in range(1, num_classes):
        j = int(np.argmax(min_d))
        chosen.append(j)
        min_d = np.minimum(min_d, (bits - cand @ cand[j]) // 2)
        min_d[chosen] = -1
    return torch.from_numpy(cand[chosen]).float()


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--naive-10k", action="store_true", help="also run the naive centres above 2,000 classes")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore", CenterDistanceWarning)
    rows = []
    for C in a.classes:
        for name, ours_fn, naive_fn in (("hash_centers", hash_centers, naive_centers),
                                        ("maxhd", maxhd_codebook, naive_maxhd)):
            ours, t_ours = timed(lambda: ours_fn(C, a.bits))
            if C <= 2000 or a.naive_10k:
                ref, t_ref = timed(lambda: naive_fn(C, a.bits))
                rows.append((name, C, t_ours, t_ref, bool(torch.equal(ours, ref))))
            else:
                rows.append((name, C, t_ours, None, None))
        rng = np.random.default_rng(0)
        Q, N = 500, 20000
        dcls, qcls = rng.integers(0, C, N), rng.integers(0, C, Q)
        codes = np.where(rng.random((C, a.bits)) < 0.5, -1, 1).astype(np.int8)
        dc, qc = codes[dcls], codes[qcls]
        dl = np.zeros((N, C), np.float32)
        dl[np.arange(N), dcls] = 1
        ql = np.zeros((Q, C), np.float32)
        ql[np.arange(Q), qcls] = 1
        r1, t1 = timed(lambda: evaluate(qc, dc, ql, dl, topk=1000, backend="numpy", tie_aware=False)["map"])
        r0, t0 = timed(lambda: evaluate(qc, dc, ql.argmax(1), dl.argmax(1), topk=1000, backend="numpy",
                                        tie_aware=False)["map"])
        rows.append(("evaluate one-hot vs indices", C, t1, t0, r1 == r0))
        _, tdense = timed(lambda: (torch.from_numpy(ql) @ torch.from_numpy(dl).T > 0))
        rows.append(("dense relevance Yq Yd^T (naive)", C, None, tdense, None))
    md = ["# Many classes: package path vs naive reference (same run)", "",
          f"{a.bits} bits; evaluate: 500 queries x 20,000 items, top 1000, numpy backend.", "",
          "| what | classes | package s | naive s | naive / package | same result |", "|---|---|---|---|---|---|"]
    for what, C, t_o, t_r, same in rows:
        ratio = f"{t_r / t_o:.1f}" if t_o and t_r else "-"
        md.append(f"| {what} | {C} | {'-' if t_o is None else f'{t_o:.3f}'} | {'-' if t_r is None else f'{t_r:.3f}'} "
                  f"| {ratio} | {'-' if same is None else same} |")
    text = "\n".join(md) + "\n"
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "many_classes.md", text)


if __name__ == "__main__":
    main()
