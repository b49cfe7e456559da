"""Run-folder workflows behind ``atomssl motif simulate|train|sample|interpolate|inpaint|evaluate``."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..utils import atomic_write, dump_config, make_run_dir, save_figure, write_json
from . import _analysis as A
from ._data import bundled_cells
from ._decode import aligned_rmsd, assign_and_align, gram_to_coords
from ._environments import extract_environments
from ._generate import inpaint, interpolate, sample
from ._simulate import MeltQuenchConfig, melt_quench, read_cells, write_cells
from ._vae import TrainConfig, VAEConfig, load_vae, save_vae, train_vae

log = logging.getLogger(__name__)

DEFAULTS: dict = {
    "seed": 0,
    "data": {"cells": None, "k": 8, "cutoff": 4.0, "holdout_cells": 1},
    "simulate": {
        "n_cells": 3,
        "seed": 1,
        "n_atoms": 512,
        "potential": "vink",
        "t_melt": 3000.0,
        "t_final": 300.0,
        "melt_ps": 20.0,
        "quench_rate": 1.0e13,
        "anneal_ps": 10.0,
        "timestep_fs": 1.0,
    },
    "model": {"hidden": [28, 18], "latent": 8},
    "train": {
        "epochs": 400,
        "batch_size": 256,
        "lr": 3.0e-3,
        "lr_final": 1.0e-4,
        "beta": 1.0e-3,
        "beta_warmup": 50,
        "permutation_copies": 0,
        "permutation_within": "shell",
    },
    "sample": {"n": 2000, "temperature": 1.0, "decoding": "metric"},
    "interpolate": {"frames": 11, "start": 0, "end": 1},
    "inpaint": {
        "fixed": [7, 6, 5],
        "cases": 200,
        "restarts": 16,
        "steps": 150,
        "lr": 0.05,
        "prior": 1.0e-3,
        "assignment": "sorted",
        "method": "gram",
        "threshold": 0.3,
    },
}


# ------------------------------------------------------------------ helpers
def _run_dir(out, name: str) -> Path:
    return make_run_dir(out, exist_ok=True) if out else make_run_dir("runs", f"motif-{name}")


def load_cells(cfg: dict):
    path = cfg["data"].get("cells")
    return read_cells(path) if path else bundled_cells()


def split_environments(cfg: dict):
    """(train, held-out) environments: the last ``holdout_cells`` cells are held out."""
    cells = load_cells(cfg)
    d = cfg["data"]
    h = int(d["holdout_cells"])
    if not 0 < h < len(cells):
        raise ConfigError(
            f"data.holdout_cells={h} must be between 1 and {len(cells) - 1} ({len(cells)} cells)"
        )
    env = extract_environments(cells, k=int(d["k"]), cutoff=float(d["cutoff"]))
    held = env.cell >= len(cells) - h
    return env.subset(~held), env.subset(held), cells


def motifs_to_atoms(coords: np.ndarray, info: list[dict] | None = None, symbol: str = "Si"):
    """Motifs (n, k, 3) as ASE Atoms: the central atom at the origin, then its k neighbours."""
    from ase import Atoms

    out = []
    for i, c in enumerate(coords):
        atoms = Atoms(symbol * (len(c) + 1), positions=np.vstack([np.zeros(3), c]))
        if info:
            atoms.info.update(info[i])
        out.append(atoms)
    return out


def write_motifs(path, coords, info=None) -> Path:
    import ase.io

    path = Path(path)
    with atomic_write(path, "w") as fh:
        ase.io.write(fh, motifs_to_atoms(coords, info), format="extxyz")
    return path


def read_motifs(path) -> np.ndarray:
    """Motifs written by :func:`write_motifs` (centre first) as neighbour vectors (n, k, 3)."""
    from ..data import read
    from ..errors import StructureError

    frames = read(
        path, validate=False
    )  # a missing or bad file: one StructureError naming it (and the frame)
    sizes = sorted({f.n_atoms for f in frames})
    if len(sizes) != 1 or sizes[0] < 2:
        raise StructureError(
            f"motifs must all hold a centre and the same number (>= 1) of neighbours; got frames of "
            f"{', '.join(map(str, sizes))} atom(s)",
            str(path),
        )
    return np.stack([f.positions[1:] - f.positions[0] for f in frames])


def _model_config(cfg) -> VAEConfig:
    return VAEConfig(
        k=int(cfg["data"]["k"]),
        hidden=tuple(int(h) for h in cfg["model"]["hidden"]),
        latent=int(cfg["model"]["latent"]),
    )


def _train_config(cfg) -> TrainConfig:
    t = cfg["train"]
    known = set(TrainConfig.__dataclass_fields__)
    unknown = set(t) - known
    if unknown:
        raise ConfigError(
            f"unknown train options {sorted(unknown)}; known: {sorted(known - {'seed'})}"
        )
    defaults = TrainConfig()
    try:  # YAML reads e.g. "1e-3" as a string
        values = {k: type(getattr(defaults, k))(v) for k, v in t.items()}
        return TrainConfig(**{**values, "seed": int(cfg.get("seed", 0))})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid train option: {exc}") from exc


# ------------------------------------------------------------------ verbs
def run_simulate(cfg: dict, out=None, progress=None) -> Path:
    run = _run_dir(out, "simulate")
    dump_config(cfg, run / "config.yaml")
    s = dict(cfg["simulate"])
    n_cells, seed0 = int(s.pop("n_cells")), int(s.pop("seed"))
    cells = []
    for i in range(n_cells):
        t0 = time.time()
        cells.append(melt_quench(MeltQuenchConfig(seed=seed0 + i, **s), progress=progress))
        log.info("cell %d/%d (seed %d) done in %.0f s", i + 1, n_cells, seed0 + i, time.time() - t0)
    write_cells(cells, run / "cells.extxyz")
    summary = A.structure_summary(cells)
    write_json(run / "structure.json", summary)
    A.plot_structure_summary(cells, run / "structure.png")
    log.info(
        "wrote %s: coordination %.3f, four-fold %.1f%%",
        run / "cells.extxyz",
        summary["mean_coordination"],
        100 * summary["fraction_fourfold"],
    )
    return run


def reconstruction_metrics(model, env) -> tuple[dict, np.ndarray]:
    rec = model.reconstruct(env.grams())
    coords = gram_to_coords(rec)
    r = aligned_rmsd(coords, env.vectors)
    # permutation-free RMSD: also let the Hungarian assignment relabel decoded neighbours
    rh = np.array(
        [
            assign_and_align(coords[i], env.vectors[i], n_starts=2, init=np.arange(env.k))[2]
            for i in range(len(env))
        ]
    )
    return {
        "n": len(env),
        "rmsd_mean": float(r.mean()),
        "rmsd_median": float(np.median(r)),
        "fraction_rmsd_le_0.1": float((r <= 0.1).mean()),
        "rmsd_assigned_mean": float(rh.mean()),
        "rmsd_assigned_median": float(np.median(rh)),
        "fraction_rmsd_assigned_le_0.1": float((rh <= 0.1).mean()),
    }, r


def run_train(cfg: dict, out=None, progress=None) -> Path:
    run = _run_dir(out, "train")
    dump_config(cfg, run / "config.yaml")
    train, held, _ = split_environments(cfg)
    log.info("training on %d environments, %d held out", len(train), len(held))
    t0 = time.time()
    model, history = train_vae(
        train.grams(), held.grams(), _model_config(cfg), _train_config(cfg), progress=progress
    )
    seconds = time.time() - t0
    save_vae(
        model, run / "checkpoints" / "model.pt", extra={"config": cfg, "train_seconds": seconds}
    )
    with atomic_write(run / "history.csv", "w") as fh:
        w = csv.DictWriter(fh, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    _plot_history(history, run / "loss_curve.png")
    metrics, r = reconstruction_metrics(model, held)
    metrics["train_seconds"] = seconds
    metrics["n_train"] = len(train)
    write_json(run / "metrics.json", {"reconstruction_heldout": metrics})
    A.plot_errors(
        {"held-out RMSD (ordered)": r},
        run / "reconstruction_rmsd.png",
        threshold=0.1,
        xlabel="RMSD (A)",
    )
    log.info(
        "held-out reconstruction RMSD: mean %.3f A, median %.3f A",
        metrics["rmsd_mean"],
        metrics["rmsd_median"],
    )
    return run


def _plot_history(history, path):
    plt = A._plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    e = [h["epoch"] for h in history]
    ax.plot(e, [h["recon"] for h in history], label="train recon")
    if "val_recon" in history[0]:
        ax.plot(e, [h["val_recon"] for h in history], label="held-out recon")
    ax.plot(e, [h["kl"] for h in history], label="KL")
    ax.set(xlabel="epoch", yscale="log")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _checkpoint_config(checkpoint, cfg: dict | None) -> dict:
    from ..utils._torchfile import safe_torch_load

    payload = safe_torch_load(checkpoint, map_location="cpu")
    extra = payload.get("extra") if isinstance(payload, dict) else None
    stored = (extra.get("config") if isinstance(extra, dict) else None) or {}
    import copy

    from ..utils._config import _merge

    merged = copy.deepcopy(DEFAULTS)
    _merge(merged, stored)
    if cfg:
        _merge(merged, cfg)
    return merged


def run_sample(checkpoint, cfg: dict, out=None) -> Path:
    run = _run_dir(out, "sample")
    model = load_vae(checkpoint)
    s = cfg["sample"]
    coords, _ = sample(
        model,
        int(s["n"]),
        seed=int(cfg.get("seed", 0)),
        temperature=float(s["temperature"]),
        decoding=s.get("decoding", "metric"),
    )
    write_motifs(run / "samples.extxyz", coords)
    _, held, _ = split_environments(cfg)
    metrics = A.compare_motifs(held.vectors, coords)
    write_json(run / "metrics.json", {"generation": metrics})
    A.plot_motif_comparison(held.vectors, coords, run / "samples_vs_data.png")
    return run


def run_interpolate(checkpoint, cfg: dict, out=None, start=None, end=None) -> Path:
    run = _run_dir(out, "interpolate")
    model = load_vae(checkpoint)
    i = cfg["interpolate"]
    if start is None or end is None:
        _, held, _ = split_environments(cfg)
        a, b = int(i["start"]), int(i["end"])
        if not (0 <= a < len(held) and 0 <= b < len(held)):
            raise ConfigError(
                f"interpolate.start/end must index the {len(held)} held-out environments"
            )
        start, end = held.vectors[a], held.vectors[b]
    frames = interpolate(model, start, end, int(i["frames"]))
    write_motifs(
        run / "frames.extxyz",
        frames,
        [{"frame": f, "t": f / max(1, len(frames) - 1)} for f in range(len(frames))],
    )
    write_motifs(run / "endpoints.extxyz", np.stack([start, end]))
    return run


def inpaint_benchmark(model, held, cfg: dict, rng) -> tuple[dict, dict]:
    """Remove random neighbours from held-out environments and infill them; errors per number fixed."""
    p = cfg["inpaint"]
    k = held.k
    n = min(int(p["cases"]), len(held))
    cases = rng.choice(len(held), n, replace=False)
    results, errors = {}, {}
    for m in p["fixed"]:
        m = int(m)
        keep = np.stack([np.sort(rng.choice(k, m, replace=False)) for _ in range(n)])
        true = held.vectors[cases]
        known = np.take_along_axis(true, keep[..., None], axis=1)
        missing = np.stack([np.setdiff1d(np.arange(k), row) for row in keep])
        truth_missing = np.take_along_axis(true, missing[..., None], axis=1)
        t0 = time.time()
        res = inpaint(
            model,
            known,
            restarts=int(p["restarts"]),
            steps=int(p["steps"]),
            lr=float(p["lr"]),
            prior=float(p["prior"]),
            assignment=p["assignment"],
            method=p["method"],
            seed=int(cfg.get("seed", 0)),
        )
        # match infilled atoms to the missing ones (their labels are arbitrary) by Hungarian assignment
        from scipy.optimize import linear_sum_assignment

        err = np.zeros((n, k - m))
        for r in range(n):
            cost = np.linalg.norm(res.infilled[r][:, None] - truth_missing[r][None], axis=-1)
            row, col = linear_sum_assignment(cost)
            err[r] = cost[row, col]
        first_shell = missing < 4
        thr = float(p["threshold"])
        results[str(m)] = {
            "cases": n,
            "seconds": time.time() - t0,
            "infill_error_median": float(np.median(err)),
            "infill_error_mean": float(err.mean()),
            f"fraction_all_infilled_within_{thr}": float((err.max(1) <= thr).mean()),
            f"fraction_atoms_within_{thr}": float((err <= thr).mean()),
            f"fraction_first_shell_atoms_within_{thr}": float((err[first_shell] <= thr).mean())
            if first_shell.any()
            else None,
            f"fraction_second_shell_atoms_within_{thr}": float((err[~first_shell] <= thr).mean())
            if (~first_shell).any()
            else None,
            "fixed_rmsd_median": float(np.median(res.fixed_rmsd)),
            "fixed_rmsd_mean": float(res.fixed_rmsd.mean()),
        }
        errors[f"{m} fixed"] = err.ravel()
        log.info(
            "inpaint %d fixed: %.0f%% of cases within %.2f A",
            m,
            100 * results[str(m)][f"fraction_all_infilled_within_{thr}"],
            thr,
        )
    return results, errors


def run_inpaint(checkpoint, cfg: dict, out=None, motifs=None) -> Path:
    """Infill ``motifs`` (neighbour vectors (n, m, 3) of partial motifs), or benchmark on held-out environments."""
    run = _run_dir(out, "inpaint")
    model = load_vae(checkpoint)
    p = cfg["inpaint"]
    if motifs is not None:
        res = inpaint(
            model,
            motifs,
            restarts=int(p["restarts"]),
            steps=int(p["steps"]),
            lr=float(p["lr"]),
            prior=float(p["prior"]),
            assignment=p["assignment"],
            method=p["method"],
            seed=int(cfg.get("seed", 0)),
        )
        write_motifs(
            run / "inpainted.extxyz",
            res.coords,
            [{"n_fixed": motifs.shape[1], "fixed_rmsd": float(f)} for f in res.fixed_rmsd],
        )
        write_json(run / "metrics.json", {"fixed_rmsd": res.fixed_rmsd, "gram_loss": res.gram_loss})
        return run
    _, held, _ = split_environments(cfg)
    results, errors = inpaint_benchmark(
        model, held, cfg, np.random.default_rng(int(cfg.get("seed", 0)))
    )
    write_json(run / "metrics.json", {"inpainting": results})
    A.plot_errors(
        errors,
        run / "inpaint_errors.png",
        threshold=float(p["threshold"]),
        xlabel="infilled atom error (A)",
    )
    return run


def run_evaluate(checkpoint, cfg: dict, out=None) -> Path:
    """Reconstruction, generation and inpainting on the held-out cells, with figures and a summary."""
    run = _run_dir(out, "evaluate")
    dump_config(cfg, run / "config.yaml")
    model = load_vae(checkpoint)
    _, held, cells = split_environments(cfg)
    rec, r = reconstruction_metrics(model, held)
    s = cfg["sample"]
    coords, _ = sample(
        model,
        int(s["n"]),
        seed=int(cfg.get("seed", 0)),
        temperature=float(s["temperature"]),
        decoding=s.get("decoding", "metric"),
    )
    write_motifs(run / "samples.extxyz", coords[:200])
    gen = A.compare_motifs(held.vectors, coords)
    A.plot_motif_comparison(held.vectors, coords, run / "samples_vs_data.png")
    A.plot_errors(
        {"held-out RMSD (ordered)": r},
        run / "reconstruction_rmsd.png",
        threshold=0.1,
        xlabel="RMSD (A)",
    )
    inp, errors = inpaint_benchmark(
        model, held, cfg, np.random.default_rng(int(cfg.get("seed", 0)))
    )
    A.plot_errors(
        errors,
        run / "inpaint_errors.png",
        threshold=float(cfg["inpaint"]["threshold"]),
        xlabel="infilled atom error (A)",
    )
    structure = A.structure_summary(cells)
    A.plot_structure_summary(cells, run / "structure.png")
    metrics = {
        "structure": structure,
        "reconstruction_heldout": rec,
        "generation": gen,
        "inpainting": inp,
    }
    write_json(run / "metrics.json", metrics)
    with atomic_write(run / "summary.md", "w") as fh:
        fh.write(summary_markdown(metrics, cfg))
    return run


def summary_markdown(m: dict, cfg: dict) -> str:
    thr = float(cfg["inpaint"]["threshold"])
    st, rec, gen = m["structure"], m["reconstruction_heldout"], m["generation"]
    lines = [
        "# Glassy motifs: evaluation",
        "",
        f"a-Si cells: {st['n_cells']} x {st['n_atoms'] // st['n_cells']} atoms; coordination {st['mean_coordination']:.3f} "
        f"({100 * st['fraction_fourfold']:.1f}% four-fold), RDF first peak {st['rdf_first_peak']:.2f} A, "
        f"bond angle mean {st['bond_angle_mean']:.1f} deg (peak {st['bond_angle_peak']:.0f}).",
        "",
        "| metric | value | target |",
        "|---|---|---|",
        f"| held-out reconstruction RMSD, mean / median (A) | {rec['rmsd_mean']:.3f} / {rec['rmsd_median']:.3f} | <= 0.1 |",
        f"| same with Hungarian relabelling, mean / median (A) | {rec['rmsd_assigned_mean']:.3f} / {rec['rmsd_assigned_median']:.3f} | |",
        f"| generated bond-length Wasserstein (A) | {gen['wasserstein_bond_lengths']:.4f} | <= 0.03 |",
        f"| generated bond-angle Wasserstein (deg) | {gen['wasserstein_bond_angles']:.2f} | <= 3 |",
        f"| generated all-neighbour distance / angle Wasserstein | {gen['wasserstein_distances']:.4f} A / {gen['wasserstein_angles']:.2f} deg | |",
    ]
    for key, v in m["inpainting"].items():
        lines.append(
            f"| inpainting, {key} fixed: cases with all infilled within {thr} A | {v[f'fraction_all_infilled_within_{thr}']:.3f} "
            f"(median error {v['infill_error_median']:.3f} A, fixed-atom RMSD {v['fixed_rmsd_median']:.3f} A) | {'>= 0.8' if key == '7' else ''} |"
        )
    return "\n".join(lines) + "\n"
