"""Choosing species for masked atoms from the generator's per-atom probabilities.

``"argmax"`` takes each masked atom's most probable element on its own (the published method).

``"valid"`` is validity-constrained decoding: among assignments of the masked atoms, the one with
the highest joint log-probability whose composition passes SMACT's charge-neutrality and
electronegativity screen (:func:`~atomssl.generate.composition_validity`). Candidates are

- per-atom combinations of each atom's ``top_k`` elements, enumerated best-first (a heap over
  index tuples, so the most probable ``max_candidates`` combinations are visited in order), and
- "one species" assignments (every masked atom the same element, the ``top_k`` elements of the
  summed log-probabilities), since masking often removes every atom of one species.

When no candidate is valid the arg-max assignment is kept. The model is unchanged: this is a
decoding rule, like constrained beam search in sequence models; SMACT's check is cached per
reduced composition, so it costs a few milliseconds per structure.
"""

from __future__ import annotations

import heapq

import numpy as np

from ..errors import ConfigError

DECODINGS = ("argmax", "valid")


def best_first_assignments(logp: np.ndarray, top_k: int = 5, limit: int = 256):
    """Yield ``(score, elements)`` over per-atom choices in descending joint log-probability.

    ``logp`` (m, n_elements): log-probabilities of m atoms; ``elements`` (m,) column indices.
    Only each atom's ``top_k`` columns are considered; at most ``limit`` assignments are yielded.
    """
    logp = np.asarray(logp, dtype=np.float64)
    m = logp.shape[0]
    if m == 0:
        yield 0.0, np.zeros(0, dtype=np.int64)
        return
    k = min(int(top_k), logp.shape[1])
    order = np.argsort(-logp, axis=1)[:, :k]  # (m, k) best columns per atom
    vals = np.take_along_axis(logp, order, axis=1)
    start = (0,) * m
    heap = [(-float(vals[:, 0].sum()), start)]
    seen = {start}
    n = 0
    while heap and n < limit:
        neg, idx = heapq.heappop(heap)
        yield -neg, order[np.arange(m), idx]
        n += 1
        for a in range(m):
            if idx[a] + 1 < k:
                nxt = idx[:a] + (idx[a] + 1,) + idx[a + 1 :]
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (neg + float(vals[a, idx[a]] - vals[a, idx[a] + 1]), nxt))


def choose_species(
    probabilities: np.ndarray,
    numbers: np.ndarray,
    masked: np.ndarray,
    decoding: str = "argmax",
    oxidation_states: str = "smact14",
    top_k: int = 5,
    max_candidates: int = 256,
) -> np.ndarray:
    """Atomic numbers of a structure with its masked atoms filled in.

    ``probabilities`` (n_masked, 118): species probabilities of the masked atoms (column j is Z = j + 1);
    ``numbers`` (n,): the corrupted structure's atomic numbers; ``masked`` (n,) bool.
    """
    from ._validity import composition_validity

    if decoding not in DECODINGS:
        raise ConfigError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
    numbers = np.asarray(numbers).copy()
    masked = np.asarray(masked, dtype=bool)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape[0] != int(masked.sum()):
        raise ValueError(f"{probs.shape[0]} probability rows for {int(masked.sum())} masked atoms")
    if not masked.any():
        return numbers
    argmax = probs.argmax(-1)
    if decoding == "argmax":
        numbers[masked] = argmax + 1
        return numbers
    logp = np.log(np.clip(probs, 1e-300, None))
    candidates = {
        tuple(e.tolist()): s for s, e in best_first_assignments(logp, top_k, max_candidates)
    }
    summed = logp.sum(0)
    for e in np.argsort(-summed)[:top_k]:
        candidates.setdefault((int(e),) * len(logp), float(summed[e]))
    fixed = numbers[~masked]
    for elements, _ in sorted(candidates.items(), key=lambda kv: -kv[1]):
        z = np.asarray(elements, dtype=np.int64) + 1
        if composition_validity(np.concatenate([fixed, z]).tolist(), oxidation_states):
            numbers[masked] = z
            return numbers
    numbers[masked] = argmax + 1
    return numbers
