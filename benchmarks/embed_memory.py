"""Peak memory of ``atomssl embed`` on one large snapshot (issue: 100k atoms within 8 GiB).

Writes an fcc Cu supercell with thermal noise (the densest common metal packing: ~18 neighbours
within the default 4 A cutoff) of about ``--atoms`` atoms to an extxyz file, runs the real
``atomssl embed`` command on it in a child process, and reports the child's peak resident memory
(``getrusage(RUSAGE_CHILDREN).ru_maxrss``), wall time and output shapes.

The backbone is the shipped default checkpoint when this build has one, else a checkpoint of the
same architecture (``src/atomssl/configs/pretrain_default.yaml``) with fresh weights: memory does not depend
on the weight values.

    OMP_NUM_THREADS=1 python benchmarks/embed_memory.py --atoms 100000 --atoms 200000 \\
        --out benchmarks/results/embed_memory.md
    # the unchunked forward, for comparison:
    OMP_NUM_THREADS=1 python benchmarks/embed_memory.py --atoms 100000 -- --max-edges-per-chunk 0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3


def snapshot(n_atoms: int, path: Path, seed: int = 0) -> int:
    """An fcc Cu supercell of at least ``n_atoms`` atoms, rattled by 0.05 A; returns its size."""
    import ase.io
    import numpy as np
    from ase.build import bulk

    reps = int(np.ceil((n_atoms / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((reps, reps, reps))
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.05, atoms.positions.shape)
    ase.io.write(path, atoms)
    return len(atoms)


def checkpoint(folder: Path) -> tuple[Path, str]:
    from atomssl.train import default_checkpoint

    shipped = default_checkpoint()
    if shipped is not None:
        return shipped, "shipped default.pt"
    import yaml

    from atomssl.representation import build_backbone
    from atomssl.train import save_checkpoint

    cfg = yaml.safe_load(
        (ROOT / "src" / "atomssl" / "configs" / "pretrain_default.yaml").read_text()
    )["backbone"]
    path = folder / "fresh.pt"
    save_checkpoint(path, build_backbone(cfg))
    return path, f"fresh weights, {cfg}"


def measure(n_atoms: int, folder: Path, ck: Path, extra: list[str]) -> dict:
    """Run ``atomssl embed`` in a child (via a one-shot parent, so RUSAGE_CHILDREN is its alone)."""
    snap = folder / f"snapshot_{n_atoms}.extxyz"
    n = snapshot(n_atoms, snap)
    out = folder / f"emb_{n_atoms}.npz"
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "dt = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps({'rc': r.returncode, 'seconds': dt, 'peak': peak, 'stderr': r.stderr[-2000:], 'stdout': r.stdout[-500:]}))\n"
    )
    cmd = [
        sys.executable,
        "-c",
        probe,
        sys.executable,
        "-m",
        "atomssl.cli.main",
        "embed",
        str(snap),
        "--checkpoint",
        str(ck),
        "--out",
        str(out),
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    import json

    res = json.loads(
        subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    )
    if res["rc"] != 0:
        raise SystemExit(f"atomssl embed failed on {n} atoms:\n{res['stderr']}")
    import numpy as np

    with np.load(out) as z:
        shapes = {k: tuple(z[k].shape) for k in ("structure", "atom")}
        finite = bool(np.isfinite(z["structure"]).all() and np.isfinite(z["atom"]).all())
    return {
        "atoms": n,
        "peak_gib": res["peak"] / GIB,
        "seconds": res["seconds"],
        "shapes": shapes,
        "finite": finite,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--atoms", type=int, action="append", help="snapshot size (repeatable; default 100000)"
    )
    p.add_argument("--out", type=Path, help="write a markdown table here")
    p.add_argument("--limit-gib", type=float, default=8.0)
    p.add_argument("embed_args", nargs="*", help="extra arguments for atomssl embed (after --)")
    args = p.parse_args(argv)
    sizes = args.atoms or [100_000]
    from atomssl.train._embed import DEFAULT_MAX_EDGES_PER_CHUNK as DEFAULT_CHUNK

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ck, what = checkpoint(folder)
        for n in sizes:
            r = measure(n, folder, ck, args.embed_args)
            rows.append(r)
            print(
                f"{r['atoms']} atoms: peak RSS {r['peak_gib']:.2f} GiB, {r['seconds']:.1f} s, {r['shapes']}, finite={r['finite']}",
                flush=True,
            )
    lines = [
        "# `atomssl embed` peak memory on one large snapshot",
        "",
        f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')} python benchmarks/embed_memory.py "
        + " ".join(f"--atoms {n}" for n in sizes)
        + (" -- " + " ".join(args.embed_args) if args.embed_args else "")
        + "`",
        f"Backbone: {what}. Snapshot: rattled fcc Cu supercell (0.05 A noise), one structure.",
        "Chunking: "
        + (
            " ".join(args.embed_args)
            if "--max-edges-per-chunk" in " ".join(args.embed_args)
            else f"`atomssl embed` default, bonds processed {DEFAULT_CHUNK} at a time (`--max-edges-per-chunk`)"
        )
        + ".",
        f"Machine: {os.cpu_count()} CPU cores visible; peak resident memory of the `atomssl embed` process.",
        "",
        f"| atoms | peak RSS (GiB) | within {args.limit_gib:g} GiB | wall time (s) | structure / atom embeddings | finite |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "yes" if r["peak_gib"] <= args.limit_gib else "NO"
        lines.append(
            f"| {r['atoms']} | {r['peak_gib']:.2f} | {ok} | {r['seconds']:.1f} | {r['shapes']['structure']} / {r['shapes']['atom']} | {r['finite']} |"
        )
    table = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    print(table)
    return 0 if all(r["peak_gib"] <= args.limit_gib for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
