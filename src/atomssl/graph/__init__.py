"""Structure -> graph: periodic neighbour lists, neighbour clouds, Gram matrices, batching."""

from ._neighbors import NeighborList, knn_graph, radius_graph, radius_graphs
from ._clouds import gram_matrices, neighbor_clouds, upper_triangle
from ._batch import build_neighbors, collate, edge_vectors, to_graph, to_graphs

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
    "build_neighbors",
]
