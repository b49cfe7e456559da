"""Held-out metrics behind ``atomssl motif train|inpaint|evaluate``: reconstruction, inpainting, summary."""

from __future__ import annotations

import logging
import time

import numpy as np

from ..utils._progress import counting_bar
from ._decode import aligned_rmsd, assign_and_align, gram_to_coords
from ._generate import inpaint

log = logging.getLogger(__name__)


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


def _inpaint_options(cfg: dict) -> dict:
    p = cfg["inpaint"]
    return {"restarts": int(p["restarts"]), "steps": int(p["steps"]), "lr": float(p["lr"]),
            "prior": float(p["prior"]), "assignment": p["assignment"], "method": p["method"],
            "seed": int(cfg.get("seed", 0))}  # fmt: skip


def inpaint_benchmark(model, held, cfg: dict, rng, progress: bool = False) -> tuple[dict, dict]:
    """Remove random neighbours from held-out environments and infill them; errors per number
    fixed. ``progress``: a bar over the optimisation steps of each number fixed."""
    p = cfg["inpaint"]
    k = held.k
    n = min(int(p["cases"]), len(held))
    cases = rng.choice(len(held), n, replace=False)
    results: dict[str, dict] = {}  # per number fixed: metrics (floats, None where undefined)
    errors: dict[str, np.ndarray] = {}
    for m in p["fixed"]:
        m = int(m)
        keep = np.stack([np.sort(rng.choice(k, m, replace=False)) for _ in range(n)])
        true = held.vectors[cases]
        known = np.take_along_axis(true, keep[..., None], axis=1)
        missing = np.stack([np.setdiff1d(np.arange(k), row) for row in keep])
        truth_missing = np.take_along_axis(true, missing[..., None], axis=1)
        t0 = time.time()
        with counting_bar(f"inpaint {m} of {k} fixed, {n} motifs", progress) as tick:
            res = inpaint(model, known, progress=tick, **_inpaint_options(cfg))
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
