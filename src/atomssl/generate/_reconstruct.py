"""The generator: a mask+denoise pretrained equivariant transformer that repairs corrupted crystals.

Corruption (seed 002): species masking (``"species"``: every atom of one random species present;
``"random"``: 15% of the atoms, at least one; ``"mixed"``: either, with probability 0.5) and
Cartesian Gaussian noise of std ``sigma x d_min`` (``d_min`` = the clean cell's minimum
interatomic distance).

Reconstruction: the masked atoms take the arg-max species (or, with ``decoding="valid"``, the most
probable assignment whose composition passes SMACT, :mod:`._decoding`), and every atom moves by minus the
predicted Cartesian noise (optionally iterated, the graph rebuilt each step). The noise head
predicts noise in units of ``train_sigma x d_min`` (the scale it was pretrained at, stored in
the checkpoint), so ``noise_A = head(...) x train_sigma x d_min``; a rigid translation of the
noise is unobservable, so predictions are centred per structure.

At evaluation the graph of the corrupted structure is rebuilt from its own (noisy) positions,
as a user's input would be; training (:mod:`._gan`) keeps the clean graph's edges, as the
pretraining task does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Structure
from ..errors import CheckpointError, ConfigError
from ..graph import collate, to_graph
from ..representation import N_SPECIES, build_backbone
from ..task.denoise import center_per_graph, graph_index, min_distances
from ..task.mask import MaskDenoise, choose_masked_atoms, mask_species

MASK_MODES = {
    "species": 1.0,
    "random": 0.0,
    "mixed": 0.5,
}  # mode -> probability of masking a whole species
TASK_KEY = "mask_denoise"


class Generator(nn.Module):
    """Backbone + the ``mask_denoise`` heads (species logits over Z = 1..118, Cartesian noise)."""

    def __init__(self, backbone, task: MaskDenoise):
        super().__init__()
        self.backbone = backbone
        self.task = (
            task  # kept whole so that checkpoints round-trip through atomssl's task registry
        )

    @property
    def train_sigma(self) -> float:
        return float(self.task.sigma)

    @classmethod
    def build(cls, backbone: dict | str = "equiformer", **task_options: Any) -> Generator:
        """A fresh (untrained) generator; ``task_options`` go to the ``mask_denoise`` task."""
        bb = build_backbone(backbone)
        return cls(bb, MaskDenoise(bb, **task_options))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Generator:
        """The backbone and ``mask_denoise`` heads of an atomssl checkpoint (pretraining or GAN)."""
        from ..task import build_task
        from ..train import load_backbone, load_checkpoint

        ck = load_checkpoint(path)
        keys = [
            k
            for k, c in (ck.get("task_configs") or {}).items()
            if (c or {}).get("name") == TASK_KEY
        ]
        if not keys:
            raise CheckpointError(
                f"{path}: no {TASK_KEY!r} task heads: pretrain the generator with task mask_denoise"
            )
        backbone = load_backbone(path, eval=False)
        task = build_task(ck["task_configs"][keys[0]], backbone)
        try:
            task.load_state_dict(ck["tasks"][keys[0]])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{path}: {TASK_KEY} heads do not fit: {exc}") from None
        if not backbone.provides_vectors:
            raise CheckpointError(
                f"{path}: backbone {backbone.name!r} gives no vectors; the generator needs them"
            )
        assert isinstance(task, MaskDenoise)  # the heads were selected by name (TASK_KEY)
        return cls(backbone, task)

    def save(
        self, path: str | Path, config: dict | None = None, metrics: dict | None = None
    ) -> Path:
        from ..train import save_checkpoint

        return save_checkpoint(
            path, self.backbone, config=config, tasks={TASK_KEY: self.task}, metrics=metrics
        )

    @property
    def graph_spec(self) -> dict:
        return self.backbone.graph_spec

    def forward(self, batch, unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(species logits (n, 118), noise in head units (n, 3), noise in A (n, 3))``.

        ``unit`` (n,): A per head unit, ``train_sigma x d_min`` of each atom's structure.
        """
        out = self.backbone(batch)
        every_atom = torch.ones(out.node.shape[0], dtype=torch.bool, device=out.node.device)
        logits = self.task.species(out, batch, every_atom)
        pred = center_per_graph(self.task.noise(out.node, out.vector), batch)
        return logits, pred, pred * unit[:, None].to(pred.dtype)


