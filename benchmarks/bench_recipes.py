"""The GPU cost of each paper reproduction: throughput and memory of the papers' recipes at full size,
and from them the GPU-hours every paper table costs.

Two parts:

* ``measure RECIPE ...``: for each recipe of :data:`RECIPES` (the papers' architectures with random,
  "stand-in" weights: TransHash's MGVT on ViT-L/32 at 224 px batch 64, ViT-B/16 + ``cls_linear`` for the
  VTS-style loss zoo, ViT-B/16 + ``hcl`` + ``orthohash`` for SL-ViT, ViT-B/16 + AEM + ``hsc`` for AE-ViT,
  ResNet-50 / AlexNet / ViT-B/32 for the backbone study) build the real model (``build_model``) and loss
  (``build_loss``), put a synthetic uint8 image pool on the device and time ``max_steps`` training steps
  through our real :func:`hashlib_vit.train.train` loop (the recipe's optimiser, bf16 autocast on CUDA,
  the protocol's real train transform: 32-px images resized to 256, random 224 crop + flip), after a
  warm-up; then the encoding rate (:func:`hashlib_vit.retrieval.encode`, eval mode, bf16). Every recipe
  appends one JSON line to ``--rows`` as soon as it is measured (a failure appends a line with its
  error), so a campaign killed at its time limit keeps what it measured.
* ``report``: reads those lines and writes ``recipes_gpu.md`` / ``recipes_gpu.json`` (per-recipe rates
  and memory, then the GPU-hours of each paper table, :data:`PAPER_TABLES`, with the formula) and the
  rows of ``throughput.csv`` (:data:`THROUGHPUT_COLUMNS`) into ``--out-dir``. Only with
  ``--commit-results`` (and only for rows measured on CUDA) does it write into the repository:
  ``results/benchmarks/recipes_gpu.{md,json}`` and ``hashlib_vit/reference/throughput.csv``.

Cost model (:func:`run_cost`): a run of ``E`` epochs on ``n_train`` images with batch ``B`` takes
``E * steps_per_epoch(n_train, B)`` steps of the measured step time ``B / train_img_s``, plus
``n_evals * (n_query + n_database) / encode_img_s`` of encoding (mAP itself is not counted: it runs on
the codes, seconds on a GPU). Every loss of the same model is assumed to cost what the measured recipe's
loss costs (the pair losses on a batch of 64 are negligible next to a ViT-B/16 step).

    python benchmarks/bench_recipes.py measure --smoke --rows /tmp/rows.jsonl transhash_mgvt aevit_hsc
    python benchmarks/bench_recipes.py report --rows /tmp/rows.jsonl --out-dir /tmp/recipes
    bash benchmarks/gpu/campaign_c.sh        # on the GPU machine (see benchmarks/gpu/README.md)

Sources of the recipes: METHODS.md §2.5 (TransHash), §3.5 (SL-ViT), §4.5 (AE-ViT), §5.8-§5.9 (loss zoo,
VTS) and the grids ``configs/grids/*paper*.yaml``, ``transhash_ablation.yaml``, ``aevit_backbone_study.yaml``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hashlib_vit.errors import ConfigError, DataError  # noqa: E402

THROUGHPUT_COLUMNS = ("device", "backbone", "head", "aem", "img_size", "batch_size", "amp", "train_img_s",
                      "encode_img_s", "peak_mem_gib", "source")
THROUGHPUT_KEY = ("device", "backbone", "head", "aem", "img_size", "batch_size", "amp")
THROUGHPUT_CSV = ROOT / "hashlib_vit" / "reference" / "throughput.csv"
RESULTS_DIR = ROOT / "results" / "benchmarks"


# ----------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """One paper architecture + training recipe to time (what ``build_model`` / ``build_loss`` /
    ``TrainConfig`` receive). ``batch`` counts source images; with ``n_views=2`` the model sees twice as many."""

    backbone: str
    head: str
    loss: str
    batch: int
    img_size: int = 224
    aem: str = "off"
    model_params: dict = field(default_factory=dict)
    loss_params: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-5
    weight_decay: float = 0.0
    grad_clip: float | None = None
    bits: int = 64
    classes: int = 10
    paper: str = ""

    @property
    def n_views(self) -> int:
        return int(self.loss_params.get("n_views", 1))

    def smoke(self) -> "Recipe":
        """The same plumbing at CPU scale: ViTs become ``vit_tiny_patch16_224`` at 64 px, CNNs <= 64 px, batch 4."""
        is_vit = self.backbone.startswith("vit")
        return Recipe(**{**asdict(self), "backbone": "vit_tiny_patch16_224" if is_vit else self.backbone,
                         "img_size": 64 if is_vit else min(self.img_size, 64), "batch": 4})


_HSC = dict(tau=0.2, alpha=1.0, beta=0.1, contrastive="supcon", pos_weight="uniform")
RECIPES: dict[str, Recipe] = {
    # TransHash (METHODS §2.5, configs/transhash_paper.yaml): ViT-L/32 224 px, MGVT G=2, Cauchy loss, SGD, batch 64
    "transhash_mgvt": Recipe("vit_large_patch32_224", "mgvt", "transhash", 64,
                             model_params=dict(groups=2, local_stream=True),
                             loss_params=dict(gamma=20.0, lambda_q=0.1, likelihood="cauchy"),
                             optimizer="sgd", lr=0.03, weight_decay=1e-4, grad_clip=1.0, paper="TransHash"),
    # AE-ViT + HSC (METHODS §4.5, configs/grids/aevit_hsc_paper.yaml): ViT-B/16 + AEM, batch 64, 1 view
    "aevit_hsc": Recipe("vit_base_patch16_224", "cls_linear", "hsc", 64, aem="all",
                        loss_params=dict(_HSC, n_views=1), paper="AE-ViT"),
    # SL-ViT (METHODS §3.5, configs/slvit_paper.yaml): ViT-B/16 + hash coding layer + orthohash, batch 64
    "slvit_hcl": Recipe("vit_base_patch16_224", "hcl", "orthohash", 64,
                        model_params=dict(hcl_attention=True, pooling="auto"),
                        loss_params=dict(s=8.0, m=0.2, codebook="bernoulli", binary_forward=False),
                        lr=1e-4, weight_decay=5e-4, paper="SL-ViT"),
    # loss zoo / VTS-style / plain-ViT study cells (METHODS §5.9): ViT-B/16 + cls_linear, csq, batch 64
    "vitb16_cls_linear": Recipe("vit_base_patch16_224", "cls_linear", "csq", 64, paper="loss zoo / VTS"),
    # backbone study and the "ViT vs CNN" loss-zoo table (configs/grids/aevit_backbone_study.yaml,
    # loss_zoo_paper.yaml): ResNet-50 at 224 px (loss zoo, NUS-WIDE study cells) and at CIFAR's 32 px
    "resnet50_224": Recipe("resnet50", "cls_linear", "csq", 64, paper="loss zoo / backbone study"),
    "alexnet_224": Recipe("alexnet", "cls_linear", "csq", 64, paper="backbone study"),
    "resnet50_32": Recipe("resnet50", "cls_linear", "csq", 64, img_size=32, paper="backbone study (CIFAR-10)"),
    "alexnet_64": Recipe("alexnet", "cls_linear", "csq", 64, img_size=64, paper="backbone study (CIFAR-10)"),
    # information: standard two-view SupCon (twice the images per step), and VTS's ViT-B/32
    "aevit_hsc_2views": Recipe("vit_base_patch16_224", "cls_linear", "hsc", 64, aem="all",
                               loss_params=dict(_HSC, n_views=2), paper="AE-ViT (n_views=2)"),
    "vitb32_cls_linear": Recipe("vit_base_patch32_224", "cls_linear", "csq", 64, paper="VTS (ViT-B/32)"),
}


# ----------------------------------------------------------------------------- measuring
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_split(n: int, classes: int, size: int, seed: int, device):
    """``n`` random uint8 images ``(n, 3, size, size)`` and one-hot labels, on ``device`` (a :class:`Split`)."""
    import torch

    from hashlib_vit.data import Split

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return Split(images.to(device), torch.nn.functional.one_hot(y, classes).float().to(device),
                 [str(i) for i in range(n)])


def train_flops_per_image(model, loss, recipe: Recipe, device, n: int = 4) -> float:
    """FLOPs of one forward + loss + backward per model image (torch's FlopCounterMode on ``n`` images
    x views, fp32); the views of one image share its index, as in :class:`MultiViewBatches`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    v = recipe.n_views
    x = torch.rand(n * v, 3, recipe.img_size, recipe.img_size, device=device)
    y = torch.nn.functional.one_hot(torch.arange(n) % recipe.classes, recipe.classes).float().repeat(v, 1).to(device)
    idx = torch.arange(n).repeat(v).to(device)
    model.train()
    with FlopCounterMode(display=False) as fc:
        loss(model(x), y, idx).total.backward()
    model.zero_grad(set_to_none=True)
    for p in loss.parameters():
        p.grad = None
    return float(fc.get_total_flops()) / (n * v)


