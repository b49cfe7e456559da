"""``atomssl order transfer``: experiment (b) into a run folder (:func:`atomssl.order.transfer`).

``--resume RUN`` reads ``RUN/config.yaml`` back (checkpoint, splits, budgets, trainer options;
the flags that set those are then ignored) and trains only the runs not yet recorded there.
``trainer.KEY=VALUE`` arguments set the engine's options (e.g. ``trainer.accelerator=gpu``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _trainer_overrides(items: list[str], base: dict) -> dict:
    from ..errors import ConfigError
    from ..utils import apply_overrides

    bad = [i for i in items if not i.startswith("trainer.")]
    if bad:
        raise ConfigError(
            f"atomssl order transfer takes only trainer.KEY=VALUE arguments; got {bad}"
        )
    return apply_overrides({"trainer": dict(base)}, items)["trainer"]


def _settings(args) -> tuple[dict, dict]:
    """(the run's config: checkpoint, splits, transfer settings, trainer; the CLI's choice)."""
    from ..errors import ConfigError
    from ..train._runkit import load_run_config

    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise ConfigError("--resume RUN already names the run folder; drop --out")
        cfg = load_run_config(args.resume, "order transfer")
        if not isinstance(cfg.get("transfer"), dict) or not cfg.get("splits"):
            raise ConfigError(f"{args.resume}/config.yaml: not a run of atomssl order transfer")
        checkpoint = args.checkpoint or cfg.get("checkpoint")
        return cfg, {**cfg, "checkpoint": checkpoint}
    splits = ["held_out", "training"] if args.split == "both" else [args.split]
    settings = {"fraction": args.fraction, "seeds": list(range(args.seeds)),
                "head_steps": args.head_steps, "full_steps": args.full_steps,
                "many_labels": args.many_labels, "device": args.device}  # fmt: skip
    cfg = {"checkpoint": args.checkpoint, "splits": splits, "transfer": settings, "trainer": {}}
    return cfg, cfg


def run_transfer(args: argparse.Namespace) -> int:
    from ..order import transfer
    from . import order as cli

    cfg, chosen = _settings(args)
    settings = dict(cfg["transfer"])
    trainer = _trainer_overrides(list(args.inputs), cfg.get("trainer") or {})
    device = cli._device(str(settings.get("device", "cpu")))  # a bad device fails in a second
    if not args.resume:
        cli._check_out(args)
    args.checkpoint = chosen["checkpoint"]
    backbone = cli._backbone(args)
    out = Path(args.resume) if args.resume else cli._out(args, "transfer")
    keep = ("fraction", "seeds", "n_test", "head_steps", "full_steps", "lr_head", "lr_full",
            "n_min", "many_labels", "many_steps", "batch_size", "curve_at")  # fmt: skip
    options = {k: settings[k] for k in keep if k in settings}
    options["seeds"] = tuple(options.get("seeds", (0, 1, 2)))
    splits = list(cfg["splits"])
    for split in splits:
        rows = transfer(
            backbone,
            out,
            split=split,
            device=device,
            trainer=trainer,
            resume=bool(args.resume),
            progress=lambda m: cli._say(args, m),
            progress_bar=False,
            config={"checkpoint": chosen["checkpoint"], "splits": splits},
            **options,
        )
        for r in rows:
            if r["seed"] == "mean":
                cli._say(
                    args,
                    f"{split:9s} {r['mode']:18s} mean accuracy {r['accuracy']:.3f} "
                    f"({r['labelled']} labelled environments)",
                )
    cli._say(args, f"table in {out}")
    return 0
