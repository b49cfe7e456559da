"""Backbone training-step throughput and memory on CPU, with CHGNet 0.4.2 measured side by side.

For every registered backbone (``atomssl.representation.BACKBONES``, default size) and for
CHGNet built at a comparable parameter count (plus CHGNet at its published default size), on
the first ``--structures`` matbench_dielectric crystals in batches of ``--batch-size``:

- model step = forward + backward of a structure-level loss (``mean(graph embedding ** 2)``;
  CHGNet: ``mean(energy ** 2)``) w.r.t. the parameters. Graph construction is *not* in the
  step; it is timed separately (atomssl ``to_graph`` + ``collate``; CHGNet ``graph_converter``).
  Each configuration makes ``--repeats`` passes over the batches after one warm-up batch, in
  ``--rounds`` fresh processes that alternate with those of its peers; the fastest pass is
  reported (the machine is shared, slower passes measure other load).
- peak memory = the largest resident-set growth during a step (Linux ``VmHWM`` after resetting it
  through ``/proc/self/clear_refs``, minus ``VmRSS`` just before the step). Every
  configuration runs in a fresh process with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors
  go back to the OS and the resident set tracks live tensor memory.
- memory vs atoms: the same step on one structure and its n x n x n supercells, with a linear
  fit (bytes per atom) and the largest deviation from it.

Usage: ``python benchmarks/backbones.py [--structures 64] [--batch-size 32] [--threads 1] [--rounds 2]
[--backbones equiformer gaa]``
writes ``benchmarks/results/backbones.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CHGNET_DEFAULT_WIDTH = 64
# (m, k, n) products timed for the machine's dense matmul rate; the best one is the reference
GEMM_SHAPES = [(2048, 256, 256), (4096, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048)]


# --------------------------------------------------------------------------- worker side
def _proc_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1))


def _peak_step(step) -> tuple[float, int]:
    """Run ``step()``; return (seconds, peak resident growth in bytes)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _proc_kib("VmRSS")
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    return seconds, max(_proc_kib("VmHWM") - before, 0) * 1024


def _chgnet(width: int, cutoff: float | None = None):
    """CHGNet with all feature/hidden widths ``width``; ``cutoff`` replaces its 6 A atom-graph radius."""
    from chgnet.model import CHGNet

    d = int(width)
    extra = {} if cutoff is None else {"atom_graph_cutoff": float(cutoff)}
    return CHGNet(atom_fea_dim=d, bond_fea_dim=d, angle_fea_dim=d, atom_conv_hidden_dim=d,
                  bond_conv_hidden_dim=d, mlp_hidden_dims=(d, d, d), **extra)  # fmt: skip


def _build(job):
    """(model, prepare(structures) -> inputs, step(inputs) -> None, n_params)."""

    if job["kind"] == "gemm":
        return None, None, None, 0
    if job["kind"] == "chgnet":
        model = _chgnet(job["width"], job.get("cutoff"))
        # a smaller radius can leave an atom without neighbours; CHGNet refuses those by default
        model.graph_converter.on_isolated_atoms = "ignore"

        def prepare(structures):
            return [model.graph_converter(s.to_pymatgen()) for s in structures]

        def step(graphs):
            model.zero_grad(set_to_none=True)
            out = model(graphs, task="e")
            out["e"].square().mean().backward()

    else:
        from atomssl.graph import collate, to_graph
        from atomssl.representation import build_backbone

        model = build_backbone(job["name"])
        spec = model.graph_spec

        def prepare(structures):
            return collate([to_graph(s, validate=False, **spec) for s in structures])

        def step(batch):
            model.zero_grad(set_to_none=True)
            out = model(batch)
            out.graph.square().mean().backward()

    model.train()
    return model, prepare, step, sum(p.numel() for p in model.parameters())


