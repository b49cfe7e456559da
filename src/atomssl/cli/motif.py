"""``atomssl motif``: a-Si melt-quench, Gram-matrix VAE, sampling, interpolation and inpainting of motifs."""

from __future__ import annotations

import argparse
import copy
import logging

log = logging.getLogger(__name__)

ACTIONS = ("simulate", "train", "sample", "interpolate", "inpaint", "evaluate")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "motif",
        help="glassy motifs: simulate a-Si, train the Gram VAE, sample / interpolate / inpaint / evaluate",
        description=(
            "Local motifs of amorphous Si as Gram matrices of the 8 nearest neighbours.\n"
            "  simulate     LAMMPS melt-quench of a-Si cells (Vink modified Stillinger-Weber) -> cells.extxyz, plots\n"
            "  train        train the VAE on the bundled (or --cells) a-Si cells -> checkpoints/model.pt\n"
            "               (--resume RUN continues a run; trainer.devices=2 trainer.strategy=ddp ...)\n"
            "  sample       draw motifs from N(0, I) -> samples.extxyz, samples_vs_data.png\n"
            "  interpolate  latent path between two held-out motifs -> frames.extxyz\n"
            "  inpaint      infill missing neighbours (--input partial motifs, else a held-out benchmark)\n"
            "  evaluate     reconstruction, generation and inpainting metrics -> metrics.json, summary.md\n"
            "Example: atomssl motif train --out runs/motif && atomssl motif evaluate --checkpoint "
            "runs/motif/checkpoints/model.pt --out runs/motif/eval"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    helps = {
        "simulate": "LAMMPS melt-quench of a-Si cells",
        "train": "train the Gram VAE",
        "sample": "draw motifs from N(0, I)",
        "interpolate": "latent path between two motifs",
        "inpaint": "infill missing neighbours",
        "evaluate": "reconstruction, generation and inpainting metrics",
    }
    for name in ACTIONS:
        a = actions.add_parser(name, help=helps[name])
        a.add_argument(
            "--config",
            "-c",
            help="YAML file, or a packaged config by name (motif); defaults are built in",
        )
        a.add_argument(
            "--out", "-o", help="run folder (default: runs/motif-<action>-<date>-<time>)"
        )
        if name != "simulate":
            a.add_argument(
                "--cells", help="extxyz a-Si cells instead of the bundled ones (data.cells)"
            )
        if name in ("sample", "interpolate", "inpaint", "evaluate"):
            a.add_argument(
                "--checkpoint", required=False, help="model made by 'atomssl motif train'"
            )
        if name == "inpaint":
            a.add_argument(
                "--input",
                help="extxyz of partial motifs (central atom first, then known neighbours); "
                "without it, a benchmark on held-out environments",
            )
        if name == "train":
            a.add_argument(
                "--resume",
                metavar="RUN",
                help="continue the run in RUN from RUN/checkpoints/last.pt (with its config.yaml "
                "unless --config is given)",
            )
        if name == "interpolate":
            a.add_argument(
                "--start",
                help="extxyz motif to start from (default: held-out motif interpolate.start)",
            )
            a.add_argument("--end", help="extxyz motif to end at")
        a.add_argument("--seed", type=int, help="random seed")
        a.add_argument("--no-progress", action="store_true", help="no progress bar")
        a.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="config overrides, e.g. train.epochs=100",
        )
        a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..motif import _workflow as W
    from ..utils import load_config
    from ._paths import run_folder

    resume = getattr(args, "resume", None)
    if resume and args.out and args.out != resume:
        raise ConfigError("--resume RUN already names the run folder; drop --out")
    run_folder(args.out)  # before any work: created only inside an existing folder
    overrides = list(args.overrides)
    if getattr(args, "cells", None):
        from ..simulate._melt_quench import read_cells

        read_cells(
            args.cells
        )  # a missing or bad file: its one-line error before a run folder exists
        overrides.append(f"data.cells={args.cells}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    needs_ckpt = args.action in ("sample", "interpolate", "inpaint", "evaluate")
    if needs_ckpt and not getattr(args, "checkpoint", None):
        raise ConfigError(f"motif {args.action} needs --checkpoint (made by 'atomssl motif train')")
    if needs_ckpt:
        from ..motif import load_vae

        load_vae(args.checkpoint)  # clean CheckpointError before any work
        base = W._checkpoint_config(args.checkpoint, None)
        cfg = load_config(args.config, defaults=base, overrides=overrides, schema="motif")
    elif resume and not args.config:
        from ..train._runkit import load_run_config
        from ..utils._config import _merge

        base = _merge(copy.deepcopy(W.DEFAULTS), load_run_config(resume, "motif train"))
        cfg = load_config(None, defaults=base, overrides=overrides, schema="motif")
    else:
        cfg = load_config(args.config, defaults=W.DEFAULTS, overrides=overrides, schema="motif")
    bar = _progress(args.no_progress)
    try:
        if args.action == "simulate":
            run_dir = W.run_simulate(cfg, args.out, progress=bar.simulate)
        elif args.action == "train":
            from ..motif._train_run import run_train

            run_dir = run_train(cfg, resume or args.out, not args.no_progress, bool(resume))
        elif args.action == "sample":
            run_dir = W.run_sample(args.checkpoint, cfg, args.out, not args.no_progress)
        elif args.action == "interpolate":
            start = end = None
            if bool(args.start) != bool(args.end):
                raise ConfigError("give both --start and --end (or neither)")
            if args.start:
                start, end = W.read_motifs(args.start)[0], W.read_motifs(args.end)[0]
            run_dir = W.run_interpolate(args.checkpoint, cfg, args.out, start, end)
        elif args.action == "inpaint":
            motifs = W.read_motifs(args.input) if args.input else None
            run_dir = W.run_inpaint(args.checkpoint, cfg, args.out, motifs, not args.no_progress)
        else:
            run_dir = W.run_evaluate(args.checkpoint, cfg, args.out, not args.no_progress)
    finally:
        bar.close()
    print(f"motif {args.action}: wrote {run_dir}")
    return 0


class _progress:
    """tqdm progress for simulation steps (silent with --no-progress)."""

    def __init__(self, disabled: bool):
        self.disabled = disabled
        self.bar = None

    def _get(self, total, desc):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, disable=self.disabled, leave=False)
        return self.bar

    def simulate(self, stage, done, total):
        bar = self._get(total, "melt-quench")
        if done < bar.n:  # next cell
            bar.reset(total)
        bar.set_description(stage)
        bar.update(done - bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
