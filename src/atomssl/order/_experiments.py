"""Experiments (a) liquid-frame classification and (b) transfer at 0.1 % labels.

(a) Trajectories that will form different crystals are told apart from their *liquid* frames (taken
before the crystallisation onset), per particle, by the same classifiers (standardised logistic
regression, a small MLP, gradient boosting) on SSL embeddings vs on Steinhardt features; train and
test use disjoint frames.
(b) {prototype, noise} of idealized-crystal environments from 0.1 % labelled environments: a head
on the frozen pretrained core vs the same model trained from scratch vs fine-tuning all weights, on
the pretraining prototypes (``split="training"``, in distribution) or on held-out prototypes never
seen in pretraining (``split="held_out"``, a new task).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data import iter_structures
from ..errors import AtomsslError
from ..graph import neighbor_clouds
from ._analysis import onset
from ._clouds import embed_clouds
from ._steinhardt import solid_fraction, steinhardt_features
from ._transfer import MANY_LABELS as MANY_LABELS  # experiment (b), re-exported from here
from ._transfer import transfer as transfer
from ._transfer_heads import TRANSFER_SPLITS as TRANSFER_SPLITS  # re-exported: tests import it here
from ._transfer_heads import split_reference_clouds as split_reference_clouds

FEATURE_SETS = {
    "steinhardt_plain": [0, 1, 2],
    "steinhardt_averaged": [3, 4, 5],
    "steinhardt_all": [0, 1, 2, 3, 4, 5],
}
CLASSIFIERS = ("logistic", "mlp", "boosting")


def _classifier(name: str, seed: int):
    """The same classifier, whatever the feature set: standardised logistic regression, a one-hidden-layer
    MLP (early stopping on a split of the training particles) or histogram gradient boosting."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    if name == "mlp":
        return make_pipeline(
            StandardScaler(),
            MLPClassifier((64,), alpha=1e-3, max_iter=500, early_stopping=True, random_state=seed),
        )
    if name == "boosting":
        return HistGradientBoostingClassifier(random_state=seed)
    raise AtomsslError(f"unknown classifier {name!r}; choose from {CLASSIFIERS}")


def _write_table(path: Path, rows: list[dict]) -> None:
    with open(path.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values())
            + " |"
        )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def liquid_frames(path, k: int = 12, max_frames: int = 10, margin: int = 3, **read_options):
    """(liquid frames, onset frame index, solid fractions): up to ``max_frames`` frames ending
    ``margin`` frames before the ten Wolde solid fraction's onset (all frames if it never rises)."""
    frames = list(iter_structures(path, **read_options))
    fs = np.array([solid_fraction(f, k) for f in frames])
    on = onset(fs)
    end = (on if on is not None else len(frames)) - margin
    if end < 2:
        raise AtomsslError(
            f"{path}: crystallises at frame {on}: fewer than 2 liquid frames before it"
        )
    chosen = np.unique(np.linspace(0, end - 1, min(max_frames, end)).round().astype(int))
    return [frames[i] for i in chosen], on, fs


