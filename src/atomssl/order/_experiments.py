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

import copy
import csv
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data import iter_structures
from ..errors import AtomsslError
from ..graph import neighbor_clouds
from ._analysis import onset
from ._clouds import cloud_batch, embed_clouds
from ._reference import (
    HELD_OUT_PROTOTYPES,
    ReferenceClouds,
    one_component_prototypes,
    reference_clouds,
)
from ._steinhardt import solid_fraction, steinhardt_features

FEATURE_SETS = {
    "steinhardt_plain": [0, 1, 2],
    "steinhardt_averaged": [3, 4, 5],
    "steinhardt_all": [0, 1, 2, 3, 4, 5],
}
CLASSIFIERS = ("logistic", "mlp", "boosting")
# None: the pretraining prototypes; "wide": every one-component AFLOW prototype not used in pretraining
# (a function: the prototype table is read only when that split is asked for)
TRANSFER_SPLITS = {
    "training": None,
    "held_out": HELD_OUT_PROTOTYPES,
    "wide": one_component_prototypes,
}


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
def _train_head(
    backbone,
    head,
    clouds,
    y,
    *,
    train_backbone: bool,
    steps: int,
    lr: float,
    seed: int,
    device="cpu",
    batch_size: int | None = None,
    evaluate: Callable[[], float] | None = None,
    curve_at: tuple = (),
) -> tuple[float, list[tuple[int, float]]]:
    """Train ``head`` (and the backbone when ``train_backbone``) with Adam on cross-entropy.

    Full batch when ``batch_size`` is None or at least ``len(clouds)``, else a fresh random minibatch per
    step. Returns the last training loss and ``[(step, evaluate())]`` at the steps in ``curve_at``.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = list(head.parameters()) + (list(backbone.parameters()) if train_backbone else [])
    for p in backbone.parameters():
        p.requires_grad_(train_backbone)
    opt = torch.optim.Adam(params, lr=lr)
    clouds = np.asarray(clouds)
    target = torch.as_tensor(y, dtype=torch.long, device=device)
    full = batch_size is None or batch_size >= len(clouds)
    if not train_backbone:  # the frozen core is evaluated once; only the head trains
        feats = torch.as_tensor(embed_clouds(backbone, clouds, device=device), device=device)
    elif full:
        batch = cloud_batch(clouds).to(device)
    curve, loss = [], torch.tensor(float("nan"))
    for step in range(1, steps + 1):
        ids = None if full else rng.choice(len(clouds), batch_size, replace=False)
        idx = slice(None) if full else torch.as_tensor(ids, device=device)
        if train_backbone:
            backbone.train()
            x = backbone(batch if full else cloud_batch(clouds[ids]).to(device)).node
        else:
            x = feats[idx]
        loss = torch.nn.functional.cross_entropy(head(x), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in curve_at and evaluate is not None:
            backbone.eval()
            curve.append((step, evaluate()))
    backbone.eval()
    return float(loss.detach()), curve


def _accuracy(backbone, head, clouds, y, chunk: int = 2048, device="cpu") -> float:
    emb = torch.as_tensor(embed_clouds(backbone, clouds, chunk, device=device), device=device)
    with torch.no_grad():
        pred = head(emb).argmax(-1).cpu().numpy()
    return float((pred == y).mean())


def _check_split(split: str) -> None:
    if split not in TRANSFER_SPLITS:
        raise AtomsslError(
            f"unknown transfer split {split!r}; choose from {sorted(TRANSFER_SPLITS)}"
        )


def split_reference_clouds(split: str, n_min: int = 4096) -> ReferenceClouds:
    """The reference clouds of a transfer split (:data:`TRANSFER_SPLITS`), as :func:`transfer` draws from."""
    _check_split(split)
    names = TRANSFER_SPLITS[split]
    if callable(names):
        names = names()
    return (
        reference_clouds(n_min=n_min, seed=123)
        if names is None
        else reference_clouds(names, n_min=n_min, seed=123)
    )


#: the model trained from scratch with many labels: an estimate of the accuracy attainable from single
#: environments at all, which bounds what any model can gain at 0.1 %
MANY_LABELS = "scratch_many_labels"


def transfer(
    backbone,
    out_dir,
    *,
    fraction: float = 0.001,
    seeds: tuple = (0, 1, 2),
    n_test: int = 3000,
    head_steps: int = 3000,
    full_steps: int = 1000,
    lr_head: float = 3e-3,
    lr_full: float = 2e-3,
    n_min: int = 4096,
    split: str = "training",
    device: str = "cpu",
    many_labels: float | None = None,
    many_steps: int = 3000,
    batch_size: int = 1024,
    curve_at: tuple = (),
    refs: ReferenceClouds | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Experiment (b); writes ``transfer.{csv,md}`` (``split="training"``) or ``transfer_<split>.{csv,md}``
    (accuracy per mode and seed, plus mean and std rows).

    ``split="training"``: the {prototype, sigma} classes of the pretraining prototypes (in distribution);
    ``split="held_out"``: the same with :data:`HELD_OUT_PROTOTYPES`, never seen in pretraining;
    ``split="wide"``: all 49 one-component AFLOW prototypes not seen in pretraining (147 classes).

    Every mode trains on the same labelled environments, full batch: the head on the frozen core for
    ``head_steps`` at ``lr_head``; the same model from scratch, and all weights from the pretrained ones,
    for ``full_steps`` at ``lr_full``. The defaults run each to a training loss near zero (scratch with
    fewer steps is undertrained, which inflates the frozen core's gain; see docs/order.md).
    ``many_labels`` (e.g. 0.05) adds the mode ``scratch_many_labels``: the same model from scratch trained
    on that fraction of environments (minibatches of ``batch_size``, ``many_steps`` steps), disjoint from
    the test set. ``curve_at`` (steps) writes the test accuracy along training to
    ``transfer_<split>_curve.csv``. ``refs`` replaces the split's reference clouds (e.g. precomputed on
    another machine); ``device`` runs training and embedding there (``"cuda"``).
    """
    _check_split(split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if refs is None:
        refs = split_reference_clouds(split, n_min)
    y_all = refs.structure_noise
    n_classes = int(y_all.max()) + 1
    pretrained = copy.deepcopy(backbone).eval()
    modes = ("frozen_pretrained", "scratch", "finetune_all") + (
        (MANY_LABELS,) if many_labels else ()
    )
    rows, curves = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(y_all))
        n_lab = max(1, int(round(fraction * len(y_all))))
        lab, test = perm[:n_lab], perm[n_lab : n_lab + n_test]
        for mode in modes:
            t = time.perf_counter()
            torch.manual_seed(1000 + seed)
            if mode in ("scratch", MANY_LABELS):
                from ..representation import build_backbone

                bb = build_backbone(dict(pretrained.config))
            else:
                bb = copy.deepcopy(pretrained)
            bb = bb.to(device)
            head = torch.nn.Sequential(
                torch.nn.Linear(bb.node_dim, 64), torch.nn.ReLU(), torch.nn.Linear(64, n_classes)
            ).to(device)
            train = lab
            if mode == MANY_LABELS:  # every environment outside the test set may be labelled here
                rest = perm[n_lab + n_test :]
                train = np.concatenate(
                    [lab, rest[: max(0, int(round(many_labels * len(y_all))) - n_lab)]]
                )
            frozen = mode == "frozen_pretrained"
            steps = head_steps if frozen else many_steps if mode == MANY_LABELS else full_steps
            loss, curve = _train_head(
                bb,
                head,
                refs.clouds[train],
                y_all[train],
                train_backbone=not frozen,
                steps=steps,
                lr=lr_head if frozen else lr_full,
                seed=seed,
                device=device,
                batch_size=batch_size if mode == MANY_LABELS else None,
                curve_at=tuple(curve_at),
                evaluate=lambda bb=bb, head=head, test=test: _accuracy(
                    bb, head, refs.clouds[test], y_all[test], device=device
                ),
            )
            acc = _accuracy(bb, head, refs.clouds[test], y_all[test], device=device)
            curves += [
                {"split": split, "mode": mode, "seed": seed, "step": s, "accuracy": a}
                for s, a in curve
            ]
            rows.append(
                {
                    "split": split,
                    "mode": mode,
                    "seed": seed,
                    "labelled": int(len(train)),
                    "classes_seen": int(len(np.unique(y_all[train]))),
                    "n_classes": n_classes,
                    "test": int(len(test)),
                    "steps": steps,
                    "train_loss": loss,
                    "accuracy": acc,
                    "seconds": time.perf_counter() - t,
                }
            )
            if progress:
                progress(f"{split} seed {seed} {mode}: accuracy {acc:.3f} (train loss {loss:.3f})")
    for stat, fun in (("mean", np.mean), ("std", np.std)):
        for mode in modes:
            done = [r for r in rows if r["mode"] == mode and isinstance(r["seed"], int)]
            rows.append(
                {
                    "split": split,
                    "mode": mode,
                    "seed": stat,
                    "labelled": done[0]["labelled"],
                    "classes_seen": "",
                    "n_classes": n_classes,
                    "test": done[0]["test"],
                    "steps": done[0]["steps"],
                    "train_loss": float("nan"),
                    "accuracy": float(fun([r["accuracy"] for r in done])),
                    "seconds": float("nan"),
                }
            )
    stem = "transfer" if split == "training" else f"transfer_{split}"
    _write_table(out / stem, rows)
    if curves:
        _write_table(out / f"{stem}_curve", curves)
    return rows