def worker(job: dict) -> dict:
    import contextlib
    import io

    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    from atomssl.data import load_matbench_dielectric

    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints on construction
        model, prepare, step, n_params = _build(job)
    res = {"job": job, "params": n_params}
    if job["mode"] == "throughput":
        structures = load_matbench_dielectric(limit=job["structures"])
        bs = job["batch_size"]
        chunks = [structures[i : i + bs] for i in range(0, len(structures), bs)]
        t0 = time.perf_counter()
        inputs = [prepare(c) for c in chunks]
        res["graph_seconds"] = time.perf_counter() - t0
        step(inputs[0])  # warm-up
        passes, peaks = [], []
        for _ in range(job["repeats"]):
            times = []
            for x in inputs:
                seconds, peak = _peak_step(lambda x=x: step(x))
                times.append(seconds)
                peaks.append(peak)
            passes.append(times)
        best = min(passes, key=sum)
        n_atoms = sum(s.n_atoms for s in structures)
        res.update(
            n_structures=len(structures),
            n_atoms=n_atoms,
            n_edges=_count_edges(job, inputs),
            step_seconds=sum(best),
            batch_seconds_median=float(np.median(best)),
            all_pass_seconds=[sum(p) for p in passes],
            structures_per_s=len(structures) / sum(best),
            atoms_per_s=n_atoms / sum(best),
            graph_structures_per_s=len(structures) / res["graph_seconds"],
            peak_bytes=max(peaks),
        )
        # the matrix-multiply work of one pass (forward + backward), as torch counts it: a
        # floor on the arithmetic any implementation of the same model must do (elementwise
        # work, gathers and scatters come on top)
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            for x in inputs:
                step(x)
        res["matmul_flops"] = int(counter.get_total_flops())
        res["matmul_gflops_per_s"] = res["matmul_flops"] / sum(best) / 1e9
    elif job["mode"] == "gemm":  # the machine's dense single-precision matmul rate at these threads
        rates = {}
        for m, k, n in GEMM_SHAPES:
            a, b = torch.randn(m, k), torch.randn(k, n)
            for _ in range(3):
                a @ b
            best = float("inf")
            for _ in range(
                5
            ):  # best of 5 timings of 4 products: the rate the core reaches, not the load
                t0 = time.perf_counter()
                for _ in range(4):
                    a @ b
                best = min(best, time.perf_counter() - t0)
            rates[f"{m}x{k}x{n}"] = 2 * m * k * n * 4 / best / 1e9
        res["gflops_per_s"] = max(rates.values())
        res["gflops_per_s_by_shape"] = rates
    else:  # memory vs atoms: one structure, n x n x n supercell
        base = load_matbench_dielectric(limit=job["index"] + 1)[job["index"]]
        n = job["repeat"]
        atoms = base.to_ase().repeat((n, n, n))
        from atomssl.data import Structure

        x = prepare([Structure.from_ase(atoms)])
        step(x)  # warm-up
        runs = [_peak_step(lambda: step(x)) for _ in range(2)]
        res.update(
            n_atoms=len(atoms),
            step_seconds=min(r[0] for r in runs),
            peak_bytes=max(r[1] for r in runs),
        )
    return res


def _count_edges(job, inputs) -> int:
    if job["kind"] == "chgnet":
        return int(sum(g.atom_graph.shape[0] for batch in inputs for g in batch))
    return int(sum(b.edge_index.shape[1] for b in inputs if hasattr(b, "edge_index")))


