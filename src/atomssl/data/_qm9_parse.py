"""The QM9 files of the ``qm9pack`` wheel -> arrays: names, units, atomic references, the CSV
parser and the checks on what it reads. The loaders are in :mod:`._qm9`."""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import StructureError, UnreadableFileError
from ._cache import cache_dir, source_key
from ._matbench import DatasetError, _require
from ._structure import Structure

log = logging.getLogger(__name__)

QM9PACK_PIN = "qm9pack==1.0.3"
QM9_COUNT = 130831  # molecules in the wheel (133,885 in QM9 less the 3,054 that failed its check)
QM9_MAX_INDEX = 133885
_SOURCE = "qm9"
_PACKAGE = ("qm9pack", "qm9pack")  # (distribution, top-level package) holding the data files
_CACHE_VERSION = 2
_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_POLAR = "qm9_polarizability.csv"
_HEADER = [
    "XYZ_file",
    "Index",
    "SMILES",
    "InChi",
    "N_atoms",
    "Stoichiometry",
    "Elements",
    "XYZ_Ang",
    "Mulliken_pop",
    "Harmonic_Freq_cmi",
    "RotA_GHz",
    "RotB_GHz",
    "RotC_GHz",
    "Dipole_debye",
    "Polarizability_bohr3",
    "HOMO_au",
    "LUMO_au",
    "HOMO_LUMO_gap_au",
    "R2_bohr2",
    "ZPVE_au",
    "InternalEnergy_0K_au",
    "InternalEnergy_298K_au",
    "Enthalphy_298K_au",
    "GibbsFreeEnergy_298K_au",
    "Heatcapacity_Cv_cal_mol_K",
]
_POLAR_HEADER = ["XYZ_file", "A_xx", "A_xy", "A_yy", "A_xz", "A_yz", "A_zz"]
# the 15 properties of the file, by QM9 name, in the file's column order (columns 10..24)
_FILE_TARGETS = (
    "A",
    "B",
    "C",
    "mu",
    "alpha",
    "homo",
    "lumo",
    "gap",
    "r2",
    "zpve",
    "U0",
    "U",
    "H",
    "G",
    "Cv",
)

#: The 19 QM9 targets (label name -> (unit, meaning)), in the order of the usual benchmarks.
QM9_TARGETS: dict[str, tuple[str, str]] = {
    "mu": ("D", "dipole moment (Debye)"),
    "alpha": ("bohr^3", "isotropic polarizability"),
    "homo": ("Ha", "energy of the highest occupied molecular orbital"),
    "lumo": ("Ha", "energy of the lowest unoccupied molecular orbital"),
    "gap": ("Ha", "lumo - homo"),
    "r2": ("bohr^2", "electronic spatial extent <R^2>"),
    "zpve": ("Ha", "zero-point vibrational energy (harmonic)"),
    "U0": ("Ha", "internal energy at 0 K"),
    "U": ("Ha", "internal energy at 298.15 K"),
    "H": ("Ha", "enthalpy at 298.15 K"),
    "G": ("Ha", "Gibbs free energy at 298.15 K"),
    "Cv": ("cal/(mol K)", "heat capacity at 298.15 K"),
    "U0_atom": ("Ha", "atomization energy at 0 K: U0 minus the atomic references"),
    "U_atom": ("Ha", "atomization energy at 298.15 K: U minus the atomic references"),
    "H_atom": ("Ha", "atomization enthalpy at 298.15 K: H minus the atomic references"),
    "G_atom": ("Ha", "atomization free energy at 298.15 K: G minus the atomic references"),
    "A": ("GHz", "rotational constant A"),
    "B": ("GHz", "rotational constant B"),
    "C": ("GHz", "rotational constant C"),
}
#: Further labels: the polarizability tensor (bohr^3), the QM9 index, SMILES and InChI.
QM9_EXTRA_LABELS = (
    "alpha_xx",
    "alpha_xy",
    "alpha_yy",
    "alpha_xz",
    "alpha_yz",
    "alpha_zz",
    "qm9_index",
    "smiles",
    "inchi",
)
#: QM9's atomic reference energies (Hartree) of U0, U(298.15 K), H(298.15 K), G(298.15 K).
QM9_ATOMREF: dict[int, tuple[float, float, float, float]] = {
    1: (-0.500273, -0.498857, -0.497912, -0.510927),
    6: (-37.846772, -37.845355, -37.844411, -37.861317),
    7: (-54.583861, -54.582445, -54.581501, -54.598897),
    8: (-75.064579, -75.063163, -75.062219, -75.079532),
    9: (-99.718730, -99.717314, -99.716370, -99.733544),
}
_SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
_FLOAT_LABELS = tuple(QM9_TARGETS) + QM9_EXTRA_LABELS[:6]


