"""``atomssl finetune``: train a regression / classification head on labelled structures."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a (pretrained or fresh) backbone on labelled structures",
        description=(
            "Fine-tune on labelled structures: mode full (backbone + head), frozen (head only) or "
            "linear_probe (ridge / logistic regression on frozen embeddings). Labels: a built-in dataset's "
            "label, an ASE db key, or a CSV/JSON (file or id, label) next to the structures (data.labels). "
            "Writes a run folder: config.yaml, checkpoints/, metrics.csv, predictions.csv, parity.png, summary.md. "
            "Example: atomssl finetune --config finetune_dielectric "
            "backbone.checkpoint=runs/pretrain/checkpoints/best.pt mode=frozen"
        ),
    )
    p.add_argument(
        "--config",
        "-c",
        help="YAML file, or a packaged config by name (atomssl config list: finetune_*); "
        "optional with --resume",
    )
    p.add_argument("--out", "-o", help="run folder (default: runs/finetune-<date>-<time>)")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the interrupted run in RUN from checkpoints/last.pt, with the same split "
        "(its config.yaml unless --config is given); a linear_probe run is simply run again",
    )
    p.add_argument(
        "--checkpoint",
        "-k",
        help="pretrained backbone checkpoint; shortcut for backbone.checkpoint",
    )
    p.add_argument("--mode", choices=["full", "frozen", "linear_probe"], help="shortcut for mode")
    p.add_argument("--epochs", type=int, help="shortcut for trainer.max_epochs")
    p.add_argument("--accelerator", help="cpu, gpu or auto; shortcut for trainer.accelerator")
    p.add_argument("--seed", type=int, help="random seed (split, initialisation, shuffling)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. task.transform=log",
    )
    p.set_defaults(func=run)


def shortcuts(args: argparse.Namespace) -> list[str]:
    out = []
    for flag, key in (("checkpoint", "backbone.checkpoint"), ("mode", "mode"), ("epochs", "trainer.max_epochs"),
                      ("accelerator", "trainer.accelerator"), ("seed", "seed")):  # fmt: skip
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..evaluate import finetune
    from ..train._runkit import load_run_config
    from ..utils import load_config
    from ._paths import check_checkpoint, run_folder

    overrides = list(args.overrides) + shortcuts(args)
    if args.resume:
        if args.out and args.out != args.resume:
            raise ConfigError("--resume RUN already names the run folder; drop --out")
        base = None if args.config else load_run_config(args.resume, "fine-tuning")
        config = load_config(args.config, defaults=base, overrides=overrides, schema="finetune")
        finetune(config, run_dir=args.resume, progress=not args.no_progress, resume=True)
        return 0
    if not args.config:
        raise ConfigError("give --config FILE.yaml (or --resume RUN)")
    run_folder(args.out)  # before any work: created only inside an existing folder
    config = load_config(args.config, overrides=overrides, schema="finetune")
    check_checkpoint((config.get("backbone") or {}).get("checkpoint"))  # before a run folder exists
    finetune(config, run_dir=args.out, progress=not args.no_progress)
    return 0
