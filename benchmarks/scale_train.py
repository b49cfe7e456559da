"""Training at scale (issue 21, item 5 b-d): streaming throughput, peak memory against corpus size,
DDP scaling.

(b) Throughput: the same model (``src/atomssl/configs/pretrain_default.yaml``'s MEGNet and tasks), batch and
    seed, trained from the in-memory list (the corpus's source extxyz files read and every graph
    built before training) and streamed from a sharded corpus of the same structures in the same
    order (graphs built in the training process, or in one DataLoader worker). Training
    structures/s is Lightning's epoch time, median over epochs after the first. Goal: streamed
    >= 0.9x in-memory. The runs must also reach the same losses (same batches).
(c) Peak RSS of a streamed pretraining run over synthetic corpora of 10^4, 10^5 and 10^6 small
    crystals (``--sizes``), ``data.num_workers: 0`` (one process holds everything). Every size
    trains the same ``--rss-steps`` steps (the epoch is capped with ``trainer.limit_train_batches``:
    a full epoch of 10^6 structures is hours on 2 CPU cores); opening the corpus, the split and
    the epoch's permutation of every structure are in the measurement. Goal: flat within 10%. For
    contrast, the in-memory path's peak RSS at the sizes up to 10^5.
(d) DDP on ``--accelerator`` (gloo on CPU): 1 process vs 2 (``--strategy ddp --devices 2``), the
    same steps per process; structures/s per process. Goal: 2-process rate >= 0.8x of 1-process.
    Skipped on a GPU machine with fewer than 2 GPUs.

Corpora are generated once into ``--work`` (``extxyz`` files of 10^4 structures, then
``atomssl.data.import_shards``, what ``atomssl data import SRC --out DIR`` runs) and reused by later
runs. When the projected time to create the largest corpus (from the measured rate at the size
below it) exceeds ``--max-create-s``, it is assembled from copies of the next smaller corpus's
shards instead (the same structures repeated; each index is still read on its own, which is all
the RSS measurement needs) and the report says so.

Every training run is the real ``atomssl pretrain`` command in a child process (``OMP_NUM_THREADS=1``
on CPU); its peak RSS is ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper that only starts it.
The machine is shared: load averages are recorded before and after each part.

Outputs ``scale_train.md`` (first line: the command) and ``scale_train.json`` in ``--out``
(default ``benchmarks/results``), written atomically; ``--quick`` uses small corpora and few steps
and writes to a temporary folder (or ``--out``, never ``benchmarks/results``).

    nice .venv/bin/python benchmarks/scale_train.py                    # ~10 min on 2 CPU cores (+2 to make corpora)
    .venv/bin/python benchmarks/scale_train.py --quick                 # smoke test, ~1.5 min
    python benchmarks/scale_train.py --accelerator gpu                 # the same on a GPU machine
    .venv/bin/python benchmarks/scale_train.py --report-only           # scale_train.md again from its .json
    .venv/bin/python benchmarks/scale_train.py --parts c               # re-measure (c) only, keep (b) and (d)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CHUNK = 10_000  # structures per source extxyz file and per shard

# A wrapper that starts one command and reports the peak RSS of its process tree (largest member,
# from getrusage) and, sampled every 20 ms, the peaks of the command's own anonymous and file-backed
# resident memory (/proc/PID/status RssAnon, RssFile: the memory-mapped corpus shards are file-backed)
_WRAP = """
import json, resource, subprocess, sys, time
def rss(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("RssAnon:", "RssFile:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        pass
    return out
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:])
peak = {"RssAnon": 0, "RssFile": 0}
while proc.poll() is None:
    for k, v in rss(proc.pid).items():
        peak[k] = max(peak[k], v)
    time.sleep(0.02)
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print("@@RESULT " + json.dumps({"rc": proc.returncode, "wall_s": time.perf_counter() - t, "maxrss_kib": use.ru_maxrss,
                                "anon_kib": peak["RssAnon"], "file_kib": peak["RssFile"], "cpu_s": use.ru_utime + use.ru_stime}))
