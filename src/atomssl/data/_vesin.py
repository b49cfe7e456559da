"""Low-overhead calls into vesin's C library (the neighbour-list engine behind atomssl).

Why not only ``vesin.NeighborList.compute``: for the small crystals typical of materials
datasets (~20 atoms, ~600 pairs) its Python wrapper costs as much as the search itself
(dtype conversions, seven ``ctypes.cast`` per call). Here the same C function is called with
raw data pointers, one reusable result buffer per thread, and the results are copied out
once. The C ABI (``vesin.h``) is only assumed for the vesin versions listed in
``_KNOWN_ABI``; any other version, or a failure to load the library, falls back to the
public ``vesin.NeighborList`` API, which returns the same pairs.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import threading

import numpy as np

# ``import vesin`` imports torch when it is installed (seconds); the direct path only needs the
# shared library, so vesin's Python package is imported lazily (public-API fallback only).
_VESIN_VERSION = importlib.metadata.version("vesin")
_VESIN_SPEC = importlib.util.find_spec("vesin")
if _VESIN_SPEC is None or not _VESIN_SPEC.submodule_search_locations:
    raise ImportError("vesin is installed but its package directory cannot be found")
_VESIN_DIR = list(_VESIN_SPEC.submodule_search_locations)[0]

_KNOWN_ABI = ("0.6.",)  # vesin versions whose C structs match the ones declared below


class _Options(ctypes.Structure):  # struct VesinOptions
    _fields_ = [
        ("cutoff", ctypes.c_double),
        ("full", ctypes.c_bool),
        ("sorted", ctypes.c_bool),
        ("algorithm", ctypes.c_int),
        ("skin", ctypes.c_double),
        ("n_threads", ctypes.c_int32),
        ("return_shifts", ctypes.c_bool),
        ("return_distances", ctypes.c_bool),
        ("return_vectors", ctypes.c_bool),
    ]


class _Device(ctypes.Structure):  # struct VesinDevice
    _fields_ = [("type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _Result(ctypes.Structure):  # struct VesinNeighborList, pointers kept as plain addresses
    _fields_ = [
        ("length", ctypes.c_size_t),
        ("device", _Device),
        ("pairs", ctypes.c_void_p),
        ("shifts", ctypes.c_void_p),
        ("distances", ctypes.c_void_p),
        ("vectors", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
    ]


_CPU = _Device(1, 0)
_lib = None
if _VESIN_VERSION.startswith(_KNOWN_ABI) and os.environ.get("ATOMSSL_VESIN_PUBLIC_API", "") in (
    "",
    "0",
):
    try:
        # The same shared object that vesin itself loads; a separate CDLL handle so that the
        # argtypes declared here do not interfere with vesin's own bindings.
        _lib = ctypes.CDLL(os.path.join(_VESIN_DIR, "lib", "libvesin.so"))
        _lib.vesin_neighbors.argtypes = [
            ctypes.c_void_p,  # points
            ctypes.c_size_t,  # n_points
            ctypes.c_void_p,  # box
            ctypes.c_void_p,  # periodic
            _Device,
            _Options,
            ctypes.POINTER(_Result),
            ctypes.POINTER(ctypes.c_char_p),
        ]
        _lib.vesin_neighbors.restype = ctypes.c_int
        _lib.vesin_free.argtypes = [ctypes.POINTER(_Result)]
        _lib.vesin_free.restype = None
    except (OSError, AttributeError):  # pragma: no cover - depends on the installed wheel
        _lib = None


class _Buffer:
    """One vesin result buffer (reused across calls; vesin grows it as needed)."""

    def __init__(self) -> None:
        self.result = _Result()
        self.error = ctypes.c_char_p()

    def __del__(self) -> None:
        if _lib is not None:
            _lib.vesin_free(ctypes.byref(self.result))


_local = threading.local()


def _read(address: int, count: int, dtype) -> np.ndarray:
    # string_at copies the bytes out of vesin's buffer (the cheapest route from a C pointer
    # to numpy that we measured); the array is read-only
    return np.frombuffer(ctypes.string_at(address, count * np.dtype(dtype).itemsize), dtype=dtype)


def _direct(
    points: np.ndarray, box: np.ndarray, periodic: np.ndarray, cutoff: float, n_threads: int
):
    assert _lib is not None  # callers check has_direct() / _lib first
    buf = getattr(_local, "buffer", None)
    if buf is None:
        buf = _local.buffer = _Buffer()
    opts = _Options(float(cutoff), True, True, 0, 0.0, int(n_threads), True, True, False)
    status = _lib.vesin_neighbors(
        points.ctypes.data,
        len(points),
        box.ctypes.data,
        periodic.ctypes.data,
        _CPU,
        opts,
        ctypes.byref(buf.result),
        ctypes.byref(buf.error),
    )
    if status != 0:
        raise RuntimeError(
            "vesin: " + (buf.error.value or b"unknown error").decode("utf8", "replace")
        )
    n = int(buf.result.length)
    if n == 0:
        return np.zeros((0, 2), np.uint64), np.zeros((0, 3), np.int32), np.zeros(0)
    r = buf.result
    return (
        _read(r.pairs, 2 * n, np.uint64).reshape(n, 2),
        _read(r.shifts, 3 * n, np.int32).reshape(n, 3),
        _read(r.distances, n, np.float64),
    )


_public_cache: dict = {}


def _public(points, box, periodic, cutoff, n_threads):
    key = (float(cutoff), int(n_threads))
    nl = _public_cache.get(key)
    if nl is None:
        import vesin

        if len(_public_cache) > 16:
            _public_cache.clear()
        nl = _public_cache[key] = vesin.NeighborList(
            cutoff=key[0], full_list=True, sorted=True, n_threads=key[1]
        )
    pairs, shifts, distances = nl.compute(points, box, periodic, "PSd", copy=True)
    return pairs.astype(np.uint64, copy=False), shifts, distances


def vesin_pairs(
    points: np.ndarray,
    box: np.ndarray,
    periodic: np.ndarray,
    cutoff: float,
    n_threads: int = 1,
    *,
    direct: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full (i->j and j->i) neighbour list of ``points`` within ``cutoff``, sorted by (i, j, shift).

    Returns ``pairs`` (E, 2) uint64, ``shifts`` (E, 3) int32 and ``distances`` (E,) with
    ``distances = |points[j] - points[i] + shifts @ box| < cutoff``; arrays may be read-only.
    ``direct=False`` forces the public
    vesin API (used by the tests to check that both paths agree).
    """
    points = np.ascontiguousarray(points, dtype=np.float64)
    box = np.ascontiguousarray(box, dtype=np.float64)
    periodic = np.ascontiguousarray(periodic, dtype=np.bool_)
    use_direct = _lib is not None if direct is None else (direct and _lib is not None)
    if use_direct:
        return _direct(points, box, periodic, cutoff, n_threads)
    return _public(points, box, periodic, cutoff, n_threads)


def has_direct() -> bool:
    """Whether the low-overhead path is active (vesin version with a known C ABI)."""
    return _lib is not None
