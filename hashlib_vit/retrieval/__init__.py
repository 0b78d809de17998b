"""Retrieval: encoding, bit-packed Hamming ranking and metrics (one entry point: :func:`evaluate`)."""
from .codes import hamming_distances, pack_codes, unpack_codes
from .encode import encode
from .engine import PRESETS, EvalOptions, evaluate
from .metrics import map_at_k

__all__ = ["EvalOptions", "PRESETS", "encode", "evaluate", "hamming_distances", "map_at_k", "pack_codes",
           "unpack_codes"]
