"""The discriminator (critic): a backbone + MLP head giving one real-vs-reconstructed score per crystal.

It reads species through ``batch.z_soft`` (one-hot for real crystals, relaxed for generated
ones), so its score is differentiable in the generator's species and positions. It starts
from a pretrained backbone and is first fine-tuned as a classifier on the same real vs
reconstructed task (:func:`train_classifier`), as the reference work starts its
discriminator from a fine-tuned classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..representation import build_backbone
from ..task.denoise import mlp

CRITIC_KEY = "critic"
CRITIC_POSITIONS = ("generated", "real")


#: oxidation states (SMACT 2014 set) described per element by ``chemistry_descriptors``
OXIDATION_RANGE = tuple(range(-4, 9))
N_CHEMISTRY = len(OXIDATION_RANGE) + 4


@lru_cache(maxsize=1)
def chemistry_descriptors() -> torch.Tensor:
    """(119, N_CHEMISTRY) float64 table: for each element, membership of each oxidation state -4..+8 in
    SMACT's 2014 set, its lowest and highest state / 8, Pauling electronegativity / 4 and whether
    SMACT knows the element (row 0, the mask token, and unknown elements are zero).

    Averaged over a crystal's atoms (:func:`chemistry_features`), the lowest / highest states give the
    necessary charge-balance condition ``mean(lowest) <= 0 <= mean(highest)`` as a linear function of
    the composition: a critic can learn charge balance from ~2000 crystals, which it cannot from bare
    element fractions, where each element's states must be learnt from its own few crystals.
    """
    import warnings

    from ase.data import chemical_symbols
    from smact import Element

    table = torch.zeros(119, N_CHEMISTRY, dtype=torch.float64)
    for z in range(1, 104):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                el = Element(chemical_symbols[z])
            states = [int(q) for q in (el.oxidation_states_smact14 or []) if -4 <= int(q) <= 8]
            eneg = el.pauling_eneg
        except (KeyError, NameError, ValueError, TypeError):  # no SMACT data for this element
            continue
        for q in states:
            table[z, OXIDATION_RANGE.index(q)] = 1.0
        if states:
            table[z, -4], table[z, -3] = min(states) / 8, max(states) / 8
        table[z, -2] = (eneg or 0.0) / 4
        table[z, -1] = 1.0
    return table


def chemistry_features(fractions: torch.Tensor) -> torch.Tensor:
    """(n_graphs, N_CHEMISTRY) composition-weighted means of :func:`chemistry_descriptors`;
    linear, hence differentiable, in the (soft) element fractions."""
    return fractions @ chemistry_descriptors().to(fractions.device, fractions.dtype)


class CriticHead(nn.Module):
    """MLP from the structure embedding to one score; with ``composition=True`` it also reads the
    crystal's element fractions (119 values), with ``chemistry=True`` their oxidation-state and
    electronegativity means (:func:`chemistry_features`)."""

    def __init__(
        self,
        embedding_dim: int,
        hidden: int = 64,
        composition: bool = False,
        chemistry: bool = False,
    ):
        super().__init__()
        from ..representation import N_SPECIES

        self.composition = bool(composition)
        self.chemistry = bool(chemistry)
        extra = (N_SPECIES if self.composition else 0) + (N_CHEMISTRY if self.chemistry else 0)
        self.net = mlp(embedding_dim + extra, hidden, 1)
        self.config = {
            "name": CRITIC_KEY,
            "hidden": int(hidden),
            "composition": self.composition,
            "chemistry": self.chemistry,
        }

    @property
    def reads_composition(self) -> bool:
        return self.composition or self.chemistry

    def forward(self, x: torch.Tensor, composition: torch.Tensor | None = None) -> torch.Tensor:
        parts = [x]
        if self.reads_composition and composition is None:
            raise ValueError("this critic reads the composition: pass composition=")
        if self.composition:
            assert composition is not None
            parts.append(composition.to(x.dtype))
        if self.chemistry:
            assert composition is not None
            parts.append(chemistry_features(composition.to(x.dtype)))
        return self.net(torch.cat(parts, -1)).squeeze(-1)


def element_fractions(batch) -> torch.Tensor:
    """(n_graphs, 119) mean species one-hot per crystal; differentiable in ``batch.z_soft`` when present."""
    from ..task.denoise import graph_index, num_graphs
    from ._reconstruct import one_hot_species

    z = getattr(batch, "z_soft", None)
    if z is None:
        z = one_hot_species(batch.z, batch.pos.dtype)
    idx = graph_index(batch)
    n = num_graphs(batch)
    total = z.new_zeros(n, z.shape[-1]).index_add_(0, idx, z)
    count = z.new_zeros(n).index_add_(0, idx, torch.ones_like(idx, dtype=z.dtype))
    return total / count.clamp_min(1)[:, None]


class Discriminator(nn.Module):
    """``score = MLP(backbone(batch).graph [, element fractions])`` (n_graphs,): high = real."""

    def __init__(
        self, backbone, hidden: int = 64, composition: bool = False, chemistry: bool = False
    ):
        super().__init__()
        self.backbone = backbone
        self.head = CriticHead(backbone.embedding_dim, hidden, composition, chemistry)
        # set (by the GAN loop) when graphs are built for a longer-range generator: edges beyond the
        # backbone's own cutoff are then dropped before it reads them
        self.edge_cutoff: float | None = None

    @classmethod
    def build(
        cls,
        backbone: dict | str = "equiformer",
        hidden: int = 64,
        composition: bool = False,
        chemistry: bool = False,
    ) -> Discriminator:
        return cls(build_backbone(backbone), hidden, composition, chemistry)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, hidden: int = 64, composition: bool = False, chemistry: bool = False
    ) -> Discriminator:
        """A discriminator saved by :meth:`save`, or a fresh head on any checkpoint's backbone."""
        from ..train import load_backbone, load_checkpoint

        ck = load_checkpoint(path)
        backbone = load_backbone(path, eval=False)
        cfg = (ck.get("task_configs") or {}).get(CRITIC_KEY)
        disc = cls(
            backbone,
            int(cfg.get("hidden", hidden)) if cfg else hidden,
            bool(cfg.get("composition", False)) if cfg else composition,
            bool(cfg.get("chemistry", False)) if cfg else chemistry,
        )
        if cfg is not None:
            try:
                disc.head.load_state_dict(ck["tasks"][CRITIC_KEY])
            except (RuntimeError, KeyError) as exc:
                raise CheckpointError(f"{path}: critic head does not fit: {exc}") from None
        return disc

    def save(
        self, path: str | Path, config: dict | None = None, metrics: dict | None = None
    ) -> Path:
        from ..train import save_checkpoint

        return save_checkpoint(
            path, self.backbone, config=config, tasks={CRITIC_KEY: self.head}, metrics=metrics
        )

    def forward(self, batch) -> torch.Tensor:
        if self.edge_cutoff is not None:
            from ..graph import restrict_cutoff

            batch = restrict_cutoff(batch, self.edge_cutoff)
        comp = element_fractions(batch) if self.head.reads_composition else None
        return self.head(self.backbone(batch).graph, comp)


