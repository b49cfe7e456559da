"""Adversarial refinement of the generator (``atomssl gan --config FILE.yaml``).

A plain training loop (two optimisers at different rates and update frequencies do not fit
Lightning's automatic optimisation; a loop is shorter than manual optimisation). Per step:

1. corrupt a batch of real crystals (mask + ``sigma x d_min`` noise) and repair it
   *differentiably* (:func:`generate`: Gumbel-softmax / straight-through species into
   ``z_soft``, positions minus predicted noise);
2. generator loss = ``adversarial_weight x adv + species_weight x CE(masked) + noise_weight x MSE``,
   with ``adv = softplus(-D(fake))`` (non-saturating) or ``-D(fake)`` (Wasserstein); the
   discriminator's parameters are frozen during this step, but its gradient flows through
   ``fake`` into the generator;
3. every ``d_every`` steps, ``d_steps`` discriminator updates (own, lower learning rate) on real
   crystals (uniform ``+-real_jitter x d_min`` noise, one-hot species) vs detached fakes:
   ``softplus(-D(real)) + softplus(D(fake))``, or ``D(fake) - D(real) + gp_weight x GP`` with the
   gradient penalty on interpolated species and positions (real and fake share atoms and edges).

With ``loss.critic_positions: real`` the critic sees the generated species on the real positions
(:func:`critic_view`), so it judges chemistry alone.

Before the loop the discriminator, initialised from a pretrained backbone, is fine-tuned as a
real-vs-reconstructed classifier for ``discriminator.classifier_steps`` steps.

Run folder: ``config.yaml``, ``classifier.csv``, ``metrics.csv`` (one row per logged step),
``checkpoints/generator.pt`` (loads with :meth:`Generator.from_checkpoint`),
``checkpoints/discriminator.pt``, ``loss_curve.png``, ``summary.json``.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..graph import collate, to_graph
from ..utils import dump_config, make_run_dir, save_figure, write_csv, write_json
from ._discriminator import Discriminator, real_batch, train_classifier
from ._reconstruct import Corruption, Generator, corrupt_batch, generate

log = logging.getLogger(__name__)

GAN_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {"sources": ["synthetic"], "limit": None, "batch_size": 8, "max_atoms": None},
    "generator": {"checkpoint": None, "backbone": {"name": "equiformer", "size": "tiny"}},
    "discriminator": {
        "checkpoint": None,
        "hidden": 64,
        "composition": False,
        "chemistry": False,
        "classifier_steps": 50,
        "classifier_lr": 3.0e-4,
    },
    "corruption": {"mask": "mixed", "sigma": 0.2, "fraction": 0.15},
    "loss": {
        "kind": "nonsaturating",  # nonsaturating | wgan-gp
        "adversarial_weight": 0.1,
        "species_weight": 1.0,
        "noise_weight": 1.0,
        "gp_weight": 10.0,
        "tau": 1.0,
        "hard": True,
        "gumbel": True,
        "real_jitter": 1.0e-3,
        "critic_positions": "generated",  # generated | real (the critic judges species alone)
    },
    "optim": {
        "lr_g": 1.0e-4,
        "betas_g": [0.9, 0.999],
        "lr_d": 1.0e-5,
        "betas_d": [0.5, 0.999],
        "d_every": 10,
        "d_steps": 1,
        "grad_clip": 1.0,
    },
    "train": {"steps": 200, "log_every": 10},
    "run": {"root": "runs", "name": "gan"},
}
LOSS_KINDS = ("nonsaturating", "wgan-gp")
CRITIC_POSITIONS = ("generated", "real")


def critic_view(fake, batch, positions: str = "generated"):
    """What the critic is shown of a reconstruction: ``fake`` itself (``"generated"``), or its species on
    the real crystal's positions (``"real"``). Residual position noise (~0.5 A at sigma 0.2) is the
    easiest cue a critic can learn; with ``"real"`` it can only tell real from reconstructed by the
    chemistry of the masked sites, so its gradient reaches the generator through the species alone."""
    if positions == "generated":
        return fake
    if positions != "real":
        raise ConfigError(
            f"loss.critic_positions must be one of {CRITIC_POSITIONS}, got {positions!r}"
        )
    out = copy.copy(fake)
    out.pos = batch.pos
    return out


# ------------------------------------------------------------------------------------ losses
def reconstruction_losses(
    batch, corruption: Corruption, logits: torch.Tensor, pred: torch.Tensor, unit: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Cross-entropy on masked atoms and MSE of the (centred) noise in head units."""
    from ..task.denoise import center_per_graph

    m = corruption.mask
    target = batch.z[m] - 1
    ce = F.cross_entropy(logits[m], target) if target.numel() else logits.sum() * 0.0
    noise_target = center_per_graph(corruption.noise, batch) / unit[:, None]
    mse = ((pred - noise_target) ** 2).mean()
    return {"species": ce, "noise": mse}