# ------------------------------------------------------------------------------ corruption
@dataclass
class Corruption:
    """One corrupted batch: ``noisy`` (masked species, noisy positions, the clean graph's edges),
    ``mask`` (n,) bool, ``noise`` (n, 3) A, ``d_min`` (n,) per atom."""

    noisy: Any
    mask: torch.Tensor
    noise: torch.Tensor
    d_min: torch.Tensor


def _check_mode(mask: str) -> float:
    if mask not in MASK_MODES:
        raise ConfigError(f"mask must be one of {sorted(MASK_MODES)}, got {mask!r}")
    return MASK_MODES[mask]


def corrupt_batch(
    batch,
    mask: str = "species",
    sigma: float = 0.1,
    fraction: float = 0.15,
    generator: torch.Generator | None = None,
) -> Corruption:
    """Mask species and add ``sigma x d_min`` Gaussian noise on a copy of ``batch``."""
    from ..task.denoise import randn

    p_species = _check_mode(mask)
    if not sigma >= 0:
        raise ConfigError(f"sigma must be >= 0, got {sigma}")
    m = choose_masked_atoms(batch, p_species, fraction, generator)
    d_min = min_distances(batch).to(batch.pos.dtype)[graph_index(batch)]
    noise = (
        randn(batch.pos.shape, generator, batch.pos.device, batch.pos.dtype)
        * (sigma * d_min)[:, None]
    )
    noisy = mask_species(batch, m)
    noisy.pos = batch.pos + noise
    return Corruption(noisy, m, noise, d_min)


# -------------------------------------------------------------------------- structures API
@dataclass
class Reconstruction:
    """A clean structure, its corruption (masked atoms have Z = 0) and the generator's repair."""

    original: Structure
    corrupted: Structure
    repaired: Structure
    mask: np.ndarray  # (n,) bool
    d_min: float
    probabilities: np.ndarray | None = field(
        repr=False, default=None
    )  # (n_masked, 118) species probabilities

    @property
    def species_correct(self) -> np.ndarray:
        return self.repaired.numbers[self.mask] == self.original.numbers[self.mask]

    def displacement(self, which: str = "repaired") -> np.ndarray:
        """Per-atom error vectors against the original, mean removed (a rigid shift is unobservable)."""
        s = self.repaired if which == "repaired" else self.corrupted
        d = s.positions - self.original.positions
        return d - d.mean(0, keepdims=True)


def corrupt_structures(
    structures: Sequence,
    mask: str = "species",
    sigma: float = 0.1,
    seed: int = 0,
    fraction: float = 0.15,
    cutoff: float = 5.0,
) -> list[tuple[Structure, Structure, np.ndarray, float]]:
    """``(original, corrupted, mask, d_min)`` per structure, reproducible from ``seed``.

    Masked atoms get atomic number 0. Positions are *not* wrapped (wrapping is a relabelling).
    """
    out = []
    g = torch.Generator().manual_seed(int(seed))
    for s in structures:
        s = Structure.coerce(s)
        batch = collate([to_graph(s, cutoff=cutoff, validate=False)])
        c = corrupt_batch(batch, mask, sigma, fraction, g)
        noisy = s.copy(
            numbers=c.noisy.z.numpy().astype(np.int64),
            positions=s.positions + c.noise.double().numpy(),
        )
        out.append((s, noisy, c.mask.numpy(), float(c.d_min[0])))
    return out


