"""Typed errors of atomssl.

Every error that reaches a user names *where* (file, frame/index, structure id) and *why*.
The CLI catches :class:`AtomsslError` and prints its message instead of a traceback.
"""

from __future__ import annotations


class AtomsslError(Exception):
    """Base class of all atomssl errors."""


class ConfigError(AtomsslError, ValueError):
    """A configuration file or override is invalid."""


class EmptyInputError(AtomsslError, ValueError):
    """An input names nothing to work on (e.g. a folder without structure files), or every entry
    of it was bad and skipped."""


class CheckpointError(AtomsslError):
    """A checkpoint is missing, corrupt, unsafe (pickled objects) or of the wrong kind."""


class StructureError(AtomsslError, ValueError):
    """A structure (or the file holding it) cannot be used.

    Attributes
    ----------
    source: the file path or dataset name the structure came from.
    index: the frame/entry index inside ``source`` (``None`` for the whole file).
    reason: a short human-readable reason.
    """

    kind = "invalid structure"

    def __init__(self, reason: str, source: str | None = None, index: int | None = None):
        self.reason = reason
        self.source = source
        self.index = index
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.source if self.source else "<structure>"
        if self.index is not None:
            where = f"{where} [index {self.index}]"
        return f"{where}: {self.kind}: {self.reason}"

    def __reduce__(self):
        # pickled across processes (import workers, DataLoader workers): rebuilt from its parts, so
        # the message keeps one location instead of wrapping the formatted one in "<structure>: ..."
        return type(self), (self.reason, self.source, self.index), dict(self.__dict__)

    def located(self, source: str | None = None, index: int | None = None) -> StructureError:
        """Return a copy of this error with the location filled in where it was unknown."""
        err = type(self)(
            self.reason, self.source or source, self.index if self.index is not None else index
        )
        return err


class MissingFileError(StructureError, FileNotFoundError):
    """The file to read does not exist."""

    kind = "file not found"


class UnknownFormatError(StructureError):
    """The file's format cannot be told from its name or its content (pass ``format=``)."""

    kind = "unknown format"


class UnreadableFileError(StructureError):
    """The file exists but cannot be parsed (corrupt, truncated or not what its format says)."""

    kind = "unreadable file"


class DisorderError(StructureError):
    """Sites with partial occupancy or mixed species, under a disorder policy that refuses them."""

    kind = "partial occupancy/disorder"


class NonFiniteError(StructureError):
    """Positions or cell hold NaN or infinity."""

    kind = "non-finite coordinates"


class SingularCellError(StructureError):
    """A periodic lattice vector is zero or the periodic vectors are (nearly) linearly dependent."""

    kind = "singular cell"


class EmptyStructureError(StructureError):
    """The structure has no atoms."""

    kind = "no atoms"


class UnknownElementError(StructureError):
    """A species is not a chemical element (an unknown symbol, or an atomic number outside
    1..118)."""

    kind = "unknown element"


class MaskedSiteError(UnknownElementError):
    """Masked sites (``X``, Z = 0, as ``atomssl reconstruct`` writes them): only ``reconstruct``
    (``read(..., allow_masked=True)``) accepts them."""

    kind = "masked sites"


class OverlapError(StructureError):
    """Two atoms (or an atom and its own periodic image) are closer than the minimum distance
    (``atomssl.data.Structure.validate``, 0.1 A by default)."""

    kind = "overlapping atoms"


class TooManyNeighborsError(StructureError):
    """A neighbour search would produce absurdly many edges (e.g. a cell far smaller than the cutoff)."""

    kind = "too many neighbours"


class TrainingError(AtomsslError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""
