"""What trained codes look like: code statistics and the collapse profile of the losses.

* :func:`query_outputs` — a trained model's continuous outputs ``u`` on the query split (eval mode);
* :func:`quant_error` — the mean quantization error of a trained model's query outputs;
* :func:`code_diagnostics` — the statistics a collapse shows first (outputs near 0, independent of the
  input, few distinct codes, constant bits); written to ``diagnostics.json`` by the loss-zoo runner;
* :func:`collapsed_loss_profile` — each loss on an input-independent model (why pairwise losses can stall);
* :func:`collapse_note` / :data:`COLLAPSE_FACTOR` — a run that does not clearly beat random codes;
* :func:`per_head_map` — mAP of each head's bits of a concatenated code (MGVT's streams);
* :func:`mgvt_layout` — depth, patches and bits per head of an MGVT model;
* :func:`parameter_counts` — parameters per module of a model, and how many are new;
* :func:`aem_at_init` — AE-ViT equals the plain ViT at initialisation (and what AEM adds);
* :func:`codebook_distances` — distances between OrthoHash's fixed class codes;
* :func:`init_output_spread` — how much a model's output depends on its input at initialisation.
"""
from __future__ import annotations

import math

import numpy as np

COLLAPSE_FACTOR = 1.5  # mAP below 1.5 x the random-code mAP counts as "at chance"


def collapse_note(map_value, map_random, factor: float = COLLAPSE_FACTOR) -> str:
    """'' for a run that clearly beats random codes (mAP >= ``factor`` x the random-code mAP of the same
    queries and database), else a short note saying it is at chance; ``not evaluated`` when either is
    missing or NaN."""
    def missing(v):
        return v is None or (isinstance(v, float) and math.isnan(v))

    if missing(map_value) or missing(map_random):
        return "not evaluated"
    if map_value < factor * map_random:
        return f"at chance level (mAP < {factor:g} x random codes)"
    return ""


def query_outputs(result, max_items: int | None = None):
    """The continuous hash outputs ``u`` (float32 CPU tensor, (n, b)) of ``result.model`` on the query
    split of ``result.data``, eval mode, with the run's evaluation transform; at most ``max_items`` items
    (whole batches of 256, so up to 255 more). ``result``: a :class:`~hashlib_vit.experiment.RunResult`."""
    import torch

    from ..data import make_batches, protocol_transforms

    model = result.model.eval()
    device = next(model.parameters()).device
    _, ev_tf = protocol_transforms(result.data.protocol, model.img_size)  # the run's evaluation transform
    us, seen = [], 0
    with torch.no_grad():
        for x, _, _ in make_batches(result.data.query, 256, ev_tf, train=False, device=device).epoch(0):
            us.append(model(x).u.float().cpu())
            seen += len(x)
            if max_items is not None and seen >= max_items:
                break
    return torch.cat(us)


def code_diagnostics(result, max_items: int = 2000) -> dict:
    """How the trained model's outputs look on the query split (collapse shows here first).

    * ``mean_abs_u``: mean |u| (a pairwise loss stuck at the saddle u = 0 gives values near 0);
    * ``input_spread``: mean over bits of the std of u across inputs, divided by the mean |u|
      (near 0: the output hardly depends on the input);
    * ``distinct_db_codes``: number of different binary codes in the database;
    * ``bit_balance``: mean over bits of |mean of the bit| in the database (0: balanced, 1: constant).
    """
    u = query_outputs(result, max_items)
    mean_abs = float(u.abs().mean())
    spread = float(u.std(0).mean()) / max(mean_abs, 1e-12)
    db = np.asarray(result.db_codes)
    return {"mean_abs_u": round(mean_abs, 6), "input_spread": round(spread, 4),
            "distinct_db_codes": int(len(np.unique(db, axis=0))),
            "bit_balance": round(float(np.abs(db.astype(np.float64).mean(0)).mean()), 4)}


def quant_error(result, max_items: int | None = None) -> float:
    """Mean quantization error ``2 (1 - cos(u, sgn u))`` of the trained model's continuous outputs on the
    query split (:func:`query_outputs`, eval mode), in [0, 2): 0 when every output points at a hypercube
    vertex, about 0.40 for Gaussian outputs (OrthoHash, Hoe et al. NeurIPS 2021, §3.3;
    :func:`hashlib_vit.losses.orthohash.quantization_error`)."""
    from ..losses.orthohash import quantization_error

    return float(quantization_error(query_outputs(result, max_items)).mean())