def standin_weights(recipe: Recipe, fmt: str, folder: Path) -> tuple[str | None, dict]:
    """A stand-in checkpoint of the recipe's ViT backbone in ``fmt`` (``hashlib_vit.models.standin``, branch
    feat/weights), written once per (backbone, size, fmt) into ``folder``, so that the measurement also goes
    through the weights-loading path. Returns ``(path or None, info)``; None (with the reason in ``info``)
    when the module is absent or the backbone is not a ViT: the recipe then runs from random weights."""
    if not recipe.backbone.startswith("vit"):
        return None, {"standin": f"not used ({recipe.backbone} is not a ViT)"}
    try:
        from hashlib_vit.models.standin import write_standin_checkpoint
    except ImportError as e:
        return None, {"standin": f"unavailable ({e})"}
    ext = {"torchvision": "pth", "dinov2": "pth", "bin": "bin"}.get(fmt, fmt)
    path = folder / f"{recipe.backbone}_{recipe.img_size}_{fmt}.{ext}"
    info = {"standin": fmt, "standin_path": str(path)}
    if not path.is_file():
        t = time.perf_counter()
        try:
            write_standin_checkpoint(recipe.backbone, path, fmt, img_size=recipe.img_size)
        except Exception as e:  # noqa: BLE001 - recorded; the rates do not depend on it
            return None, {**info, "standin_error": f"{type(e).__name__}: {e}"}
        info["standin_write_s"] = time.perf_counter() - t
    info["standin_bytes"] = path.stat().st_size
    return str(path), info


