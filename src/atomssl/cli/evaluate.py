"""``atomssl evaluate``: matbench folds, learning curves (pretrained vs scratch), embedding maps."""

from __future__ import annotations

import argparse

TARGETS = ("matbench_dielectric", "curves", "embedding-map")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="matbench folds, learning curves, embedding map",
        description=(
            "matbench_dielectric: the official 5 folds (hyperparameters chosen on a validation split of each "
            "fold's training part), matbench-format results.json, per-fold and mean MAE/RMSE/max error; "
            "resumable (folds done in --out are skipped). "
            "curves: test MAE vs number of labels, pretrained (--checkpoint) vs scratch, several seeds. "
            "embedding-map: 2D map (UMAP if installed, else PCA) of the checkpoint's structure embeddings "
            "coloured by density. "
            "Example: atomssl evaluate matbench_dielectric --config evaluate_dielectric --folds 0,1 --out runs/mb"
        ),
    )
    p.add_argument("target", metavar="TARGET", help=f"one of {', '.join(TARGETS)}")
    p.add_argument(
        "--config",
        "-c",
        help="YAML file, or a packaged config by name (finetune options; atomssl config list: "
        "evaluate_*)",
    )
    p.add_argument("--out", "-o", help="output folder (resumes what it already holds)")
    p.add_argument("--folds", help="comma-separated fold numbers (default: all 5)")
    p.add_argument(
        "--checkpoint",
        "-k",
        help="pretrained backbone checkpoint (shortcut for backbone.checkpoint)",
    )
    p.add_argument(
        "--sizes", help="curves: label budgets, e.g. 50,100,250,500,1000,2000,all (default)"
    )
    p.add_argument("--seeds", default="0,1,2", help="curves: seeds (default 0,1,2)")
    p.add_argument(
        "--fold",
        type=int,
        default=0,
        help="curves: the fold whose train part is the pool and test part the test set",
    )
    p.add_argument(
        "--test-limit", type=int, help="curves: a fixed random subset of this many test rows"
    )
    p.add_argument("--limit", type=int, help="embedding-map: only the first N structures")
    p.add_argument(
        "--source",
        default="matbench_dielectric",
        help="embedding-map: structures (dataset name, file or folder)",
    )
    p.add_argument(
        "--method", default="auto", choices=["auto", "umap", "pca"], help="embedding-map projection"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="curves: runs at a time, each in its own process with one torch thread (default 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. trainer.max_epochs=20",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..utils import load_config
    from ._paths import check_checkpoint, output_file, run_folder

    overrides = list(args.overrides)
    if args.target not in TARGETS:
        raise ConfigError(
            f"unknown evaluate target {args.target!r}; choose one of {', '.join(TARGETS)}"
        )
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.target == "embedding-map" and args.out:
        output_file(args.out)  # the map (.png) goes only into an existing folder
    else:
        run_folder(args.out)  # before any work: created only inside an existing folder
    config = load_config(args.config, overrides=overrides, schema="evaluate")
    check_checkpoint(args.checkpoint or (config.get("backbone") or {}).get("checkpoint"))
    progress = not args.no_progress
    if args.target == "matbench_dielectric":
        from ..evaluate import evaluate_matbench

        if args.checkpoint:
            config = load_config(None, config, [f"backbone.checkpoint={args.checkpoint}"])
        summary = evaluate_matbench(
            args.target, config, out=args.out, folds=args.folds, progress=progress
        )
        if summary["mean"]:
            print(f"mean MAE over folds {summary['folds_done']}: {summary['mean']['mae']:.4f}")
        return 0
    if not args.checkpoint:
        raise ConfigError(f"evaluate {args.target}: give --checkpoint (a pretrained backbone)")
    if not args.out:
        raise ConfigError(
            f"evaluate {args.target}: give --out (a folder for curves, a .png for the map)"
        )
    if args.target == "curves":
        from ..evaluate import learning_curves

        s = learning_curves(config, args.checkpoint, args.out, sizes=args.sizes, seeds=args.seeds,
                            fold=args.fold, test_limit=args.test_limit, progress=progress,
                            workers=args.workers)  # fmt: skip
        print(f"pretrained beats scratch in {s['wins']} of {s['settings']} settings")
        return 0
    from ..analysis import embedding_map_figure

    res = embedding_map_figure(args.checkpoint, args.out, source=args.source, limit=args.limit,
                               method=args.method, progress=progress)  # fmt: skip
    print(
        f"{args.out}: {res['method']} map of {res['n']} structures; density kNN agreement r={res['agreement']:.3f} "
        f"(2D: {res['agreement_2d']:.3f}; same architecture, random weights: {res['agreement_random']:.3f})"
    )
    return 0