def per_head_map(codes, widths, names=None, *, rest: str | None = "all local", topk=None):
    """mAP of each slice of a concatenated code (e.g. MGVT's ``[h_g; h_l^1; ..; h_l^G]``, TransHash §3.2),
    of all slices but the first (``rest``; None: no such row) and of the full code.

    ``codes``: :class:`~.rundir.RunCodes` (or a 4-tuple query codes, database codes, query labels,
    database labels); ``widths``: bits per head, summing to the code length; ``names``: one per head
    (default ``global``, ``local 1``, ...); ``topk``: mAP cut-off (None: the whole database). Returns a
    DataFrame indexed by ``bits used`` with ``n bits`` and ``mAP``. Raises ValueError when the widths do
    not sum to the code length."""
    import pandas as pd

    from ..retrieval import map_at_k

    qc, dc, ql, dl = codes
    topk = None if topk == "all" else topk
    widths = [int(w) for w in widths]
    if sum(widths) != qc.shape[1]:
        raise ValueError(f"widths={widths} sum to {sum(widths)}; the codes have {qc.shape[1]} bits")
    names = list(names) if names is not None else ["global"] + [f"local {g + 1}" for g in range(len(widths) - 1)]
    edges = np.cumsum([0] + widths)
    parts = [(n, a, b) for n, a, b in zip(names, edges[:-1], edges[1:])]
    if rest and len(widths) > 1:
        parts.append((rest, widths[0], edges[-1]))
    if len(widths) > 1:
        parts.append(("full code", 0, edges[-1]))
    rows = [{"bits used": n, "n bits": int(b - a), "mAP": map_at_k(qc[:, a:b], dc[:, a:b], ql, dl, topk=topk)}
            for n, a, b in parts]
    return pd.DataFrame(rows).set_index("bits used")


def mgvt_layout(model) -> dict:
    """The shape of a TransHash MGVT model (TransHash §3.2) as :func:`~.figures.mgvt_diagram` and
    :func:`per_head_map` take it: ``depth`` (blocks of the ViT, the last one duplicated into the branches),
    ``n_patches`` (patch tokens), ``widths`` (bits of the global head, then of each local head, measured
    from ``HashOutput.heads`` of one forward pass on random images in eval mode), ``groups`` (local heads)
    and ``local_stream`` (False: the "w/o P" ablation, one head)."""
    import torch

    vit = model.backbone.model
    depth = getattr(model, "depth", None) or getattr(getattr(model, "neck", None), "depth", None)
    was = model.training
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, model.img_size, model.img_size))
    model.train(was)
    widths = [int(h.shape[1]) for h in out.heads]
    return {"depth": int(depth), "n_patches": int(vit.patch_embed.num_patches), "widths": widths,
            "groups": len(widths) - 1, "local_stream": len(widths) > 1}


def parameter_counts(model) -> "pd.DataFrame":  # noqa: F821
    """Parameters of each top-level module of a hash model (``model.named_children()``: e.g. the backbone,
    the neck's branches, the hash layers) and how many of them are new (``model.new_parameters()``: trained
    from random initialisation, with the head learning rate), plus a ``total`` row. A parameter shared by
    two modules is counted once, under the first. Returns a DataFrame indexed by ``module`` with
    ``parameters`` and ``new`` (ints)."""
    import pandas as pd

    new = {id(p) for p in model.new_parameters()}
    seen: set[int] = set()
    rows = []
    for name, child in model.named_children():
        ps = [p for p in child.parameters() if id(p) not in seen]
        seen |= {id(p) for p in ps}
        if ps:
            rows.append({"module": name, "parameters": sum(p.numel() for p in ps),
                         "new": sum(p.numel() for p in ps if id(p) in new)})
    rest = [p for p in model.parameters() if id(p) not in seen]
    if rest:
        rows.append({"module": "(direct)", "parameters": sum(p.numel() for p in rest),
                     "new": sum(p.numel() for p in rest if id(p) in new)})
    df = pd.DataFrame(rows).set_index("module")
    df.loc["total"] = df.sum()
    return df.astype(int)


