"""Query by image: pick a query image or upload one, see the top-k database images of a trained model's
index with their Hamming distances and labels; an ipywidgets UI when ipywidgets is installed, a static
figure otherwise (papermill, nbval, a terminal).

:class:`QuerySearch` holds the index, the run's data and (for uploads) its model. :meth:`QuerySearch.search`
is the one search both paths use; :meth:`QuerySearch.figure` draws it
(:func:`hashlib_vit.results.figures.query_result_figure`); :meth:`QuerySearch.widget` builds the controls,
whose callbacks call :meth:`QuerySearch.update`, which calls the same two.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..retrieval.index import HashIndex


@dataclass
class QueryHit:
    """The result of one search by image: database positions ``ids`` (n,) int64, Hamming ``distances`` (n,)
    int64, ``labels`` (n) class-name strings, ``relevant`` (n,) bool (shares a label with the query; None for
    an upload, whose label is unknown), ``n_within``: items within ``radius`` (None: top-k search), and the
    query: ``query_image`` uint8 (3, S, S) as the model saw it before its transform, ``query_label``."""

    ids: np.ndarray
    distances: np.ndarray
    labels: list
    relevant: np.ndarray | None
    query_image: object
    query_label: str | None
    k: int
    radius: int | None
    n_within: int | None
    source: str


def _label_text(row, class_names) -> str:
    row = np.asarray(row)
    if row.ndim == 0:
        return str(class_names[int(row)]) if 0 <= int(row) < len(class_names) else str(int(row))
    return ", ".join(str(class_names[j]) for j in np.flatnonzero(row > 0)) or "(none)"


def _split_images(split, idx, size: int = 64):
    idx = np.asarray(idx, dtype=np.int64)
    if hasattr(split, "images"):
        return split.images[idx]
    return split.load_images(idx, size)


class QuerySearch:
    """Search ``index`` (a :class:`~hashlib_vit.retrieval.index.HashIndex` over the database codes, with
    labels) by query image.

    ``data``: the run's :class:`~hashlib_vit.data.protocols.ProtocolData` (images to show, class names, the
    protocol an upload is prepared for); ``query_codes`` / ``query_labels``: the query set's codes (Q, bits)
    and labels, for picks by position; ``model``: the trained model, needed for uploads only (None: picks
    only). Raises DataError when the index has no labels or the query codes and labels disagree in length.
    """

    def __init__(self, index: HashIndex, data, query_codes, query_labels, *, model=None):
        if index.labels is None:
            raise DataError("QuerySearch needs an index built with labels= (the database labels)")
        if len(query_codes) != len(query_labels):
            raise DataError(f"query_codes have {len(query_codes)} rows but query_labels {len(query_labels)}")
        if index.ntotal != len(data.database):
            raise DataError(f"the index holds {index.ntotal} codes but the data's database has {len(data.database)} "
                            "images: build the index from this run's database codes")
        self.index, self.data, self.model = index, data, model
        self.query_codes, self.query_labels = np.asarray(query_codes), np.asarray(query_labels)
        self.class_names = list(data.class_names)
        self.last: QueryHit | None = None
        self.controls: dict = {}
        self._upload = None  # (name, bytes) of the last upload; used until a query is picked again

    # ------------------------------------------------------------------ the search
    def search(self, query, k: int = 10, radius: int | None = None, *, name: str | None = None) -> QueryHit:
        """Search by ``query``: an int (position in the query set; its stored code is searched) or an image
        (PIL image, image bytes, path: prepared for the protocol and encoded with the model, see
        :func:`hashlib_vit.retrieval.query.encode_query_images`; ``name`` names it in messages).

        ``radius`` None: the top ``k`` (``index.search``); an int: the items within that Hamming distance
        (``index.radius_search``, inclusive, ordered by distance then database position), the first ``k``
        of them shown and ``n_within`` all of them counted. Raises DataError for a position outside the
        query set, an upload without a model, or an unreadable image (named)."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise DataError(f"k={k!r} must be a positive integer")
        if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
            if not 0 <= int(query) < len(self.query_codes):
                raise DataError(f"query {query} is outside the query set (0..{len(self.query_codes) - 1})")
            code = self.query_codes[int(query):int(query) + 1]
            image = _split_images(self.data.query, [int(query)])[0]
            qlabel = self.query_labels[int(query)]
            source = f"query #{int(query)}"
        else:
            if self.model is None:
                raise DataError("searching by an uploaded image needs the trained model: QuerySearch(..., model=model)")
            from ..data.query_images import prepare_query_images
            from ..retrieval.query import encode_prepared

            images, tf = prepare_query_images([query], self.data, self.model.img_size,
                                              names=[name] if name else None)
            code = encode_prepared(self.model, images, tf)
            image, qlabel, source = images[0], None, name or "uploaded image"
        if radius is None:
            res = self.index.search(code, int(k))
            ids, dist, n_within = res.ids[0], res.distances[0], None
            keep = ids >= 0
            ids, dist = ids[keep], dist[keep]
        else:
            res = self.index.radius_search(code, int(radius))[0]
            ids, dist, n_within = res.ids[:k], res.distances[:k], len(res.ids)
        db_labels = self.index.labels[ids]
        relevant = None
        if qlabel is not None:
            q = np.asarray(qlabel)
            relevant = ((db_labels > 0) & (q > 0)).any(-1) if db_labels.ndim == 2 else db_labels == q
        self.last = QueryHit(ids.astype(np.int64), dist.astype(np.int64), [_label_text(r, self.class_names)
                                                                           for r in db_labels],
                             relevant, image, None if qlabel is None else _label_text(qlabel, self.class_names),
                             int(k), None if radius is None else int(radius), n_within, source)
        return self.last

    def figure(self, hit: QueryHit | None = None):
        """The figure of ``hit`` (default: the last search): query, then results with distance and label."""
        from .figures import query_result_figure

        hit = hit or self.last
        if hit is None:
            raise DataError("nothing searched yet: call search() first")
        what = (f"top {len(hit.ids)}" if hit.radius is None
                else f"{hit.n_within} within Hamming radius {hit.radius} (first {len(hit.ids)} shown)")
        imgs = _split_images(self.data.database, hit.ids) if len(hit.ids) else []
        return query_result_figure(hit.query_image, imgs, hit.distances, hit.labels, query_label=hit.query_label,
                                   relevant=hit.relevant, title=f"{hit.source}: {what}")

    # ------------------------------------------------------------------ the widgets
    def update(self, *, pick: int | None = None, upload: tuple | None = None, k: int | None = None,
               radius: int | None = None, use_radius: bool | None = None) -> QueryHit:
        """Set the controls (only those given; ``upload`` = (name, bytes) switches to that image, ``pick``
        back to the query set), search with their values, and draw the result into the output area.
        The widget callbacks call this with no arguments; tests call it with values."""
        c = self.controls
        if not c:
            raise DataError("no widget UI: call widget() first, or use search() and figure()")
        self._busy = True
        try:
            if k is not None:
                c["k"].value = int(k)
            if radius is not None:
                c["radius"].value = int(radius)
            if use_radius is not None:
                c["use_radius"].value = bool(use_radius)
            if pick is not None:
                c["pick"].value = int(pick)
                self._upload = None
            if upload is not None:
                self._upload = (str(upload[0]), bytes(upload[1]))
        finally:
            self._busy = False
        return self._refresh()

    def _refresh(self) -> QueryHit | None:
        import matplotlib.pyplot as plt
        from IPython.display import display

        c = self.controls
        radius = c["radius"].value if c["use_radius"].value else None
        out = c["out"]
        try:
            if self._upload is not None:
                hit = self.search(self._upload[1], c["k"].value, radius, name=self._upload[0])
            else:
                hit = self.search(c["pick"].value, c["k"].value, radius)
        except DataError as e:  # an unreadable upload: said in the UI, the last result kept
            c["status"].value = f"<b style='color:#b00'>{e}</b>"
            return None
        c["status"].value = (f"{hit.source}: " + ", ".join(f"#{i} d={d} ({lab})" for i, d, lab in
                                                           zip(hit.ids[:5], hit.distances, hit.labels))
                             + (" ..." if len(hit.ids) > 5 else ""))
        with out:
            out.clear_output(wait=True)
            fig = self.figure(hit)
            display(fig)
            plt.close(fig)
        return hit

    def widget(self):
        """The interactive UI (ipywidgets): a query slider over the query set, an image upload, k, and an
        optional Hamming radius; every change searches again (:meth:`update`). Raises ImportError with the
        install hint when ipywidgets is missing (``pip install hashlib-vit[notebooks]``)."""
        try:
            import ipywidgets as w
        except ImportError as e:
            raise ImportError("the query-by-image UI needs ipywidgets: pip install 'hashlib-vit[notebooks]' "
                              "(search() and figure() work without it)") from e
        bits = self.index.bits
        self.controls = c = {
            "pick": w.IntSlider(value=0, min=0, max=len(self.query_codes) - 1, description="query #"),
            "upload": w.FileUpload(accept="image/*", multiple=False, description="upload image"),
            "k": w.IntSlider(value=10, min=1, max=int(min(50, self.index.ntotal)), description="k"),
            "use_radius": w.Checkbox(value=False, description="within radius"),
            "radius": w.IntSlider(value=2, min=0, max=bits, description="radius"),
            "status": w.HTML(),
            "out": w.Output(),
        }
        self._busy = False

        def changed(change):
            if getattr(self, "_busy", False):
                return
            if change["owner"] is c["pick"]:
                self._upload = None
            self._refresh()

        def uploaded(change):
            files = change["new"]
            if not files:
                return
            f = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))  # ipywidgets 8 / 7
            name = f.get("name") or f.get("metadata", {}).get("name", "uploaded image")
            self._upload = (name, bytes(f["content"]))
            self._refresh()

        for key in ("pick", "k", "use_radius", "radius"):
            c[key].observe(changed, names="value")
        c["upload"].observe(uploaded, names="value")
        box = w.VBox([w.HBox([c["pick"], c["upload"]]), w.HBox([c["k"], c["use_radius"], c["radius"]]),
                      c["status"], c["out"]])
        self._refresh()
        return box


__all__ = ["QueryHit", "QuerySearch"]
