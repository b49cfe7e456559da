"""Structure -> graph: periodic neighbour lists, neighbour clouds, Gram matrices, batching.

The neighbour search itself (:func:`radius_graph`, :func:`knn_graph`, :class:`NeighborList`) is
implemented in ``atomssl.data._neighbors``, because :meth:`atomssl.data.Structure.validate`
needs it for its overlap check and data must not import graph; this package is its public home.
"""

from ..data._neighbors import NeighborList, knn_graph, radius_graph, radius_graphs
from ._clouds import gram_matrices, neighbor_clouds, upper_triangle

# The torch side (_batch) imports torch and torch_geometric (seconds); load it on first use so
# that reading and validating structures stays quick to start.
_LAZY_TIES = {"TIE_RTOL", "tie_weights"}
_LAZY = {"build_neighbors", "collate", "edge_vectors", "restrict_cutoff", "to_graph", "to_graphs"}


def __getattr__(name):
    if name in _LAZY:
        from . import _batch

        return getattr(_batch, name)
    if name in _LAZY_TIES:
        from . import _ties

        return getattr(_ties, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NeighborList",
    "radius_graph",
    "radius_graphs",
    "knn_graph",
    "neighbor_clouds",
    "gram_matrices",
    "upper_triangle",
    "to_graph",
    "to_graphs",
    "collate",
    "edge_vectors",
    "restrict_cutoff",
    "build_neighbors",
    "TIE_RTOL",
    "tie_weights",
]