def aem_at_init(backbone: str, bits: int, aem: str = "all", *, seed: int = 0, n: int = 8) -> dict:
    """AE-ViT's attention-enhanced module at initialisation (AE-ViT, METHODS.md §4.2: the gate gamma starts at
    zero): the same ``backbone`` built with ``seed`` without and with AEM
    (``aem`` branches; ``"off"`` is taken as ``"all"``), both in eval mode on ``n`` random 3-channel images.

    Returns ``max_abs_diff`` (max |u_AE-ViT - u_ViT|: exactly 0.0 when AEM is the identity), ``aem_parameters``
    (what AEM adds), ``vit_parameters`` (the plain ViT's backbone), ``feature_map`` (``"D x (H, W)"`` of the
    patch-embedding map AEM works on) and ``patch_embed`` (the module's repr)."""
    import torch

    from ..models import build_model
    from ..models.aem import find_aem

    torch.manual_seed(seed)
    plain = build_model(backbone, bits, img_size=None, aem="off").eval()
    torch.manual_seed(seed)
    ae = build_model(backbone, bits, img_size=None, aem="all" if aem == "off" else aem).eval()
    x = torch.rand(n, 3, ae.img_size, ae.img_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        diff = (ae(x).u - plain(x).u).abs().max().item()
    module = find_aem(ae)
    embed = ae.backbone.model.patch_embed
    return {"max_abs_diff": diff, "aem_parameters": module.extra_parameters(),
            "vit_parameters": sum(p.numel() for p in plain.backbone.parameters()),
            "feature_map": f"{module.dim} x {tuple(embed.grid_size)}", "patch_embed": repr(embed)}


def codebook_distances(num_classes: int, bits: int, methods=("bernoulli", "hadamard", "maxhd"), seed: int = 0):
    """Pairwise Hamming distances between the fixed class codes of each codebook method (OrthoHash / SL-ViT,
    :func:`hashlib_vit.losses.orthohash.make_codebook`): a DataFrame indexed by ``codebook`` with ``min``,
    ``mean`` and ``max Hamming`` over class pairs, or a ``note`` saying why the method cannot build
    ``num_classes`` codes of ``bits`` bits."""
    import pandas as pd

    from ..errors import ConfigError
    from ..losses.centers import mean_pairwise_distance, pairwise_distance_range
    from ..losses.orthohash import make_codebook

    rows = []
    for method in methods:
        try:
            cb = make_codebook(method, num_classes, bits, seed=seed)
        except (ConfigError, ValueError) as err:
            rows.append({"codebook": method, "note": str(err)[:100]})
            continue
        lo, hi, _ = pairwise_distance_range(cb)  # row blocks: no C x C matrix (10,000 classes fit)
        rows.append({"codebook": method, "min Hamming": lo, "mean Hamming": round(mean_pairwise_distance(cb), 2),
                     "max Hamming": hi, "note": ""})
    return pd.DataFrame(rows).set_index("codebook")


def init_output_spread(backbones: dict, images, *, bits: int, head: str = "cls_linear", seed: int = 0):
    """How much a freshly initialised model's output depends on its input (why pairwise losses can stall
    from scratch, see :func:`collapsed_loss_profile`): for each ``{backbone name: img_size or None}``,
    the model built with ``seed``, in eval mode, on ``images`` (float [0, 1], (n, 3, H, W)).

    Returns a DataFrame indexed by backbone with ``mean |u| at init`` and ``input spread at init`` (mean
    over bits of the std of u across inputs / mean |u|); models whose input size differs from H are left
    out."""
    import pandas as pd
    import torch

    from ..models import build_model

    spread = {}
    for name, img_size in backbones.items():
        torch.manual_seed(seed)
        m = build_model(name, bits=bits, head=head, img_size=img_size).eval()
        if m.img_size != images.shape[-1]:
            continue
        with torch.no_grad():
            u0 = m(images).u.float()
        spread[name] = {"mean |u| at init": float(u0.abs().mean()),
                        "input spread at init": float(u0.std(0).mean() / u0.abs().mean())}
    return pd.DataFrame(spread).T


def collapsed_loss_profile(losses: list[str], bits: int, labels, scales=None, seed: int = 0,
                           multi_label: bool = False):
    """Each loss on an *input-independent* model: every item gets the same output ``u = c v``.

    ``v`` is a fixed random ±1 direction, ``c`` runs over ``scales``; ``labels`` is a real batch's
    label matrix. For a pairwise likelihood (DPSH, HashNet) the value is smallest at ``c = 0`` when
    the batch has few similar pairs: that is the saddle a from-scratch ViT (whose CLS output hardly
    depends on the input at initialisation) can fall into. Also returned: the norm of the gradient
    with respect to ``u`` (times n, i.e. per item) and ``item_grad_across``, the norm of its
    item-specific part (gradient minus its batch mean) orthogonal to ``v``: the only part that can
    give different items different codes. For every pairwise loss it is exactly 0 at any ``c`` (the
    gradient of item i is a multiple of the common output: pairs of identical outputs carry no
    direction); for the center, target and classifier losses it is of order one. Returns a DataFrame
    (loss, scale, value, grad_norm, item_grad_across).
    """
    import pandas as pd
    import torch

    from ..losses import build_loss
    from ..models import HashOutput

    scales = np.linspace(0.0, 2.0, 21) if scales is None else scales
    g = torch.Generator().manual_seed(seed)
    v = torch.where(torch.rand(bits, generator=g) < 0.5, -1.0, 1.0)
    n, c = labels.shape
    rows = []
    for name in losses:
        torch.manual_seed(seed)
        loss = build_loss(name, bits, c, multi_label)
        for sc in scales:
            u = (float(sc) * v).expand(n, bits).clone().requires_grad_(True)
            res = loss(HashOutput(u=u), labels, torch.arange(n))
            (grad,) = torch.autograd.grad(res.total, u)
            item = grad - grad.mean(0, keepdim=True)
            vhat = v / v.norm()
            across = item - (item @ vhat)[:, None] * vhat[None, :]
            rows.append({"loss": name, "scale": float(sc), "value": res.total.item(),
                         "grad_norm": float(grad.norm()) * n, "item_grad_across": float(across.norm()) * n})
    return pd.DataFrame(rows)


__all__ = ["COLLAPSE_FACTOR", "aem_at_init", "code_diagnostics", "codebook_distances", "collapse_note",
           "collapsed_loss_profile", "init_output_spread", "mgvt_layout", "parameter_counts", "per_head_map",
           "quant_error", "query_outputs"]