def critic_view(fake, batch, positions: str = "generated"):
    """What the critic is shown of a reconstruction: ``fake`` itself (``"generated"``), or its
    species on the real crystal's positions (``"real"``). Residual position noise (~0.5 A at sigma
    0.2) is the easiest cue a critic can learn; with ``"real"`` it can only tell real from
    reconstructed by the chemistry of the masked sites, so its gradient reaches the generator
    through the species alone."""
    import copy

    if positions == "generated":
        return fake
    if positions != "real":
        raise ConfigError(
            f"loss.critic_positions must be one of {CRITIC_POSITIONS}, got {positions!r}"
        )
    out = copy.copy(fake)
    out.pos = batch.pos
    return out


def real_batch(batch, jitter: float = 1e-3, generator: torch.Generator | None = None):
    """Real crystals as the critic sees them: one-hot ``z_soft`` and uniform noise of
    ``+-jitter x d_min`` on positions (so that exactness alone does not give them away)."""
    import copy

    from ..task.denoise import graph_index, min_distances, rand
    from ._reconstruct import one_hot_species

    out = copy.copy(batch)
    out.z_soft = one_hot_species(batch.z, batch.pos.dtype)
    if jitter > 0:
        d = min_distances(batch).to(batch.pos.dtype)[graph_index(batch)]
        u = rand(batch.pos.shape, generator, batch.pos.device).to(batch.pos.dtype) * 2 - 1
        out.pos = batch.pos + u * jitter * d[:, None]
    return out


def train_classifier(
    disc: Discriminator,
    gen,
    graphs: Sequence,
    steps: int = 100,
    batch_size: int = 16,
    lr: float = 3e-4,
    mask: str = "mixed",
    sigma: float = 0.2,
    jitter: float = 1e-3,
    seed: int = 0,
    log: Any = None,
    critic_positions: str = "generated",
) -> list[dict[str, float]]:
    """Fine-tune ``disc`` as a real-vs-reconstructed classifier (BCE) against a frozen ``gen``.

    Reconstructions are the generator's hard (arg-max) repairs, shown as :func:`critic_view`
    with ``critic_positions`` does. Returns one row of metrics per step (loss, accuracy).
    """
    from ..graph import collate
    from ._reconstruct import corrupt_batch, generate

    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(disc.parameters(), lr=lr)
    rows = []
    disc.train()
    gen.eval()
    for step in range(int(steps)):
        idx = torch.randint(len(graphs), (batch_size,), generator=g).tolist()
        batch = collate([graphs[i] for i in idx])
        with torch.no_grad():
            c = corrupt_batch(batch, mask, sigma, generator=g)
            fake, _, _ = generate(gen, batch, c, hard=True, gumbel=False)
            fake = critic_view(fake, batch, critic_positions)
        real = real_batch(batch, jitter, g)
        s_real, s_fake = disc(real), disc(fake)
        loss = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = 0.5 * ((s_real > 0).float().mean() + (s_fake < 0).float().mean())
        rows.append({"step": step, "loss": float(loss.detach()), "accuracy": float(acc)})
        if log is not None:
            log(rows[-1])
    return rows
