"""Bit-packed binary codes and integer Hamming distances (popcount), on numpy or torch (CPU / CUDA).

Packed layout (the one numpy's ``np.packbits(..., axis=1, bitorder="big")`` produces):

* a code of ``B`` bits is stored as ``ceil(B / 8)`` bytes (``uint8``), one row per item;
* code bit ``j`` (column ``j`` of the unpacked ``(n, B)`` array) lives in byte ``j // 8`` at bit position
  ``7 - j % 8`` (most significant bit first);
* a set bit means the code value ``+1`` (or ``1`` for {0,1} codes); ``-1`` / ``0`` is a cleared bit;
* when ``B`` is not a multiple of 8 the unused low bits of the last byte are zero.

This is the byte layout ``faiss.IndexBinaryFlat(8 * nbytes)`` expects (``d`` = ``8 * ceil(B/8)``); the
zero padding bits never change a Hamming distance. Internally the bytes are zero-padded to a machine
word (``uint8/16/32/64`` on numpy, ``uint8`` lanes on torch) and distances are popcounts of XORs.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DataError

__all__ = ["pack_codes", "unpack_codes", "hamming_distances", "packed_bytes"]


def packed_bytes(bits: int) -> int:
    """Bytes per packed code of ``bits`` bits."""
    return (int(bits) + 7) // 8


def _describe(x) -> str:
    return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"


def _check_2d(codes, name: str):
    if not isinstance(codes, (np.ndarray, torch.Tensor)):
        raise DataError(f"{name} must be a numpy array or a torch tensor, got {type(codes).__name__}")
    if codes.ndim != 2:
        raise DataError(f"{name} must be a 2-D (items, bits) array of codes, got {_describe(codes)}")
    if codes.shape[0] == 0:
        raise DataError(f"{name} is empty (0 items); expected at least one code")
    if codes.shape[1] == 0:
        raise DataError(f"{name} has 0 bits per code; expected at least one bit")


def _bits_of_unpacked(codes, name: str):
    """Boolean (n, B) array/tensor of set bits for ±1 or {0,1} codes (validated)."""
    if isinstance(codes, torch.Tensor):
        c = codes.detach()
        if c.dtype == torch.bool:
            return c
        if c.is_floating_point() and bool(torch.isnan(c).any()):
            raise DataError(f"{name} contains NaN; codes must be ±1 (or 0/1)")
        pos = c == 1
        neg = (c == -1) if c.dtype != torch.uint8 else torch.zeros_like(pos)
        zero = c == 0
        ok = pos | neg | zero
        has_neg, has_zero = bool(neg.any()), bool(zero.any())
        if not bool(ok.all()) or (has_neg and has_zero):
            bad = c[~ok][0].item() if not bool(ok.all()) else "a mix of -1 and 0"
            raise DataError(f"{name} must contain only -1 and +1 (binarise with sign, sign(0)=+1) or only 0 and 1"
                            f" (or be packed uint8 with bits=...); found {bad!r}")
        return pos
    c = codes
    if c.dtype == np.bool_:
        return c
    if not (np.issubdtype(c.dtype, np.number)):
        raise DataError(f"{name} must be numeric ±1 / 0-1 codes, got dtype {c.dtype}")
    if np.issubdtype(c.dtype, np.floating) and np.isnan(c).any():
        raise DataError(f"{name} contains NaN; codes must be ±1 (or 0/1)")
    pos = c == 1
    neg = c == -1
    zero = c == 0
    ok = pos | neg | zero
    if not ok.all():
        raise DataError(f"{name} must contain only -1 and +1 (binarise with sign, sign(0)=+1) or only 0 and 1"
                        f" (or be packed uint8 with bits=...); found {c[~ok].flat[0]!r}")
    if neg.any() and zero.any():
        raise DataError(f"{name} must contain only -1 and +1 or only 0 and 1, found a mix of -1 and 0")
    return pos


_WEIGHTS = np.array([128, 64, 32, 16, 8, 4, 2, 1], dtype=np.uint8)


def _pack_bool(b):
    if isinstance(b, torch.Tensor):
        n, B = b.shape
        nb = packed_bytes(B)
        x = torch.zeros((n, nb * 8), dtype=torch.uint8, device=b.device)
        x[:, :B] = b.to(torch.uint8)
        w = torch.as_tensor(_WEIGHTS, device=b.device)
        return (x.view(n, nb, 8) * w).sum(-1, dtype=torch.int32).to(torch.uint8)
    return np.packbits(b, axis=1, bitorder="big")


def _check_packed(codes, name: str, bits: int):
    nb = packed_bytes(bits)
    is_t = isinstance(codes, torch.Tensor)
    dt_ok = codes.dtype == (torch.uint8 if is_t else np.uint8)
    if not dt_ok or codes.shape[1] != nb:
        raise DataError(f"{name}: with bits={bits} the codes must be packed uint8 of shape (n, {nb}); "
                        f"got {_describe(codes)}")
    pad = nb * 8 - bits
    if pad:
        mask = (1 << pad) - 1
        last = codes[:, -1]
        if bool((last & mask).any() if is_t else np.any(last & mask)):
            raise DataError(f"{name}: packed codes of {bits} bits must have their {pad} unused low bits of the "
                            "last byte set to zero")
    return codes


def as_packed(codes, name: str = "codes", bits: int | None = None):
    """Validate codes and return ``(packed uint8 (n, ceil(B/8)), B)`` keeping numpy/torch (and device)."""
    _check_2d(codes, name)
    if bits is not None:
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits <= 0:
            raise DataError(f"bits={bits!r} must be a positive integer (the number of bits of the packed codes)")
        bits = int(bits)
        return _check_packed(codes, name, bits), bits
    return _pack_bool(_bits_of_unpacked(codes, name)), int(codes.shape[1])


def pack_codes(codes, bits: int | None = None):
    """Pack ±1, {0,1} or boolean codes ``(n, B)`` into ``uint8 (n, ceil(B/8))`` (layout: module docstring).

    With ``bits`` given, ``codes`` are taken to be packed already: they are validated (dtype, width,
    zero padding bits) and returned unchanged. numpy in -> numpy out; torch in -> torch out, same device.
    """
    return as_packed(codes, "codes", bits)[0]


def unpack_codes(packed, bits: int, *, values: str = "pm1"):
    """Inverse of :func:`pack_codes`: ``(n, bits)`` int8 codes, ``values="pm1"`` (±1) or ``"01"``."""
    if values not in ("pm1", "01"):
        raise DataError(f"values={values!r} must be 'pm1' or '01'")
    _check_2d(packed, "packed")
    p, bits = as_packed(packed, "packed", bits)
    if isinstance(p, torch.Tensor):
        shifts = torch.arange(7, -1, -1, device=p.device, dtype=torch.uint8)
        b = ((p.unsqueeze(-1) >> shifts) & 1).reshape(p.shape[0], -1)[:, :bits].to(torch.int8)
    else:
        b = np.unpackbits(p, axis=1, count=bits, bitorder="big").astype(np.int8)
    return 2 * b - 1 if values == "pm1" else b


# ----------------------------------------------------------------------------- distances
def np_words(packed: np.ndarray, wide: bool = False) -> np.ndarray:
    """Packed bytes -> (n, W) unsigned words: the narrowest of uint8/16/32/64 that holds them, or always
    uint64 with ``wide=True`` (the compiled kernel's word); zero padding adds nothing to a popcount."""
    n, nb = packed.shape
    for size, dt in ((1, np.uint8), (2, np.uint16), (4, np.uint32)):
        if nb <= size and not wide:
            out = np.zeros((n, size), np.uint8)
            out[:, :nb] = packed
            return out.view(dt)
    w = math.ceil(nb / 8)
    out = np.zeros((n, w * 8), np.uint8)
    out[:, :nb] = packed
    return out.view(np.uint64)


def dist_dtype(bits: int):
    return np.uint8 if bits <= 255 else np.uint16


def np_hamming_block(qwords: np.ndarray, dbwords: np.ndarray, out: np.ndarray, buf: np.ndarray | None = None):
    """Integer Hamming distances of a few queries to every database item, written into ``out`` (r, N).

    ``qwords`` (r, W) and ``dbwords`` (N, W) come from :func:`np_words`; ``buf`` is an optional (N,)
    scratch vector of the word dtype (keeps the XOR in cache: one query row at a time).
    """
    n = dbwords.shape[0]
    W = dbwords.shape[1]
    if buf is None:
        buf = np.empty(n, dbwords.dtype)
    if W == 1 and out.dtype == np.uint8:
        col = dbwords[:, 0]
        for i in range(qwords.shape[0]):
            np.bitwise_xor(col, qwords[i, 0], out=buf)
            np.bitwise_count(buf, out=out[i])
        return out
    cnt = np.empty(n, np.uint8)
    for i in range(qwords.shape[0]):
        for w in range(W):
            np.bitwise_xor(dbwords[:, w], qwords[i, w], out=buf)
            np.bitwise_count(buf, out=cnt)
            if w == 0:
                out[i] = cnt
            else:
                out[i] += cnt
    return out


def torch_popcount_u8(x: torch.Tensor) -> torch.Tensor:
    """Bit count of every byte of a uint8 tensor (SWAR on bytes; no overflow, any device)."""
    x = x - ((x >> 1) & 0x55)
    x = (x & 0x33) + ((x >> 2) & 0x33)
    return (x + (x >> 4)) & 0x0F


def torch_hamming_block(qpacked: torch.Tensor, dbpacked: torch.Tensor) -> torch.Tensor:
    """Integer Hamming distances (r, N) int16 between packed uint8 torch codes (same device)."""
    x = torch.bitwise_xor(qpacked[:, None, :], dbpacked[None, :, :])
    return torch_popcount_u8(x).sum(-1, dtype=torch.int16)


def hamming_distances(query_codes, db_codes, bits: int | None = None):
    """Full (Q, N) matrix of integer Hamming distances (for small problems, inspection and tests).

    Codes are ±1, {0,1} or packed (with ``bits``). numpy in -> numpy uint8/uint16; torch in -> torch
    int16 on the codes' device. The evaluation engine never builds this matrix: it works in chunks.
    """
    q, b1 = as_packed(query_codes, "query_codes", bits)
    d, b2 = as_packed(db_codes, "db_codes", bits)
    if b1 != b2:
        raise DataError(f"query_codes have {b1} bits but db_codes have {b2}")
    if isinstance(q, torch.Tensor) or isinstance(d, torch.Tensor):
        q = torch.as_tensor(q)
        d = torch.as_tensor(d, device=q.device)
        return torch_hamming_block(q, d)
    out = np.empty((q.shape[0], d.shape[0]), dist_dtype(b1))
    return np_hamming_block(np_words(q), np_words(d), out)