def measure(name: str, recipe: Recipe, device, *, steps: int, warmup: int, n_encode: int, compile_: bool = False,
            src_size: int = 32, flops: bool = True, standin: str | None = None,
            standin_dir: Path | None = None) -> dict:
    """Time ``steps`` training steps (after ``warmup``) of `recipe` through :func:`hashlib_vit.train.train`
    and its encoding rate; returns one row (rates in images/s of source images, memory in GiB).

    ``standin``: a checkpoint format (``pth``, ``npz``, ...): build the backbone from a stand-in checkpoint
    written into ``standin_dir`` (:func:`standin_weights`) instead of random initialisation."""
    import torch

    from hashlib_vit.data import PROTOCOLS, make_batches
    from hashlib_vit.data.views import MultiViewBatches
    from hashlib_vit.experiment import transforms_for
    from hashlib_vit.losses import build_loss
    from hashlib_vit.models import build_model
    from hashlib_vit.retrieval import encode
    from hashlib_vit.train import TrainConfig, amp_dtype, train
    from hashlib_vit.utils import seed_everything

    cuda = device.type == "cuda"
    t_start = time.perf_counter()
    seed_everything(0)
    weights, standin_info = standin_weights(recipe, standin, standin_dir) if standin else (None, {})
    try:
        model = build_model(recipe.backbone, recipe.bits, recipe.head, img_size=recipe.img_size, aem=recipe.aem,
                            weights=weights, **recipe.model_params)
    except Exception as e:  # noqa: BLE001 - a loading failure is recorded; the rates come from random weights
        if weights is None:
            raise
        standin_info["standin_error"] = f"{type(e).__name__}: {e}"
        seed_everything(0)
        model = build_model(recipe.backbone, recipe.bits, recipe.head, img_size=recipe.img_size, aem=recipe.aem,
                            **recipe.model_params)
    standin_info["standin_loaded"] = bool(getattr(model.backbone, "pretrained", False))
    loss = build_loss(recipe.loss, recipe.bits, recipe.classes, False, **recipe.loss_params)
    build_s = time.perf_counter() - t_start
    n_params = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in loss.parameters())
    tr_tf, ev_tf = transforms_for(PROTOCOLS.get("cifar10"), model)
    split = synthetic_split(recipe.batch * (warmup + steps), recipe.classes, src_size, 0, device)
    batches = make_batches(split, recipe.batch, tr_tf, train=True, seed=0, device=device)
    if recipe.n_views > 1:
        batches = MultiViewBatches(batches, recipe.n_views)
    cfg = TrainConfig(epochs=1, batch_size=recipe.batch, lr=recipe.lr, optimizer=recipe.optimizer,
                      weight_decay=recipe.weight_decay, grad_clip=recipe.grad_clip, schedule="cosine",
                      compile=compile_)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    base_mem = torch.cuda.memory_allocated(device) if cuda else 0
    t0 = time.perf_counter()
    hist = train(model, loss, batches, cfg, device=device, progress=False, max_steps=warmup + steps)
    train_wall = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) - base_mem) / 2**30 if cuda else None
    t = [r["time_s"] for r in hist["steps"]]
    step_s = (t[warmup + steps - 1] - t[warmup - 1]) / steps
    row = {"recipe": name, **{k: v for k, v in asdict(recipe).items()}, "n_views": recipe.n_views,
           "params_m": n_params / 1e6, "amp": "bf16" if amp_dtype(cfg, device) is not None else "off",
           "compile": compile_, "steps": steps, "warmup": warmup, "src_size": src_size,
           "train_step_s": step_s, "train_img_s": recipe.batch / step_s,
           "train_model_img_s": recipe.batch * recipe.n_views / step_s, "first_steps_s": t[warmup - 1],
           "peak_mem_gib": peak, "build_s": build_s, "train_wall_s": train_wall,
           "final_loss": hist["steps"][-1]["loss"], **standin_info}
    # encoding: eval transform (resize 256 -> centre crop 224), eval batch 256 as RunConfig.eval_batch_size
    dt = amp_dtype(cfg, device)
    fwd = torch.compile(model) if compile_ else model
    eb = 256 if cuda else 8
    enc = synthetic_split(n_encode, recipe.classes, src_size, 1, device)
    n_warm = eb + n_encode % eb
    encode(fwd, make_batches(type(enc)(enc.images[:n_warm], enc.labels[:n_warm]), eb, ev_tf, train=False,
                             device=device), device=device, amp_dtype=dt)
    _sync(device)
    t1 = time.perf_counter()
    codes, _ = encode(fwd, make_batches(enc, eb, ev_tf, train=False, device=device), device=device, amp_dtype=dt)
    _sync(device)
    row["encode_img_s"] = n_encode / (time.perf_counter() - t1)
    row["n_encode"] = n_encode
    row["codes_shape"] = list(codes.shape)
    if flops:
        try:
            f = train_flops_per_image(model, loss, recipe, device)
            row["train_flops_per_image"] = f
            row["train_tflop_s"] = f * row["train_model_img_s"] / 1e12
        except Exception as e:  # noqa: BLE001 - information only; the rates stand without it
            row["flops_error"] = f"{type(e).__name__}: {e}"
    row["recipe_wall_s"] = time.perf_counter() - t_start
    return row


