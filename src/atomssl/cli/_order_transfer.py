"""``atomssl order transfer``: experiment (b) into a run folder (:func:`atomssl.order.transfer`).

``--resume RUN`` reads ``RUN/config.yaml`` back (checkpoint, splits, budgets, trainer options;
the flags that set those are then ignored), trains only the runs not yet recorded there and
continues a run stopped mid-way from its ``last.pt``. ``trainer.KEY=VALUE`` arguments set the
engine's options (e.g. ``trainer.accelerator=gpu``, ``trainer.devices=2 trainer.strategy=ddp``,
``trainer.checkpoint_every_n_steps=100``); ``transfer.KEY=VALUE`` the experiment's settings the
flags do not reach (e.g. ``transfer.n_test=1000``, ``transfer.lr_head=1e-2``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: the ``transfer.KEY=VALUE`` settings (arguments of :func:`atomssl.order.transfer`)
SETTINGS = ("fraction", "seeds", "n_test", "head_steps", "full_steps", "lr_head", "lr_full",
            "n_min", "many_labels", "many_steps", "batch_size", "curve_at")  # fmt: skip


def _overrides(items: list[str], cfg: dict) -> tuple[dict, dict]:
    """(the trainer options, the transfer settings): those of ``cfg`` with ``items`` set."""
    from ..errors import ConfigError
    from ..utils import apply_overrides

    bad = [i for i in items if not i.startswith(("trainer.", "transfer."))]
    if bad:
        raise ConfigError(
            "atomssl order transfer takes only trainer.KEY=VALUE and transfer.KEY=VALUE "
            f"arguments; got {bad}"
        )
    base = {"trainer": dict(cfg.get("trainer") or {}), "transfer": dict(cfg["transfer"])}
    out = apply_overrides(base, items)
    unknown = sorted(set(out["transfer"]) - set(SETTINGS) - {"device"})
    if unknown:
        raise ConfigError(
            f"atomssl order transfer: unknown setting(s) transfer.{', transfer.'.join(unknown)}; "
            f"known: {', '.join(SETTINGS)}"
        )
    return out["trainer"], out["transfer"]


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
    from ..train._engine import is_worker, resolve_run_dir
    from . import order as cli

    cfg, chosen = _settings(args)
    trainer, settings = _overrides(list(args.inputs), cfg)
    device = settings.get("device")  # None: the trainer's accelerator (auto)
    if device is not None:
        device = cli._device(str(device))  # a bad device fails in a second
    if not args.resume:
        cli._check_out(args)
    args.checkpoint = chosen["checkpoint"]
    backbone = cli._backbone(args)
    # rank 0 makes the folder; DDP processes Lightning starts find it (ATOMSSL_RUN_DIR)
    run = {"root": "runs", "name": "order-transfer"}
    out = resolve_run_dir(run, args.resume or args.out, "order-transfer")
    options = {k: settings[k] for k in SETTINGS if k in settings}
    options["seeds"] = tuple(options.get("seeds", (0, 1, 2)))
    splits = list(cfg["splits"])
    say = (lambda m: None) if is_worker() else (lambda m: cli._say(args, m))
    for split in splits:
        rows = transfer(
            backbone,
            out,
            split=split,
            device=device,
            trainer=trainer,
            resume=bool(args.resume),
            progress=say,
            progress_bar=False,
            config={"checkpoint": chosen["checkpoint"], "splits": splits},
            **options,
        )
        for r in rows:
            if r["seed"] == "mean":
                say(
                    f"{split:9s} {r['mode']:18s} mean accuracy {r['accuracy']:.3f} "
                    f"({r['labelled']} labelled environments)"
                )
    say(f"table in {out}")
    return 0
