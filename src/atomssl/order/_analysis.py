"""``atomssl order``: per-particle, per-frame distance to the nearest reference crystal, beside q6."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import iter_structures
from ..errors import AtomsslError
from ._clouds import embed_clouds, frame_clouds
from ._reference import reference_clouds, reference_embeddings
from ._steinhardt import freud_system, solid_fraction


def onset(signal: np.ndarray, baseline_frames: int = 5, n_sigma: float = 5.0, min_rise: float = 0.02) -> int | None:
    """First frame where ``signal`` exceeds its early (liquid) mean by ``n_sigma`` std and ``min_rise``."""
    signal = np.asarray(signal, dtype=float)
    b = signal[: max(1, min(baseline_frames, len(signal)))]
    level = b.mean() + max(n_sigma * b.std(), min_rise)
    hits = np.nonzero(signal > level)[0]
    hits = hits[hits >= len(b)]
    return int(hits[0]) if len(hits) else None


def _q6(structure, k: int) -> np.ndarray:
    import freud

    op = freud.order.Steinhardt(6)
    op.compute(freud_system(structure), neighbors={"num_neighbors": k})
    return np.asarray(op.particle_order, dtype=np.float32)


def analyse_trajectory(
    path: str | Path,
    backbone,
    out_dir: str | Path,
    *,
    k: int = 12,
    stride: int = 1,
    particles: int | None = None,
    per_crystal: int = 256,
    reference_n_min: int = 4096,
    chunk: int = 2048,
    seed: int = 0,
    threshold: str = "reference",
    liquid_frames: int = 5,
    liquid_quantile: float = 0.01,
    progress: Callable[[int, str], None] | None = None,
    **read_options,
) -> dict:
    """Analyse every ``stride``-th frame of ``path``; write ``order.npz``, ``frames.csv``, ``order.png``.

    Per particle and frame: distance in embedding space to the nearest idealized reference environment
    and that reference's crystal label, plus Steinhardt q6. ``particles`` embeds a fixed random subset of
    particles per frame (all by default). Per frame: the fraction of particles closer than the reference
    threshold ("SSL crystalline"), the ten Wolde solid fraction and mean q6, and the onset frame of each.

    ``threshold="reference"``: the distance below which held-out noisy (sigma <= 0.05) reference
    environments fall (:func:`reference_embeddings`); needs no assumption about the trajectory.
    ``threshold="liquid"``: the ``liquid_quantile`` of the nearest-reference distances of the particles of
    the first ``liquid_frames`` analysed frames, which must be liquid (the onset detection assumes the same
    of its baseline frames): a particle then counts as crystalline when it is closer to a reference crystal
    than all but ``liquid_quantile`` of the starting liquid's particles.
    """
    if threshold not in ("reference", "liquid"):
        raise AtomsslError(f"threshold must be 'reference' or 'liquid', got {threshold!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    refs = reference_embeddings(backbone, reference_clouds(per_crystal=per_crystal, n_min=reference_n_min, seed=seed, k=k), seed=seed)
    t_ref = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    dist, label, q6, rows, subset = [], [], [], [], None
    t_embed = t_stein = 0.0
    n_atoms = None
    for i, s in enumerate(iter_structures(path, **read_options)):
        if i % stride:
            continue
        if n_atoms is None:
            n_atoms = s.n_atoms
            subset = np.sort(rng.choice(n_atoms, particles, replace=False)) if particles and particles < n_atoms else np.arange(n_atoms)
        elif s.n_atoms != n_atoms:
            raise AtomsslError(f"{path}: frame {i} has {s.n_atoms} particles, frame 0 had {n_atoms}")
        t = time.perf_counter()
        clouds = frame_clouds(s, k)[subset]
        d, lab = refs.nearest(embed_clouds(backbone, clouds, chunk=chunk))
        t_embed += time.perf_counter() - t
        t = time.perf_counter()
        q = _q6(s, k)[subset]
        fsolid = solid_fraction(s, k)
        t_stein += time.perf_counter() - t
        dist.append(d)
        label.append(lab)
        q6.append(q)
        rows.append({
            "frame": i,
            "time": s.labels.get("time", i),
            "temperature": s.labels.get("temperature", ""),
            "ssl_crystalline_fraction": np.nan,  # set below, once the threshold is known
            "ssl_mean_distance": float(d.mean()),
            "q6_mean": float(q.mean()),
            "steinhardt_solid_fraction": fsolid,
        })
        if progress is not None:
            progress(len(rows), f"frame {i}")
    if not rows:
        raise AtomsslError(f"{path}: no frames to analyse")
    dist, label, q6 = np.stack(dist), np.stack(label), np.stack(q6)
    if threshold == "liquid":
        if len(dist) <= liquid_frames:
            raise AtomsslError(f"{path}: threshold='liquid' needs more than {liquid_frames} analysed frames, got {len(dist)}")
        cut = float(np.quantile(dist[:liquid_frames], liquid_quantile))
    else:
        cut = refs.threshold
    for r, d, lab in zip(rows, dist, label):
        crystalline = d < cut
        counts = np.bincount(lab[crystalline], minlength=len(refs.names))
        r["ssl_crystalline_fraction"] = float(crystalline.mean())
        r.update({f"ssl_fraction_{n}": float(c / len(d)) for n, c in zip(refs.names, counts)})
    frames = np.array([r["frame"] for r in rows])
    ssl_on = onset(np.array([r["ssl_crystalline_fraction"] for r in rows]))
    q6_on = onset(np.array([r["q6_mean"] for r in rows]), min_rise=0.01)
    sl_on = onset(np.array([r["steinhardt_solid_fraction"] for r in rows]))
    from ..utils import atomic_save_npz, write_json

    atomic_save_npz(out / "order.npz", distance=dist, label=label, q6=q6, frame=frames, particle=subset,
                    names=np.array(refs.names), threshold=np.float32(cut),
                    reference_threshold=np.float32(refs.threshold))
    with open(out / "frames.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = {
        "trajectory": str(path),
        "frames": len(rows),
        "particles_per_frame": int(len(subset)),
        "n_atoms": int(n_atoms),
        "threshold_mode": threshold,
        "threshold": cut,
        "reference_threshold": refs.threshold,
        **({"liquid_frames": liquid_frames, "liquid_quantile": liquid_quantile} if threshold == "liquid" else {}),
        "onset_frame": {
            "ssl_crystalline_fraction": None if ssl_on is None else int(frames[ssl_on]),
            "q6_mean": None if q6_on is None else int(frames[q6_on]),
            "steinhardt_solid_fraction": None if sl_on is None else int(frames[sl_on]),
        },
        "final_label_fractions": {k: v for k, v in rows[-1].items() if k.startswith("ssl_fraction_")},
        "seconds": {"references": t_ref, "embedding": t_embed, "steinhardt": t_stein, "total": time.perf_counter() - t0},
    }
    write_json(out / "summary.json", summary)
    _plot(out / "order.png", rows, summary, refs.names)
    return summary


def _plot(path: Path, rows, summary, names) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = np.array([r["frame"] for r in rows])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ax[0].plot(f, [r["ssl_crystalline_fraction"] for r in rows], label="SSL: closer than threshold to a reference crystal")
    ax[0].plot(f, [r["steinhardt_solid_fraction"] for r in rows], label="Steinhardt: ten Wolde solid fraction")
    ax[0].plot(f, [r["q6_mean"] for r in rows], label="Steinhardt: mean q6")
    colors = {"ssl_crystalline_fraction": "C0", "steinhardt_solid_fraction": "C1", "q6_mean": "C2"}
    for key, fr in summary["onset_frame"].items():
        if fr is not None:
            ax[0].axvline(fr, color=colors[key], ls="--", lw=1)
    ax[0].set_xlabel("frame")
    ax[0].set_ylabel("fraction / q6")
    ax[0].legend(fontsize=7)
    ax[0].set_title("crystallisation detection (dashed: onset)")
    for n in names:
        ax[1].plot(f, [r[f"ssl_fraction_{n}"] for r in rows], label=n)
    ax[1].set_xlabel("frame")
    ax[1].set_ylabel("fraction of particles")
    ax[1].set_title("nearest reference crystal (crystalline particles)")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
