"""Masked crystal reconstruction on held-out matbench_dielectric crystals: pretrained-only vs adversarial.

Stages (run from the repository root; everything lands in ``runs/reconstruction/``)::

    python benchmarks/reconstruction.py prepare      # data/train.extxyz (fold-0 train), data/test_idx.npy (fold-0 test)
    atomssl pretrain --config reconstruct_pretrain --out runs/reconstruction/pretrain
    atomssl gan --config gan_reconstruction --out runs/reconstruction/gan
    atomssl gan --config gan_reconstruction --out runs/reconstruction/control loss.adversarial_weight=0
    # the longer runs (30-epoch generator; 400 classifier + 1500 adversarial steps)
    atomssl pretrain --config reconstruct_pretrain --out runs/reconstruction/pretrain_long \
        trainer.max_epochs=30 optim.lr=2.0e-3
    atomssl gan --config gan_reconstruction_long --out runs/reconstruction/gan_long
    atomssl gan --config gan_reconstruction_long --out runs/reconstruction/gan_species loss.critic_positions=real
    atomssl gan --config gan_reconstruction_long --out runs/reconstruction/gan_megcritic \
        loss.critic_positions=real discriminator.checkpoint=src/atomssl/weights/default.pt
    atomssl gan --config gan_reconstruction_long --out runs/reconstruction/gan_compcritic \
        loss.critic_positions=real discriminator.composition=true
    atomssl gan --config gan_reconstruction_long --out runs/reconstruction/control_long loss.adversarial_weight=0
    # session 7: a species-only critic reading oxidation-state / electronegativity means
    atomssl gan --config gan_reconstruction_long --out runs/reconstruction/gan_chemcritic \
        loss.critic_positions=real discriminator.chemistry=true
    python benchmarks/reconstruction.py evaluate     # table + heatmaps
    python benchmarks/reconstruction.py probe        # can a composition critic tell repairs from real at all?
    python benchmarks/reconstruction.py report       # both markdown files from their committed json records

``evaluate`` corrupts every test crystal (seeded: the same corruption for every model) for
sigma in {0.1, 0.2} (x d_min) and mask in {species, random}, repairs it with each model under
both species decodings (arg-max, and SMACT-valid constrained decoding), and
reports CDVAE structure validity, SMACT composition validity (2014 and ICSD24 oxidation-state
sets), masked-species top-1 accuracy and position RMSD (A), with yardsticks (the real crystals'
own validity, the corrupted input's RMSD, the most-common-element accuracy). The control is the
same refinement run with the adversarial weight set to 0 (reconstruction losses only), so that
the adversarial term's own effect can be told apart from further training at sigma 0.2.

Writes ``runs/reconstruction/eval/{results.json, table.md, substitution_*.png}`` and copies
them to ``benchmarks/results/reconstruction*``; ``probe`` writes ``reconstruction_critic_probe.{json,md}``.
Each markdown's first line is the command that wrote it; ``report [--out DIR]`` rewrites both from
the json records in ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _outputs import RESULTS, ROOT, command_line, report_folder  # benchmarks/ is on sys.path

RUN = ROOT / "runs" / "reconstruction"
PROBE = "reconstruction_critic_probe"
COLUMNS = [
    ("structure_validity", "struct. valid"),
    ("composition_validity_smact14", "comp. valid (SMACT 2014)"),
    ("composition_validity_icsd24", "comp. valid (ICSD24)"),
    ("species_accuracy", "masked top-1"),
    ("rmsd_A", "RMSD (A)"),
]


def prepare(args) -> None:
    from ase.io import write

    from atomssl.data import load_matbench_dielectric, matbench_folds

    structures = load_matbench_dielectric()
    train, test = matbench_folds()[0]
    rng = np.random.default_rng(args.seed)
    train = [int(i) for i in rng.permutation(train) if structures[i].n_atoms <= args.max_atoms][
        : args.n_train
    ]
    test = [int(i) for i in rng.permutation(test) if structures[i].n_atoms <= args.max_atoms][
        : args.n_test
    ]
    (RUN / "data").mkdir(parents=True, exist_ok=True)
    write(RUN / "data" / "train.extxyz", [structures[i].to_ase() for i in train])
    np.save(RUN / "data" / "train_idx.npy", np.array(train))
    np.save(RUN / "data" / "test_idx.npy", np.array(test))
    print(
        f"{len(train)} training, {len(test)} test structures (<= {args.max_atoms} atoms) in {RUN / 'data'}"
    )


def probe(args) -> None:
    """How far could a composition critic tell real crystals from the generator's repairs at all?

    For each training crystal: the real composition and the generator's arg-max repair (sigma 0.2,
    species mask), both described by what a species-only critic can read: element fractions (119) or
    their oxidation-state / electronegativity means (``discriminator.chemistry``, 17). A classifier trained
    directly on that task (5-fold cross-validated balanced accuracy, repairs whose composition changed)
    bounds what the critic's gradient can carry; 0.5 is chance.
    """
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from atomssl.generate import Generator, composition_validity, corrupt_batch, generate
    from atomssl.generate._discriminator import chemistry_features, element_fractions
    from atomssl.generate._gan import load_graphs
    from atomssl.graph import collate
    from atomssl.task.denoise import graph_index

    torch.set_num_threads(1)
    gen = Generator.from_checkpoint(args.checkpoint).eval()
    graphs = load_graphs({"sources": [str(RUN / "data" / "train.extxyz")]}, cutoff=args.cutoff)
    g = torch.Generator().manual_seed(args.seed)
    real, fake, valid_real, valid_fake = [], [], [], []
    for i in range(0, len(graphs), 16):
        batch = collate(graphs[i : i + 16])
        with torch.no_grad():
            c = corrupt_batch(batch, args.mask, args.sigma, generator=g)
            rep, _, _ = generate(gen, batch, c, hard=True, gumbel=False)
        real.append(element_fractions(batch))
        fake.append(element_fractions(rep))
        gi = graph_index(batch)
        for k in range(int(gi.max()) + 1):
            valid_real.append(composition_validity(batch.z[gi == k].tolist()))
            valid_fake.append(composition_validity(rep.z[gi == k].tolist()))
    real, fake = torch.cat(real).double(), torch.cat(fake).double()
    changed = ((real - fake).abs().sum(1) > 1e-9).numpy()
    invalid = changed & ~np.array(valid_fake)
    ck = Path(args.checkpoint).resolve()
    ck = ck.relative_to(ROOT) if ck.is_relative_to(ROOT) else ck
    record = {
        "command": command_line(),
        "generator": str(ck),
        "n_real": len(real),
        "sigma": args.sigma,
        "mask": args.mask,
        "smact14_valid_real": float(np.mean(valid_real)),
        "smact14_valid_repairs": float(np.mean(valid_fake)),
        "composition_changed": float(changed.mean()),
        "rows": [],
    }
    for name, fn in (
        ("element fractions (119)", lambda x: x),
        ("oxidation-state means (17)", chemistry_features),
    ):
        for which, sel in (("changed composition", changed), ("SMACT-invalid", invalid)):
            X = np.r_[fn(real).numpy(), fn(fake).numpy()[sel]]
            y = np.r_[np.zeros(len(real)), np.ones(int(sel.sum()))]
            acc = [
                cross_val_score(
                    make_pipeline(StandardScaler(), clf), X, y, cv=5, scoring="balanced_accuracy"
                ).mean()
                for clf in (
                    LogisticRegression(max_iter=3000, class_weight="balanced"),
                    MLPClassifier((64,), max_iter=1000, random_state=args.seed),
                )
            ]
            record["rows"].append({"critic_input": name, "repairs": which, "n": int(sel.sum()),
                                   "logistic": float(acc[0]), "mlp": float(acc[1])})  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{PROBE}.json").write_text(json.dumps(record, indent=1) + "\n")
    text = probe_markdown(record, record["command"])
    print(text)
    (RESULTS / f"{PROBE}.md").write_text(text)


def probe_markdown(record: dict | None, command: str) -> str:
    lines = [f"Command: `{command}`", ""]
    if record is None:
        return "\n".join(lines + [
            "# Can a composition critic tell the generator's repairs from real crystals?", "",
            f"No raw record yet: awaits a re-run of `python benchmarks/reconstruction.py probe` (needs the "
            "generator `runs/reconstruction/pretrain_long/checkpoints/best.pt`, made by the stages in the "
            f"script's docstring), which writes `{PROBE}.json`. The earlier table (written by the probe "
            "stage without its command or a record file) is in git history, commit 4b0bad6."]) + "\n"  # fmt: skip
    lines += [f"Measured by: `{record['command']}`", ""]
    lines += [
        f"generator {record['generator']}, {record['n_real']} training crystals, sigma {record['sigma']}, "
        f"{record['mask']} mask: SMACT-2014 valid real {record['smact14_valid_real']:.1%}, repairs "
        f"{record['smact14_valid_repairs']:.1%}; composition changed in {record['composition_changed']:.1%}",
        "",
        "| critic input | repairs | n | logistic | MLP (64) |",
        "|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['critic_input']} | {r['repairs']} | {r['n']} | {r['logistic']:.3f} | {r['mlp']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _fmt(v: float, key: str) -> str:
    if v != v:
        return "-"
    return f"{v:.3f}" if key == "rmsd_A" else f"{100 * v:.1f}%"


def evaluate(args) -> None:
    import torch

    from atomssl.data import load_matbench_dielectric
    from atomssl.generate import (
        Generator,
        plot_substitution_map,
        reconstruct,
        reconstruction_metrics,
        substitution_counts,
        validity_report,
    )

    torch.set_num_threads(1)
    all_s = load_matbench_dielectric()
    test = [all_s[i] for i in np.load(RUN / "data" / "test_idx.npy")][: args.n_test]
    # slug -> (label, checkpoint); runs that are missing are skipped
    models = {
        "pretrained": ("pretrained only", RUN / "pretrain" / "checkpoints" / "best.pt"),
        "adversarial": (
            "adversarial (w_adv 0.1, lr_g 3e-4)",
            RUN / "gan" / "checkpoints" / "generator.pt",
        ),
        "control": (
            "control of w_adv 0.1 run (w_adv 0)",
            RUN / "control" / "checkpoints" / "generator.pt",
        ),
        "adversarial_w1": (
            "adversarial (w_adv 1.0, lr_g 1e-4)",
            RUN / "gan_w1" / "checkpoints" / "generator.pt",
        ),
        "control_w1": (
            "control of w_adv 1.0 run (w_adv 0)",
            RUN / "control_w1" / "checkpoints" / "generator.pt",
        ),
        # src/atomssl/configs/gan_reconstruction_long.yaml: 30-epoch generator, 400 classifier + 1500 adversarial steps
        "pretrained_long": (
            "pretrained only (30 epochs)",
            RUN / "pretrain_long" / "checkpoints" / "best.pt",
        ),
        "adversarial_long": (
            "adversarial (long)",
            RUN / "gan_long" / "checkpoints" / "generator.pt",
        ),
        "adversarial_species": (
            "adversarial, species-only critic (long)",
            RUN / "gan_species" / "checkpoints" / "generator.pt",
        ),
        "adversarial_megcritic": (
            "adversarial, species-only MEGNet critic (long)",
            RUN / "gan_megcritic" / "checkpoints" / "generator.pt",
        ),
        "adversarial_compcritic": (
            "adversarial, species-only critic reading composition (long)",
            RUN / "gan_compcritic" / "checkpoints" / "generator.pt",
        ),
        "adversarial_chemcritic": (
            "adversarial, species-only critic reading oxidation states (long)",
            RUN / "gan_chemcritic" / "checkpoints" / "generator.pt",
        ),
        "control_long": (
            "control of the long runs (w_adv 0)",
            RUN / "control_long" / "checkpoints" / "generator.pt",
        ),
    }
    models = {
        k: v for k, v in models.items() if v[1].is_file() and (not args.models or k in args.models)
    }
    out = RUN / "eval"
    out.mkdir(parents=True, exist_ok=True)
    real = validity_report(test)
    results = {"n_test": len(test), "real_crystals": real, "rows": []}
    t0 = time.perf_counter()
    for slug, (name, path) in models.items():
        if args.only and slug != args.only:
            continue
        cache = out / f"rows_{slug}.json"
        if cache.is_file() and cache.stat().st_mtime > path.stat().st_mtime and not args.only:
            part = json.loads(cache.read_text())  # evaluated earlier (same checkpoint file)
        else:
            part = {"rows": [], "substitutions": {}}
            gen = Generator.from_checkpoint(path).eval()
            for decoding in args.decodings:
                for sigma in args.sigmas:
                    for mask in ("species", "random"):
                        recs = reconstruct(
                            gen,
                            test,
                            mask,
                            sigma,
                            seed=args.seed,
                            steps=args.steps,
                            decoding=decoding,
                        )
                        m = reconstruction_metrics(recs)
                        part["rows"].append(
                            {
                                "model": name,
                                "slug": slug,
                                "checkpoint": str(path.relative_to(ROOT)),
                                "decoding": decoding,
                                "sigma": sigma,
                                "mask": mask,
                                **m,
                            }
                        )
                        print(
                            f"{name:30s} {decoding:6s} sigma {sigma} {mask:8s} "
                            + " ".join(f"{k}={m[k]:.3f}" for k, _ in COLUMNS),
                            flush=True,
                        )
                        if sigma == 0.1 and mask == "species":
                            counts = substitution_counts(recs)
                            tag = slug if decoding == "argmax" else f"{slug}_{decoding}"
                            plot_substitution_map(
                                counts,
                                out / f"substitution_{tag}.png",
                                order="period",
                                title=f"{name}, {decoding} decoding: substitutions (valid, changed "
                                "composition; sigma 0.1, species mask)",
                            )
                            part["substitutions"][tag] = {
                                f"{a}->{b}": n for (a, b), n in counts.most_common(30)
                            }
            cache.write_text(json.dumps(part, indent=1))
        for r in part["rows"]:
            r.update(model=name, slug=slug)
        results["rows"] += part["rows"]
        results.setdefault("substitutions", {}).update(part["substitutions"])
    if args.only:
        return
    results["seconds"] = time.perf_counter() - t0
    results["command"] = command_line()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = format_table(results, command_line())
    (out / "table.md").write_text(table)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.results_name
    shutil.copy(out / "results.json", RESULTS / f"{stem}.json")
    shutil.copy(out / "table.md", RESULTS / f"{stem}.md")
    for png in out.glob("substitution_*.png"):
        if any(
            png.stem.removeprefix("substitution_").removesuffix("_valid") == slug for slug in models
        ):
            shutil.copy(png, RESULTS / f"{stem}_{png.name}")


def format_table(results: dict, command: str) -> str:
    real = results["real_crystals"]
    measured = results.get("command")
    lines = [
        f"Command: `{command}`",
        "",
        *([f"Measured by: `{measured}`", ""] if measured else []),
        f"Held-out matbench_dielectric crystals (fold-0 test, <= 20 atoms): n = {results['n_test']}",
        "",
        f"Real crystals themselves: structure valid {100 * real['structure']:.1f}%, composition valid "
        f"{100 * real['composition_smact14']:.1f}% (SMACT 2014) / {100 * real['composition_icsd24']:.1f}% (ICSD24).",
        "",
        "| model | species decoding | sigma (x d_min) | mask | "
        + " | ".join(c for _, c in COLUMNS)
        + " | most-common-element top-1 | RMSD of corrupted input (A) |",
        "|---" * (len(COLUMNS) + 6) + "|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} | {r.get('decoding', 'argmax')} | {r['sigma']} | {r['mask']} | "
            + " | ".join(_fmt(r[k], k) for k, _ in COLUMNS)
            + f" | {_fmt(r['baseline_accuracy'], 'acc')} | {r['rmsd_corrupted_A']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def report(args) -> None:
    """Both markdown files from the json records in benchmarks/results (nothing is re-run)."""
    out = report_folder(args.out)
    command = command_line(args.argv)
    results = json.loads((RESULTS / f"{args.results_name}.json").read_text())
    (out / f"{args.results_name}.md").write_text(format_table(results, command))
    path = RESULTS / f"{PROBE}.json"
    record = json.loads(path.read_text()) if path.is_file() else None
    (out / f"{PROBE}.md").write_text(probe_markdown(record, command))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    r = sub.add_parser("report", help="rewrite the markdown from the committed json records")
    r.add_argument("--out", default=None, help="folder (default benchmarks/results)")
    r.add_argument("--results-name", default="reconstruction")
    r.set_defaults(func=report)
    a = sub.add_parser("prepare")
    a.add_argument("--n-train", type=int, default=2400)
    a.add_argument("--n-test", type=int, default=400)
    a.add_argument("--max-atoms", type=int, default=20)
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=prepare)
    q = sub.add_parser(
        "probe", help="how separable real and repaired compositions are for a composition critic"
    )
    q.add_argument(
        "--checkpoint",
        default=str(RUN / "pretrain_long" / "checkpoints" / "best.pt"),
        help="generator (default: the 30-epoch one of the long runs)",
    )
    q.add_argument("--sigma", type=float, default=0.2)
    q.add_argument("--mask", default="species", choices=["species", "random", "mixed"])
    q.add_argument("--cutoff", type=float, default=5.0)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=probe)
    e = sub.add_parser("evaluate")
    e.add_argument("--n-test", type=int, default=400)
    e.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.2])
    e.add_argument("--steps", type=int, default=1)
    e.add_argument(
        "--decodings", nargs="+", default=["argmax", "valid"], choices=["argmax", "valid"]
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--only",
        help="evaluate just this model (a slug, e.g. pretrained, adversarial_long) and cache its rows",
    )
    e.add_argument(
        "--models",
        nargs="+",
        help="slugs to include in the table (default: every model whose checkpoint exists)",
    )
    e.add_argument(
        "--results-name",
        default="reconstruction",
        help="stem of the copies in benchmarks/results/ (default reconstruction: .md, .json, _substitution_*.png)",
    )
    e.set_defaults(func=evaluate)
    args = p.parse_args(argv)
    args.argv = argv
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