# --------------------------------------------------------------------------- driver side
def run_job(job: dict) -> dict:
    """Run ``job`` in a fresh worker process. ``job["allocator"]``: ``"mmap"`` (default) sets
    ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors return to the OS and the resident set
    tracks live memory (for peak-memory figures); ``"default"`` leaves glibc's allocator as users
    have it (for timings: with the low mmap threshold every large tensor is page-faulted afresh,
    which slowed some models' steps by up to 2.5x)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]))
    if job.get("allocator", "mmap") == "mmap":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    else:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    env.setdefault("PYTHONWARNINGS", "ignore")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark job {job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def match_chgnet_width(n_params: int) -> tuple[int, int]:
    """The CHGNet feature width whose parameter count is closest to ``n_params``."""
    import contextlib
    import io

    best = None
    with contextlib.redirect_stdout(io.StringIO()):
        for width in range(8, 257, 2):
            p = sum(q.numel() for q in _chgnet(width).parameters())
            if best is None or abs(p - n_params) < abs(best[1] - n_params):
                best = (width, p)
            if p > n_params:
                break
    return best


def _fmt_bytes(b: float) -> str:
    return f"{b / 2**20:.1f} MiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--structures", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--repeats", type=int, default=2, help="timed passes over the batches per process"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternating backbone/peer processes per configuration",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backbones", nargs="*", default=None, help="default: all registered")
    ap.add_argument(
        "--no-chgnet-default", action="store_true", help="skip CHGNet at its default size"
    )
    ap.add_argument("--supercells", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument(
        "--supercell-index", type=int, default=0, help="matbench_dielectric row to repeat"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "backbones")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from atomssl.representation import BACKBONES, build_backbone

    names = args.backbones if args.backbones is not None else sorted(BACKBONES)
    common = dict(
        threads=args.threads,
        structures=args.structures,
        batch_size=args.batch_size,
        repeats=args.repeats,
    )
    rows, scaling = [], []
    widths: dict[int, int] = {}
    for name in names:
        n_params = build_backbone(name).num_parameters()
        width, peer_params = match_chgnet_width(n_params)
        widths.setdefault(width, peer_params)
        jobs = [{"kind": "atomssl", "name": name, "mode": "throughput", **common},
                {"kind": "chgnet", "width": width, "mode": "throughput", **common}]  # fmt: skip
        cutoff = build_backbone(name).graph_spec.get("cutoff")
        if (
            cutoff is not None and cutoff >= 3.0
        ):  # also the peer on the backbone's own radius (same neighbours)
            jobs.append(
                {"kind": "chgnet", "width": width, "cutoff": cutoff, "mode": "throughput", **common}
            )
        # timings: backbone and peers alternate for --rounds rounds, default allocator; each keeps
        # its fastest round, so a burst of load from other processes hits both sides alike
        runs: list[list[dict]] = [[] for _ in jobs]
        for _ in range(args.rounds):
            for job, done in zip(jobs, runs):
                done.append(run_job({**job, "allocator": "default"}))
        mine, *peers = [max(done, key=lambda r: r["structures_per_s"]) for done in runs]
        # peak memory: one more process per configuration with the mmap allocator (see run_job)
        for job, res in zip(jobs, [mine, *peers]):
            res["peak_bytes"] = run_job({**job, "allocator": "mmap", "repeats": 1})["peak_bytes"]
        for peer in peers:
            rows.append({"backbone": name, "result": mine, "peer": peer,
                         "throughput_ratio": mine["structures_per_s"] / peer["structures_per_s"],
                         "memory_ratio": mine["peak_bytes"] / max(peer["peak_bytes"], 1)})  # fmt: skip
            print(f"{name}: {mine['structures_per_s']:.1f} structures/s vs CHGNet(width {width}, cutoff "
                  f"{peer['job'].get('cutoff', 6.0)}) {peer['structures_per_s']:.1f} -> x{rows[-1]['throughput_ratio']:.2f}",
                  flush=True)  # fmt: skip
    chgnet_default = None
    if not args.no_chgnet_default:
        job = {"kind": "chgnet", "width": CHGNET_DEFAULT_WIDTH, "mode": "throughput", **common}
        chgnet_default = run_job({**job, "allocator": "default"})
        chgnet_default["peak_bytes"] = run_job({**job, "allocator": "mmap", "repeats": 1})[
            "peak_bytes"
        ]
    for kind, key in [("atomssl", n) for n in names] + [("chgnet", w) for w in sorted(widths)]:
        points = []
        for rep in args.supercells:
            job = {
                "kind": kind,
                "mode": "memory",
                "repeat": rep,
                "index": args.supercell_index,
                "threads": args.threads,
            }
            job.update({"name": key} if kind == "atomssl" else {"width": key})
            r = run_job(job)
            points.append(
                {
                    "atoms": r["n_atoms"],
                    "peak_bytes": r["peak_bytes"],
                    "step_seconds": r["step_seconds"],
                }
            )
        x = [p["atoms"] for p in points]
        y = [p["peak_bytes"] for p in points]
        import numpy as np

        slope, intercept = np.polyfit(x, y, 1)
        fit = slope * np.asarray(x) + intercept
        dev = float(np.max(np.abs(fit - y)) / max(y))
        label = key if kind == "atomssl" else f"chgnet(width {key})"
        scaling.append({"model": label, "points": points, "bytes_per_atom": float(slope),
                        "intercept_bytes": float(intercept), "max_rel_deviation": dev})  # fmt: skip
        print(
            f"memory {label}: {slope / 1024:.1f} KiB/atom, max deviation from linear {dev:.1%}",
            flush=True,
        )

    gemm = run_job(
        {"kind": "gemm", "mode": "gemm", "threads": args.threads, "allocator": "default"}
    )
    report = {
        "gemm_gflops_per_s": gemm["gflops_per_s"],
        "gemm_gflops_per_s_by_shape": gemm["gflops_per_s_by_shape"],
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backbones.py "
        + " ".join(sys.argv[1:]),
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": _cpu_name(),
        "load_average_at_end": os.getloadavg(),
        "settings": vars(args) | {"out": str(args.out)},
        "rows": rows,
        "chgnet_default": chgnet_default,
        "scaling": scaling,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from atomssl.utils import atomic_write, write_json

    write_json(args.out.with_suffix(".json"), report)
    with atomic_write(args.out.with_suffix(".md"), "w") as fh:
        fh.write(render_markdown(report))
    print(f"wrote {args.out.with_suffix('.md')} and .json")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _work_section(rep: dict) -> list[str]:
    """Matmul work per structure and the rate each model runs it at; for every backbone below
    2x its peer, the matmul rate the 2x goal would need, against the machine's dense rate."""
    if "gemm_gflops_per_s" not in rep or "matmul_flops" not in rep["rows"][0]["result"]:
        return []
    peak = rep["gemm_gflops_per_s"]
    out = [
        "## Arithmetic: matmul work per structure (forward + backward, counted by `torch.utils.flop_counter`)",
        "",
        f"Dense single-precision matmul on this machine, same threads, best of (m x k) @ (k x n) for m x k x n in "
        f"{', '.join(rep.get('gemm_gflops_per_s_by_shape', {}))}: **{peak:.1f} GFLOP/s**.",
        "",
        "| model | matmul MFLOP per structure | achieved matmul GFLOP/s | share of dense rate | "
        "matmul GFLOP/s needed for 2x the peer | vs dense rate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    seen = set()
    for row in rep["rows"]:
        pairs = [(f"CHGNet width {row['peer']['job']['width']}, {row['peer']['job'].get('cutoff', 6.0):g} A",
                  row["peer"], None)]  # fmt: skip
        if row["backbone"] not in seen:
            seen.add(row["backbone"])
            pairs.insert(0, (f"**{row['backbone']}**", row["result"], row["peer"]))
        for label, r, peer in pairs:
            per = r["matmul_flops"] / r["n_structures"] / 1e6
            need = needed = ""
            if peer is not None:
                # 2x the peer's structures/s, even if every non-matmul cost vanished
                req = r["matmul_flops"] / (r["n_structures"] / (2 * peer["structures_per_s"])) / 1e9
                need, needed = f"{req:.1f}", f"x{req / peak:.2f}"
            out.append(f"| {label} | {per:.1f} | {r['matmul_gflops_per_s']:.1f} | {r['matmul_gflops_per_s'] / peak:.0%} | "
                       f"{need} | {needed} |")  # fmt: skip
    out += [
        "",
        "'needed' assumes the backbone spent no time at all outside matrix multiplies (no elementwise work, "
        "normalisation, softmax, gathers or scatters) and ran every one of its matmuls, whatever their shapes, at the "
        "best dense rate; near or above x1.00 of that rate the 2x goal is out of reach of any implementation of "
        "that architecture at that size on this machine.",
    ]
    return out


def render_markdown(rep: dict) -> str:
    s = rep["settings"]
    out = [
        "# Backbone throughput and memory (CPU)",
        "",
        f"Command: `{rep['command']}`  ",
        f"torch {rep['torch']}, {rep['threads']} thread(s), {rep['cpu']}; load average at end "
        f"{', '.join(f'{x:.1f}' for x in rep['load_average_at_end'])} (shared machine: absolute numbers are noisy, "
        "ratios from the same run are the figure of merit).",
        "",
        f"Data: first {s['structures']} matbench_dielectric structures, batches of {s['batch_size']}. "
        "Step = forward + backward of a structure-level loss w.r.t. parameters, graph construction "
        f"excluded (timed separately); fastest of {s.get('rounds', 1)} round(s) x {s['repeats']} passes (each round: "
        "backbone then its peers, each in a fresh process, default glibc allocator). Peak memory = largest "
        "resident-set growth during one step, measured in a separate process per configuration (VmHWM reset via "
        "/proc/self/clear_refs, MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave the resident set), i.e. "
        "activations + gradients, not the model or data.",
        "",
        "| model | params | edges | step structures/s | step atoms/s | peak step memory | graph build structures/s | vs peer (throughput) | vs peer (memory) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def line(label, r, ratio="", mem=""):
        return (f"| {label} | {r['params']:,} | {r['n_edges']:,} | {r['structures_per_s']:.1f} | {r['atoms_per_s']:.0f} | "
                f"{_fmt_bytes(r['peak_bytes'])} | {r['graph_structures_per_s']:.0f} | {ratio} | {mem} |")  # fmt: skip

    shown = set()
    for row in rep["rows"]:
        job = row["peer"]["job"]
        if row["backbone"] not in shown:
            shown.add(row["backbone"])
            out.append(line(f"**{row['backbone']}**", row["result"]))
        cut = f"atom graph {job['cutoff']:g} A" if job.get("cutoff") else "atom graph 6 A (default)"
        out.append(line(f"CHGNet 0.4.2, width {job['width']}, {cut} (peer for {row['backbone']})", row["peer"],
                        f"**x{row['throughput_ratio']:.2f}**", f"x{row['memory_ratio']:.2f}"))  # fmt: skip
    if rep["chgnet_default"]:
        out.append(
            line(f"CHGNet 0.4.2, default width {CHGNET_DEFAULT_WIDTH}", rep["chgnet_default"])
        )
    out += [
        "",
        "Edges: atomssl backbones use their own `graph_spec` (MEGNet: radius 4 A); CHGNet its default atom graph "
        "(6 A) and, for radius-graph backbones, also the backbone's radius (bond graph with angles 3 A in both); "
        "the CHGNet edge count is its atom-graph directed edges. The ratios on a peer row compare the backbone "
        "above it with that peer: throughput = backbone structures/s / peer structures/s (> 1: backbone faster); "
        "memory = backbone peak / peer peak (< 1: backbone leaner).",
        "",
        *_work_section(rep),
        "",
        "## Memory vs atoms (one structure and its n x n x n supercells, single-structure step; step seconds "
        "here run under the memory runs' mmap allocator, slower than the timings above)",
        "",
        "| model | atoms | peak step memory | step seconds |",
        "|---|---:|---:|---:|",
    ]
    for sc in rep["scaling"]:
        for p in sc["points"]:
            out.append(
                f"| {sc['model']} | {p['atoms']} | {_fmt_bytes(p['peak_bytes'])} | {p['step_seconds']:.3f} |"
            )
    out += [
        "",
        "| model | linear fit: KiB per atom | intercept | largest deviation from the fit (of max) |",
        "|---|---:|---:|---:|",
    ]
    for sc in rep["scaling"]:
        out.append(f"| {sc['model']} | {sc['bytes_per_atom'] / 1024:.1f} | {_fmt_bytes(sc['intercept_bytes'])} | "
                   f"{sc['max_rel_deviation']:.1%} |")  # fmt: skip
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if "--worker" not in sys.argv:
        sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