"""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _model() -> dict:
    cfg = yaml.safe_load(
        (ROOT / "src" / "atomssl" / "configs" / "pretrain_default.yaml").read_text()
    )
    return {
        "backbone": cfg["backbone"],
        "tasks": cfg["tasks"],
        "optim": {**cfg["optim"], "warmup_steps": 0},
    }


# ------------------------------------------------------------------------------ corpora
def _write_chunk(path: Path, start: int, n: int) -> None:
    import ase.io

    from atomssl.train import synthetic_crystals

    frames = []
    for i, s in enumerate(synthetic_crystals(n, seed=start // CHUNK + 1)):
        atoms = s.to_ase()
        atoms.info["id"] = f"synthetic-{start + i}"
        frames.append(atoms)
    tmp = path.with_name(f".{path.name}.tmp")
    ase.io.write(tmp, frames, format="extxyz")
    os.replace(tmp, path)


def source_files(work: Path, n: int) -> list[Path]:
    """extxyz files holding structures 0..n-1 (``CHUNK`` a file; a smaller last one), made once."""
    folder = work / "sources"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        path = folder / f"s{start:08d}-{size}.extxyz"
        if not path.is_file():
            _write_chunk(path, start, size)
        files.append(path)
    return files


def _complete(folder: Path, n: int) -> bool:
    try:
        m = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(m.get("complete")) and int(m.get("n_structures", -1)) == n


def make_corpus(work: Path, n: int) -> dict:
    """The corpus of ``n`` synthetic structures (imported once; the record of how, and how long)."""
    from atomssl.data import import_shards

    folder = work / f"corpus-{n}"
    record_path = work / f"corpus-{n}.json"
    if _complete(folder, n) and record_path.is_file():
        return {**json.loads(record_path.read_text()), "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    files = source_files(work, n)
    t1 = time.perf_counter()
    import_shards([str(f) for f in files], folder, shard_size=CHUNK, workers=1)
    t2 = time.perf_counter()
    record = {"n": n, "path": str(folder), "method": "import", "sources_s": round(t1 - t0, 1), "import_s": round(t2 - t1, 1),
              "bytes": sum(p.stat().st_size for p in folder.iterdir())}  # fmt: skip
    record_path.write_text(json.dumps(record))
    return {**record, "reused": False}


def replicate_corpus(work: Path, base: dict, copies: int, why: str) -> dict:
    """A corpus of ``copies`` x the structures of ``base``: its shard files copied, the manifest's
    shard list repeated (the same rows again; enough for a memory measurement, not for training)."""
    n = base["n"] * copies
    folder = work / f"corpus-{n}"
    record_path = work / f"corpus-{n}.json"
    if _complete(folder, n) and record_path.is_file():
        return {**json.loads(record_path.read_text()), "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    manifest = json.loads((Path(base["path"]) / "manifest.json").read_text())
    shards, first = [], 0
    for _copy in range(copies):
        for rec in manifest["shards"]:
            name = f"shard-{len(shards):05d}.aselmdb"
            shutil.copyfile(Path(base["path"]) / rec["file"], folder / name)
            shards.append({**rec, "file": name, "first": first})
            first += int(rec["count"])
    manifest.update(
        shards=shards,
        n_structures=first,
        note=f"{copies} copies of the shards of {base['path']} (benchmarks/scale_train.py)",
    )
    (folder / "manifest.json").write_text(json.dumps(manifest))
    record = {"n": n, "path": str(folder), "method": f"{copies} copies of the {base['n']}-structure corpus's shards",
              "copy_s": round(time.perf_counter() - t0, 1), "bytes": sum(p.stat().st_size for p in folder.iterdir()), "why": why}  # fmt: skip
    record_path.write_text(json.dumps(record))
    return {**record, "reused": False}


# ---------------------------------------------------------------------------- training
def _config(sources: list[str], *, in_memory: bool, workers: int | str, steps: int, epochs: int, accelerator: str, batch: int,
            val_fraction: float = 0.0, val_batches: int = 0, devices: int = 1, strategy: str = "auto") -> dict:  # fmt: skip
    return {
        "seed": 0,
        **_model(),
        "data": {
            "sources": sources,
            "in_memory": in_memory,
            "num_workers": workers,
            "batch_size": batch,
            "val_fraction": val_fraction,
        },
        "trainer": {
            "max_epochs": epochs,
            "accelerator": accelerator,
            "devices": devices,
            "strategy": strategy,
            "limit_train_batches": steps,
            "limit_val_batches": val_batches,
            "log_every_n_steps": 50,
        },  # fmt: skip
    }


def run_pretrain(work: Path, name: str, config: dict, accelerator: str) -> dict:
    """``atomssl pretrain`` in a child process: summary, wall time, peak RSS (KiB) of its process tree."""
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cfg_path = work / "runs" / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    if accelerator == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    for key in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "ATOMSSL_RUN_DIR"):
        env.pop(key, None)
    cmd = [sys.executable, "-c", _WRAP, sys.executable, "-m", "atomssl.cli.main", "pretrain", "--config", str(cfg_path),
           "--out", str(run_dir), "--no-progress"]  # fmt: skip
    load = _load()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (work / "runs" / f"{name}.log").write_text(proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT ")]
    res = json.loads(lines[-1][9:]) if lines else {"rc": proc.returncode}
    if res.get("rc") != 0:
        raise RuntimeError(
            f"run {name} failed (rc {res.get('rc')}); see {work / 'runs' / (name + '.log')}:\n{proc.stderr[-3000:]}"
        )
    summary = json.loads((run_dir / "summary.json").read_text())
    world = int(config["trainer"]["devices"])
    rate = summary.get("structures_per_s")
    return {
        "name": name,
        "structures_per_s": rate,
        "per_process": None if rate is None else rate / world,
        "processes": world,
        "reached": [t["reached"] for t in summary["tasks"]],
        "peak_rss_mib": res["maxrss_kib"] / 1024,
        "peak_anon_mib": res.get("anon_kib", 0) / 1024,
        "peak_file_mib": res.get("file_kib", 0) / 1024,
        "wall_s": round(res["wall_s"], 1),
        "cpu_s": round(res["cpu_s"], 1),
        "load_before": load,
    }


def baseline_rss(work: Path) -> float:
    """Peak RSS (MiB) of a process that only imports atomssl's trainer and Lightning."""
    cmd = [
        sys.executable,
        "-c",
        _WRAP,
        sys.executable,
        "-c",
        "import atomssl.train, lightning, torch",
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1")
    ).stdout
    return (
        json.loads([ln for ln in out.splitlines() if ln.startswith("@@RESULT ")][-1][9:])[
            "maxrss_kib"
        ]
        / 1024
    )


