"""Import throughput into a sharded corpus, 1 and 2 worker processes (issue 21, item 5a).

A synthetic corpus of ``--n`` small crystals (``atomssl.train.synthetic_crystals``: 2-8 atoms,
strained and rattled, plus a random ``gap`` label) is written as ``--files`` extxyz files into a
temporary folder; then ``atomssl.data.import_shards`` (what ``atomssl data import SRC --out DIR
--shard-size N --workers K`` runs) imports it with each worker count, into a fresh folder each
time, interleaved (1, 2, 1, 2, ...) ``--repeats`` times; the best wall time per worker count is
the headline. Each run is checked to give the same corpus (rows per shard, manifest without
times). For reference, the two halves of the work are timed alone in this process: parsing with
validation (``iter_entries``, what the workers do) and writing already parsed structures (the
single writer).

The machine is shared (2 cores, other engineers' jobs): load averages before and after are
recorded, and CPU time (this process and its workers) is given beside wall time.

Outputs ``scale_import.md`` (first line: the command) and ``scale_import.json`` in ``--out``
(default ``benchmarks/results``); ``--quick`` runs a small corpus and writes to a temporary folder
(or ``--out``, never ``benchmarks/results``).

    nice .venv/bin/python benchmarks/scale_import.py            # 20,000 structures, a few minutes
    .venv/bin/python benchmarks/scale_import.py --quick         # smoke test
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the spawned parse workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def write_inputs(folder: Path, n: int, files: int, seed: int) -> list[str]:
    import ase.io
    import numpy as np

    from atomssl.train import synthetic_crystals

    rng = np.random.default_rng(seed)
    structures = synthetic_crystals(n, seed=seed)
    paths = []
    per = -(-n // files)
    for k in range(files):
        chunk = structures[k * per : (k + 1) * per]
        if not chunk:
            break
        frames = []
        for s in chunk:
            atoms = s.to_ase()
            atoms.info["gap"] = float(rng.gamma(2.0, 1.0))
            frames.append(atoms)
        path = folder / f"part{k:04d}.extxyz"
        ase.io.write(path, frames, format="extxyz")
        paths.append(str(path))
    return paths


def _corpus_key(folder: Path) -> tuple:
    """What must not depend on the worker count: the manifest minus times and shard digests/sizes
    (rows record their write time, so shard files differ by a few bytes between any two runs)."""
    m = json.loads((folder / "manifest.json").read_text())
    for key in ("created", "updated", "completed"):
        m.pop(key, None)
    for rec in m["shards"]:
        rec.pop("sha256")
        rec.pop("bytes")
    return json.dumps(m, sort_keys=True), tuple(rec["count"] for rec in m["shards"])


def time_import(paths: list[str], out: Path, workers: int, shard_size: int) -> dict:
    from atomssl.data import import_shards

    shutil.rmtree(out, ignore_errors=True)
    c0, t0 = _cpu(), time.perf_counter()
    report = import_shards(paths, out, shard_size=shard_size, workers=workers)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"workers": workers, "structures": report.n_written, "shards": report.n_shards, "wall_s": wall, "cpu_s": cpu,
            "structures_per_s": report.n_written / wall, "key": _corpus_key(out)}  # fmt: skip


def time_halves(paths: list[str], out: Path, shard_size: int) -> dict:
    """Parsing + validation alone, and writing already parsed structures alone (one process)."""
    from atomssl.data import import_shards, iter_entries

    t0 = time.perf_counter()
    structures = list(iter_entries(paths, validate=True))
    parse = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    import_shards(structures, out, shard_size=shard_size, validate=False)
    write = time.perf_counter() - t0
    n = len(structures)
    return {
        "parse_validate_per_s": n / parse,
        "write_per_s": n / write,
        "parse_s": parse,
        "write_s": write,
    }


def render(rep: dict) -> str:
    s = rep["settings"]
    lines = [
        f"`{rep['command']}`",
        "",
        "# Import throughput into a sharded corpus (issue 21, item 5a)",
        "",
        f"- date: {rep['date']}",
        f"- machine: {rep['machine']['cpu']}, {rep['machine']['cores_allowed']} cores allowed, "
        f"Python {rep['machine']['python']}; load average before {rep['load_before']}, after {rep['load_after']} "
        "(shared machine: other engineers' jobs run beside this one)",
        f"- corpus: {s['n']} synthetic crystals (2-8 atoms) in {s['files']} extxyz files; shard size {s['shard_size']}; "
        f"best of {s['repeats']} interleaved runs per worker count",
        f"- versions: {', '.join(f'{k} {v}' for k, v in rep['versions'].items())}",
        "",
        "| workers | structures/s (best) | wall s (best) | CPU s (that run) | all runs, structures/s |",
        "|---:|---:|---:|---:|---|",
    ]
    for w, best in rep["best"].items():
        runs = ", ".join(
            f"{r['structures_per_s']:.0f}" for r in rep["runs"] if str(r["workers"]) == w
        )
        lines.append(
            f"| {w} | {best['structures_per_s']:.0f} | {best['wall_s']:.2f} | {best['cpu_s']:.2f} | {runs} |"
        )
    h = rep["halves"]
    p, w = h["parse_validate_per_s"], h["write_per_s"]
    lines += [
        "",
        f"Speed-up with 2 workers: {rep['speedup']:.2f}x (best runs). Same corpus (rows, manifest without times) "
        f"for every run: {rep['identical']}.",
        "",
        f"The two halves timed alone in one process: parse + validate {p:.0f} structures/s, write shards (ASE row "
        f"encoding + zlib + LMDB) {w:.0f} structures/s. One process doing both can reach 1/(1/{p:.0f} + 1/{w:.0f}) = "
        f"{1 / (1 / p + 1 / w):.0f}/s. With workers, parsing moves out of the writer's process, so the import is bounded "
        f"by the single writer ({w:.0f}/s) and by the CPUs: on {rep['machine']['cores_allowed']} cores shared by the "
        f"writer and its workers, {rep['machine']['cores_allowed']}/(1/{p:.0f} + 1/{w:.0f}) = "
        f"{rep['machine']['cores_allowed'] / (1 / p + 1 / w):.0f}/s. Runs far below these bounds lost CPU time to "
        "other jobs on the shared machine (compare wall and CPU seconds).",
        "",
    ]
    return "\n".join(lines)


def output_folder(out: Path | None, quick: bool) -> Path:
    if not quick:
        return out or RESULTS
    if out is None:
        return Path(tempfile.mkdtemp(prefix="atomssl-scale-import-quick-"))
    if out.resolve() == RESULTS.resolve() or out.resolve().is_relative_to(RESULTS.resolve()):
        raise SystemExit("--quick must not write into benchmarks/results: give another --out")
    return out


def _versions() -> dict:
    out = {}
    for dist in ("ase", "ase-db-backends", "lmdb", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="structures (default 20000; --quick 800)")
    ap.add_argument(
        "--files",
        type=int,
        default=None,
        help="extxyz files they are written to (default 40; --quick 8)",
    )
    ap.add_argument("--shard-size", type=int, default=5000)
    ap.add_argument(
        "--repeats", type=int, default=None, help="runs per worker count (default 2; --quick 1)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--quick", action="store_true", help="a small corpus; report outside benchmarks/results"
    )
    ap.add_argument(
        "--out", type=Path, default=None, help="report folder (default benchmarks/results)"
    )
    args = ap.parse_args(argv)
    n = args.n or (800 if args.quick else 20000)
    files = args.files or (8 if args.quick else 40)
    repeats = args.repeats or (1 if args.quick else 2)
    out = output_folder(args.out, args.quick)
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="atomssl-scale-import-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        t0 = time.perf_counter()
        paths = write_inputs(tmp / "in", n, files, args.seed)
        print(
            f"wrote {n} structures in {len(paths)} files ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        for r in range(repeats):
            for workers in (1, 2):
                run = time_import(paths, tmp / f"corpus-{workers}", workers, args.shard_size)
                runs.append(run)
                print(f"run {r + 1}, workers {workers}: {run['structures_per_s']:.0f} structures/s "
                      f"({run['wall_s']:.2f} s wall, {run['cpu_s']:.2f} s CPU)", flush=True)  # fmt: skip
        halves = time_halves(paths, tmp / "halves", args.shard_size)
    identical = len({r["key"] for r in runs}) == 1
    best = {
        str(w): max((r for r in runs if r["workers"] == w), key=lambda r: r["structures_per_s"])
        for w in (1, 2)
    }
    env = "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS",) if k in os.environ)
    rep = {
        "command": f"{env}nice .venv/bin/python benchmarks/scale_import.py"
        + (" " + shlex.join(argv) if argv else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "settings": {
            "n": n,
            "files": len(paths),
            "shard_size": args.shard_size,
            "repeats": repeats,
            "seed": args.seed,
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores_allowed": len(os.sched_getaffinity(0)),
            "cpus_visible": os.cpu_count(),
            "python": platform.python_version(),
        },  # fmt: skip
        "versions": _versions(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "runs": [{k: v for k, v in r.items() if k != "key"} for r in runs],
        "best": {w: {k: v for k, v in r.items() if k != "key"} for w, r in best.items()},
        "speedup": best["2"]["structures_per_s"] / best["1"]["structures_per_s"],
        "identical": identical,
        "halves": halves,
    }
    from atomssl.utils import atomic_write, write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "scale_import.json", rep)
    with atomic_write(out / "scale_import.md", "w") as fh:
        fh.write(render(rep))
    print(f"1 worker {best['1']['structures_per_s']:.0f}/s, 2 workers {best['2']['structures_per_s']:.0f}/s "
          f"({rep['speedup']:.2f}x); same corpus: {identical}; wrote {out / 'scale_import.md'}")  # fmt: skip
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