@torch.no_grad()
def repair(
    generator: Generator,
    corrupted: Sequence[Structure],
    d_min: Sequence[float] | None = None,
    steps: int = 1,
    batch_size: int = 32,
    only_masked: bool = True,
    decoding: str = "argmax",
    oxidation_states: str = "smact14",
) -> list[tuple[Structure, np.ndarray]]:
    """Repair corrupted structures (masked atoms have Z = 0): ``(repaired, probabilities of masked atoms)``.

    ``d_min``: the clean structures' minimum distances (sets the noise unit); when unknown, each
    corrupted structure's own minimum distance is used. ``steps`` > 1 iterates the position
    update (graph rebuilt each time, mask tokens kept); species come from the last step.
    ``only_masked=False`` also re-predicts species of unmasked atoms. ``decoding``: ``"argmax"``
    (each atom's most probable element) or ``"valid"`` (the most probable assignment whose
    composition passes SMACT with ``oxidation_states``; see :mod:`._decoding`).
    """
    from ..task.denoise import min_distances as _dmin
    from ._decoding import DECODINGS, choose_species

    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if decoding not in DECODINGS:
        raise ConfigError(f"decoding must be one of {DECODINGS}, got {decoding!r}")
    generator.eval()
    cutoff = float(generator.graph_spec["cutoff"])
    results: list[tuple[Structure, np.ndarray]] = []
    dtype = next(generator.parameters()).dtype
    for start in range(0, len(corrupted), batch_size):
        chunk = [Structure.coerce(s) for s in corrupted[start : start + batch_size]]
        pos = [s.positions.copy() for s in chunk]
        for _ in range(steps):
            graphs = [
                to_graph(s.copy(positions=p), cutoff=cutoff, dtype=dtype, validate=False)
                for s, p in zip(chunk, pos)
            ]
            batch = collate(graphs)
            if d_min is None:
                dm = _dmin(batch)
            else:
                dm = torch.as_tensor(
                    np.asarray(d_min[start : start + batch_size], dtype=np.float64), dtype=dtype
                )
            unit = (generator.train_sigma * dm)[graph_index(batch)]
            logits, _, noise = generator(batch, unit)
            noise = noise.double().numpy()
            off = 0
            for i, s in enumerate(chunk):
                pos[i] = pos[i] - noise[off : off + s.n_atoms]
                off += s.n_atoms
        probs = torch.softmax(logits.double(), -1).numpy()
        off = 0
        for s, p in zip(chunk, pos):
            pr = probs[off : off + s.n_atoms]
            off += s.n_atoms
            sel = s.numbers == 0 if only_masked else np.ones(s.n_atoms, dtype=bool)
            numbers = choose_species(pr[sel], s.numbers, sel, decoding, oxidation_states)
            results.append((s.copy(numbers=numbers, positions=p), pr[s.numbers == 0]))
    return results


def reconstruct(
    generator: Generator,
    structures: Sequence,
    mask: str = "species",
    sigma: float = 0.1,
    seed: int = 0,
    steps: int = 1,
    batch_size: int = 32,
    decoding: str = "argmax",
    oxidation_states: str = "smact14",
) -> list[Reconstruction]:
    """Corrupt each structure (reproducibly from ``seed``) and repair it with ``generator``
    (``decoding``/``oxidation_states``: see :func:`repair`)."""
    cutoff = float(generator.graph_spec["cutoff"])
    cs = corrupt_structures(structures, mask, sigma, seed, cutoff=cutoff)
    rep = repair(
        generator,
        [c[1] for c in cs],
        d_min=[c[3] for c in cs],
        steps=steps,
        batch_size=batch_size,
        decoding=decoding,
        oxidation_states=oxidation_states,
    )
    return [Reconstruction(o, c, r, m, d, probabilities=p) for (o, c, m, d), (r, p) in zip(cs, rep)]


