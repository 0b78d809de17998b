"""One command per paper table: run the paper's grid (resumable), then build the paper-vs-ours table.

    hashlib-vit reproduce --list
    hashlib-vit reproduce transhash-table1 --dry-run                # validate everything, print plan + GPU time
    hashlib-vit reproduce transhash-table1 --weights weights/vit_large_patch32_224.npz --data-root cifar10=data/c10
    hashlib-vit reproduce loss-zoo --weights resnet50=weights/resnet50.pth --only 'data-cifar10_*'
    hashlib-vit reproduce slvit --set epochs=1 --set bits=16 --output /tmp/smoke   # a smoke run of the recipe

A table (:data:`TABLES`) names a grid file in ``configs/grids/`` (the papers' recipes, every value tagged
``[K] stated`` or ``[I] inferred``), the paper table it reproduces, and which of the papers' numbers
(``hashlib_vit/reference/paper_results.csv``) go beside ours. :func:`reproduce`:

1. loads the grid (:func:`hashlib_vit.runner.load_grid`) and applies the pass-through options to every
   run: ``weights`` (one spec, or ``BACKBONE=SPEC`` per backbone), ``data_root`` (one folder, or
   ``PROTOCOL=FOLDER``, where ``cifar10=`` also serves ``cifar10-1``/``cifar10-2``), ``sets`` (``--set name=value``: a notebook parameter when the notebook declares
   it, else a RunConfig field put into the run's ``overrides``; for a grid with ``target: experiment`` the
   RunConfig field itself);
2. validates before anything is written: the grid's parameters against each notebook
   (:func:`hashlib_vit.runner.validate_grid`, ``overrides`` included), then every run's RunConfigs as the
   notebook itself builds them (its parameters cell and the cell that defines ``run_configs`` are executed
   in-process: names, values, bits/groups compatibility, loss and model parameters), the weights spec of
   every configuration (the file exists / the hub name has pretrained weights in timm) and the data
   folders (data_root, list files);
3. prints the plan: one line per run (name, protocol, backbone, bits, epochs, steps, estimated GPU time,
   :func:`estimate_config`) and the total;
4. unless ``dry_run``: runs the grid (:func:`hashlib_vit.runner.run_grid`; completed runs are skipped) and
   writes the tables (:func:`hashlib_vit.results.tables.build_tables` plus ``paper_table.{csv,md,tex}``: our rows
   and the selected paper's numbers).

Output: runs under the grid's ``output`` folder and tables under ``results/tables/<grid name>``; with
``output=DIR``: ``DIR/runs`` and ``DIR/tables``.

GPU-time estimates come from measured throughput only (``hashlib_vit/reference/throughput.csv``, one row
per measured configuration): an exact row for (backbone, head, AEM, image size), else the nearest measured
ViT row scaled by the ratio of forward FLOPs (:func:`vit_forward_flops`, counted from depth, width and
tokens), else "unknown".
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import functools
import io
import math
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError, DataError

THROUGHPUT_COLUMNS = ("device", "backbone", "head", "aem", "img_size", "batch_size", "amp", "train_img_s",
                      "encode_img_s", "peak_mem_gib", "source")


# ----------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class PaperTable:
    """One paper table: the grid that reproduces it and the papers' numbers printed beside ours.

    ``reference``: (source prefix, table prefix) pairs selecting rows of paper_results.csv.
    """

    name: str
    grid: str  # relative to the project root
    paper: str
    description: str
    reference: tuple[tuple[str, str], ...] = ()

    @property
    def grid_path(self) -> Path:
        from .utils import resolve_path

        return resolve_path(self.grid)


TABLES: dict[str, PaperTable] = {t.name: t for t in (
    PaperTable("transhash-table1", "configs/grids/transhash_paper.yaml",
               "TransHash (Chen et al., ICMR 2022), Table 1",
               "TransHash (MGVT ViT-L/32 + Cauchy pair loss), CIFAR-10 / NUS-WIDE-81 / ImageNet-100 x 16-64 bits",
               (("TransHash", "Table 1"),)),
    PaperTable("transhash-table2", "configs/grids/transhash_ablation.yaml",
               "TransHash (Chen et al., ICMR 2022), Table 2",
               "TransHash ablations w/o C, w/o P, w/o Q (and the full model) on CIFAR-10 x 16-64 bits",
               (("TransHash", "Table 2"), ("TransHash", "Table 1"))),
    PaperTable("transhash-table3", "configs/grids/transhash_groups.yaml",
               "TransHash (Chen et al., ICMR 2022), Table 3",
               "TransHash sensitivity to the number of local groups G on CIFAR-10 (the valid G x bits cells)",
               (("TransHash", "Table 3"), ("TransHash", "Table 1"))),
    PaperTable("aevit-hsc", "configs/grids/aevit_hsc_paper.yaml",
               "AE-ViT + HSC-Loss (C. Huang 2024; EMT journal abstract: mean mAP)",
               "AE-ViT + HSC-Loss vs the plain ViT, CIFAR-10 / CIFAR-10-2 / NUS-WIDE-21 x 16-64 bits",
               (("Image retrieval method with attention-enhanced", "abstract"),)),
    PaperTable("aevit-backbone-study", "configs/grids/aevit_backbone_study.yaml",
               "AE-ViT thesis (C. Huang 2024), backbone study (no numbers retrievable)",
               "classic losses + HSC on AE-ViT / ViT-B/16 / ResNet-50 / AlexNet, CIFAR-10 / NUS-WIDE-21 x 16-64 bits",
               ()),
    PaperTable("slvit", "configs/grids/slvit_paper.yaml",
               "SL-ViT (Pei & Wang 2024; reference: OrthoHash suppl. Table 4, AlexNet)",
               "SL-ViT (hcl head + OrthoHash loss) vs a two-term loss, ImageNet-100 / NUS-WIDE-21 / COCO / CIFAR-10",
               (("OrthoHash", "suppl. Table 4"),)),
    PaperTable("loss-zoo", "configs/grids/loss_zoo_paper.yaml",
               "classic losses on one backbone (METHODS.md 5.9; references: TransHash Table 1, DeepHash-pytorch)",
               "DSH, DPSH, HashNet, DCH, CSQ, DPN, GreedyHash on ViT-B/16 and ResNet-50, CIFAR-10 / NUS-WIDE-21",
               (("TransHash", "Table 1"), ("DeepHash-pytorch", "README"))),
)}


def get_table(name: str) -> PaperTable:
    if name not in TABLES:
        import difflib

        close = difflib.get_close_matches(name, list(TABLES), n=3)
        raise ConfigError(f"paper table {name!r} is not known{'; did you mean ' + ', '.join(close) + '?' if close else ''}"
                          f" Known: {', '.join(TABLES)} (hashlib-vit reproduce --list)")
    return TABLES[name]


def list_tables() -> list[dict]:
    """One dict per table: name, description, grid file, paper table."""
    return [{"name": t.name, "description": t.description, "grid": t.grid, "paper": t.paper} for t in TABLES.values()]


# ----------------------------------------------------------------------------- throughput + estimate
@dataclass(frozen=True)
class Throughput:
    """One measured configuration of hashlib_vit/reference/throughput.csv."""

    device: str
    backbone: str
    head: str
    aem: bool
    img_size: int
    batch_size: int | None
    amp: str
    train_img_s: float
    encode_img_s: float
    peak_mem_gib: float | None
    source: str

    def label(self) -> str:
        return (f"{self.backbone}/{self.head}{'+aem' if self.aem else ''}@{self.img_size}px on {self.device} "
                f"({self.train_img_s:g} train img/s, {self.encode_img_s:g} encode img/s)")


def read_throughput(path: str | os.PathLike | None = None) -> list[Throughput]:
    """Rows of a throughput table (default: the package's ``reference/throughput.csv``), checked.

    Columns exactly :data:`THROUGHPUT_COLUMNS`; ``train_img_s`` / ``encode_img_s`` positive numbers,
    ``aem`` true/false, ``img_size`` a positive integer. Raises DataError naming the file, line and field.
    """
    if path is None:
        text = resources.files("hashlib_vit.reference").joinpath("throughput.csv").read_text()
        where = "hashlib_vit/reference/throughput.csv"
    else:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise DataError(f"throughput table {str(path)!r} does not exist") from None
        where = str(path)
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != THROUGHPUT_COLUMNS:
        raise DataError(f"{where}: columns {reader.fieldnames} found, expected exactly {','.join(THROUGHPUT_COLUMNS)}")
    rows = []
    for line, r in enumerate(reader, start=2):
        def num(name, kind=float, required=True):
            v = (r.get(name) or "").strip()
            if not v and not required:
                return None
            try:
                x = kind(v)
            except ValueError:
                raise DataError(f"{where}, line {line}: {name}={v!r} is not a {kind.__name__}") from None
            if not x > 0:
                raise DataError(f"{where}, line {line}: {name}={v!r} must be > 0")
            return x

        aem = (r["aem"] or "").strip().lower()
        if aem not in ("true", "false"):
            raise DataError(f"{where}, line {line}: aem={r['aem']!r} must be true or false")
        rows.append(Throughput(device=r["device"].strip(), backbone=r["backbone"].strip(), head=r["head"].strip(),
                               aem=aem == "true", img_size=num("img_size", int),
                               batch_size=num("batch_size", int, required=False), amp=r["amp"].strip(),
                               train_img_s=num("train_img_s"), encode_img_s=num("encode_img_s"),
                               peak_mem_gib=num("peak_mem_gib", required=False), source=r["source"].strip()))
    return rows


def _arch(backbone: str) -> str:
    return str(backbone).split(".")[0]


@functools.lru_cache(maxsize=64)
def vit_shape(backbone: str) -> dict | None:
    """Patch size, width, depth, MLP ratio, default image size and prefix tokens of a ViT backbone
    (a preset or a timm name, built on the meta device: no memory, no weights); None for CNNs."""
    from .models.backbones import CNN_NAMES, VIT_PRESETS

    name = _arch(backbone)
    if name in VIT_PRESETS:
        p = VIT_PRESETS[name]
        return {"patch": p.patch_size, "width": p.embed_dim, "depth": p.depth, "mlp_ratio": p.mlp_ratio,
                "img_size": p.img_size, "prefix": 1}
    if name in CNN_NAMES:
        return None
    from .models.backbones import meta_network

    try:
        m = meta_network(name)
    except Exception:  # noqa: BLE001 - not a model timm can build: no shape, the estimate says "unknown"
        return None
    if not hasattr(m, "blocks") or not hasattr(m, "patch_embed"):
        return None
    b = m.blocks[0]
    width = int(m.embed_dim)
    return {"patch": int(m.patch_embed.patch_size[0]), "width": width, "depth": len(m.blocks),
            "mlp_ratio": b.mlp.fc1.out_features / width, "img_size": int(m.patch_embed.img_size[0]),
            "prefix": int(getattr(m, "num_prefix_tokens", 1))}


def default_img_size(backbone: str) -> int | None:
    """The backbone's own input size (preset / timm pretrained_cfg); CNNs: 224 (their ImageNet size)."""
    shape = vit_shape(backbone)
    if shape:
        return shape["img_size"]
    from .models.backbones import CNN_NAMES

    return 224 if _arch(backbone) in CNN_NAMES else None


def _block_flops(tokens: int, width: int, mlp_ratio: float) -> float:
    """Forward FLOPs (2 per multiply-add) of one pre-LN transformer block on ``tokens`` tokens:
    qkv + projection 4 D^2, MLP 2 r D^2 per token, attention scores and weighted sum 2 T D per token."""
    return 2.0 * tokens * (4 * width * width + 2 * mlp_ratio * width * width + 2 * tokens * width)


def vit_forward_flops(backbone: str, img_size: int | None = None, head: str = "cls_linear", aem: bool = False,
                      model_params: dict | None = None) -> float | None:
    """Forward FLOPs per image of a ViT hash model, counted analytically (no fvcore): patch embedding
    (2 N 3 P^2 D), ``depth`` blocks on N + prefix tokens (:func:`_block_flops`), plus what the head adds:
    ``mgvt`` the local block on G groups of N/G + 1 tokens (METHODS.md 2.2; none without the local stream),
    ``hcl`` one extra block on all tokens when ``hcl_attention`` (3.3), ``vts_mlp`` the (N+1) D x 1024 layer;
    ``aem`` the depth-wise 3x3 and point-wise D x D convolutions on the patch map (4.2). Linear hash layers,
    norms and softmax are left out (< 1 %). None for a CNN or an unknown backbone."""
    shape = vit_shape(backbone)
    if shape is None:
        return None
    mp = dict(model_params or {})
    size = int(img_size or shape["img_size"])
    n = (size // shape["patch"]) ** 2
    d, r = shape["width"], shape["mlp_ratio"]
    t = n + shape["prefix"]
    flops = 2.0 * n * 3 * shape["patch"] ** 2 * d + shape["depth"] * _block_flops(t, d, r)
    if head == "mgvt" and mp.get("local_stream", True):
        g = int(mp.get("groups", 2))
        flops += sum(_block_flops(len(part) + 1, d, r) for part in _split_sizes(n, g))
    elif head == "hcl" and mp.get("hcl_attention", True):
        flops += _block_flops(t, d, r)
    elif head == "vts_mlp":
        flops += 2.0 * t * d * int(mp.get("hidden", 1024))
    if aem:
        flops += 2.0 * n * (9 * d + d * d)
    return flops


def _split_sizes(n: int, groups: int) -> list[range]:
    """torch.tensor_split sizes of n tokens into ``groups`` parts (as MGVT splits them)."""
    q, rem = divmod(n, max(groups, 1))
    return [range(q + (1 if i < rem else 0)) for i in range(max(groups, 1))]


def one_device(rows: list[Throughput], device: str | None = None) -> list[Throughput]:
    """The rows of one device, so that every estimate of a plan uses the same GPU: those whose device name
    contains ``device``, else (``device=None``) those of the device with the most rows (ties: the later)."""
    if device:
        return [r for r in rows if device.lower() in r.device.lower()]
    if not rows:
        return []
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.device] = counts.get(r.device, 0) + 1
    best = max(reversed(list(counts)), key=lambda d: counts[d])
    return [r for r in rows if r.device == best]


@dataclass
class Rate:
    train_img_s: float
    encode_img_s: float
    basis: str  # "measured <row>" / "scaled from <row>"


def lookup_rate(rows: list[Throughput], backbone: str, head: str, aem: bool, img_size: int | None,
                model_params: dict | None = None, device: str | None = None) -> Rate | None:
    """Training / encoding throughput of one configuration from measured rows.

    Exact match on (architecture, head, aem, image size) first; else the measured ViT row nearest in forward
    FLOPs, scaled by the FLOPs ratio (``rate_row * flops_row / flops_target``, the same for training and
    encoding); else None (nothing measured, or a CNN without its own row). ``device``: only rows whose
    device contains this text."""
    rows = one_device(rows, device)
    if not rows:
        return None
    size = img_size or default_img_size(backbone)
    for r in rows:
        if _arch(r.backbone) == _arch(backbone) and r.head == head and r.aem == bool(aem) and r.img_size == size:
            return Rate(r.train_img_s, r.encode_img_s, f"measured: {r.label()}")
    target = vit_forward_flops(backbone, size, head, aem, model_params)
    if target is None:
        return None
    best, best_gap, best_flops = None, math.inf, None
    for r in rows:
        f = vit_forward_flops(r.backbone, r.img_size, r.head, r.aem)
        if f is None:
            continue
        gap = abs(math.log(f / target))
        if gap < best_gap:
            best, best_gap, best_flops = r, gap, f
    if best is None:
        return None
    k = best_flops / target
    return Rate(best.train_img_s * k, best.encode_img_s * k,
                f"scaled from {best.label()} by forward FLOPs {best_flops / 1e9:.3g} / {target / 1e9:.3g} GFLOP")


@dataclass
class Estimate:
    """Planned work of one RunConfig and its estimated GPU seconds (None: unknown, ``note`` says why)."""

    steps: int
    train_images: int
    encode_images: int | None
    seconds: float | None
    basis: str


def estimate_config(cfg, rows: list[Throughput], device: str | None = None) -> Estimate:
    """``epochs * n_train * views / train_img_s + evaluations * (n_query + n_database) / encode_img_s``.

    Split sizes are the protocol's documented ones (:data:`hashlib_vit.data.PROTOCOLS`; no image is
    loaded); ``views`` = the loss's ``n_views`` (two-view SupCon trains each image twice); evaluations =
    one per ``eval_every`` epochs plus the final one. Unknown (``seconds=None``) when no throughput row
    applies or the protocol does not document its database size."""
    from .data import PROTOCOLS
    from .models.aem import parse_aem

    p = PROTOCOLS.get(cfg.protocol)
    steps_per_epoch = max(1, -(-p.n_train // cfg.batch_size))
    views = int(cfg.loss_params.get("n_views", 1) or 1)
    train_images = cfg.epochs * p.n_train * views
    evals = (cfg.epochs // cfg.eval_every + (1 if cfg.epochs % cfg.eval_every else 0)) if cfg.eval_every else 1
    encode_images = None if p.n_database is None else evals * (p.n_query + p.n_database)
    aem = bool(parse_aem(cfg.model_params.get("aem", "off")))
    model_params = {k: v for k, v in cfg.model_params.items() if not k.startswith("aem")}
    rate = lookup_rate(rows, cfg.backbone, cfg.head, aem, cfg.img_size, model_params, device)
    if rate is None:
        what = f"{cfg.backbone}/{cfg.head}{'+aem' if aem else ''}@{cfg.img_size or default_img_size(cfg.backbone)}px"
        basis = ("unknown: no measured throughput" if not rows else f"unknown: no measured row for {what} and "
                 "none to scale from (FLOPs are counted for ViTs only)")
        return Estimate(cfg.epochs * steps_per_epoch, train_images, encode_images, None, basis)
    if encode_images is None:
        return Estimate(cfg.epochs * steps_per_epoch, train_images, None, None,
                        f"unknown: protocol {p.name!r} does not document its database size; {rate.basis}")
    seconds = train_images / rate.train_img_s + encode_images / rate.encode_img_s
    return Estimate(cfg.epochs * steps_per_epoch, train_images, encode_images, seconds, rate.basis)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "unknown"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


# ----------------------------------------------------------------------------- a notebook's RunConfigs
def notebook_run_configs(notebook: str | os.PathLike, params: dict[str, Any]) -> list:
    """The RunConfigs a training notebook would train with ``params``, built by the notebook's own code.

    Executes, in-process and with output captured, the notebook's code cells from the top (the parameters
    cell, then ``params`` as papermill would inject them) up to the first cell that defines ``run_configs``
    (the validated configurations; notebooks 00, 02-05 define it right after their parameters). Nothing is
    loaded or trained there: that cell only builds and validates configurations. Raises the notebook's own
    ConfigError for bad values, and ConfigError when no cell defines ``run_configs``.
    """
    nb_path = Path(notebook)
    from .utils import read_json

    nb = read_json(nb_path, "notebook")
    if not isinstance(nb.get("cells"), list):
        raise DataError(f"notebook {nb_path}: field 'cells' is {type(nb.get('cells')).__name__}; expected a list "
                        "(an .ipynb file)")
    os.environ.setdefault("MPLBACKEND", "Agg")
    ns: dict[str, Any] = {"__name__": "__hashlib_vit_plan__", "display": lambda *a, **k: None}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, cell in enumerate(nb["cells"]):
            if cell.get("cell_type") != "code":
                continue
            src = "".join(cell["source"])
            src = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())
            exec(compile(src, f"{nb_path.name} [cell {i}]", "exec"), ns)  # noqa: S102 - our own notebook
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                ns.update(params)
            if "run_configs" in ns:
                return list(ns["run_configs"])
    raise ConfigError(f"notebook {str(nb_path)!r} defines no run_configs (the list of validated RunConfigs it "
                      "trains), so its runs cannot be planned")


# ----------------------------------------------------------------------------- checks
def check_weights_spec(weights, backbone: str) -> str | None:
    """An error text when ``weights`` cannot work for ``backbone``, else None.

    None / "none": from scratch (fine). "hub": the backbone must be a timm architecture with pretrained
    weights (a tagged name must be one of ``timm.list_pretrained()``); presets and local names have none.
    Anything else: a local file that must exist (relative paths from the project root, as runs resolve them).
    """
    from .models.backbones import CNN_NAMES, VIT_PRESETS
    from .utils import resolve_path

    if weights in (None, "", "none", "None", False):
        return None
    if weights == "hub":
        if backbone in VIT_PRESETS:
            return f"weights='hub' with backbone={backbone!r}: a local preset has no hub weights"
        if backbone == "alexnet":  # torchvision's weights: offline only from the torch hub cache
            from .models.backbones import alexnet_hub_file
            from .models.weights import offline

            cached = alexnet_hub_file()[1]
            return (f"weights='hub' for backbone='alexnet': offline (HF_HUB_OFFLINE) and {cached} is not in the "
                    "torch hub cache; pass a file (--weights alexnet=PATH)") if offline() and not cached.is_file() else None
        import timm

        tagged = timm.list_pretrained(backbone if "." in backbone else f"{backbone}.*")
        if not tagged:
            return (f"weights='hub' with backbone={backbone!r}: timm knows no pretrained weights of that name "
                    f"(known tags: {', '.join(timm.list_pretrained(_arch(backbone) + '.*')) or 'none'})")
        from .models.weights import offline

        if offline():
            return _offline_hub_problem(backbone)
        return None
    path = resolve_path(str(weights))
    if not path.is_file():
        what = " (a ResNet/AlexNet state dict)" if _arch(backbone) in CNN_NAMES else ""
        return f"weights={weights!r} for backbone={backbone!r}: no such file {str(path)!r}{what}"
    return None


def _offline_hub_problem(backbone: str) -> str | None:
    """With HF_HUB_OFFLINE set: None when the Hugging Face (or torch hub) cache holds the file timm will load,
    looked up exactly as the run will (:func:`hashlib_vit.models.weights.find_hub_file`, local files only)."""
    from .models.backbones import meta_network
    from .models.weights import find_hub_file

    try:
        find_hub_file(meta_network(backbone), backbone)
    except ConfigError as e:
        return str(e)
    return None


def check_data(cfg) -> str | None:
    """An error text when the data of ``cfg`` is not where the run will look, else None (nothing is read)."""
    from .data import PROTOCOLS
    from .data.protocols import LIST_STEMS
    from .data.splits import find_list_file
    from .utils import resolve_path

    p = PROTOCOLS.get(cfg.protocol)
    if not p.needs_data_root:
        return None
    root = cfg.data_root if cfg.data_root is not None else p.default_root
    if root is None:
        return f"protocol {p.name!r} needs data_root (use --data-root {p.name}=FOLDER). {p.howto}"
    if not resolve_path(root).is_dir():
        return f"data_root={root!r} of protocol {p.name!r} is not a folder ({resolve_path(root)}). {p.howto}"
    split_dir = cfg.data_options.get("split_dir")
    lists = split_dir if split_dir is not None else (cfg.data_options.get("list_dir") or p.list_dir)
    if split_dir is None and p.loader.__name__ != "_load_lists":
        return None
    if lists is None:
        return f"protocol {p.name!r} needs its list files: pass data_options={{'list_dir': FOLDER}}. {p.howto}"
    folder = resolve_path(lists)
    missing = [s[0] for s in LIST_STEMS.values() if not any(find_list_file(folder, x) for x in s)] \
        if folder.is_dir() else ["the folder itself"]
    if missing:
        return f"list folder {str(folder)!r} of protocol {p.name!r} lacks {', '.join(missing)}(.txt). {p.howto}"
    return None


# ----------------------------------------------------------------------------- plan + run
@dataclass
class PlannedRun:
    name: str
    configs: list = field(default_factory=list)
    estimates: list = field(default_factory=list)
    complete: bool = False

    @property
    def seconds(self) -> float | None:
        s = [e.seconds for e in self.estimates]
        return None if not s or any(x is None for x in s) else sum(s)

    def line(self) -> str:
        cs = self.configs
        join = lambda vals: ",".join(str(v) for v in dict.fromkeys(vals))  # noqa: E731
        basis = "; ".join(dict.fromkeys(e.basis for e in self.estimates))
        return (f"{self.name}: protocol {join(c.protocol for c in cs)} | backbone {join(c.backbone for c in cs)} | "
                f"bits {join(c.bits for c in cs)} | epochs {join(c.epochs for c in cs)} | "
                f"steps {sum(e.steps for e in self.estimates):,} ({len(cs)} training{'s' if len(cs) != 1 else ''}) | "
                f"est. GPU {fmt_seconds(self.seconds)}{' | already complete' if self.complete else ''} | {basis}")


def _by_key(spec: list[str] | str | None, what: str) -> tuple[str | None, dict[str, str]]:
    """``["PATH"]`` -> (PATH, {}); ``["key=PATH", ...]`` -> (None, {key: PATH}); both may be mixed."""
    if spec is None:
        return None, {}
    items = [spec] if isinstance(spec, str) else list(spec)
    plain, keyed = None, {}
    for s in items:
        k, sep, v = str(s).partition("=")
        if sep and k and "/" not in k and not k.startswith((".", "~")):
            keyed[k] = v
        elif plain is not None:
            raise ConfigError(f"{what}: two values without a KEY= prefix ({plain!r}, {s!r})")
        else:
            plain = str(s)
    return plain, keyed


def parse_sets(items: Iterable[str] | None) -> dict[str, Any]:
    """``["epochs=1", 'data_options={"split_dir": "x"}']`` -> dict; each value parsed by the one string rule
    (:func:`hashlib_vit.config.parse_value`: JSON, True/False/None, YAML flow lists and mappings, else the string)."""
    from .config import parse_value

    out = {}
    for s in items or []:
        k, sep, v = str(s).partition("=")
        if not sep or not k.strip():
            raise ConfigError(f"--set {s!r} must be NAME=VALUE")
        out[k.strip()] = parse_value(v)
    return out


def apply_options(grid, *, weights=None, data_root=None, sets: dict | None = None) -> None:
    """Pass-through options onto every run of a loaded grid (in place); see the module docstring."""
    from .config import field_names
    from .results.collect import family_of
    from .runner import notebook_parameters, param_role

    w_all, w_by = _by_key(weights, "--weights")
    d_all, d_by = _by_key(data_root, "--data-root")
    sets = dict(sets or {})
    fields = set(field_names())
    declared_by_nb: dict[Path, dict] = {}
    for r in grid.runs:
        for k in sets:
            if k == "run_dir":
                raise ConfigError("--set run_dir: run directories are <output>/<run name>; use --output")
        if r.target == "experiment":  # the run's parameters are its RunConfig: --set sets the field itself
            for k, v in sets.items():
                try:
                    param_role(k)
                except ConfigError as e:
                    raise ConfigError(f"--set {k}: not a RunConfig field (nor a dotted key into one): {e}") from None
                r.params[k] = v
            default = lambda k, r=r: getattr(r.config(), k)  # noqa: E731 - the preset's value when the run has one
        else:
            declared = declared_by_nb.setdefault(r.notebook, notebook_parameters(r.notebook))
            default = lambda k, declared=declared: _literal(declared.get(k, {}).get("default"))  # noqa: E731
            for k, v in sets.items():
                if k in declared:
                    r.params[k] = v
                elif k in fields:
                    r.params["overrides"] = {**dict(r.params.get("overrides") or {}), k: v}
                else:
                    raise ConfigError(f"--set {k}: neither a parameter of {r.notebook.name} nor a RunConfig field")
        backbone = r.params.get("backbone", default("backbone"))
        if w_all is not None or backbone in w_by or _arch(str(backbone)) in w_by:
            r.params["weights"] = None if (spec := w_by.get(backbone, w_by.get(_arch(str(backbone)), w_all))) in (
                "none", "None", "") else spec
        protocol = r.params.get("protocol", default("protocol"))
        family = family_of(str(protocol))  # cifar10=DIR also serves cifar10-1 / cifar10-2
        if d_all is not None or protocol in d_by or family in d_by:
            r.params["data_root"] = d_by.get(protocol, d_by.get(family, d_all))


def _literal(text):
    import ast

    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return text


def plan(grid, *, only: list[str] | None = None, throughput: str | os.PathLike | None = None,
         device: str | None = None) -> tuple[list[PlannedRun], list[str]]:
    """Validate every selected run (see the module docstring) and estimate it. Returns the planned runs and
    the problems found (one text each, naming the run); raises ConfigError at once for grid-level errors
    (:func:`hashlib_vit.runner.validate_grid`). Nothing is written."""
    from .runner import run_is_complete, validate_grid

    validate_grid(grid)
    rows = read_throughput(throughput)
    selected = [r for r in grid.runs if not only or any(fnmatch.fnmatch(r.name, p) for p in only)]
    if not selected:
        raise ConfigError(f"grid {str(grid.path)!r}: no run name matches {only}; runs: "
                          f"{', '.join(r.name for r in grid.runs)}")
    problems, planned = [], []
    for r in selected:
        try:  # the experiment target's RunConfig is the run's parameters (validated by validate_grid)
            configs = [r.config().validate()] if r.target == "experiment" else notebook_run_configs(r.notebook, r.params)
        except ConfigError as e:
            problems.append((r.name, str(e)))
            continue
        for c in configs:
            for msg in (check_weights_spec(c.weights, c.backbone), check_data(c)):
                if msg and (r.name, msg) not in problems:
                    problems.append((r.name, msg))
        planned.append(PlannedRun(r.name, configs, [estimate_config(c, rows, device) for c in configs],
                                  complete=run_is_complete(r)))
    by_msg: dict[str, list[str]] = {}
    for name, msg in problems:  # one line per problem, naming every run it concerns
        by_msg.setdefault(msg, []).append(name)
    return planned, [f"run{'s' if len(n) > 1 else ''} {', '.join(n)}: {m}" for m, n in by_msg.items()]


def plan_text(table: PaperTable, grid, planned: list[PlannedRun], tables_dir: Path) -> str:
    todo = [p for p in planned if not p.complete]
    known = [p.seconds for p in todo if p.seconds is not None]
    unknown = len(todo) - len(known)
    lines = [f"{table.name}: {table.paper}", f"grid {table.grid} -> runs under {grid.output}, tables under {tables_dir}",
             *[p.line() for p in planned],
             f"total estimated GPU time of the {len(todo)} run(s) still to do: {fmt_seconds(sum(known)) if known else 'unknown'}"
             + (f" + {unknown} run(s) of unknown time" if unknown and known else "")]
    return "\n".join(lines)


def paper_table(runs, table: PaperTable, digits: int = 3):
    """Our runs (mean ± std over seeds) beside the selected paper rows (:attr:`PaperTable.reference`)."""
    from .results.reference import reference_results
    from .results.tables import paper_comparison_table

    ref = reference_results()
    keep = [any(str(s).startswith(src) and str(t).startswith(tab) for src, tab in table.reference)
            for s, t in zip(ref["source"], ref["table"])]
    return paper_comparison_table(runs, reference=ref[keep], select="all" if table.reference else "none", digits=digits)


def reproduce(name: str, *, weights=None, data_root=None, output: str | os.PathLike | None = None,
              sets: dict | None = None, only: list[str] | None = None, dry_run: bool = False, force: bool = False,
              throughput: str | os.PathLike | None = None, device: str | None = None, figures: bool = True,
              progress: bool = True, executor: str | dict | None = None, workers: int | None = None,
              echo=print) -> dict:
    """Run (or with ``dry_run`` only validate and plan) one paper table; returns ``{"plan", "summary",
    "tables"}``. ``executor`` / ``workers``: replace the grid's executor (:func:`hashlib_vit.runner.resolve_executor`).
    Raises ConfigError / DataError before anything is written when a check fails."""
    from .runner import load_grid, resolve_executor, run_grid
    from .utils import resolve_path

    table = get_table(name)
    out = resolve_path(output) if output is not None else None
    grid = load_grid(table.grid_path, output=out / "runs" if out else None)
    apply_options(grid, weights=weights, data_root=data_root, sets=sets)
    resolve_executor(grid.executor, executor, workers)  # the executor (and submitit when used) checked up front
    tables_dir = out / "tables" if out else resolve_path(f"results/tables/{table.grid_path.stem}")
    planned, problems = plan(grid, only=only, throughput=throughput, device=device)
    echo(plan_text(table, grid, planned, tables_dir))
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in {table.grid} (nothing was run or written):\n  "
                          + "\n  ".join(problems))
    result = {"plan": planned, "summary": None, "tables": None, "tables_dir": tables_dir, "runs_dir": grid.output}
    if dry_run:
        return result
    summary = run_grid(grid, force=force, progress=progress, validate=False, only=only, executor=executor,
                       workers=workers)
    result["summary"] = summary
    from .results.collect import collect
    from .results.tables import build_tables, write_table

    if not grid.output.is_dir() or not collect(grid.output).shape[0]:
        echo(f"no completed run below {grid.output}: no tables written")
        return result
    command = f"hashlib-vit reproduce {name}" + (f" --output {output}" if output else "")
    res = build_tables(grid.output, tables_dir, figures=figures, command=command)
    comp = paper_table(res["runs"], table)
    res["files"] += write_table(comp, tables_dir / "paper_table",
                                caption=f"{table.paper}: our runs beside the paper's numbers (differences stated)")
    res["paper_table"] = comp
    result["tables"] = res
    echo(f"tables: {tables_dir} (paper_table.md: ours beside {table.paper})")
    return result


# ----------------------------------------------------------------------------- command line
def reproduce_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("table", nargs="?", help="paper table to reproduce (see --list)")
    p.add_argument("--list", action="store_true", help="list the paper tables with their grid files")
    p.add_argument("--dry-run", action="store_true",
                   help="validate every run, the weights and the data; print the plan and GPU time; run nothing")
    p.add_argument("--weights", action="append", default=None, metavar="SPEC|BACKBONE=SPEC",
                   help="pretrained weights of every run (a file, 'hub' or none), or per backbone; repeatable")
    p.add_argument("--data-root", action="append", default=None, metavar="DIR|PROTOCOL=DIR",
                   help="data folder of every run, or per protocol; repeatable")
    p.add_argument("--output", default=None, help="folder for the runs (DIR/runs) and tables (DIR/tables)")
    p.add_argument("--set", action="append", default=None, metavar="NAME=VALUE", dest="sets",
                   help="set a notebook parameter or RunConfig field (-> overrides) on every run; repeatable")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME", help="only these run names / glob patterns")
    p.add_argument("--force", action="store_true", help="rerun runs that are already complete")
    p.add_argument("--throughput", default=None, help="throughput CSV (default: hashlib_vit/reference/throughput.csv)")
    p.add_argument("--device", default=None, help="estimate from throughput rows of this device (substring)")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.add_argument("--executor", default=None, choices=("sequential", "local", "submitit-local", "slurm"),
                   help="replace the grid's executor (see hashlib_vit.runner)")
    p.add_argument("--workers", type=int, default=None, help="worker processes of the local executor")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def reproduce_main(args) -> int:
    if args.list or not args.table:
        for t in list_tables():
            print(f"{t['name']:22s} {t['description']}\n{'':22s} grid: {t['grid']} | paper: {t['paper']}")
        return 0
    res = reproduce(args.table, weights=args.weights, data_root=args.data_root, output=args.output,
                    sets=parse_sets(args.sets), only=args.only, dry_run=args.dry_run, force=args.force,
                    throughput=args.throughput, device=args.device, figures=not args.no_figures,
                    progress=not args.no_progress, executor=args.executor, workers=args.workers)
    summary = res["summary"]
    if summary is not None and (summary["status"] == "failed").any():
        print(f"some runs failed: see {res['runs_dir']}/grid_summary.csv", file=sys.stderr)
        return 1
    return 0


__all__ = ["PaperTable", "TABLES", "Throughput", "Estimate", "get_table", "list_tables", "read_throughput",
           "vit_shape", "vit_forward_flops", "one_device", "lookup_rate", "estimate_config", "notebook_run_configs",
           "check_weights_spec", "check_data", "apply_options", "parse_sets", "plan", "paper_table", "reproduce",
           "THROUGHPUT_COLUMNS"]
