"""``atomssl order``: per-particle order of a trajectory from SSL embeddings, beside Steinhardt.

Forms::

    atomssl order TRAJECTORY [--checkpoint CKPT] [--out DIR] [--stride S] [--particles N]
                             [--threshold classifier|reference|liquid] [--liquid-frames F]
                             [--device cpu|cuda] [--chunk C] [--no-progress]
    atomssl order TRAJECTORY --student STUDENT [...]       # distilled fast student instead of the backbone
    atomssl order pretrain [--config order_pretrain] [--out RUN] [--resume RUN] [key=value ...]
                           # RUN/backbone.ckpt; trainer.devices=2 trainer.strategy=ddp ...
    atomssl order liquid TRAJ_A TRAJ_B [...] --checkpoint CKPT [--out DIR]      # experiment (a)
    atomssl order transfer --checkpoint CKPT [--out DIR] [--split held_out|training|both|wide]  # (b)
                           [--resume RUN] [trainer.KEY=VALUE ...] [transfer.KEY=VALUE ...]

(A trajectory file literally named ``pretrain``, ``liquid`` or ``transfer`` is given as ``./NAME``.)
"""

from __future__ import annotations

import argparse
import copy
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
        help="more trajectories (liquid) or key=value overrides (pretrain; transfer: "
        "trainer.KEY=VALUE, transfer.KEY=VALUE)",
    )
    p.add_argument(
        "--checkpoint",
        "-k",
        help="atomssl checkpoint of a per-particle (gaa) backbone (default: the one "
        "shipped in atomssl/weights/order_default.pt, with its classifier)",
    )
    p.add_argument(
        "--out",
        "-o",
        help="output folder (for 'pretrain' the run folder, with the backbone in "
        "RUN/backbone.ckpt); default runs/order-*",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="pretrain: continue the run in RUN from RUN/checkpoints/last.pt (with its "
        "config.yaml unless --config is given); transfer: train only the runs RUN has not "
        "recorded yet (with its config.yaml)",
    )
    p.add_argument(
        "--config", "-c", help="YAML file, or a packaged config by name (pretrain: order_pretrain*)"
    )
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
        default=None,
        help="torch device (cpu, cuda): of the embedding of the frames (analysis; default cpu) "
        "or of the training (transfer; default: trainer.accelerator, auto)",
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
        "--no-progress",
        action="store_true",
        help="no progress bar (over frames, or pretraining steps)",
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
    device = _device(args.device or "cpu")  # before the checkpoint: a bad device fails at once
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
        from ._data_options import _species

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
    from ..errors import ConfigError
    from ..order._pretrain import CHECKPOINT_NAME, DEFAULTS, pretrain_order
    from ..train._runkit import load_run_config
    from ..utils import load_config
    from ..utils._config import _merge
    from ._paths import run_folder

    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise ConfigError("--resume RUN already names the run folder; drop --out")
        base = DEFAULTS
        if not args.config:  # the run's own config, over defaults added since
            base = _merge(copy.deepcopy(DEFAULTS), load_run_config(args.resume, "order pretrain"))
        cfg = load_config(args.config, base, args.inputs, schema="order")
    else:
        run_folder(args.out)  # before any work: created only inside an existing folder
        if args.out and Path(args.out).suffix in (".ckpt", ".pt") and not Path(args.out).is_dir():
            folder = Path(args.out).with_suffix("")
            raise ConfigError(
                f"--out {args.out}: names the run folder (the backbone is written to "
                f"RUN/{CHECKPOINT_NAME}); give a folder, e.g. --out {folder}"
            )
        cfg = load_config(args.config, DEFAULTS, args.inputs, schema="order")
    summary = pretrain_order(cfg, args.resume or args.out, resume=bool(args.resume),
                             progress=not (args.quiet or args.no_progress))  # fmt: skip
    if summary:
        _say(
            args,
            f"{summary['checkpoint']}: pretrained on {summary['environments']} environments in "
            f"{summary['seconds']:.0f} s",
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
    from ._order_transfer import run_transfer

    return run_transfer(args)
