"""``atomssl order``: per-particle, per-frame distance to the nearest reference crystal, beside q6."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data import iter_structures
from ..errors import AtomsslError
from ._clouds import embed_clouds, frame_clouds
from ._reference import reference_clouds, reference_embeddings
from ._steinhardt import frame_steinhardt, freud_system, knn_neighbors


def onset(
    signal: np.ndarray, baseline_frames: int = 5, n_sigma: float = 5.0, min_rise: float = 0.02
) -> int | None:
    """First frame where ``signal`` exceeds its early (liquid) mean by ``n_sigma`` std and ``min_rise``."""
    signal = np.asarray(signal, dtype=float)
    b = signal[: max(1, min(baseline_frames, len(signal)))]
    level = b.mean() + max(n_sigma * b.std(), min_rise)
    hits = np.nonzero(signal > level)[0]
    hits = hits[hits >= len(b)]
    return int(hits[0]) if len(hits) else None


#: clouds per forward pass for gaa backbones: fastest measured for the small checkpoint, one CPU thread
#: (4,000-particle frame: 4,400/s at 128, 5,000/s at 256, 4,700/s at 512, 3,900/s at 1024, 2,900/s at 2048)
DEFAULT_CHUNK = 256


class _Spool:
    """Per-frame result arrays appended to anonymous temporary files, read back as memory maps."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files: dict = {}
        self.dtypes: dict = {}

    def append(self, **arrays) -> None:
        import tempfile

        for name, a in arrays.items():
            if name not in self.files:
                self.files[name] = tempfile.TemporaryFile(dir=self.folder, prefix=f".order-{name}-")
                self.dtypes[name] = a.dtype
            self.files[name].write(np.ascontiguousarray(a, dtype=self.dtypes[name]).tobytes())

    def arrays(self, n_frames: int, n_particles: int) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for name, fh in self.files.items():
            fh.flush()
            out.append(
                np.memmap(fh, dtype=self.dtypes[name], mode="r", shape=(n_frames, n_particles))
            )
            fh.close()  # the map keeps the (already unlinked) file's pages
        return out


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
    chunk: int | None = None,
    seed: int = 0,
    threshold: str | None = None,
    liquid_frames: int = 5,
    liquid_quantile: float = 0.01,
    progress: Callable[[int, str], None] | None = None,
    device: str | None = None,
    classifier=None,
    **read_options,
) -> dict:
    """Analyse every ``stride``-th frame of ``path``; write ``order.npz``, ``frames.csv``, ``order.png``.

    Per particle and frame: distance in embedding space to the nearest idealized reference environment
    and that reference's crystal label, plus Steinhardt q6. ``particles`` embeds a fixed random subset of
    particles per frame (all by default). Per frame: the fraction of particles called crystalline ("SSL
    crystalline", decided as ``threshold`` says), the ten Wolde solid fraction and mean q6, and the onset
    frame of each.

    ``threshold=None`` (default): ``"classifier"`` when a head is at hand, else ``"reference"`` (the summary's
    ``threshold_mode`` says which). ``threshold="classifier"``: a particle is crystalline when the logistic head shipped with the
    checkpoint (:class:`atomssl.order._classify.OrderClassifier`; ``classifier``, else
    ``backbone.order_classifier`` as set by :func:`atomssl.order._classify.load_order_backbone`) gives
    P(crystalline) > its ``cut`` from the particle's one- and two-hop neighbour-mean embedding. The head was
    learned once from LAMMPS thermal crystals and (supercooled) liquids (``benchmarks/order_default.py``),
    not from the trajectory; ``order.npz`` then also holds ``p_crystalline``. Asked for explicitly with
    a backbone that has no head, it is refused.
    ``threshold="reference"``: the distance below which held-out noisy (sigma <= 0.05) reference
    environments fall (:func:`reference_embeddings`); needs no assumption about the trajectory.
    ``threshold="liquid"``: the ``liquid_quantile`` of the nearest-reference distances of the particles of
    the first ``liquid_frames`` analysed frames, which must be liquid (the onset detection assumes the same
    of its baseline frames): a particle then counts as crystalline when it is closer to a reference crystal
    than all but ``liquid_quantile`` of the starting liquid's particles.

    Speed and memory: frames are read one at a time (extxyz, LAMMPS dump and GSD readers are lazy), the
    per-particle results (distance, label, q6: 10 bytes per particle and frame) are spooled to an
    anonymous temporary file in ``out_dir`` rather than kept in memory, and each frame makes one freud
    neighbour query shared by q6 and the solid fraction. ``backbone`` may be a gaa backbone or a distilled
    :class:`atomssl.order._student.OrderStudent` (~10x faster). ``chunk``: clouds per forward pass
    (default: the model's ``inference_chunk``, else 256, the fastest measured for the small gaa
    checkpoint on one CPU thread). ``device``: where the frames are embedded (e.g. ``"cuda"``; references
    are embedded on the CPU). ``progress(n_frames_done, message)`` is called after every frame, the
    message giving the frame index and the particles/s so far. Torch threads are left as the caller set them.
    """
    if threshold is None:
        has_head = classifier is not None or getattr(backbone, "order_classifier", None) is not None
        threshold = "classifier" if has_head else "reference"
    if threshold not in ("classifier", "reference", "liquid"):
        raise AtomsslError(
            f"threshold must be 'classifier', 'reference' or 'liquid', got {threshold!r}"
        )
    clf = None
    if threshold == "classifier":
        clf = classifier if classifier is not None else getattr(backbone, "order_classifier", None)
        if clf is None:
            raise AtomsslError(
                "threshold 'classifier' needs a checkpoint holding an order classifier (the shipped "
                "default, used when no checkpoint is given, has one); this one has none: use threshold "
                "'reference' or 'liquid'"
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    refs = reference_embeddings(
        backbone,
        reference_clouds(per_crystal=per_crystal, n_min=reference_n_min, seed=seed, k=k),
        seed=seed,
    )
    t_ref = time.perf_counter() - t0
    if chunk is None:
        chunk = int(getattr(backbone, "inference_chunk", DEFAULT_CHUNK))
    on_device = device is not None and str(device) != "cpu"
    if on_device:  # the references were embedded on the CPU (reference_embeddings has no device)
        backbone.to(device)
    rng = np.random.default_rng(seed)
    spool = _Spool(
        out
    )  # per-particle results go to disk frame by frame: memory does not grow with frames
    rows, subset = [], None
    t_read = t_clouds = t_embed = t_stein = 0.0
    n_atoms = None
    frames_iter = iter(iter_structures(path, **read_options))
    try:
        i = -1
        while True:
            t = time.perf_counter()
            s = next(frames_iter, None)
            t_read += time.perf_counter() - t
            if s is None:
                break
            i += 1
            if i % stride:
                continue
            if n_atoms is None:
                n_atoms = s.n_atoms
                subset = (
                    np.sort(rng.choice(n_atoms, particles, replace=False))
                    if particles and particles < n_atoms
                    else np.arange(n_atoms)
                )
            elif s.n_atoms != n_atoms:
                raise AtomsslError(
                    f"{path}: frame {i} has {s.n_atoms} particles, frame 0 had {n_atoms}"
                )
            assert subset is not None  # chosen with the first frame
            t = time.perf_counter()
            all_clouds = frame_clouds(s, k)
            clouds = all_clouds[subset]
            t_clouds += time.perf_counter() - t
            t = time.perf_counter()
            system = freud_system(
                s
            )  # one freud neighbour query per frame: q6, solid fraction, classifier
            nl = knn_neighbors(system, k)
            q_all, fsolid = frame_steinhardt(s, k, system=system, neighbors=nl)
            q = q_all[subset]
            t_stein += time.perf_counter() - t
            t = time.perf_counter()
            emb = embed_clouds(backbone, clouds, chunk=chunk, device=device if on_device else None)
            d, lab = refs.nearest(emb)
            extra = {}
            if (
                clf is not None
            ):  # P(crystalline); neighbours (two hops) outside the subset are embedded too
                extra["p_crystalline"] = clf.frame_probability(s, subset, emb, lambda idx, c=all_clouds: embed_clouds(
                    backbone, c[idx], chunk=chunk, device=device if on_device else None),
                    neighbors=nl if clf.k == k else None)  # fmt: skip
            t_embed += time.perf_counter() - t
            spool.append(distance=d, label=lab, q6=q, **extra)
            rows.append(
                {
                    "frame": i,
                    "time": s.labels.get("time", i),
                    "temperature": s.labels.get("temperature", ""),
                    "ssl_crystalline_fraction": np.nan,  # set below, once the threshold is known
                    "ssl_mean_distance": float(d.mean()),
                    "q6_mean": float(q.mean()),
                    "steinhardt_solid_fraction": fsolid,
                }
            )
            if progress is not None:
                rate = len(rows) * len(subset) / max(t_read + t_clouds + t_embed + t_stein, 1e-9)
                progress(len(rows), f"frame {i}, {rate:,.0f} particles/s")
    finally:
        if on_device:
            backbone.to("cpu")
    if not rows:
        raise AtomsslError(f"{path}: no frames to analyse")
    assert subset is not None and n_atoms is not None  # set with the first frame
    dist, label, q6, *p_crystalline = spool.arrays(len(rows), len(subset))
    score: list[np.ndarray] | np.ndarray
    if threshold == "classifier":
        assert clf is not None  # checked above
        cut = float(clf.cut)
        score = [
            (1.0 - p) for p in p_crystalline[0]
        ]  # crystalline when 1 - P < 1 - cut, i.e. P > cut
        below = 1.0 - cut
    elif threshold == "liquid":
        if len(dist) <= liquid_frames:
            raise AtomsslError(
                f"{path}: threshold='liquid' needs more than {liquid_frames} analysed frames, got {len(dist)}"
            )
        cut = float(np.quantile(dist[:liquid_frames], liquid_quantile))
        score, below = dist, cut
    else:
        cut = refs.threshold
        score, below = dist, cut
    for r, d, lab in zip(rows, score, label):
        crystalline = d < below
        counts = np.bincount(lab[crystalline], minlength=len(refs.names))
        r["ssl_crystalline_fraction"] = float(crystalline.mean())
        r.update({f"ssl_fraction_{n}": float(c / len(d)) for n, c in zip(refs.names, counts)})
    frames = np.array([r["frame"] for r in rows])
    ssl_on = onset(np.array([r["ssl_crystalline_fraction"] for r in rows]))
    q6_on = onset(np.array([r["q6_mean"] for r in rows]), min_rise=0.01)
    sl_on = onset(np.array([r["steinhardt_solid_fraction"] for r in rows]))
    from ..utils import atomic_save_npz, write_json

    atomic_save_npz(
        out / "order.npz",
        distance=dist,
        label=label,
        q6=q6,
        frame=frames,
        particle=subset,
        names=np.array(refs.names),
        threshold=np.float32(cut),
        reference_threshold=np.float32(refs.threshold),
        **({"p_crystalline": p_crystalline[0]} if p_crystalline else {}),
    )
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
        **(
            {"liquid_frames": liquid_frames, "liquid_quantile": liquid_quantile}
            if threshold == "liquid"
            else {}
        ),
        **(
            {"classifier": {"cut": cut, "features": "neighbour_mean_two_hops"}}
            if threshold == "classifier"
            else {}
        ),
        "onset_frame": {
            "ssl_crystalline_fraction": None if ssl_on is None else int(frames[ssl_on]),
            "q6_mean": None if q6_on is None else int(frames[q6_on]),
            "steinhardt_solid_fraction": None if sl_on is None else int(frames[sl_on]),
        },
        "final_label_fractions": {
            k: v for k, v in rows[-1].items() if k.startswith("ssl_fraction_")
        },
        "seconds": {
            "references": t_ref,
            "reading": t_read,
            "clouds": t_clouds,
            "embedding": t_embed,
            "steinhardt": t_stein,
            "total": time.perf_counter() - t0,
        },
        # frames x particles over the time of reading, clouds, embedding and Steinhardt (references excluded)
        "particles_per_s": len(rows)
        * len(subset)
        / max(t_read + t_clouds + t_embed + t_stein, 1e-9),
        "chunk": chunk,
        "device": str(device or "cpu"),
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
    how = (
        "P(crystalline) of the shipped head > cut"
        if summary.get("threshold_mode") == "classifier"
        else "closer than threshold to a reference crystal"
    )
    ax[0].plot(f, [r["ssl_crystalline_fraction"] for r in rows], label=f"SSL: {how}")
    ax[0].plot(
        f,
        [r["steinhardt_solid_fraction"] for r in rows],
        label="Steinhardt: ten Wolde solid fraction",
    )
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
