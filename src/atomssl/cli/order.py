"""``atomssl order``: per-particle order of a trajectory from SSL embeddings, beside Steinhardt.

Forms::

    atomssl order TRAJECTORY [--checkpoint CKPT] [--out DIR] [--stride S] [--particles N]
                             [--threshold classifier|reference|liquid] [--liquid-frames F]
                             [--device cpu|cuda] [--chunk C] [--no-progress]
    atomssl order TRAJECTORY --student STUDENT [...]       # distilled fast student instead of the backbone
    atomssl order pretrain [--config configs/order_pretrain.yaml] [--out CKPT] [key=value ...]
    atomssl order liquid TRAJ_A TRAJ_B [...] --checkpoint CKPT [--out DIR]      # experiment (a)
    atomssl order transfer --checkpoint CKPT [--out DIR] [--split held_out|training|both|wide]  # (b)

(A trajectory file literally named ``pretrain``, ``liquid`` or ``transfer`` is given as ``./NAME``.)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SUBCOMMANDS = ("pretrain", "liquid", "transfer")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "order",
        help="per-particle order of a trajectory (SSL embeddings vs Steinhardt); order experiments",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="TRAJECTORY|pretrain|liquid|transfer")
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="ARG",
        help="more trajectories (liquid) or key=value overrides (pretrain)",
    )
    p.add_argument(
        "--checkpoint",
        "-k",
        help="atomssl checkpoint of a per-particle (gaa) backbone (default: the one "
        "shipped in atomssl/weights/order_default.pt, with its classifier)",
    )
    p.add_argument(
        "--out", "-o", help="output folder (checkpoint file for 'pretrain'); default runs/order-*"
    )
    p.add_argument("--config", "-c", help="YAML config (pretrain)")
    p.add_argument("--stride", type=int, default=1, help="analyse every S-th frame")
    p.add_argument(
        "--particles",
        type=int,
        default=None,
        help="embed N random particles per frame (default all)",
    )
    p.add_argument(
        "--threshold",
        choices=("classifier", "reference", "liquid"),
        default=None,
        help="crystalline if: the checkpoint's classifier head, learned from LAMMPS thermal crystals and "
        "liquids, says so (classifier; the default when the checkpoint has one, as the shipped one "
        "does; else reference); or closer to a reference crystal than held-out noisy "
        "references (reference) or than all but 1%% of the particles of the first --liquid-frames "
        "frames (liquid)",
    )
    p.add_argument(
        "--liquid-frames", type=int, default=5, help="frames assumed liquid for --threshold liquid"
    )
    p.add_argument("--format", default=None, help="trajectory format (default from the file name)")
    p.add_argument(
        "--species",
        default=None,
        help="LAMMPS/GSD types, e.g. '1=Ar' or 'types' (point particles; order treats all alike)",
    )
    p.add_argument(
        "--names", default=None, help="liquid: comma-separated names of the trajectories"
    )
    p.add_argument("--frames", type=int, default=10, help="liquid: liquid frames per trajectory")
    p.add_argument(
        "--fraction", type=float, default=0.001, help="transfer: labelled fraction of environments"
    )
    p.add_argument("--seeds", type=int, default=3, help="transfer: number of label draws")
    p.add_argument(
        "--head-steps",
        type=int,
        default=3000,
        help="transfer: steps of the head on the frozen core",
    )
    p.add_argument(
        "--full-steps",
        type=int,
        default=1000,
        help="transfer: steps of the from-scratch and fine-tune-all models (full batch)",
    )
    p.add_argument(
        "--many-labels",
        type=float,
        default=None,
        help="transfer: also train the model from scratch on this fraction of labels (attainable accuracy)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device (cpu, cuda): of the training (transfer) or of the "
        "embedding of the frames (analysis)",
    )
    p.add_argument(
        "--split",
        choices=("held_out", "training", "both", "wide"),
        default="both",
        help="transfer: classes of held-out prototypes (new task), of the pretraining ones, both, or "
        "'wide': all 49 one-component AFLOW prototypes not seen in pretraining (147 classes)",
    )
    p.add_argument(
        "--classifiers",
        default="logistic,mlp,boosting",
        help="liquid: comma-separated classifiers applied to every feature set",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="liquid: seed of the particle sampling and classifiers"
    )
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument(
        "--no-progress", action="store_true", help="analysis: no progress bar over frames"
    )
    p.add_argument(
        "--student",
        default=None,
        help="analysis: embed with this distilled fast student (an order student "
        "file, see benchmarks/order_speed.py) instead of --checkpoint",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=None,
        help="analysis: clouds per forward pass (default: the model's)",
    )
    p.set_defaults(func=run)


def _backbone(args):
    from ..errors import ConfigError
    from ..order._classify import load_order_backbone

    backbone = load_order_backbone(args.checkpoint)  # None: the shipped per-particle checkpoint
    if args.target not in SUBCOMMANDS and backbone.order_classifier is None:
        if args.threshold == "classifier":
            raise ConfigError(
                f"{args.checkpoint}: holds no order classifier, which --threshold classifier needs; pass "
                f"--threshold reference or liquid, or leave out --checkpoint (the shipped default has one)"
            )
        if args.threshold is None and not args.quiet:
            import sys

            print(
                f"note: {args.checkpoint} holds no order classifier: using --threshold reference (leave out "
                f"--checkpoint for the shipped default and its classifier)",
                file=sys.stderr,
                flush=True,
            )
    return backbone


def _device(name: str) -> str:
    from ._paths import check_device

    return check_device(name)


def _out(args, name: str) -> Path:
    from ..utils import make_run_dir

    return Path(args.out) if args.out else make_run_dir("runs", f"order-{name}")


def _first_frame(path: str, options: dict) -> None:
    """Read (and check) the first frame of a trajectory before any work: an unreadable, empty or
    garbled file fails in a moment with its one-line error, and no output folder is made."""
    from ..data import read

    read(path, index=0, **options)


def _check_out(args) -> None:
    """Before any work: a named output folder is created only inside an existing folder."""
    from ._paths import run_folder

    run_folder(args.out)


def _say(args, msg: str) -> None:
    if not args.quiet:
        print(msg, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.target == "pretrain":
        return _pretrain(args)
    if args.target == "liquid":
        return _liquid(args)
    if args.target == "transfer":
        return _transfer(args)
    return _analyse(args)


def _analyse(args) -> int:
    from ..errors import MissingFileError
    from ..order import analyse_trajectory

    if args.inputs:
        from ..errors import ConfigError

        raise ConfigError(f"atomssl order takes one trajectory; got extra arguments {args.inputs}")
    if not Path(args.target).exists():
        raise MissingFileError("no such file", args.target)
    device = _device(args.device)  # before the checkpoint: a bad device fails in a second
    if args.chunk is not None and args.chunk < 1:
        from ..errors import ConfigError

        raise ConfigError(f"--chunk must be >= 1, got {args.chunk}")
    _check_out(args)
    if args.student:
        from ..order._student import load_student

        backbone = load_student(args.student)
    else:
        backbone = _backbone(args)
    out = _out(args, "analysis")
    options = {}
    if args.format:
        options["format"] = args.format
    if args.species:
        from .data import _species

        try:
            options["species"] = _species(args.species)
        except argparse.ArgumentTypeError as exc:
            from ..errors import ConfigError

            raise ConfigError(f"--species {args.species!r}: {exc}") from None
    _first_frame(args.target, options)
    from tqdm.auto import tqdm

    # frames are read lazily, so the total is unknown: the bar counts frames and shows particles/s
    bar = tqdm(desc="order", unit="frame", mininterval=0.5, disable=args.quiet or args.no_progress)

    def progress(n, message):
        bar.update(n - bar.n)
        bar.set_postfix_str(message, refresh=False)

    try:
        summary = analyse_trajectory(
            args.target,
            backbone,
            out,
            stride=args.stride,
            particles=args.particles,
            threshold=args.threshold,
            liquid_frames=args.liquid_frames,
            chunk=args.chunk,
            device=None if device == "cpu" else device,
            progress=progress,
            **options,
        )
    finally:
        bar.close()
    on = summary["onset_frame"]
    _say(
        args,
        f"{out}: {summary['frames']} frames x {summary['particles_per_frame']} particles in "
        f"{summary['seconds']['total']:.1f} s ({summary.get('particles_per_s', 0):,.0f} particles/s); onset frame SSL {on['ssl_crystalline_fraction']}, "
        f"q6 {on['q6_mean']}, solid fraction {on['steinhardt_solid_fraction']}",
    )
    return 0


def _pretrain(args) -> int:
    import numpy as np

    from ..order import (
        DEFAULT_BACKBONE,
        DEFAULT_TASKS,
        PretrainSettings,
        frame_clouds,
        pretrain_clouds,
        reference_clouds,
        save_pretrained,
    )
    from ..utils import dump_config, load_config

    defaults = {
        "backbone": dict(DEFAULT_BACKBONE),
        "tasks": list(DEFAULT_TASKS),
        "steps": 300,
        "batch": 128,
        "lr": 2e-3,
        "seed": 0,
        "per_crystal": 2000,
        "trajectories": [],
        "frames_per_trajectory": 5,
    }
    cfg = load_config(args.config, defaults, args.inputs)
    if args.out:
        from ._paths import output_file

        output_file(args.out)  # the checkpoint file; its folder holds the config and history too
    clouds = [reference_clouds(per_crystal=cfg["per_crystal"], seed=cfg["seed"]).clouds]
    from ..data import iter_structures

    for t in cfg["trajectories"]:
        frames = list(iter_structures(t))
        for i in np.linspace(0, len(frames) - 1, cfg["frames_per_trajectory"]).round().astype(int):
            clouds.append(frame_clouds(frames[i]))
    clouds = np.concatenate(clouds)
    settings = PretrainSettings(
        backbone=cfg["backbone"],
        tasks=tuple(cfg["tasks"]),
        steps=cfg["steps"],
        batch=cfg["batch"],
        lr=cfg["lr"],
        seed=cfg["seed"],
    )
    t0 = time.perf_counter()

    def progress(step, total, rec):
        if not args.quiet and (step % 10 == 0 or step == total):
            print(
                f"step {step}/{total} {rec['task']} loss {rec['loss']:.4f} (baseline {rec['baseline']:.4f}) "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )

    backbone, tasks, history = pretrain_clouds(clouds, settings, progress)
    path = Path(args.out) if args.out else _out(args, "pretrain") / "backbone.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_pretrained(path, backbone, tasks, history, settings)
    dump_config(cfg, path.parent / "order_pretrain_config.yaml")
    import csv

    with open(path.parent / "pretrain_history.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    _say(
        args,
        f"{path}: pretrained on {len(clouds)} environments in {time.perf_counter() - t0:.0f} s",
    )
    return 0


def _liquid(args) -> int:
    from ..errors import ConfigError
    from ..order import liquid_classification

    if len(args.inputs) < 2:
        raise ConfigError("atomssl order liquid needs at least two trajectories")
    from ..errors import MissingFileError

    for t in args.inputs:
        if not Path(t).exists():
            raise MissingFileError("no such file", t)
        _first_frame(t, {})
    _check_out(args)
    backbone = _backbone(args)
    out = _out(args, "liquid")
    names = args.names.split(",") if args.names else None
    rows = liquid_classification(
        args.inputs,
        backbone,
        out,
        names=names,
        max_frames=args.frames,
        classifiers=tuple(c for c in args.classifiers.split(",") if c),
        seed=args.seed,
        progress=lambda m: _say(args, m),
    )
    for r in rows:
        _say(
            args,
            f"{r['pair']:30s} {r['features']:20s} {r['classifier']:9s} ROC AUC {r['roc_auc']:.3f}",
        )
    _say(args, f"tables and ROC curves in {out}")
    return 0


def _transfer(args) -> int:
    from ..order import transfer

    device = _device(args.device)  # before the checkpoint: a bad device fails in a second
    _check_out(args)
    backbone = _backbone(args)
    out = _out(args, "transfer")
    splits = ("held_out", "training") if args.split == "both" else (args.split,)
    for split in splits:
        rows = transfer(
            backbone,
            out,
            fraction=args.fraction,
            seeds=tuple(range(args.seeds)),
            split=split,
            head_steps=args.head_steps,
            full_steps=args.full_steps,
            many_labels=args.many_labels,
            device=device,
            progress=lambda m: _say(args, m),
        )
        for r in rows:
            if r["seed"] == "mean":
                _say(
                    args,
                    f"{split:9s} {r['mode']:18s} mean accuracy {r['accuracy']:.3f} ({r['labelled']} labelled environments)",
                )
    _say(args, f"table in {out}")
    return 0