def reconstruction_metrics(
    recs: Sequence[Reconstruction], oxidation_sets=("smact14", "icsd24")
) -> dict[str, float]:
    """CDVAE validity of the repaired structures, masked-species top-1 accuracy and position RMSD (A).

    Yardsticks: ``rmsd_corrupted_A`` (RMSD of the corrupted input), ``baseline_accuracy``
    (always predicting the most common masked element of this set).
    """
    from ._validity import composition_validity, structure_validity

    n = max(len(recs), 1)
    sv = [structure_validity(r.repaired) for r in recs]
    out: dict[str, float] = {"n": float(len(recs)), "structure_validity": sum(sv) / n}
    for ox in oxidation_sets:
        cv = [composition_validity(r.repaired, ox) for r in recs]
        out[f"composition_validity_{ox}"] = sum(cv) / n
        out[f"valid_{ox}"] = sum(a and b for a, b in zip(sv, cv)) / n
    correct = np.concatenate([r.species_correct for r in recs]) if recs else np.zeros(0)
    out["species_accuracy"] = float(correct.mean()) if correct.size else float("nan")
    targets = (
        np.concatenate([r.original.numbers[r.mask] for r in recs]) if recs else np.zeros(0, int)
    )
    out["baseline_accuracy"] = (
        float((targets == np.bincount(targets).argmax()).mean()) if targets.size else float("nan")
    )
    err = np.concatenate([r.displacement("repaired") for r in recs]) if recs else np.zeros((0, 3))
    err0 = np.concatenate([r.displacement("corrupted") for r in recs]) if recs else np.zeros((0, 3))
    out["rmsd_A"] = float(np.sqrt((err**2).sum(-1).mean())) if err.size else float("nan")
    out["rmsd_corrupted_A"] = (
        float(np.sqrt((err0**2).sum(-1).mean())) if err0.size else float("nan")
    )
    out["changed_composition"] = (
        sum(
            not np.array_equal(np.sort(r.repaired.numbers), np.sort(r.original.numbers))
            for r in recs
        )
        / n
    )
    return out


# ------------------------------------------------------------------- differentiable generation
def relaxed_species(
    logits: torch.Tensor, tau: float = 1.0, hard: bool = True, gumbel: bool = True
) -> torch.Tensor:
    """(n, 119) species distribution (column 0 = mask token, always 0) from (n, 118) logits.

    Gumbel-softmax (``gumbel=True``) or plain softmax at temperature ``tau``; ``hard=True`` is the
    straight-through estimator: a one-hot forward pass with the soft gradient.
    """
    if gumbel:
        probs = F.gumbel_softmax(logits, tau=tau, hard=hard)
    else:
        soft = torch.softmax(logits / tau, -1)
        if hard:
            one = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft)
            probs = one - soft.detach() + soft
        else:
            probs = soft
    return torch.cat([probs.new_zeros(probs.shape[0], 1), probs], -1)


def one_hot_species(z: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """One-hot rows (n, N_SPECIES) of atomic numbers ``z`` (column Z; column 0 is the mask token),
    in ``dtype``: the species input the generator and discriminator take."""
    return F.one_hot(z.long(), N_SPECIES).to(dtype)


def generate(
    generator: Generator,
    batch,
    corruption: Corruption,
    tau: float = 1.0,
    hard: bool = True,
    gumbel: bool = True,
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Differentiable reconstruction of a corrupted batch: ``(fake, logits, noise_pred_units)``.

    ``fake`` is a copy of ``batch`` with ``z_soft`` (relaxed species on masked atoms, one-hot
    elsewhere), ``z`` (arg-max on masked atoms) and ``pos`` = noisy positions - predicted noise;
    gradients of anything computed from ``fake`` reach every generator parameter through
    ``z_soft`` (species head) and ``pos`` (noise head), and the backbone through both.
    """
    unit = generator.train_sigma * corruption.d_min
    logits, pred, noise_a = generator(corruption.noisy, unit)
    soft = relaxed_species(logits, tau, hard, gumbel)
    real = one_hot_species(batch.z, soft.dtype)
    m = corruption.mask[:, None]
    fake = copy.copy(batch)
    fake.z_soft = torch.where(m, soft, real)
    fake.z = torch.where(corruption.mask, logits.argmax(-1) + 1, batch.z)
    fake.pos = corruption.noisy.pos - noise_a
    return fake, logits, pred