# ------------------------------------------------------------------------------ report
def _fmt(v, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def report_md(r: dict) -> str:
    lines = [
        f"`{r['command']}`",
        "",
        "# Training at scale: streaming, memory, DDP (issue 21, items 5b-5d)",
        "",
    ]
    lines += [f"- date: {r['date']}", f"- machine: {r['machine']}", f"- versions: {r['versions']}",
              f"- model: `src/atomssl/configs/pretrain_default.yaml`'s backbone and tasks ({r['model']}); batch {r['batch_size']} per process, seed 0",
              f"- accelerator: {r['accelerator']}; load average at start {r['load_start']}, at end {r['load_end']}", ""]  # fmt: skip
    b = r["throughput"]
    lines += ["## (b) Training throughput: streamed vs in-memory", "",
              f"{b['n']} structures, {b['steps']} steps x {b['epochs']} epochs per run, no validation; structures/s = median of "
              f"epochs 2..{b['epochs']} (Lightning's epoch time, which includes waiting for batches); rounds interleaved.", "",
              "| data | structures/s (best) | all rounds | vs in-memory (best/best) | losses reached (last round) | peak RSS MiB |",
              "|---|---:|---|---:|---|---:|"]  # fmt: skip
    for mode in b["modes"]:
        runs = b["runs"][mode]
        best = max(x["structures_per_s"] for x in runs)
        ratio = b["ratios"].get(mode)
        rates = ", ".join(f"{x['structures_per_s']:.1f}" for x in runs)
        lines.append(f"| {mode} | {best:.1f} | {rates} | "
                     f"{_fmt(ratio, 3) if ratio is not None else '1'} | {', '.join(f'{v:.5g}' for v in runs[-1]['reached'])} | "
                     f"{max(x['peak_rss_mib'] for x in runs):.0f} |")  # fmt: skip
    lines += [
        "",
        f"Goal >= 0.9x: {b['verdict']}. Same losses in every mode (same batches): {b['same_losses']}.",
    ]
    default = [m for m in b["modes"] if "(the default" in m]
    if default:
        ratio = b["ratios"][default[0]]
        lines += [
            "",
            f"The default configuration (`data.num_workers: auto`) streams at {ratio:.3f}x the in-memory rate: "
            f"goal {'met' if ratio >= 0.9 else 'MISSED'}. Streaming with every graph built in the training "
            "process (`data.num_workers: 0`, what `auto` gives a process with no spare core) is the slower row above.",
        ]
    lines += [""]
    c = r["memory"]
    lines += ["## (c) Peak RSS against corpus size", "",
              f"Streamed from the corpus, `data.num_workers: 0`, {c['steps']} training steps (batch {r['batch_size']}) and "
              f"{c['val_batches']} validation batches of a 1% split; a process that only imports atomssl, Lightning and torch "
              f"peaks at {c['import_rss_mib']:.0f} MiB.", "",
              "Peak RSS is the kernel's high-water mark of the training process; anonymous and file-backed are the peaks of "
              "its private memory and of its memory-mapped files (shared libraries and the LMDB shards' pages it has read: "
              "page cache the kernel can drop), sampled every 20 ms.", "",
              "| structures | corpus | corpus on disk | created in | streamed: peak RSS MiB | vs smallest | anonymous MiB | vs smallest | file-backed MiB | wall s | in-memory: peak RSS MiB |",
              "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in c["rows"]:
        made = row["corpus"]
        how = made["method"] + (" (reused from an earlier run)" if made.get("reused") else "")
        took = " + ".join(
            f"{k[:-2]} {v:.0f} s"
            for k, v in made.items()
            if k.endswith("_s") and isinstance(v, (int, float))
        )
        st = row["streamed"]
        lines.append(f"| {row['n']:,} | {how} | {made['bytes'] / 2**20:.0f} MiB | {took} | {st['peak_rss_mib']:.0f} | "
                     f"{row['ratio']:.3f} | {st['peak_anon_mib']:.0f} | {row['anon_ratio']:.3f} | {st['peak_file_mib']:.0f} | {st['wall_s']:.0f} | "
                     f"{_fmt(row['in_memory']['peak_rss_mib'], 0) if row.get('in_memory') else '-'} |")  # fmt: skip
    lines += [
        "",
        f"Goal flat within 10% (each streamed peak RSS / the smallest corpus's <= 1.10): {c['verdict']}.",
        "",
    ]
    d = r["ddp"]
    lines += ["## (d) DDP: 2 processes vs 1", ""]
    if d.get("skipped"):
        lines += [f"Skipped: {d['skipped']}", ""]
    else:
        lines += [f"Streamed from the {d['n']}-structure corpus, {d['steps']} steps per process x {d['epochs']} epochs, "
                  f"`data.num_workers: 0` (what the default `auto` gives two processes here: "
                  f"{r.get('auto_workers', {}).get('2 processes', '-')}), {d['backend']}; rounds interleaved.", "",
                  "| processes | structures/s in all (best) | per process (best) | all rounds, per process | load average before each |",
                  "|---:|---:|---:|---|---|"]  # fmt: skip
        for k in [k for k in ("1", "2", "2 x 1") if d["runs"].get(k)]:
            runs = d["runs"][k]
            best = max(x["per_process"] for x in runs)
            rates = ", ".join(f"{x['per_process']:.1f}" for x in runs)
            label = {"1": "1", "2": "2 (DDP)", "2 x 1": "2 x 1 (control)"}[k]
            lines.append(f"| {label} | {best * (1 if k == '1' else 2):.1f} | {best:.1f} | {rates} | "
                         f"{'; '.join(str(x['load_before']) for x in runs)} |")  # fmt: skip
        lines += [
            "",
            f"Per-process rate with 2 processes / with 1: {d['efficiency']:.3f}. Goal >= 0.8: {d['verdict']}.",
        ]
        if d.get("control") is not None:
            lines += ["", f"Control, `2 x 1`: two independent 1-process runs at the same time (no DDP; the slower one's rate): "
                          f"{d['control']:.3f} of one run alone: what this machine gives two busy processes. DDP's own cost is "
                          f"the rest: 2-process DDP / control = {d['efficiency'] / d['control']:.3f}."]  # fmt: skip
        lines += [""]
    lines += ["## Notes", ""] + [f"- {n}" for n in dict.fromkeys(r["notes"])]  # each once
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small corpora, few steps; never writes into benchmarks/results",
    )
    ap.add_argument(
        "--out",
        type=Path,
        help="folder for scale_train.md/.json (default benchmarks/results; --quick: a temporary folder)",
    )
    ap.add_argument(
        "--work",
        type=Path,
        help="corpora and runs (default: a folder under the system temp dir, reused)",
    )
    ap.add_argument("--accelerator", default="cpu", help="cpu or gpu (the trainer's accelerator)")
    ap.add_argument(
        "--sizes", type=int, nargs="+", help="corpus sizes for (c) (default 10000 100000 1000000)"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repeats of (b) and (d)")
    ap.add_argument(
        "--max-create-s",
        type=float,
        default=600.0,
        help="create a corpus for real only if projected to take less",
    )
    ap.add_argument(
        "--parts",
        default="bcd",
        help="which of (b), (c), (d) to measure, e.g. c; the others are kept from scale_train.json in --out",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite scale_train.md from the scale_train.json in --out (no runs)",
    )
    args = ap.parse_args(argv)
    if args.report_only:
        from atomssl.utils import atomic_write

        folder = args.out or RESULTS
        record = json.loads((folder / "scale_train.json").read_text())
        with atomic_write(folder / "scale_train.md", "w") as fh:
            fh.write(report_md(record))
        print(f"wrote {folder / 'scale_train.md'}")
        return 0
    quick = args.quick
    out = args.out or (
        Path(tempfile.gettempdir()) / "atomssl-scale-train-quick" if quick else RESULTS
    )
    if quick and out.resolve().is_relative_to(RESULTS.resolve()):
        ap.error("--quick never writes into benchmarks/results")
    work = args.work or Path(tempfile.gettempdir()) / (
        "atomssl-scale-train-quick-work" if quick else "atomssl-scale-train-work"
    )
    work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes or ([1000, 3000] if quick else [10_000, 100_000, 1_000_000]))
    b_steps, b_epochs = (10, 3) if quick else (60, 4)
    c_val = 2 if quick else 10
    d_steps, d_epochs = (10, 3) if quick else (60, 4)
    acc, bs = args.accelerator, args.batch_size
    c_steps = (
        20 if quick else -(-(sizes[0] - round(0.01 * sizes[0])) // bs)
    )  # a full epoch of the smallest corpus
    niceness = os.nice(0)
    python = (
        os.path.relpath(sys.executable, ROOT)
        if Path(os.path.abspath(sys.executable)).is_relative_to(ROOT)
        else sys.executable
    )
    command = " ".join(
        ([f"nice -n {niceness}"] if niceness else [])
        + [python, "benchmarks/scale_train.py"]
        + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])]
    )
    notes: list[str] = []
    parts = set(args.parts)
    if not parts or not parts <= set("bcd"):
        ap.error("--parts takes letters among b, c, d")
    earlier: dict = {}
    if parts != set("bcd"):  # the other parts come from the last full record in --out
        earlier = json.loads((out / "scale_train.json").read_text())
    t_start = time.perf_counter()
    result: dict = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_start": _load(),
    }
    import torch

    result["machine"] = (f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores allowed, Python {platform.python_version()}"
                         + (f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if acc == "gpu" and torch.cuda.is_available() else "")
                         + "; shared machine: other jobs run beside this one (load averages below)")  # fmt: skip
    result["versions"] = ", ".join(
        f"{p} {importlib.metadata.version(p)}"
        for p in ("torch", "lightning", "ase", "ase-db-backends", "lmdb")
    )
    result["accelerator"], result["batch_size"] = acc, bs
    from atomssl.representation import build_backbone

    result["model"] = (
        f"{_model()['backbone']['name']}, {build_backbone(_model()['backbone']).num_parameters()} parameters"
    )

    # ---------------------------------------------------------------- corpora (c needs them all)
    corpora: dict[int, dict] = {}
    for i, n in enumerate(sizes):
        prev = corpora.get(sizes[i - 1]) if i else None
        if prev is not None and prev.get("method") == "import":
            rate = prev["n"] / max(prev["sources_s"] + prev["import_s"], 1e-9)
            projected = n / rate
            if projected > args.max_create_s and n % prev["n"] == 0:
                why = (f"creating {n:,} structures was projected at {projected:.0f} s ({rate:.0f} structures/s measured at "
                       f"{prev['n']:,}, extxyz sources + import) > --max-create-s {args.max_create_s:.0f}: assembled from "
                       f"{n // prev['n']} copies of the {prev['n']:,}-structure corpus's shards")  # fmt: skip
                corpora[n] = replicate_corpus(work, prev, n // prev["n"], why)
                if corpora[n]["method"] != "import":
                    corpora[n]["why"] = why
                continue
        corpora[n] = make_corpus(work, n)
    print("corpora ready:", {n: c["method"] for n, c in corpora.items()}, flush=True)
    notes += [c["why"] for c in corpora.values() if c.get("why")]

    # ---------------------------------------------------------------- (b) throughput
    from atomssl.train._data import resolve_num_workers

    auto_workers = resolve_num_workers("auto", True, 1)
    result["auto_workers"] = {
        "1 process": auto_workers,
        "2 processes": resolve_num_workers("auto", True, 2),  # always 0: see resolve_num_workers
    }
    n_b = sizes[0]
    corpus_b = corpora[n_b]["path"]
    if "b" in parts:
        files_b = [str(f) for f in source_files(work, n_b)]
        modes = {
            "in-memory (graphs built before training)": dict(
                sources=files_b, in_memory=True, workers=0
            ),
            "streamed from the corpus, graphs built in the training process": dict(
                sources=[corpus_b], in_memory=False, workers=0
            ),
            "streamed from the corpus, graphs built in 1 worker process": dict(
                sources=[corpus_b], in_memory=False, workers=1
            ),
            f"streamed from the corpus, `data.num_workers: auto` (the default; {auto_workers} worker(s) here)": dict(
                sources=[corpus_b], in_memory=False, workers="auto"
            ),
        }
        b_runs: dict[str, list] = {m: [] for m in modes}
        for rnd in range(args.rounds):
            for k, (mode, opts) in enumerate(modes.items()):
                cfg = _config(opts["sources"], in_memory=opts["in_memory"], workers=opts["workers"], steps=b_steps, epochs=b_epochs,
                              accelerator=acc, batch=bs)  # fmt: skip
                b_runs[mode].append(run_pretrain(work, f"b{k}-r{rnd}", cfg, acc))
                print(mode, b_runs[mode][-1]["structures_per_s"], flush=True)
        names = list(modes)
        best = {m: max(x["structures_per_s"] for x in b_runs[m]) for m in names}
        ratios = {m: best[m] / best[names[0]] for m in names[1:]}
        good = {m: r >= 0.9 for m, r in ratios.items()}
        same = all(b_runs[m][-1]["reached"] == b_runs[names[0]][-1]["reached"] for m in names)
        result["throughput"] = {
            "n": n_b, "steps": b_steps, "epochs": b_epochs, "modes": names, "runs": b_runs, "ratios": ratios, "same_losses": same,
            "verdict": "; ".join(f"{'met' if ok else 'MISSED'} for '{m}' ({ratios[m]:.3f}x)" for m, ok in good.items()),
        }  # fmt: skip

    # ---------------------------------------------------------------- (c) memory
    if "c" in parts:
        rows = []
        for n in sizes:
            cfg = _config([corpora[n]["path"]], in_memory=False, workers=0, steps=c_steps, epochs=1, accelerator=acc, batch=bs,
                          val_fraction=0.01, val_batches=c_val)  # fmt: skip
            row = {
                "n": n,
                "corpus": corpora[n],
                "streamed": run_pretrain(work, f"c-stream-{n}", cfg, acc),
            }
            if corpora[n]["method"] == "import" and n <= 100_000:
                mem = _config([str(f) for f in source_files(work, n)], in_memory=True, workers=0, steps=c_steps, epochs=1,
                              accelerator=acc, batch=bs, val_fraction=0.01, val_batches=c_val)  # fmt: skip
                row["in_memory"] = run_pretrain(work, f"c-mem-{n}", mem, acc)
            rows.append(row)
            print(
                "rss",
                n,
                row["streamed"]["peak_rss_mib"],
                row.get("in_memory", {}).get("peak_rss_mib"),
                flush=True,
            )
        base, base_anon = rows[0]["streamed"]["peak_rss_mib"], rows[0]["streamed"]["peak_anon_mib"]
        for row in rows:
            row["ratio"] = row["streamed"]["peak_rss_mib"] / base
            row["anon_ratio"] = (
                row["streamed"]["peak_anon_mib"] / base_anon if base_anon else float("nan")
            )
        worst, worst_anon = (
            max(row["ratio"] for row in rows),
            max(row["anon_ratio"] for row in rows),
        )
        result["memory"] = {"steps": c_steps, "val_batches": c_val, "rows": rows, "import_rss_mib": baseline_rss(work),
                            "verdict": f"{'met' if worst <= 1.10 else 'MISSED'} by peak RSS (worst {worst:.3f}); "
                                       f"{'met' if worst_anon <= 1.10 else 'MISSED'} by anonymous memory alone (worst {worst_anon:.3f})"}  # fmt: skip
        share = c_steps * bs / (sizes[-1] - round(0.01 * sizes[-1]))
        notes.append(f"(c) every run trains {c_steps} steps ({c_steps * bs:,} structures): one epoch of the {sizes[0]:,}-structure corpus, "
                     f"{share:.1%} of an epoch of the {sizes[-1]:,}-structure one (a full epoch there would take hours on this machine); "
                     "every run still opens its whole corpus, splits it and draws the permutation of all its training structures")  # fmt: skip

    # ---------------------------------------------------------------- (d) DDP
    if "d" in parts:
        gpus = torch.cuda.device_count() if acc == "gpu" else None
        if gpus is not None and gpus < 2:
            result["ddp"] = {"skipped": f"{gpus} GPU(s) here; 2 are needed"}
        else:
            from concurrent.futures import ThreadPoolExecutor

            d_runs: dict[str, list] = {"1": [], "2": [], "2 x 1": []}
            for rnd in range(args.rounds):
                for k in (1, 2):
                    cfg = _config([corpus_b], in_memory=False, workers=0, steps=d_steps, epochs=d_epochs, accelerator=acc, batch=bs,
                                  devices=k, strategy="ddp" if k > 1 else "auto")  # fmt: skip
                    d_runs[str(k)].append(run_pretrain(work, f"d{k}-r{rnd}", cfg, acc))
                    print("ddp", k, d_runs[str(k)][-1]["per_process"], flush=True)
                if (
                    acc == "cpu"
                ):  # control: two independent 1-process runs at once (what the machine gives two processes)
                    cfg = _config(
                        [corpus_b],
                        in_memory=False,
                        workers=0,
                        steps=d_steps,
                        epochs=d_epochs,
                        accelerator=acc,
                        batch=bs,
                    )
                    with ThreadPoolExecutor(2) as pool:
                        pair = list(
                            pool.map(
                                lambda j, c=cfg, r=rnd: run_pretrain(
                                    work, f"d1x2-{j}-r{r}", c, acc
                                ),
                                (0, 1),
                            )
                        )
                    d_runs["2 x 1"].append({**pair[0], "per_process": min(x["per_process"] for x in pair),
                                            "pair": [x["per_process"] for x in pair]})  # fmt: skip
                    print("two 1-process runs at once", d_runs["2 x 1"][-1]["pair"], flush=True)
            best = {k: max(x["per_process"] for x in v) for k, v in d_runs.items() if v}
            eff = best["2"] / best["1"]
            result["ddp"] = {"n": n_b, "steps": d_steps, "epochs": d_epochs, "runs": d_runs, "efficiency": eff,
                             "control": best["2 x 1"] / best["1"] if "2 x 1" in best else None,
                             "backend": "gloo" if acc == "cpu" else "nccl", "verdict": "met" if eff >= 0.8 else "MISSED"}  # fmt: skip
    kept = sorted(set("bcd") - parts)
    for part in kept:
        key = {"b": "throughput", "c": "memory", "d": "ddp"}[part]
        result[key] = earlier[key]
    if kept:
        result.setdefault("auto_workers", earlier.get("auto_workers"))
        notes += [n for n in earlier.get("notes", []) if not n.startswith("total benchmark time")]
        notes.append(f"part(s) {', '.join(f'({k})' for k in kept)} are those of the run of {earlier['date']} "
                     f"(`{earlier['command']}`); this run measured {', '.join(f'({k})' for k in sorted(parts))}")  # fmt: skip
    result["load_end"] = _load()
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    notes.append(f"total benchmark time {result['seconds']:.0f} s")
    result["notes"] = notes

    from atomssl.utils import atomic_write, write_json

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "scale_train.json", result)
    with atomic_write(out / "scale_train.md", "w") as fh:
        fh.write(report_md(result))
    print(f"wrote {out / 'scale_train.md'} and {out / 'scale_train.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