def neighbour_mean(values: np.ndarray, neighbors: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (n, d) over each particle of ``idx`` and its neighbours ``neighbors[idx]`` (n, k):
    the Lechner-Dellago average, applied to any per-particle feature."""
    return (values[idx] + values[neighbors[idx]].sum(axis=1)) / (neighbors.shape[1] + 1)


def liquid_classification(
    trajectories: list,
    backbone,
    out_dir,
    *,
    names: list[str] | None = None,
    k: int = 12,
    max_frames: int = 10,
    particles: int = 300,
    margin: int = 3,
    seed: int = 0,
    classifiers: tuple = CLASSIFIERS,
    blocks: bool = True,
    radial: bool = True,
    averaged: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Experiment (a) on every pair of ``trajectories``; writes ``liquid_auc.{csv,md}``, ``liquid_roc.png``.

    Feature sets: ``ssl_embedding`` (the backbone's per-particle output), with ``blocks`` also
    ``ssl_blocks`` (that plus each block's bond-averaged invariants, see :func:`embed_clouds`), and the
    Steinhardt sets of ``FEATURE_SETS``; with ``radial`` also ``radial_distances`` (the k sorted normalised
    neighbour distances: a purely radial baseline, blind to angles, for what the SSL clouds add to it);
    with ``averaged`` also ``ssl_averaged``: the per-particle embedding averaged over the particle and
    its ``k`` nearest neighbours, the counterpart of the Lechner-Dellago averaged Steinhardt set
    (every particle of each frame is embedded for it), and with ``radial`` too ``radial_averaged``, the
    sorted distances averaged the same way (the radial control of ``ssl_averaged``).
    Every feature set goes through every classifier of ``classifiers``.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = names or [Path(str(t)).stem for t in trajectories]
    rng = np.random.default_rng(seed)
    data = []
    for t, name in zip(trajectories, names):
        frames, on, _ = liquid_frames(t, k, max_frames, margin)
        ssl, avg, st, rad, rad_avg, fid = [], [], [], [], [], []
        for j, f in enumerate(frames):
            idx = rng.choice(f.n_atoms, min(particles, f.n_atoms), replace=False)
            every, nbrs = neighbor_clouds(f, k, normalize="min_distance")
            every = np.ascontiguousarray(every, dtype=np.float32)
            clouds = every[idx]
            dist = np.linalg.norm(
                every, axis=-1
            )  # sorted normalised neighbour distances of every particle
            if averaged:  # every particle is embedded once; the sampled ones are rows of that
                emb = embed_clouds(backbone, every, blocks=blocks)
                ssl.append(emb[idx])
                width = getattr(backbone, "node_dim", emb.shape[1])
                avg.append(neighbour_mean(emb[:, :width], nbrs, idx))
                rad_avg.append(neighbour_mean(dist, nbrs, idx))
            else:
                ssl.append(embed_clouds(backbone, clouds, blocks=blocks))
            rad.append(dist[idx])
            st.append(steinhardt_features(f, k)[idx])
            fid.append(np.full(len(idx), j))
        data.append(
            {
                "name": name,
                "onset": on,
                "n_frames": len(frames),
                "ssl": np.concatenate(ssl),
                "ssl_averaged": np.concatenate(avg) if averaged else None,
                "steinhardt": np.concatenate(st),
                "radial": np.concatenate(rad),
                "radial_averaged": np.concatenate(rad_avg) if averaged else None,
                "frame": np.concatenate(fid),
                "temperature": [f.labels.get("temperature") for f in frames],
            }
        )
        if progress:
            progress(f"{name}: {len(frames)} liquid frames before onset frame {on}")
    rows, curves = [], {}
    for a in range(len(data)):
        for b in range(a + 1, len(data)):
            A, B = data[a], data[b]
            y = np.r_[np.zeros(len(A["frame"])), np.ones(len(B["frame"]))]
            frame = np.r_[A["frame"], B["frame"]]
            test = frame % 2 == 1  # disjoint frames: even frames train, odd frames test
            ssl = np.r_[A["ssl"], B["ssl"]]
            width = getattr(backbone, "node_dim", ssl.shape[1])
            feats = {"ssl_embedding": ssl[:, :width]}
            if blocks:
                feats["ssl_blocks"] = ssl
            if averaged:
                feats["ssl_averaged"] = np.r_[A["ssl_averaged"], B["ssl_averaged"]]
            st = np.r_[A["steinhardt"], B["steinhardt"]]
            feats.update({n: st[:, cols] for n, cols in FEATURE_SETS.items()})
            if radial:
                feats["radial_distances"] = np.r_[A["radial"], B["radial"]]
                if averaged:
                    feats["radial_averaged"] = np.r_[A["radial_averaged"], B["radial_averaged"]]
            for cname in classifiers:
                for fname, X in feats.items():
                    clf = _classifier(cname, seed)
                    clf.fit(X[~test], y[~test])
                    p = clf.predict_proba(X[test])[:, 1]
                    auc = float(roc_auc_score(y[test], p))
                    rows.append(
                        {
                            "pair": f"{A['name']} vs {B['name']}",
                            "features": fname,
                            "classifier": cname,
                            "n_features": int(X.shape[1]),
                            "train_particles": int((~test).sum()),
                            "test_particles": int(test.sum()),
                            "roc_auc": auc,
                        }
                    )
                    curves[(rows[-1]["pair"], fname, cname)] = roc_curve(y[test], p)[:2]
    _write_table(out / "liquid_auc", rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = sorted({r["pair"] for r in rows})
    fig, axes = plt.subplots(
        len(pairs),
        len(classifiers),
        figsize=(4.5 * len(classifiers), 4 * len(pairs)),
        squeeze=False,
    )
    for row_axes, pair in zip(axes, pairs):
        for ax, cname in zip(row_axes, classifiers):
            for r in rows:
                if r["pair"] == pair and r["classifier"] == cname:
                    fpr, tpr = curves[(pair, r["features"], cname)]
                    ax.plot(fpr, tpr, label=f"{r['features']} (AUC {r['roc_auc']:.3f})")
            ax.set_title(f"{pair}: {cname}", fontsize=9)
    for ax in axes.ravel():
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "liquid_roc.png", dpi=110)
    plt.close(fig)
    return rows


# ---------------------------------------------------------------------------------------- (b)
