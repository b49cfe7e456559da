"""Analyses of learned representations: 2D embedding maps coloured by a property."""

from ._embedding_map import (
    density,
    embedding_map,
    embedding_map_figure,
    neighbour_agreement,
    project_2d,
)

__all__ = ["density", "embedding_map", "embedding_map_figure", "neighbour_agreement", "project_2d"]