def environment(device) -> dict:
    """Device name and versions (the ``env_info`` of run directories)."""
    from hashlib_vit.utils import env_info

    env = env_info(device)
    if device.type == "cuda":
        import torch

        p = torch.cuda.get_device_properties(device)
        env["device_memory_gib"] = p.total_memory / 2**30
    return env


def append_row(path: Path, row: dict) -> None:
    """Append one JSON line and fsync it (a kill right after keeps the line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict]:
    """The JSON lines of ``path`` (a trailing line cut by a kill is ignored)."""
    if not path.is_file():
        raise DataError(f"rows file {path} does not exist (expected the JSON lines written by `measure`)")
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


# ----------------------------------------------------------------------------- cost of the paper tables
def steps_per_epoch(n_train: int, batch: int) -> int:
    """Training steps per epoch as :class:`~hashlib_vit.data.TensorBatches` makes them: ``ceil(n / B)``, a
    trailing single image dropped (pair losses need two)."""
    if n_train < 2 or batch < 2:
        raise ConfigError(f"n_train={n_train}, batch={batch}: both must be >= 2")
    return n_train // batch if n_train % batch == 1 else -(-n_train // batch)


def run_cost(rate: dict, *, epochs: int, n_train: int, n_query: int, n_database: int, n_evals: int = 1) -> dict:
    """GPU seconds of one run at a measured ``rate`` (``train_img_s``, ``encode_img_s``, ``batch``).

    ``train_s = epochs * steps_per_epoch(n_train, batch) * batch / train_img_s`` (the measured step time
    times the steps), ``encode_s = n_evals * (n_query + n_database) / encode_img_s``. Units: seconds."""
    if rate["train_img_s"] <= 0 or rate["encode_img_s"] <= 0:
        raise ConfigError(f"rates must be > 0, got train_img_s={rate['train_img_s']}, "
                          f"encode_img_s={rate['encode_img_s']}")
    steps = epochs * steps_per_epoch(n_train, rate["batch"])
    train_s = steps * rate["batch"] / rate["train_img_s"]
    encode_s = n_evals * (n_query + n_database) / rate["encode_img_s"]
    return {"steps": steps, "train_s": train_s, "encode_s": encode_s, "total_s": train_s + encode_s}


# HashNet's NUS-WIDE (the `nuswide81` lists, not in the repository): 195,834 images of the 21 most frequent
# concepts, 5,000 queries, the rest the database [I] (HashNet paper §4.1); used only when the protocol
# object does not know its database size.
NUSWIDE81_DATABASE = 195_834 - 5_000


def protocol_sizes(name: str) -> dict:
    """``n_train``, ``n_query``, ``n_database`` of a protocol (:data:`hashlib_vit.data.PROTOCOLS`)."""
    from hashlib_vit.data import PROTOCOLS

    p = PROTOCOLS.get(name)
    db = p.n_database
    note = ""
    if db is None and name == "nuswide81":
        db, note = NUSWIDE81_DATABASE, f"database {NUSWIDE81_DATABASE:,} [I]: HashNet's 195,834 - 5,000 queries"
    if db is None:
        raise DataError(f"protocol {name!r} has no documented database size (n_database=None)")
    return {"n_train": p.n_train, "n_query": p.n_query, "n_database": db, "note": note}


@dataclass(frozen=True)
class RunGroup:
    """``runs`` identical-cost runs of ``recipe`` (a key of :data:`RECIPES`) on ``protocol`` (a key of
    ``hashlib_vit.data.PROTOCOLS``) for ``epochs`` epochs, each evaluated ``n_evals`` times."""

    recipe: str
    protocol: str
    epochs: int
    runs: int
    what: str
    n_evals: int = 1


@dataclass(frozen=True)
class PaperTable:
    """One paper table: its grid file and the :class:`RunGroup` s its grid expands to."""

    name: str
    title: str
    grid: str
    groups: tuple


def _per_data(recipe, data_epochs, runs, what):
    return tuple(RunGroup(recipe, d, e, runs, what) for d, e in data_epochs)


# Run counts as the grids expand them (the notebooks evaluate once, after the last epoch: n_evals = 1).
PAPER_TABLES: tuple[PaperTable, ...] = (
    PaperTable("transhash_table1", "TransHash Table 1 (3 data sets x 4 bits)", "configs/grids/transhash_paper.yaml",
               _per_data("transhash_mgvt", [("cifar10", 127), ("nuswide81", 64), ("imagenet100", 49)], 4,
                         "4 bits")),
    PaperTable("transhash_table2", "TransHash Table 2 ablations (4 variants x 4 bits, CIFAR-10)",
               "configs/grids/transhash_ablation.yaml",
               (RunGroup("transhash_mgvt", "cifar10", 127, 16, "full, w/o C, w/o P, w/o Q x 4 bits"),)),
    PaperTable("aevit_hsc", "AE-ViT + HSC (3 data sets x 4 bits, each with the plain-ViT comparison run)",
               "configs/grids/aevit_hsc_paper.yaml",
               _per_data("aevit_hsc", [("cifar10", 100), ("cifar10-2", 100), ("nuswide21", 100)], 4, "AE-ViT, 4 bits")
               + _per_data("vitb16_cls_linear", [("cifar10", 100), ("cifar10-2", 100), ("nuswide21", 100)], 4,
                           "plain ViT (compare_plain), 4 bits")),
    PaperTable("aevit_backbone_study",
               "AE-ViT backbone study (2 data sets x 4 bits x {AE-ViT, ViT, ResNet-50, AlexNet} x 5 losses, "
               "+ the main AE-ViT HSC run)", "configs/grids/aevit_backbone_study.yaml",
               _per_data("aevit_hsc", [("cifar10", 100), ("nuswide21", 100)], 4 * 6, "main run + 5 losses, 4 bits")
               + _per_data("vitb16_cls_linear", [("cifar10", 100), ("nuswide21", 100)], 4 * 5, "5 losses, 4 bits")
               + (RunGroup("resnet50_32", "cifar10", 100, 20, "5 losses x 4 bits (32 px)"),
                  RunGroup("resnet50_224", "nuswide21", 100, 20, "5 losses x 4 bits"),
                  RunGroup("alexnet_64", "cifar10", 100, 20, "5 losses x 4 bits (64 px)"),
                  RunGroup("alexnet_224", "nuswide21", 100, 20, "5 losses x 4 bits"))),
    PaperTable("slvit", "SL-ViT (4 data sets x 4 bits, each with the csq comparison run on the same head)",
               "configs/grids/slvit_paper.yaml",
               _per_data("slvit_hcl", [("imagenet100", 100), ("nuswide21", 100), ("coco", 100), ("cifar10", 100)],
                         8, "4 bits x (orthohash + csq)")),
    PaperTable("loss_zoo", "Loss zoo (2 data sets x {ViT-B/16, ResNet-50} x 7 losses x 3 bits x 2 seeds)",
               "configs/grids/loss_zoo_paper.yaml",
               _per_data("vitb16_cls_linear", [("cifar10", 30), ("nuswide21", 30)], 42, "7 losses x 3 bits x 2 seeds")
               + _per_data("resnet50_224", [("cifar10", 30), ("nuswide21", 30)], 42, "7 losses x 3 bits x 2 seeds")),
)


def table_costs(rates: dict[str, dict], tables=PAPER_TABLES) -> list[dict]:
    """GPU-hours of every paper table from measured ``rates`` (recipe name -> row with ``train_img_s``,
    ``encode_img_s``, ``batch``). A group whose recipe has no rate gets ``hours=None`` and makes its
    table's total a lower bound (``complete=False``)."""
    out = []
    for t in tables:
        groups, total, complete = [], 0.0, True
        for g in t.groups:
            sizes = protocol_sizes(g.protocol)
            r = rates.get(g.recipe)
            item = {"recipe": g.recipe, "protocol": g.protocol, "epochs": g.epochs, "runs": g.runs, "what": g.what,
                    **{k: sizes[k] for k in ("n_train", "n_query", "n_database")}, "note": sizes["note"]}
            if r is None:
                item.update(hours=None, run_hours=None)
                complete = False
            else:
                c = run_cost(r, epochs=g.epochs, n_train=sizes["n_train"], n_query=sizes["n_query"],
                             n_database=sizes["n_database"], n_evals=g.n_evals)
                item.update(steps_per_run=c["steps"], run_hours=c["total_s"] / 3600,
                            train_hours=g.runs * c["train_s"] / 3600, encode_hours=g.runs * c["encode_s"] / 3600,
                            hours=g.runs * c["total_s"] / 3600)
                total += item["hours"]
            groups.append(item)
        out.append({"table": t.name, "title": t.title, "grid": t.grid, "runs": sum(g.runs for g in t.groups),
                    "hours": total, "complete": complete, "groups": groups})
    return out


