"""Run-folder workflows behind ``atomssl motif simulate|train|sample|interpolate|inpaint|evaluate``
(``train``: :mod:`atomssl.motif._train_run`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..simulate._melt_quench import (
    SW_PARAMETERS,
    MeltQuenchConfig,
    melt_quench,
    read_cells,
    write_cells,
)
from ..utils import atomic_write, dump_config, make_run_dir, write_json
from ..utils._progress import counting_bar
from ..utils._schema import Schema
from . import _analysis as A
from ._benchmark import (
    _inpaint_options,
    inpaint_benchmark,
    reconstruction_metrics,
    summary_markdown,
)
from ._data import bundled_cells
from ._environments import extract_environments
from ._generate import inpaint, interpolate, sample
from ._vae import TrainConfig, VAEConfig, load_vae
from ._vae_train import TRAINER

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
    "trainer": dict(TRAINER),  # the engine's options; max_epochs is train.epochs
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
#: validated on load (atomssl.utils._schema)
SCHEMA = Schema(
    "motif",
    DEFAULTS,
    choices={
        "simulate.potential": tuple(SW_PARAMETERS),
        "train.permutation_within": ("shell", "all"),
        "sample.decoding": ("eigen", "metric"),
        "inpaint.assignment": ("sorted", "hungarian"),
        "inpaint.method": ("gram", "procrustes"),
    },
    types={"data.cells": (str, None)},
)


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


# run_train (atomssl motif train): atomssl.motif._train_run


def _checkpoint_config(checkpoint, cfg: dict | None) -> dict:
    from ..utils._torchfile import safe_torch_load
    from ._vae import _from_engine_checkpoint

    payload = _from_engine_checkpoint(safe_torch_load(checkpoint, map_location="cpu"))
    extra = payload.get("extra") if isinstance(payload, dict) else None
    stored = (extra.get("config") if isinstance(extra, dict) else None) or {}
    import copy

    from ..utils._config import _merge

    merged = copy.deepcopy(DEFAULTS)
    _merge(merged, stored)
    if cfg:
        _merge(merged, cfg)
    return merged


def _sample(model, cfg: dict, progress: bool) -> np.ndarray:
    """``sample.n`` motifs drawn and decoded (a bar over the metric decoding's evaluations)."""
    s = cfg["sample"]
    with counting_bar(f"decode {int(s['n'])} samples", progress, unit="eval") as tick:
        coords, _ = sample(model, int(s["n"]), seed=int(cfg.get("seed", 0)),
                           temperature=float(s["temperature"]),
                           decoding=s.get("decoding", "metric"), progress=tick)  # fmt: skip
    return coords


def run_sample(checkpoint, cfg: dict, out=None, progress: bool = False) -> Path:
    run = _run_dir(out, "sample")
    model = load_vae(checkpoint)
    coords = _sample(model, cfg, progress)
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


def run_inpaint(checkpoint, cfg: dict, out=None, motifs=None, progress: bool = False) -> Path:
    """Infill ``motifs`` (neighbour vectors (n, m, 3) of partial motifs), or benchmark on held-out
    environments; ``progress``: bars over the optimisation steps."""
    run = _run_dir(out, "inpaint")
    model = load_vae(checkpoint)
    p = cfg["inpaint"]
    if motifs is not None:
        with counting_bar(f"inpaint {len(motifs)} motifs", progress) as tick:
            res = inpaint(model, motifs, progress=tick, **_inpaint_options(cfg))
        write_motifs(
            run / "inpainted.extxyz",
            res.coords,
            [{"n_fixed": motifs.shape[1], "fixed_rmsd": float(f)} for f in res.fixed_rmsd],
        )
        write_json(run / "metrics.json", {"fixed_rmsd": res.fixed_rmsd, "gram_loss": res.gram_loss})
        return run
    _, held, _ = split_environments(cfg)
    results, errors = inpaint_benchmark(
        model, held, cfg, np.random.default_rng(int(cfg.get("seed", 0))), progress
    )
    write_json(run / "metrics.json", {"inpainting": results})
    A.plot_errors(
        errors,
        run / "inpaint_errors.png",
        threshold=float(p["threshold"]),
        xlabel="infilled atom error (A)",
    )
    return run


def run_evaluate(checkpoint, cfg: dict, out=None, progress: bool = False) -> Path:
    """Reconstruction, generation and inpainting on the held-out cells, with figures and a
    summary; ``progress``: bars over the decoding and inpainting steps."""
    run = _run_dir(out, "evaluate")
    dump_config(cfg, run / "config.yaml")
    model = load_vae(checkpoint)
    _, held, cells = split_environments(cfg)
    rec, r = reconstruction_metrics(model, held)
    coords = _sample(model, cfg, progress)
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
        model, held, cfg, np.random.default_rng(int(cfg.get("seed", 0))), progress
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