def qm9_paths() -> list[Path]:
    """The three geometry/property tables and the polarizability table inside the installed qm9pack wheel."""
    return [_require((*_PACKAGE, f"data/{name}"), QM9PACK_PIN) for name in (*_PARTS, _POLAR)]


def _qm9_id(index: int) -> str:
    """``qm9-000001`` for QM9 index 1; a row whose index could not be read is ``qm9-line<N>``."""
    return f"qm9-{index:06d}" if index > 0 else f"qm9-line{-index}"


def _count_rows(paths: list[Path]) -> int:
    """Data rows of the three tables (lines less headers), without parsing them."""
    n = 0
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 24):
                n += chunk.count(b"\n")
        n -= 1
    return n


def _verify_count(n: int, source: str) -> None:
    if n != QM9_COUNT:
        raise DatasetError(
            f"{source}: expected {QM9_COUNT} QM9 molecules, found {n}; reinstall with `pip install --no-deps {QM9PACK_PIN}`"
        )


def _read_polarizability(path: Path) -> dict[str, list[float]]:
    source = str(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            if next(reader) != _POLAR_HEADER:
                raise DatasetError(
                    f"{source}: unexpected header (not qm9pack's polarizability table)"
                )
            table = {row[0]: [float(x) for x in row[1:7]] for row in reader}
    except (OSError, ValueError, IndexError, StopIteration, UnicodeDecodeError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise UnreadableFileError(
            f"not qm9pack's polarizability table ({type(exc).__name__}: {exc})", source
        ) from None
    _verify_count(len(table), source)
    return table


def _strings(values: list[str]) -> np.ndarray:
    """Strings (no newlines) as one UTF-8 byte array: compact, and loads without pickle."""
    return np.frombuffer("\n".join(values).encode(), dtype=np.uint8).copy()


def _unstrings(data: np.ndarray) -> list[str]:
    return data.tobytes().decode().split("\n") if len(data) else []


def _parse(paths: list[Path], limit: int | None = None) -> dict[str, np.ndarray]:
    """Packed arrays of the molecules that validate (the first ``limit`` of them), with what was skipped."""
    parts, polar_path = paths[:3], paths[3]
    polar = _read_polarizability(polar_path)
    ids: list[str] = []
    qidx: list[int] = []
    smiles: list[str] = []
    inchi: list[str] = []
    counts: list[int] = []
    numbers: list[int] = []
    pos_text: list[str] = []
    freq_text: list[str] = []
    freq_counts: list[int] = []
    values: list[list[float]] = []
    skipped_idx: list[int] = []
    skipped_why: list[str] = []
    doubled_idx: list[int] = []
    doubled_diff: list[float] = []
    n_rows = 0
    done = False
    for path in parts:
        source = str(path)
        try:
            fh = open(path, newline="")
        except OSError as exc:
            raise UnreadableFileError(f"cannot read ({exc})", source) from None
        with fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except (StopIteration, UnicodeDecodeError, csv.Error):
                header = None
            if header != _HEADER:
                raise DatasetError(f"{source}: unexpected header (not one of qm9pack's QM9 tables)")
            for line, row in enumerate(reader, start=2):
                n_rows += 1
                try:
                    q = int(row[1])
                    name = row[0]
                    if name != f"dsgdb9nsd_{q:06d}.xyz" or not 1 <= q <= QM9_MAX_INDEX:
                        raise ValueError(f"file {name!r} does not match index {q}")
                    n = int(row[4])
                    symbols = row[6][1:-1].replace("'", "").split(",")
                    if len(symbols) != n:
                        raise ValueError(f"{len(symbols)} elements for {n} atoms")
                    z = [_SYMBOLS[s] for s in symbols]
                    pos = row[7].replace("[", "").replace("]", "")
                    if pos.count(",") + 1 != 3 * n:
                        raise ValueError(f"{pos.count(',') + 1} coordinates for {n} atoms")
                    freqs = row[9][1:-1]
                    n_freq = freqs.count(",") + 1 if freqs else 0
                    if n_freq in (
                        6 * n - 12,
                        6 * n - 10,
                    ):  # two sets of 3N-6 (3N-5 if linear): keep the first
                        both = np.array(freqs.split(","), dtype=np.float64)
                        half = n_freq // 2
                        freqs, n_freq = ",".join(freqs.split(",")[:half]), half
                        doubled_idx.append(q)
                        doubled_diff.append(float(np.abs(both[:half] - both[half:]).max()))
                    props = [float(x) for x in row[10:25]] + polar[name]
                    if len(row) != len(_HEADER):
                        raise ValueError(f"{len(row)} columns, expected {len(_HEADER)}")
                except (ValueError, IndexError, KeyError) as exc:
                    # one bad row is skipped with its reason; a wrong file fails the count check
                    what = (
                        f"unknown element or no polarizability row ({exc})"
                        if isinstance(exc, KeyError)
                        else str(exc)
                    )
                    skipped_idx.append(int(row[1]) if len(row) > 1 and row[1].isdigit() else -line)
                    skipped_why.append(f"unreadable: line {line} of {Path(source).name}: {what}")
                    continue
                ids.append(_qm9_id(q))
                qidx.append(q)
                smiles.append(row[2])
                inchi.append(row[3])
                counts.append(n)
                numbers.extend(z)
                pos_text.append(pos)
                freq_text.append(freqs)
                freq_counts.append(n_freq)
                values.append(props)
                if (
                    limit is not None and len(ids) >= limit + 64
                ):  # a few spare for validation failures
                    done = True
                    break
        if done:
            break
    positions = np.fromstring(",".join(pos_text), sep=",") if pos_text else np.zeros(0)
    if positions.size != 3 * sum(counts):
        raise DatasetError(
            f"{parts[0].parent}: malformed coordinates (parsed {positions.size} numbers for {sum(counts)} atoms)"
        )
    freq_all = (
        np.fromstring(",".join(t for t in freq_text if t), sep=",")
        if any(freq_text)
        else np.zeros(0)
    )
    if freq_all.size != sum(freq_counts):
        raise DatasetError(f"{parts[0].parent}: malformed harmonic frequencies")
    arrays: dict[str, np.ndarray] = {
        "offsets": np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        "numbers": np.asarray(numbers, dtype=np.int8),
        "positions": positions.reshape(-1, 3),
        "qm9_index": np.asarray(qidx, dtype=np.int32),
        "freq_offsets": np.concatenate([[0], np.cumsum(freq_counts, dtype=np.int64)]).astype(
            np.int64
        ),
        "frequencies": freq_all,
    }
    table = np.asarray(values, dtype=np.float64).reshape(-1, len(_FILE_TARGETS) + 6)
    for j, name in enumerate(_FILE_TARGETS):
        arrays[f"label_{name}"] = table[:, j]
    for j, name in enumerate(QM9_EXTRA_LABELS[:6]):
        arrays[f"label_{name}"] = table[:, len(_FILE_TARGETS) + j]
    # atomization energies: total energy less the atomic references of every atom
    ref = np.zeros((10, 4))
    for zz, e in QM9_ATOMREF.items():
        ref[zz] = e
    nmol = len(counts)
    if nmol:
        per_mol = np.add.reduceat(
            ref[arrays["numbers"].astype(np.int64)], arrays["offsets"][:-1], axis=0
        )
    else:
        per_mol = np.zeros((0, 4))
    for j, name in enumerate(("U0", "U", "H", "G")):
        arrays[f"label_{name}_atom"] = np.round(
            arrays[f"label_{name}"] - per_mol[:, j], 6
        )  # inputs have 6 decimals
    # validate every molecule; those that fail are recorded, never silently dropped
    keep = np.ones(nmol, dtype=bool)
    off = arrays["offsets"]
    for i in range(nmol):
        a, b = off[i], off[i + 1]
        try:
            Structure(
                arrays["numbers"][a:b], arrays["positions"][a:b], id=ids[i], source=_SOURCE, index=i
            ).validate()
        except StructureError as err:
            keep[i] = False
            skipped_idx.append(qidx[i])
            skipped_why.append(f"{err.kind}: {err.reason}")
    if limit is not None:
        keep &= np.cumsum(keep) <= limit
    if not keep.all():
        arrays = _select(arrays, keep)
        smiles = [s for s, k in zip(smiles, keep) if k]
        inchi = [s for s, k in zip(inchi, keep) if k]
    arrays["smiles"] = _strings(smiles)
    arrays["inchi"] = _strings(inchi)
    order = np.argsort(skipped_idx, kind="stable") if skipped_idx else np.zeros(0, dtype=np.int64)
    arrays["skipped_index"] = np.asarray(skipped_idx, dtype=np.int64)[order]
    arrays["skipped_reason"] = _strings([skipped_why[k] for k in order])
    arrays["n_rows"] = np.array(n_rows, dtype=np.int64)
    arrays["freq_doubled_index"] = np.asarray(doubled_idx, dtype=np.int64)
    arrays["freq_doubled_diff"] = np.asarray(doubled_diff, dtype=np.float64)
    return arrays


def _select(arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The molecules where ``keep`` (a boolean mask) is True, of packed arrays (string arrays excluded)."""
    out = dict(arrays)
    for key, per_atom in (
        ("offsets", ("numbers", "positions")),
        ("freq_offsets", ("frequencies",)),
    ):
        lengths = np.diff(arrays[key])
        mask = np.repeat(keep, lengths)
        for name in per_atom:
            out[name] = arrays[name][mask]
        out[key] = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
    for name, value in arrays.items():
        if name.startswith("label_") or name == "qm9_index":
            out[name] = value[keep]
    return out


_REQUIRED = frozenset(
    {
        "offsets",
        "numbers",
        "positions",
        "qm9_index",
        "freq_offsets",
        "frequencies",
        "smiles",
        "inchi",
        "skipped_index",
        "skipped_reason",
        "n_rows",
        "freq_doubled_index",
        "freq_doubled_diff",
    }
    | {f"label_{n}" for n in _FLOAT_LABELS}
)


def _cache_file(paths: Sequence[Path]) -> Path:
    key = hashlib.sha1("|".join(source_key(p) for p in paths).encode()).hexdigest()[:16]
    return cache_dir() / f"qm9-{key}-v{_CACHE_VERSION}.npz"


def _verify_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    _verify_count(int(arrays["n_rows"]), source)
    n = len(arrays["offsets"]) - 1
    if n + len(arrays["skipped_index"]) != QM9_COUNT or len(arrays["qm9_index"]) != n:
        raise DatasetError(
            f"{source}: {n} molecules + {len(arrays['skipped_index'])} skipped != {QM9_COUNT}"
        )
    if int(arrays["offsets"][-1]) != len(arrays["numbers"]) or len(arrays["freq_offsets"]) != n + 1:
        raise DatasetError(f"{source}: inconsistent packed arrays")