# ----------------------------------------------------------------------------- throughput.csv
def throughput_row(row: dict, env: dict, source: str) -> dict:
    """One ``throughput.csv`` row (:data:`THROUGHPUT_COLUMNS`) from a measured recipe row."""
    return {"device": env["device_name"], "backbone": row["backbone"], "head": row["head"],
            "aem": "true" if row["aem"] not in ("off", False, None) else "false", "img_size": int(row["img_size"]),
            "batch_size": int(row["batch"]), "amp": row["amp"], "train_img_s": f"{row['train_img_s']:.1f}",
            "encode_img_s": f"{row['encode_img_s']:.1f}",
            "peak_mem_gib": "" if row.get("peak_mem_gib") is None else f"{row['peak_mem_gib']:.2f}",
            "source": source}


def merge_throughput(existing: str, new_rows: list[dict]) -> str:
    """``existing`` CSV text (may be empty) with ``new_rows`` added; a row with the same
    :data:`THROUGHPUT_KEY` as a new one is replaced. Raises DataError on a header that differs."""
    kept = []
    if existing.strip():
        reader = csv.DictReader(io.StringIO(existing))
        if tuple(reader.fieldnames or ()) != THROUGHPUT_COLUMNS:
            raise DataError(f"throughput.csv header is {reader.fieldnames}, expected {list(THROUGHPUT_COLUMNS)}")
        keys = {tuple(str(r[k]) for k in THROUGHPUT_KEY) for r in new_rows}
        kept = [r for r in reader if tuple(str(r[k]) for k in THROUGHPUT_KEY) not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=THROUGHPUT_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in kept + list(new_rows):
        w.writerow({k: r[k] for k in THROUGHPUT_COLUMNS})
    return buf.getvalue()


# ----------------------------------------------------------------------------- report
def render(raw: dict) -> str:
    """The Markdown report (per-recipe rates, then the GPU-hours of each paper table)."""
    env = raw["env"] or {}
    g = lambda v, f="{:,.0f}": "-" if v is None else f.format(v)  # noqa: E731
    lines = [
        "# GPU cost of the paper reproductions",
        "",
        f"Measured {raw['date']} on **{env.get('device_name', '?')}** ({env.get('device', '?')}, "
        f"{g(env.get('device_memory_gib'), '{:.0f}')} GiB), torch {env.get('torch')}, timm {env.get('timm')}, "
        f"CUDA {env.get('cuda')}, python {env.get('python')}.",
        f"Command: `{raw['command']}` (measure: `{raw.get('measure_command', '?')}`); "
        "raw numbers in `recipes_gpu.json`; produced by benchmarks/bench_recipes.py.",
        *(["", "**SMOKE RUN** (`--smoke`: tiny models at CPU scale, not the papers' architectures): the numbers below "
             "test the plumbing only."] if any(r.get("smoke") for r in raw["recipes"]) else []),
        "",
        "Stand-in (random) weights of the papers' architectures, the real model (`build_model`), loss "
        "(`build_loss`) and training loop (`hashlib_vit.train.train`, the recipe's optimiser, bf16 autocast, "
        "`max_steps`); synthetic uint8 images on the device through the CIFAR-10 train transform (32 px -> "
        "resize 256 -> random crop 224 + flip); encoding in eval mode, bf16, batch 256, resize 256 -> centre "
        "crop 224. img/s count source images (with 2 views the model sees twice as many). Peak memory: "
        "`torch.cuda.max_memory_allocated` during training (model, optimiser, activations), reset per recipe.",
        "",
        "| recipe | paper | backbone | head | loss | AEM | px | batch | views | params (M) | amp | compile | step (ms) "
        "| train img/s | encode img/s | peak GiB | train TFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in raw["recipes"]:
        if "error" in r:
            lines.append(f"| {r['recipe']} | {r.get('paper', '')} | {r.get('backbone', '')} | | | | | | | | | "
                         f"{r.get('compile', '')} | **failed**: {r['error'][:120]} | | | | |")
            continue
        lines.append(
            f"| {r['recipe']} | {r['paper']} | {r['backbone']} | {r['head']} | {r['loss']} | {r['aem']} | "
            f"{r['img_size']} | {r['batch']} | {r['n_views']} | {r['params_m']:.1f} | {r['amp']} | {r['compile']} | "
            f"{1000 * r['train_step_s']:.1f} | {g(r['train_img_s'])} | {g(r['encode_img_s'])} | "
            f"{g(r.get('peak_mem_gib'), '{:.2f}')} | {g(r.get('train_tflop_s'), '{:.0f}')} |")
    weights = []
    for r in raw["recipes"]:
        if "error" in r:
            continue
        if r.get("standin_loaded"):
            weights.append(f"{r['recipe']}: stand-in `{r['standin']}` checkpoint loaded")
        elif r.get("standin"):
            weights.append(f"{r['recipe']}: random ({r.get('standin_error') or r['standin']})")
    if weights:
        lines += ["", "Backbone weights: " + "; ".join(weights) + "; the others: random initialisation."]
    lines += [
        "",
        "## GPU-hours per paper table",
        "",
        "Per run: `train_h = epochs * steps_per_epoch * batch / train_img_s / 3600` with `steps_per_epoch = "
        "ceil(n_train / batch)` (a trailing single image dropped), plus `encode_h = n_evals * (n_query + "
        "n_database) / encode_img_s / 3600` with n_evals = 1 (the notebooks evaluate after the last epoch). "
        "Split sizes from `hashlib_vit.data.PROTOCOLS`; run counts from the grids; every loss on a model costs "
        "what the measured recipe's loss costs; mAP computation, data decoding (the measurement keeps images "
        "on the device) and start-up are not counted. One GPU of the device above, rates without "
        "torch.compile.",
        "",
        "| table | runs | GPU-hours | grid |",
        "|---|---|---|---|",
    ]
    for t in raw["tables"]:
        missing = sorted({gr["recipe"] for gr in t["groups"] if gr["hours"] is None})
        h = f"{t['hours']:,.1f}" if t["complete"] else f">= {t['hours']:,.1f} (partial: no rate for {', '.join(missing)})"
        lines.append(f"| {t['title']} | {t['runs']} | {h} | `{t['grid']}` |")
    lines += ["", "Per group (runs of one recipe on one protocol):", "",
              "| table | recipe | protocol | epochs | runs | n_train / query / database | steps per run | h per run "
              "| GPU-hours |", "|---|---|---|---|---|---|---|---|---|"]
    for t in raw["tables"]:
        for gr in t["groups"]:
            sizes = f"{gr['n_train']:,} / {gr['n_query']:,} / {gr['n_database']:,}"
            lines.append(f"| {t['table']} | {gr['recipe']} | {gr['protocol']} | {gr['epochs']} | {gr['runs']} "
                         f"({gr['what']}) | {sizes} | {g(gr.get('steps_per_run'))} | "
                         f"{g(gr.get('run_hours'), '{:.2f}')} | {g(gr['hours'], '{:.1f}')} |")
    notes = sorted({gr["note"] for t in raw["tables"] for gr in t["groups"] if gr["note"]})
    if notes:
        lines += [""] + [f"* {n}" for n in notes]
    partial = "" if all(t["complete"] for t in raw["tables"]) else " (a lower bound: some tables are partial)"
    lines.append(f"* Total of the tables above: {sum(t['hours'] for t in raw['tables']):,.1f} GPU-hours{partial}; "
                 "the TransHash Table 2 'full' rows are the CIFAR-10 runs of Table 1, counted in both.")
    return "\n".join(lines) + "\n"


def report(rows: list[dict], *, command: str, out_dir: Path, commit: bool = False) -> dict:
    """Write ``recipes_gpu.{md,json}`` and ``throughput.csv`` (the repository's rows merged with the
    measured ones) into ``out_dir``; with ``commit`` also into ``results/benchmarks/`` and
    ``hashlib_vit/reference/throughput.csv`` (refused unless every measured row is from CUDA).
    For each recipe the last successful row counts (a compiled row is kept beside the eager one)."""
    from hashlib_vit.utils import atomic_write_json, atomic_write_text

    ok = [r for r in rows if "error" not in r]
    if commit:
        bad = sorted({r["env"]["device"] for r in ok if not str(r["env"]["device"]).startswith("cuda")})
        if bad or not ok:
            raise ConfigError(f"--commit-results writes only CUDA measurements; the rows were measured on "
                              f"{bad or 'nothing (no successful row)'}")
    last: dict[tuple, dict] = {}
    for r in rows:
        key = (r["recipe"], bool(r.get("compile")))
        if "error" in r and key in last and "error" not in last[key]:
            continue  # a later failure does not hide an earlier measurement of the same configuration
        last[key] = r
    recipes = list(last.values())
    rates = {r["recipe"]: r for r in recipes if "error" not in r and not r.get("compile")}
    for r in recipes:  # a recipe measured only with compile still gives a rate
        if "error" not in r and r["recipe"] not in rates:
            rates[r["recipe"]] = r
    env = ok[-1]["env"] if ok else (rows[-1].get("env") if rows else {})
    date = (ok[-1].get("date") if ok else None) or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    raw = {"command": command, "measure_command": ok[-1].get("command") if ok else None, "date": date, "env": env,
           "recipes": recipes, "tables": table_costs(rates)}
    out_dir.mkdir(parents=True, exist_ok=True)
    md = render(raw)
    source = f"{raw['measure_command']} ({date})"
    tp_rows = [throughput_row(r, r["env"], source + (" compile" if r.get("compile") else ""))
               for r in recipes if "error" not in r and r["n_views"] == 1 and not r.get("compile")]
    existing = THROUGHPUT_CSV.read_text() if THROUGHPUT_CSV.is_file() else ""
    try:
        merged = merge_throughput(existing, tp_rows)
    except DataError as e:
        if commit:  # before anything is written into the repository
            raise
        print(f"!! {e}: {out_dir / 'throughput.csv'} holds only the measured rows", file=sys.stderr)
        merged = merge_throughput("", tp_rows)
    for d in [out_dir] + ([RESULTS_DIR] if commit else []):
        atomic_write_json(d / "recipes_gpu.json", raw)
        atomic_write_text(d / "recipes_gpu.md", md)
    atomic_write_text(out_dir / "throughput.csv", merged)
    if commit:
        atomic_write_text(THROUGHPUT_CSV, merged)
    return raw


# ----------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="time recipes, one JSON line each into --rows")
    m.add_argument("recipes", nargs="+", help=f"names from {list(RECIPES)}")
    m.add_argument("--rows", required=True, help="JSON-lines file to append to")
    m.add_argument("--device", default="auto")
    m.add_argument("--smoke", action="store_true", help="CPU scale: tiny ViT at 64 px, batch 4, 2 steps")
    m.add_argument("--steps", type=int, default=None, help="timed steps (default 50, 2 with --smoke)")
    m.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10, 1 with --smoke)")
    m.add_argument("--n-encode", type=int, default=None, help="images encoded (default 8192, 32 with --smoke)")
    m.add_argument("--compile", action="store_true", help="torch.compile the model (training and encoding)")
    m.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    m.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 keeps a DRY run sane on a crowded CPU)")
    m.add_argument("--standin", default=None, metavar="FMT",
                   help="load the ViT backbones from a stand-in checkpoint of this format (pth, npz, safetensors; "
                        "needs hashlib_vit.models.standin), written into a temporary folder")
    r = sub.add_parser("report", help="tables from the rows: recipes_gpu.{md,json}, throughput.csv")
    r.add_argument("--rows", required=True, nargs="+", help="JSON-lines file(s) written by measure")
    r.add_argument("--out-dir", required=True, help="where the report goes (always)")
    r.add_argument("--commit-results", action="store_true",
                   help="also write results/benchmarks/recipes_gpu.* and hashlib_vit/reference/throughput.csv "
                        "(CUDA rows only)")
    r.add_argument("--quiet", action="store_true", help="do not print the Markdown")
    a = p.parse_args(argv)
    command = "python benchmarks/bench_recipes.py " + " ".join(argv)
    if a.cmd == "report":
        rows = [row for f in a.rows for row in read_rows(Path(f))]
        raw = report(rows, command=command, out_dir=Path(a.out_dir), commit=a.commit_results)
        if not a.quiet:
            print(render(raw))
        return 0

    import torch

    from hashlib_vit.utils import resolve_device

    unknown = [n for n in a.recipes if n not in RECIPES]
    if unknown:
        raise ConfigError(f"recipe(s) {unknown} unknown; choose from {list(RECIPES)}")
    device = resolve_device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    # no tf32 / cudnn.benchmark switches: the library sets none, so neither does the measurement
    # (seed_everything's use_deterministic_algorithms(True, warn_only=True) stays on, as in real runs)
    steps = a.steps or (2 if a.smoke else 50)
    warmup = a.warmup or (1 if a.smoke else 10)
    n_encode = a.n_encode or (32 if a.smoke else 8192)
    env = environment(device)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    failed = 0
    import tempfile

    standin_tmp = tempfile.TemporaryDirectory(prefix="standin_") if a.standin else None
    for name in a.recipes:
        recipe = RECIPES[name].smoke() if a.smoke else RECIPES[name]
        print(f"--- {name}: {recipe}", flush=True)
        try:
            row = measure(name, recipe, device, steps=steps, warmup=warmup, n_encode=n_encode, compile_=a.compile,
                          flops=not a.no_flops, standin=a.standin,
                          standin_dir=Path(standin_tmp.name) if standin_tmp else None)
        except Exception as e:  # noqa: BLE001 - one failing recipe (OOM, missing model) must not lose the others
            failed += 1
            traceback.print_exc()
            row = {"recipe": name, "paper": recipe.paper, "backbone": recipe.backbone, "compile": a.compile,
                   "error": f"{type(e).__name__}: {e}"}
        row.update(env=env, date=date, command=command, smoke=a.smoke)
        append_row(Path(a.rows), row)
        print(json.dumps({k: v for k, v in row.items() if k != "env"}, default=str), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if standin_tmp:
        standin_tmp.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
