"""``atomssl pretrain``: self-supervised pretraining of a backbone on unlabelled structures."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain a backbone with pretext tasks (denoising, masking, ...)",
        description=(
            "Pretrain a backbone on unlabelled structures. Writes a run folder with config.yaml, "
            "checkpoints/best.pt and last.pt, logs/, loss_curve.png and summary.md. "
            "Example: atomssl pretrain --config pretrain_megnet trainer.max_epochs=5"
        ),
    )
    p.add_argument(
        "--config",
        "-c",
        help="YAML file, or a packaged config by name (atomssl config list: pretrain_*); "
        "optional with --resume",
    )
    p.add_argument("--out", "-o", help="run folder (default: runs/pretrain-<date>-<time>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from checkpoints/last.pt (its config.yaml unless --config is given)",
    )
    p.add_argument("--epochs", type=int, help="shortcut for trainer.max_epochs=N")
    p.add_argument(
        "--devices", help="devices per node (number, list or 'auto'); shortcut for trainer.devices"
    )
    p.add_argument(
        "--strategy", help="'ddp' for several processes/GPUs/nodes; shortcut for trainer.strategy"
    )
    p.add_argument("--accelerator", help="cpu, gpu or auto; shortcut for trainer.accelerator")
    p.add_argument(
        "--num-nodes", type=int, help="nodes for multi-node DDP; shortcut for trainer.num_nodes"
    )
    p.add_argument(
        "--seed", type=int, help="random seed (model init, split, shuffling, corruptions)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar / model summary")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=3e-4"
    )
    p.set_defaults(func=run)


def _shortcuts(args: argparse.Namespace) -> list[str]:
    out = []
    for flag, key in (
        ("epochs", "trainer.max_epochs"),
        ("devices", "trainer.devices"),
        ("strategy", "trainer.strategy"),
        ("accelerator", "trainer.accelerator"),
        ("num_nodes", "trainer.num_nodes"),
        ("seed", "seed"),
    ):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"{key}={value}")
    return out


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..train import load_run_config, pretrain
    from ..utils import load_config
    from ._paths import check_checkpoint, run_folder

    overrides = list(args.overrides) + _shortcuts(args)
    if args.resume:
        if args.out and args.out != args.resume:
            raise ConfigError("--resume RUN_DIR already names the run folder; drop --out")
        base = None if args.config else load_run_config(args.resume)
        config = load_config(args.config, defaults=base, overrides=overrides, schema="pretrain")
        pretrain(config, run_dir=args.resume, resume=True, progress=not args.no_progress)
        return 0
    if not args.config:
        raise ConfigError("give --config FILE.yaml (or --resume RUN_DIR)")
    run_folder(args.out)  # before any work: created only inside an existing folder
    config = load_config(args.config, overrides=overrides, schema="pretrain")
    check_checkpoint((config.get("backbone") or {}).get("checkpoint"))
    pretrain(config, run_dir=args.out, resume=False, progress=not args.no_progress)
    return 0