def generator_adversarial_loss(
    disc: Discriminator, fake, kind: str = "nonsaturating"
) -> torch.Tensor:
    """The generator's adversarial term; differentiable in ``fake.z_soft`` and ``fake.pos``."""
    score = disc(fake)
    if kind == "nonsaturating":
        return F.softplus(-score).mean()
    if kind == "wgan-gp":
        return -score.mean()
    raise ConfigError(f"loss.kind must be one of {LOSS_KINDS}, got {kind!r}")


def discriminator_loss(
    disc: Discriminator,
    real,
    fake,
    kind: str = "nonsaturating",
    gp_weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Critic loss on real vs (detached) fake batches built on the same atoms and edges."""
    fake = copy.copy(fake)
    fake.z_soft, fake.pos = fake.z_soft.detach(), fake.pos.detach()
    s_real, s_fake = disc(real), disc(fake)
    out = {"score_real": s_real.mean().detach(), "score_fake": s_fake.mean().detach()}
    if kind == "nonsaturating":
        out["loss"] = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
        out["accuracy"] = 0.5 * ((s_real > 0).float().mean() + (s_fake < 0).float().mean())
        return out
    if kind != "wgan-gp":
        raise ConfigError(f"loss.kind must be one of {LOSS_KINDS}, got {kind!r}")
    from ..task.denoise import graph_index, rand

    n_graphs = s_real.shape[0]
    a = rand((n_graphs,), generator, real.pos.device).to(real.pos.dtype)[graph_index(real)][:, None]
    mix = copy.copy(real)
    mix.z_soft = (a * real.z_soft + (1 - a) * fake.z_soft).requires_grad_(True)
    mix.pos = (a * real.pos + (1 - a) * fake.pos).requires_grad_(True)
    s_mix = disc(mix)
    gz, gp = torch.autograd.grad(s_mix.sum(), [mix.z_soft, mix.pos], create_graph=True)
    idx = graph_index(real)
    sq = gz.new_zeros(n_graphs).index_add_(0, idx, (gz**2).sum(-1) + (gp**2).sum(-1))
    penalty = ((sq.clamp_min(1e-12).sqrt() - 1.0) ** 2).mean()
    out["gp"] = penalty.detach()
    out["loss"] = s_fake.mean() - s_real.mean() + gp_weight * penalty
    out["wasserstein"] = (s_real.mean() - s_fake.mean()).detach()
    return out


# ------------------------------------------------------------------------------------ config
def prepare_gan_config(config: dict) -> dict:
    from ..utils._config import _merge

    out = _merge(copy.deepcopy(GAN_DEFAULTS), copy.deepcopy(config or {}))
    if out["loss"]["kind"] not in LOSS_KINDS:
        raise ConfigError(f"loss.kind must be one of {LOSS_KINDS}, got {out['loss']['kind']!r}")
    if out["loss"]["critic_positions"] not in CRITIC_POSITIONS:
        raise ConfigError(
            f"loss.critic_positions must be one of {CRITIC_POSITIONS}, got {out['loss']['critic_positions']!r}"
        )
    for key in ("d_every", "d_steps"):
        if int(out["optim"][key]) < 1:
            raise ConfigError(f"optim.{key} must be >= 1")
    return out


def load_graphs(data_cfg: dict, cutoff: float, dtype=torch.float32) -> list:
    """Graphs of the configured sources (``max_atoms`` drops larger structures, ``limit`` caps the count)."""
    from ..train._data import load_source

    graphs = []
    for entry in data_cfg.get("sources") or []:
        for s in load_source(entry):
            if data_cfg.get("max_atoms") and s.n_atoms > int(data_cfg["max_atoms"]):
                continue
            graphs.append(to_graph(s, cutoff=cutoff, dtype=dtype))
    if data_cfg.get("limit") is not None:
        graphs = graphs[: int(data_cfg["limit"])]
    if not graphs:
        raise ConfigError("gan: no training structures (data.sources)")
    return graphs


def build_models(config: dict) -> tuple[Generator, Discriminator]:
    gcfg, dcfg = config["generator"], config["discriminator"]
    if gcfg.get("checkpoint"):
        gen = Generator.from_checkpoint(gcfg["checkpoint"])
    else:
        log.warning("gan: no generator.checkpoint: starting from an untrained generator")
        gen = Generator.build(gcfg.get("backbone") or "equiformer")
    init = dcfg.get("checkpoint") or gcfg.get("checkpoint")
    comp, chem = bool(dcfg.get("composition", False)), bool(dcfg.get("chemistry", False))
    if init:
        disc = Discriminator.from_checkpoint(
            init, hidden=int(dcfg.get("hidden", 64)), composition=comp, chemistry=chem
        )
    else:
        disc = Discriminator(copy.deepcopy(gen.backbone), int(dcfg.get("hidden", 64)), comp, chem)
    return gen, disc


# -------------------------------------------------------------------------------------- loop
def gan(config: dict, run_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run adversarial refinement; returns (and writes) the summary."""
    config = prepare_gan_config(config)
    seed = int(config["seed"])
    torch.manual_seed(seed)
    run = config["run"]
    run_dir = (
        make_run_dir(run_dir, exist_ok=True)
        if run_dir is not None
        else make_run_dir(run["root"], run["name"])
    )
    dump_config(config, run_dir / "config.yaml")
    gen, disc = build_models(config)
    cutoff = float(gen.graph_spec["cutoff"])
    d_cutoff = float(disc.backbone.graph_spec.get("cutoff", cutoff))
    if d_cutoff > cutoff:
        raise ConfigError(
            f"gan: the discriminator's cutoff ({d_cutoff} A) exceeds the "
            f"generator's ({cutoff} A); graphs are built at the generator's"
        )
    if d_cutoff < cutoff:
        disc.edge_cutoff = d_cutoff
    graphs = load_graphs(config["data"], cutoff)
    L, O, C = config["loss"], config["optim"], config["corruption"]
    bs = int(config["data"]["batch_size"])
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()

    dcfg = config["discriminator"]
    cls_rows = train_classifier(
        disc,
        gen,
        graphs,
        steps=int(dcfg["classifier_steps"]),
        batch_size=bs,
        lr=float(dcfg["classifier_lr"]),
        mask=C["mask"],
        sigma=float(C["sigma"]),
        jitter=float(L["real_jitter"]),
        seed=seed + 1,
        critic_positions=L["critic_positions"],
    )
    _write_csv(run_dir / "classifier.csv", cls_rows)

    opt_g = torch.optim.Adam(gen.parameters(), lr=float(O["lr_g"]), betas=tuple(O["betas_g"]))
    opt_d = torch.optim.Adam(disc.parameters(), lr=float(O["lr_d"]), betas=tuple(O["betas_d"]))
    rows: list[dict[str, float]] = []
    acc: dict[str, list[float]] = {}
    steps, log_every = int(config["train"]["steps"]), int(config["train"]["log_every"])
    bar = _progress(steps, progress)
    for step in range(steps):
        gen.train()
        disc.train()
        idx = torch.randint(len(graphs), (bs,), generator=g).tolist()
        batch = collate([graphs[i] for i in idx])
        c = corrupt_batch(batch, C["mask"], float(C["sigma"]), float(C["fraction"]), g)
        unit = gen.train_sigma * c.d_min
        fake, logits, pred = generate(
            gen, batch, c, float(L["tau"]), bool(L["hard"]), bool(L["gumbel"])
        )
        rec = reconstruction_losses(batch, c, logits, pred, unit)
        shown = critic_view(fake, batch, L["critic_positions"])
        disc.requires_grad_(False)
        adv = generator_adversarial_loss(disc, shown, L["kind"])
        disc.requires_grad_(True)
        loss_g = (
            float(L["adversarial_weight"]) * adv
            + float(L["species_weight"]) * rec["species"]
            + float(L["noise_weight"]) * rec["noise"]
        )
        opt_g.zero_grad()
        loss_g.backward()
        if O.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(gen.parameters(), float(O["grad_clip"]))
        opt_g.step()
        vals = {
            "loss_g": float(loss_g.detach()),
            "adversarial": float(adv.detach()),
            "species_ce": float(rec["species"].detach()),
            "noise_mse": float(rec["noise"].detach()),
            "species_acc": float((logits[c.mask].argmax(-1) == batch.z[c.mask] - 1).float().mean()),
        }
        if step % int(O["d_every"]) == 0:
            for _ in range(int(O["d_steps"])):
                real = real_batch(batch, float(L["real_jitter"]), g)
                d = discriminator_loss(disc, real, shown, L["kind"], float(L["gp_weight"]), g)
                opt_d.zero_grad()
                d["loss"].backward()
                if O.get("grad_clip"):
                    torch.nn.utils.clip_grad_norm_(disc.parameters(), float(O["grad_clip"]))
                opt_d.step()
            vals.update({f"d_{k}": float(v.detach()) for k, v in d.items()})
        for k, v in vals.items():
            acc.setdefault(k, []).append(v)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            row = {"step": step + 1, **{k: float(np.mean(v)) for k, v in acc.items()}}
            rows.append(row)
            acc = {}
            if bar is not None:
                bar.set_postfix(loss_g=f"{row['loss_g']:.3f}", acc=f"{row['species_acc']:.2f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    _write_csv(run_dir / "metrics.csv", rows)
    ckpt = run_dir / "checkpoints"
    final = rows[-1] if rows else {}
    gen.save(ckpt / "generator.pt", config=config, metrics=final)
    disc.save(ckpt / "discriminator.pt", config=config, metrics=final)
    _plot(rows, cls_rows, run_dir / "loss_curve.png")
    summary = {
        "steps": steps,
        "structures": len(graphs),
        "seconds": time.perf_counter() - t0,
        "classifier_final_accuracy": float(np.mean([r["accuracy"] for r in cls_rows[-10:]]))
        if cls_rows
        else None,
        "final": final,
        "generator_checkpoint": str(ckpt / "generator.pt"),
        "discriminator_checkpoint": str(ckpt / "discriminator.pt"),
    }
    write_json(run_dir / "summary.json", summary)
    return summary


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="gan", unit="step")


def _write_csv(path: Path, rows: list[dict]) -> None:
    write_csv(path, rows)


def _plot(rows: list[dict], cls_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
    if cls_rows:
        axes[0].plot([r["step"] for r in cls_rows], [r["accuracy"] for r in cls_rows])
    axes[0].set_title("classifier pre-training accuracy")
    for key in ("species_ce", "noise_mse", "adversarial"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            axes[1].plot(*zip(*pts), label=key)
    axes[1].set_title("generator losses")
    axes[1].legend(fontsize=8)
    for key in ("d_score_real", "d_score_fake"):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            axes[2].plot(*zip(*pts), label=key)
    axes[2].set_title("critic scores")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
