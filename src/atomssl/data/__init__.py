"""Structure sources: the :class:`Structure` record, file readers, offline datasets, stores."""

from ._structure import Structure

__all__ = ["Structure"]
