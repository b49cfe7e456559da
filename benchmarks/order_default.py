"""Make the per-particle checkpoint shipped as ``atomssl/weights/order_default.pt`` (``atomssl order``'s default).

Usage::

    python benchmarks/order_default.py [--backbone CKPT] [--out src/atomssl/weights/order_default.pt]

1. Backbone: ``atomssl order pretrain --config order_pretrain`` (~20 s on a CPU), run here,
   or the backbone of ``--backbone CKPT`` (a file made by that same command).
2. Development trajectories, all plain LAMMPS (``dump custom``) in a temporary folder, physics labels:
   crystalline = thermalised crystals held below melting (LJ fcc and hcp, rho = 1.0, T = 0.2 ... 0.8;
   soft-sphere IPL n = 6 bcc, rho = 1.0, T = 0.03 ... 0.16 (T_m ~ 0.2)); liquid = LJ (rho, T) = (1.0, 2.0),
   (1.0, 1.0), (0.9, 0.8), (0.85, 0.7), IPL n = 6 liquids at T = 0.25, 0.5; soft spheres IPL n = 12
   (rho = 1.0): fcc at T = 0.2, 0.45, liquid at T = 1.0, 0.6; deeply supercooled liquids (the first
   1,000-1,500 steps after a quench, before nucleation): LJ (rho, T) = (0.95, 0.65), (1.0, 0.6),
   (1.0, 0.45), (1.05, 0.6), IPL6 T = 0.12, IPL12 T = 0.3, 0.4. N = 500 (fcc lattices), 384 (hcp), 432 (bcc).
3. Classifier (:func:`atomssl.order._classify.fit_classifier`): logistic regression on the one- and
   two-hop neighbour-mean embedding; crystalline when P > ``--cut`` (0.8: the most confident cut at which
   the onset on ``benchmarks/external/lj_quench.in``'s 4,000-particle LJ quench stays within 3 frames of
   ten Wolde's; 0.9 is 5 frames late there, 0.6 is exact but calls more supercooled liquid). Validation: a fit without the held-out runs (LJ fcc/hcp at T = 0.6, IPL
   bcc at T = 0.1, LJ liquid (0.9, 0.8), IPL liquid T = 0.25) scored on them; then a development
   melt-quench (LJ, N = 500, rho = 1.0, T 2.0 -> 0.55 NVT), per frame SSL vs ten Wolde. The shipped
   head is then refit on all runs.
4. Writes the checkpoint (backbone + ``order_classifier`` entry, no trainer state), its ``.json``
   provenance (command, sha256, validation) and ``benchmarks/results/order_default.{json,md}``.

The trajectories of the tests (``tests/order/test_order_default.py``) differ from all of these in N,
potential or protocol.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LJ = ["pair_style lj/cut 2.5", "pair_coeff 1 1 1.0 1.0 2.5", "pair_modify shift yes"]


def lammps(lines) -> None:
    from atomssl.simulate import run_lammps

    run_lammps(lines)


def box(lattice: str, rho: float, cells, pair, dt: float) -> list:
    return [
        "units lj",
        "atom_style atomic",
        f"lattice {lattice} {rho}",
        f"region box block 0 {cells[0]} 0 {cells[1]} 0 {cells[2]}",
        "create_box 1 box",
        "create_atoms 1 box",
        "mass 1 1.0",
        *pair,
        "neighbor 0.3 bin",
        f"timestep {dt}",
    ]


def hold(
    dump: Path,
    T: float,
    eq: int = 2000,
    prod: int = 5000,
    every: int = 500,
    melt: float | None = None,
    seed: int = 11,
) -> list:
    pre = []
    if melt is not None:  # melt first, then quench to T
        pre = [
            f"velocity all create {melt} {seed} dist gaussian",
            f"fix 0 all nvt temp {melt} {melt} 0.5",
            "run 2000",
            "unfix 0",
        ]
    else:
        pre = [f"velocity all create {T} {seed} dist gaussian"]
    return [
        *pre,
        f"fix 1 all nvt temp {T} {T} 0.5",
        f"run {eq}",
        f"dump d all custom {every} {dump} id type x y z",
        "dump_modify d sort id",
        f"run {prod}",
    ]


def quench_hold(
    dump: Path, T: float, melt: float, steps: int, every: int = 250, seed: int = 5
) -> list:
    """Melt, quench to ``T`` in 1,000 steps, dump the first ``steps`` steps at ``T``."""
    return [
        f"velocity all create {melt} {seed} dist gaussian",
        f"fix 0 all nvt temp {melt} {melt} 0.5",
        "run 2000",
        "unfix 0",
        f"fix 0 all nvt temp {melt} {T} 0.5",
        "run 1000",
        "unfix 0",
        f"fix 1 all nvt temp {T} {T} 0.5",
        f"dump d all custom {every} {dump} id type x y z",
        "dump_modify d sort id",
        f"run {steps}",
    ]


def make_runs(folder: Path) -> list[dict]:
    """The development trajectories: [{name, path, crystalline, held_out}]."""
    from atomssl.simulate._potentials import PairPotential

    ipl = PairPotential(kind="ipl", params={"n": 6}, cutoff=2.2)
    IPL = ipl.lammps_commands(ipl.write_table(folder / "ipl6.table"))
    ipl12 = PairPotential(kind="ipl", params={"n": 12}, cutoff=2.0)
    IPL12 = ipl12.lammps_commands(ipl12.write_table(folder / "ipl12.table"))
    runs = []

    def add(name, lines, crystalline, held_out=False):
        path = folder / f"{name}.dump"
        lammps(lines(path))
        runs.append({"name": name, "path": path, "crystalline": crystalline, "held_out": held_out})

    for T in (0.2, 0.4, 0.6, 0.8):
        add(
            f"lj_fcc_T{T}",
            lambda p, T=T: box("fcc", 1.0, (5, 5, 5), LJ, 0.005) + hold(p, T),
            True,
            T == 0.6,
        )
        add(
            f"lj_hcp_T{T}",
            lambda p, T=T: box("hcp", 1.0, (6, 4, 4), LJ, 0.005) + hold(p, T),
            True,
            T == 0.6,
        )
    for T in (0.03, 0.1, 0.16):
        add(
            f"ipl6_bcc_T{T}",
            lambda p, T=T: box("bcc", 1.0, (6, 6, 6), IPL, 0.01) + hold(p, T),
            True,
            T == 0.1,
        )
    for rho, T in ((1.0, 2.0), (1.0, 1.0), (0.9, 0.8), (0.85, 0.7)):
        add(
            f"lj_liquid_rho{rho}_T{T}",
            lambda p, rho=rho, T=T: box("fcc", rho, (5, 5, 5), LJ, 0.005) + hold(p, T, melt=3.0),
            False,
            (rho, T) == (0.9, 0.8),
        )
    add(
        "lj_supercooled_rho0.95_T0.65",
        lambda p: (
            box("fcc", 0.95, (5, 5, 5), LJ, 0.005)
            + hold(p, 0.65, eq=0, prod=1250, every=250, melt=3.0)
        ),
        False,
    )
    for T in (0.25, 0.5):
        add(
            f"ipl6_liquid_T{T}",
            lambda p, T=T: box("bcc", 1.0, (6, 6, 6), IPL, 0.01) + hold(p, T, melt=1.0),
            False,
            T == 0.25,
        )
    # soft spheres n = 12 at rho = 1.0 (freezing T ~ 0.57, melting of the fcc solid ~ 0.5)
    for T in (0.2, 0.45):
        add(
            f"ipl12_fcc_T{T}",
            lambda p, T=T: box("fcc", 1.0, (5, 5, 5), IPL12, 0.005) + hold(p, T),
            True,
        )
    for T in (1.0, 0.6):
        add(
            f"ipl12_liquid_T{T}",
            lambda p, T=T: box("fcc", 1.0, (5, 5, 5), IPL12, 0.005) + hold(p, T, melt=3.0),
            False,
        )
    # deeply supercooled liquids: quenched from the melt in 1,000 steps, frames of the first 1,000-1,500
    # steps at T (before nucleation: ten Wolde <= 3 % there, recorded in the report)
    for name, lat, rho, cells, pair, dt, T, melt, steps in (
        ("lj_supercooled_rho1.0_T0.6", "fcc", 1.0, (5, 5, 5), LJ, 0.005, 0.6, 3.0, 1500),
        ("lj_supercooled_rho1.0_T0.45", "fcc", 1.0, (5, 5, 5), LJ, 0.005, 0.45, 3.0, 1000),
        ("lj_supercooled_rho1.05_T0.6", "fcc", 1.05, (5, 5, 5), LJ, 0.005, 0.6, 4.0, 1000),
        ("ipl6_supercooled_T0.12", "bcc", 1.0, (6, 6, 6), IPL, 0.01, 0.12, 1.0, 1000),
        ("ipl12_supercooled_T0.3", "fcc", 1.0, (5, 5, 5), IPL12, 0.005, 0.3, 3.0, 1000),
        ("ipl12_supercooled_T0.4", "fcc", 1.0, (5, 5, 5), IPL12, 0.005, 0.4, 3.0, 1000),
    ):
        add(
            name,
            lambda p, a=(lat, rho, cells, pair, dt, T, melt, steps): (
                box(*a[:5]) + quench_hold(p, *a[5:])
            ),
            False,
        )
    # development melt-quench (evaluation only): LJ N = 500, rho = 1.0, 2.0 -> 0.55 over 10,000 steps, hold
    quench = folder / "lj_quench_N500.dump"
    lammps(
        box("fcc", 1.0, (5, 5, 5), LJ, 0.005)
        + [
            "velocity all create 2.0 7 dist gaussian",
            "fix 1 all nvt temp 2.0 2.0 0.5",
            "run 2000",
            "unfix 1",
            f"dump d all custom 1000 {quench} id type x y z",
            "dump_modify d sort id",
            "fix 1 all nvt temp 2.0 0.55 0.5",
            "run 10000",
            "unfix 1",
            "fix 1 all nvt temp 0.55 0.55 0.5",
            "run 40000",
        ]
    )
    runs.append({"name": "lj_quench_N500", "path": quench, "crystalline": None, "held_out": True})
    return runs


def frame_features(backbone, structure, k: int = 12):
    from atomssl.order import embed_clouds, frame_clouds
    from atomssl.order._classify import frame_neighbours, hop_features

    # the feature the shipped head sees (OrderClassifier.features)
    return hop_features(
        embed_clouds(backbone, frame_clouds(structure, k)), frame_neighbours(structure, k)
    )


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--backbone",
        default=None,
        help="use this per-particle checkpoint's backbone (default: pretrain one "
        "with 'atomssl order pretrain --config order_pretrain')",
    )
    p.add_argument(
        "--config", default=str(ROOT / "src" / "atomssl" / "configs" / "order_pretrain.yaml")
    )
    p.add_argument("--out", default=str(ROOT / "src" / "atomssl" / "weights" / "order_default.pt"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "order_default"))
    p.add_argument(
        "--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression"
    )
    p.add_argument(
        "--cut", type=float, default=0.8, help="crystalline when P(crystalline) exceeds this"
    )
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    from atomssl.data import iter_structures
    from atomssl.order import onset, solid_fraction
    from atomssl.order._classify import fit_classifier, load_order_backbone
    from atomssl.train._checkpoint import load_checkpoint, save_checkpoint

    t0 = time.perf_counter()
    if not args.backbone:  # exactly `atomssl order pretrain --config order_pretrain`
        from atomssl.cli.main import main as atomssl

        with tempfile.TemporaryDirectory(prefix="atomssl-order-pretrain-") as tmp:
            run = Path(tmp) / "small"  # the run folder; the backbone is run/backbone.ckpt
            ckpt = str(run / "backbone.ckpt")
            if atomssl(["order", "pretrain", "--config", args.config, "--out", str(run), "-q"]):
                return 1
            backbone, settings = load_order_backbone(ckpt), load_checkpoint(ckpt)["config"]
        config = Path(args.config).resolve()
        pretrain = {
            "command": f"atomssl order pretrain --config "
            f"{config.relative_to(ROOT) if config.is_relative_to(ROOT) else config} --out small -q",
            "seconds": time.perf_counter() - t0,
        }
    else:
        pretrain = {"checkpoint": args.backbone}
        backbone, settings = (
            load_order_backbone(args.backbone),
            load_checkpoint(args.backbone)["config"],
        )
    print(f"backbone ready ({time.perf_counter() - t0:.0f} s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="atomssl-order-default-") as tmp:
        t = time.perf_counter()
        runs = make_runs(Path(tmp))
        t_md = time.perf_counter() - t
        print(f"{len(runs)} LAMMPS runs in {t_md:.0f} s", flush=True)
        data = {}
        for r in runs:
            frames = list(iter_structures(r["path"], format="lammps-dump-text", species={1: "Ar"}))
            data[r["name"]] = {
                "features": [frame_features(backbone, s) for s in frames],
                "ten_wolde": [solid_fraction(s) for s in frames],
                "n": frames[0].n_atoms,
            }
    train = [r for r in runs if r["crystalline"] is not None]

    def xy(sel):
        x = np.concatenate([np.concatenate(data[r["name"]]["features"]) for r in sel])
        y = np.concatenate(
            [
                np.full(sum(len(f) for f in data[r["name"]]["features"]), int(r["crystalline"]))
                for r in sel
            ]
        )
        return x, y

    def run_scores(clf, sel):
        out = {}
        for r in sel:
            x, y = xy([r])
            pred = clf.probability(x) > clf.cut
            out[r["name"]] = {
                "crystalline": r["crystalline"],
                "n_particles": int(data[r["name"]]["n"]),
                "accuracy": float((pred == y).mean()),
                "ssl_crystalline_fraction": float(pred.mean()),
                "ten_wolde_fraction": float(np.mean(data[r["name"]]["ten_wolde"])),
            }
        return out

    def quench_report(clf):
        d = data["lj_quench_N500"]
        ssl = np.array([float((clf.probability(f) > clf.cut).mean()) for f in d["features"]])
        tw = np.array(d["ten_wolde"])
        o_ssl, o_tw = onset(ssl), onset(tw)
        liquid = slice(0, max(1, (o_tw or len(tw)) - 1))
        return {
            "ssl": ssl.round(4).tolist(),
            "ten_wolde": tw.round(4).tolist(),
            "onset_ssl": o_ssl,
            "onset_ten_wolde": o_tw,
            "liquid_frames_ssl_max": float(ssl[liquid].max()),
            "final_ssl": float(ssl[-1]),
            "final_ten_wolde": float(tw[-1]),
        }

    # validation: fit without the held-out runs, score them
    val_clf = fit_classifier(*xy([r for r in train if not r["held_out"]]), C=args.C, cut=args.cut)
    validation = {
        "held_out_runs": run_scores(val_clf, [r for r in train if r["held_out"]]),
        "development_quench": quench_report(val_clf),
    }
    # shipped head: every run
    x, y = xy(train)
    info = {
        "positives": [r["name"] for r in train if r["crystalline"]],
        "negatives": [r["name"] for r in train if not r["crystalline"]],
        "n_positive": int(y.sum()),
        "n_negative": int(len(y) - y.sum()),
        "C": args.C,
        "cut": args.cut,
    }
    clf = fit_classifier(x, y, C=args.C, cut=args.cut, info=info)
    final = {"training_runs": run_scores(clf, train), "development_quench": quench_report(clf)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:])
    save_checkpoint(
        out,
        backbone,
        config={**settings, "order_default": {"command": command}},
        metrics={
            "validation_held_out_accuracy": float(
                np.mean([v["accuracy"] for v in validation["held_out_runs"].values()])
            )
        },
        order_classifier=clf.state(),
    )
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    record = {
        "file": out.name,
        "sha256": sha,
        "bytes": out.stat().st_size,
        "command": command,
        "backbone_config": dict(backbone.config),
        "pretrain": pretrain,
        "classifier": {
            **info,
            "kind": "logistic",
            "features": "[mean embedding of the particle and its 12 nearest neighbours, the same mean "
            "taken again (two hops)], standardised",
        },
        "seconds": {"total": time.perf_counter() - t0, "lammps": t_md},
        "validation": validation,
        "final": final,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    res = Path(args.results)
    res.parent.mkdir(parents=True, exist_ok=True)
    res.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# The default decision of `atomssl order` (`benchmarks/order_default.py`)",
        "",
        f"Command: `{command}`; {record['seconds']['total']:.0f} s in all ({t_md:.0f} s of LAMMPS). "
        f"Checkpoint {out.name}: {record['bytes'] / 1e3:.0f} kB, sha256 {sha[:12]}...",
        "",
        "Held-out runs (classifier fit without them):",
        "",
        "| run | phase | N | accuracy | SSL crystalline | ten Wolde |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in validation["held_out_runs"].items():
        lines.append(
            f"| {name} | {'crystal' if v['crystalline'] else 'liquid'} | {v['n_particles']} | {v['accuracy']:.3f} | "
            f"{v['ssl_crystalline_fraction']:.3f} | {v['ten_wolde_fraction']:.3f} |"
        )
    for title, q in (
        ("validation fit", validation["development_quench"]),
        ("shipped fit", final["development_quench"]),
    ):
        lines += [
            "",
            f"Development melt-quench (LJ N=500, rho 1.0, 2.0 -> 0.55), {title}: liquid frames max SSL "
            f"{q['liquid_frames_ssl_max']:.3f}; final frame SSL {q['final_ssl']:.3f} vs ten Wolde {q['final_ten_wolde']:.3f}; "
            f"onset SSL {q['onset_ssl']} vs ten Wolde {q['onset_ten_wolde']}.",
        ]
    res.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
