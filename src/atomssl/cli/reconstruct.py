"""``atomssl reconstruct`` (corrupt a crystal and repair it with a pretrained generator) and
``atomssl gan`` (adversarial refinement of the generator); both live here because
``cli/main.py`` imports one module per verb list entry."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reconstruct",
        help="mask and perturb a crystal, then repair it with a pretrained generator",
        description=(
            "Corrupt STRUCTURE (mask species, add sigma x d_min Gaussian noise) and repair it with a "
            "mask_denoise-pretrained generator (or a GAN-refined one). Writes OUT/corrupted.extxyz "
            "(masked atoms as X), OUT/repaired.extxyz and OUT/repaired.cif, and prints validity and accuracy. "
            "A STRUCTURE with masked sites (X, e.g. a corrupted.extxyz) is repaired as it is: the species of "
            "exactly its X sites are predicted, positions kept (--denoise: also move atoms by the predicted "
            "noise); --mask/--sigma/--seed do not apply. "
            "Example: atomssl reconstruct NaCl.cif --mask species --sigma 0.1 --checkpoint runs/gan/checkpoints/generator.pt"
        ),
    )
    p.add_argument(
        "structure", metavar="STRUCTURE", help="structure file (any format atomssl reads)"
    )
    p.add_argument(
        "--checkpoint",
        "-k",
        required=True,
        help="generator checkpoint (pretraining with mask_denoise, or gan)",
    )
    p.add_argument(
        "--mask",
        choices=["species", "random", "mixed"],
        default="species",
        help="mask every atom of one species, 15%% of atoms, or either (default: species)",
    )
    p.add_argument(
        "--sigma",
        type=float,
        default=0.1,
        help="noise std in units of the minimum interatomic distance",
    )
    p.add_argument("--steps", type=int, default=1, help="denoising iterations (default 1)")
    p.add_argument(
        "--decode",
        choices=["argmax", "valid"],
        default="argmax",
        help="species of masked atoms: each atom's most probable element (argmax, default) or the most "
        "probable assignment whose composition passes SMACT (valid)",
    )
    p.add_argument(
        "--oxidation-states",
        choices=["smact14", "icsd24"],
        default="smact14",
        help="SMACT oxidation-state set for --decode valid (default smact14, as CDVAE)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--index", type=int, default=0, help="which structure of a multi-structure file (default 0)"
    )
    p.add_argument(
        "--denoise",
        action="store_true",
        help="for a STRUCTURE with masked (X) sites: also move every atom by minus the predicted noise "
        "(default: positions kept as given)",
    )
    p.add_argument(
        "--out", "-o", default="reconstruction", help="output folder (default ./reconstruction)"
    )
    p.set_defaults(func=run)

    g = subparsers.add_parser(
        "gan",
        help="refine a pretrained generator adversarially (masked crystal reconstruction)",
        description=(
            "Adversarial refinement: critic initialised from a real-vs-reconstructed classifier, "
            "differentiable species (Gumbel-softmax) and positions, reconstruction losses kept. "
            "Writes a run folder with config.yaml, classifier.csv, metrics.csv, checkpoints/"
            "(generator.pt, discriminator.pt, last.pt), logs/, loss_curve.png and summary.json. "
            "Example: atomssl gan --config gan train.steps=100"
        ),
    )
    g.add_argument(
        "--config",
        "-c",
        help="YAML file, or a packaged config by name (atomssl config list: gan*); "
        "optional with --resume",
    )
    g.add_argument("--out", "-o", help="run folder (default: runs/gan-<date>-<time>)")
    g.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from checkpoints/last.pt (its config.yaml unless "
        "--config is given)",
    )
    g.add_argument("--steps", type=int, help="shortcut for train.steps=N")
    g.add_argument("--devices", help="devices per node; shortcut for trainer.devices")
    g.add_argument("--strategy", help="'ddp' for several processes; shortcut for trainer.strategy")
    g.add_argument("--accelerator", help="cpu, gpu or auto; shortcut for trainer.accelerator")
    g.add_argument("--num-nodes", type=int, help="shortcut for trainer.num_nodes")
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=50"
    )
    g.set_defaults(func=run_gan)


def run(args: argparse.Namespace) -> int:
    from ase.io import write

    from ..data import read
    from ..errors import ConfigError
    from ..generate import Generator, composition_validity, reconstruct, structure_validity

    if not args.sigma >= 0:
        raise ConfigError(f"--sigma must be >= 0, got {args.sigma}")
    from ._paths import run_folder

    run_folder(
        args.out
    )  # before any work: the output folder is created only inside an existing one
    structures = read(args.structure, allow_masked=True)  # X sites: the species to predict
    if not isinstance(structures, list):
        structures = [structures]
    if not 0 <= args.index < len(structures):
        raise ConfigError(
            f"{args.structure}: --index {args.index} out of range ({len(structures)} structure(s))"
        )
    structure = structures[args.index]
    gen = Generator.from_checkpoint(args.checkpoint)
    if (structure.numbers == 0).any():
        return _repair_masked(gen, structure, args)
    if args.denoise:
        raise ConfigError(
            "--denoise applies to a structure with masked (X) sites; this one has none"
        )
    rec = reconstruct(
        gen,
        [structure],
        args.mask,
        args.sigma,
        seed=args.seed,
        steps=args.steps,
        decoding=args.decode,
        oxidation_states=args.oxidation_states,
    )[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "corrupted.extxyz", rec.corrupted.wrapped().to_ase())
    repaired = rec.repaired.wrapped()
    write(out / "repaired.extxyz", repaired.to_ase())
    write(out / "repaired.cif", repaired.to_ase())
    n_mask = int(rec.mask.sum())
    print(f"original   {rec.original.formula}")
    print(
        f"corrupted  {n_mask} of {rec.original.n_atoms} atoms masked, noise sigma {args.sigma} x d_min "
        f"({args.sigma * rec.d_min:.3f} A), position RMSD {_rmsd(rec, 'corrupted'):.3f} A"
    )
    print(
        f"repaired   {rec.repaired.formula}: masked species correct {int(rec.species_correct.sum())}/{n_mask}, "
        f"position RMSD {_rmsd(rec, 'repaired'):.3f} A"
    )
    print(
        f"validity   structure {structure_validity(repaired)}, composition (smact14) "
        f"{composition_validity(repaired, 'smact14')}, (icsd24) {composition_validity(repaired, 'icsd24')}"
    )
    print(f"wrote {out / 'corrupted.extxyz'}, {out / 'repaired.extxyz'}, {out / 'repaired.cif'}")
    return 0


def _repair_masked(gen, structure, args: argparse.Namespace) -> int:
    """Repair a user's structure whose unknown sites are ``X``: predict the species of exactly
    those sites (no further masking or noise); positions are kept unless ``--denoise``."""
    import numpy as np
    from ase.data import chemical_symbols
    from ase.io import write

    from ..generate import composition_validity, repair, structure_validity

    masked = np.flatnonzero(structure.numbers == 0)
    if len(masked) == structure.n_atoms:
        # nothing left to condition on: the generator would guess from positions alone
        print(f"note: every site of {structure.where()} is masked (X)")
    ((repaired, probs),) = repair(
        gen,
        [structure],
        steps=args.steps,
        decoding=args.decode,
        oxidation_states=args.oxidation_states,
    )
    if not args.denoise:
        repaired = repaired.copy(positions=structure.positions.copy())
    repaired = repaired.copy(
        warnings=list(structure.warnings)
        + [f"species of masked site(s) {masked.tolist()} predicted by {Path(args.checkpoint).name}"]
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "repaired.extxyz", repaired.to_ase())
    write(out / "repaired.cif", repaired.wrapped().to_ase())
    print(
        f"input      {structure.formula} from {structure.where()}: {len(masked)} of {structure.n_atoms} sites masked (X)"
    )
    choice = ", ".join(
        f"{int(i)}: {chemical_symbols[int(repaired.numbers[i])]} (p={probs[k, repaired.numbers[i] - 1]:.2f})"
        for k, i in enumerate(masked)
    )
    moved = "atoms moved by the predicted noise" if args.denoise else "positions as given"
    print(f"repaired   {repaired.formula} ({moved}); predicted species of site(s) {choice}")
    print(
        f"validity   structure {structure_validity(repaired)}, composition (smact14) "
        f"{composition_validity(repaired, 'smact14')}, (icsd24) {composition_validity(repaired, 'icsd24')}"
    )
    print(f"wrote {out / 'repaired.extxyz'}, {out / 'repaired.cif'}")
    return 0


def _rmsd(rec, which: str) -> float:
    import numpy as np

    d = rec.displacement(which)
    return float(np.sqrt((d**2).sum(-1).mean()))


def run_gan(args: argparse.Namespace) -> int:
    import json

    from ..errors import ConfigError
    from ..generate import gan
    from ..generate._gan import load_gan_run_config
    from ..utils import load_config
    from ._paths import check_checkpoint, run_folder

    overrides = list(args.overrides) + _gan_shortcuts(args)
    if args.resume:
        if args.out and args.out != args.resume:
            raise ConfigError("--resume RUN_DIR already names the run folder; drop --out")
        base = None if args.config else load_gan_run_config(args.resume)
        config = load_config(args.config, base, overrides, schema="gan")
    elif not args.config:
        raise ConfigError("give --config FILE.yaml (or --resume RUN_DIR)")
    else:
        run_folder(args.out)
        config = load_config(args.config, None, overrides, schema="gan")
    for part in ("generator", "discriminator"):  # before a run folder exists
        check_checkpoint((config.get(part) or {}).get("checkpoint"))
    summary = gan(config, run_dir=args.resume or args.out, progress=not args.no_progress,
                  resume=bool(args.resume))  # fmt: skip
    if not summary:  # a DDP rank other than 0
        return 0
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "steps",
                    "structures",
                    "seconds",
                    "classifier_final_accuracy",
                    "generator_checkpoint",
                )
            },
            indent=1,
        )
    )
    return 0


def _gan_shortcuts(args: argparse.Namespace) -> list[str]:
    flags = (("steps", "train.steps"), ("devices", "trainer.devices"),
             ("strategy", "trainer.strategy"), ("accelerator", "trainer.accelerator"),
             ("num_nodes", "trainer.num_nodes"), ("seed", "seed"))  # fmt: skip
    return [
        f"{key}={getattr(args, flag)}" for flag, key in flags if getattr(args, flag) is not None
    ]
