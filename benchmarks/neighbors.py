"""Neighbour-list throughput on the 4764 matbench_dielectric crystals at a 5 A cutoff.

Side by side in one run: atomssl (``radius_graphs`` batched and ``radius_graph`` per
structure), pymatgen ``Structure.get_neighbor_list`` and ASE ``ase.neighborlist.neighbor_list``
(ASE on a subset, extrapolated), plus "read + graph": from the dataset file to
training-ready torch graphs (``to_graphs``).

The machine is shared (2 cores, often 5-10 runnable processes), so wall-clock times swing
by 2-4x between runs. Each method is therefore timed on the same chunks of structures,
interleaved chunk by chunk, each chunk's time being the best of ``--repeats`` runs; both
process CPU time (the headline: insensitive to time-slicing) and wall time are reported.
Edge counts are cross-checked.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/neighbors.py
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
CUTOFF = 5.0


# ---------------------------------------------------------------------------- data
def _bundled_file() -> Path:
    """matbench_dielectric.json.gz inside the crystal-toolkit wheel (found without importing it)."""
    dist = importlib.metadata.distribution("crystal-toolkit")
    for f in dist.files or []:
        if str(f).endswith("matbench_dielectric.json.gz"):
            return Path(dist.locate_file(f))
    raise FileNotFoundError(
        "matbench_dielectric.json.gz not found in the crystal-toolkit distribution"
    )


def load_structures(cache: bool):
    """Prefer atomssl's loader; fall back to parsing the bundled JSON (pandas 'columns' layout)."""
    try:
        from atomssl.data import load_matbench_dielectric
    except ImportError:
        load_matbench_dielectric = None
    if load_matbench_dielectric is not None:
        return load_matbench_dielectric(cache=cache), "atomssl.data.load_matbench_dielectric"
    from pymatgen.core import Structure as PmgStructure

    from atomssl.data import Structure

    with gzip.open(_bundled_file(), "rt") as fh:
        table = json.load(fh)
    out = []
    for row, d in table["structure"].items():
        s = Structure.from_pymatgen(
            PmgStructure.from_dict(d), source="matbench_dielectric", index=int(row)
        )
        s.labels["n"] = float(table["n"][row])
        out.append(s)
    return out, "fallback: json + pymatgen Structure.from_dict"


# ---------------------------------------------------------------------------- timing
def interleaved(
    methods: dict, n_items: int, chunk: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Sum over chunks of the best-of-``repeats`` CPU and wall time of each method on that chunk."""
    total = {name: {"cpu_s": 0.0, "wall_s": 0.0} for name in methods}
    for start in range(0, n_items, chunk):
        stop = min(start + chunk, n_items)
        best = {name: {"cpu_s": float("inf"), "wall_s": float("inf")} for name in methods}
        for _ in range(repeats):
            for name, fn in methods.items():
                w, c = time.perf_counter(), time.process_time()
                fn(start, stop)
                c, w = time.process_time() - c, time.perf_counter() - w
                best[name]["cpu_s"] = min(best[name]["cpu_s"], c)
                best[name]["wall_s"] = min(best[name]["wall_s"], w)
        for name in methods:
            for key in ("cpu_s", "wall_s"):
                total[name][key] += best[name][key]
    return total


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores_visible": os.cpu_count(),
        "cores_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def versions() -> dict:
    out = {}
    for pkg in ("atomssl", "vesin", "pymatgen", "ase", "numpy", "torch", "torch-geometric"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def read_and_graph() -> dict:
    """Cold (parse the JSON) and warm (parsed-array cache) read + to_graphs, in a fresh
    subprocess each so that nothing is preloaded; torch/atomssl import time excluded."""
    code = r"""
import json, sys, time
import atomssl.graph, atomssl.data, torch
sys.path.insert(0, %r)
from neighbors import load_structures
t0, c0 = time.perf_counter(), time.process_time()
structures, how = load_structures(cache=%s)
t1, c1 = time.perf_counter(), time.process_time()
graphs = atomssl.graph.to_graphs(structures, cutoff=%r, labels=["n"])
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"read_s": t1 - t0, "graph_s": t2 - t1, "total_s": t2 - t0,
                  "read_cpu_s": c1 - c0, "graph_cpu_s": c2 - c1, "total_cpu_s": c2 - c0, "n": len(graphs),
                  "edges": int(sum(g.edge_index.shape[1] for g in graphs)), "loader": how}))
"""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, ATOMSSL_CACHE=cache)
        for label, use_cache in (("cold", "False"), ("warm_cache_fill", "True"), ("warm", "True")):
            res = subprocess.run(
                [sys.executable, "-c", code % (str(HERE), use_cache, CUTOFF)],
                env=env,
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                raise RuntimeError(res.stderr)
            out[label] = json.loads(res.stdout.strip().splitlines()[-1])
    out.pop("warm_cache_fill")
    return out


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=200, help="structures per timed chunk")
    ap.add_argument(
        "--ase-every", type=int, default=20, help="time ASE on every n-th structure and extrapolate"
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="only the first N structures (smoke test)"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "neighbors")
    args = ap.parse_args(argv)

    from ase.neighborlist import neighbor_list as ase_neighbor_list

    from atomssl.graph import radius_graph, radius_graphs

    load_before = os.getloadavg()
    rw = read_and_graph() if args.limit is None else None
    structures, loader = load_structures(cache=True)
    structures = structures[: args.limit]
    n = len(structures)
    pmg = [s.to_pymatgen() for s in structures]  # conversions are not timed
    atoms = [s.to_ase() for s in structures]

    methods = {
        "atomssl radius_graph": lambda a, b: [
            radius_graph(s, CUTOFF, validate=False) for s in structures[a:b]
        ],
        "atomssl radius_graph + edge vectors": lambda a, b: [
            radius_graph(s, CUTOFF, validate=False).vec for s in structures[a:b]
        ],
        "atomssl radius_graph, vesin engine forced": lambda a, b: [
            radius_graph(s, CUTOFF, validate=False, engine="vesin") for s in structures[a:b]
        ],
        "pymatgen Structure.get_neighbor_list": lambda a, b: [
            p.get_neighbor_list(CUTOFF) for p in pmg[a:b]
        ],
    }
    totals = interleaved(methods, n, args.chunk, args.repeats)

    subset = list(range(0, n, args.ase_every))
    t = time.perf_counter()
    ase_edges = sum(len(ase_neighbor_list("i", atoms[i], CUTOFF)) for i in subset)
    ase_subset_s = time.perf_counter() - t
    subset_sizes = sum(structures[i].n_atoms for i in subset)
    t = time.perf_counter()
    for i in subset:
        pmg[i].get_neighbor_list(CUTOFF)
    pmg_subset_s = time.perf_counter() - t
    # extrapolate by the pymatgen time ratio of the full set to the subset (ASE and pymatgen
    # both scale with the number of pairs); same scale factor for CPU and wall
    scale = ase_subset_s / pmg_subset_s
    totals["ASE neighbor_list (subset, extrapolated)"] = {
        key: value * scale for key, value in totals["pymatgen Structure.get_neighbor_list"].items()
    }

    # cross-check edge counts
    edges_atomssl = sum(len(g) for g in radius_graphs(structures, CUTOFF, validate=False))
    edges_pmg = sum(len(p.get_neighbor_list(CUTOFF)[0]) for p in pmg)
    edges_atomssl_subset = sum(
        len(radius_graph(structures[i], CUTOFF, validate=False)) for i in subset
    )
    if edges_atomssl != edges_pmg or edges_atomssl_subset != ase_edges:
        raise SystemExit(
            f"edge counts differ: atomssl {edges_atomssl} pymatgen {edges_pmg} (ASE subset {ase_edges})"
        )

    pmg_t = totals["pymatgen Structure.get_neighbor_list"]
    rows = [
        {
            "method": name,
            "cpu_s": t["cpu_s"],
            "wall_s": t["wall_s"],
            "graphs_per_cpu_s": n / t["cpu_s"],
            "vs_pymatgen_cpu": pmg_t["cpu_s"] / t["cpu_s"],
            "vs_pymatgen_wall": pmg_t["wall_s"] / t["wall_s"],
        }
        for name, t in totals.items()
    ]
    result = {
        "benchmark": "neighbour lists, matbench_dielectric, cutoff 5 A",
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/neighbors.py "
        + " ".join(argv or sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "versions": versions(),
        "loader": loader,
        "n_structures": n,
        "n_atoms": int(sum(s.n_atoms for s in structures)),
        "n_edges": edges_atomssl,
        "timing": f"interleaved chunks of {args.chunk}, best of {args.repeats} per chunk",
        "ase_subset": {
            "every": args.ase_every,
            "structures": len(subset),
            "atoms": subset_sizes,
            "seconds": ase_subset_s,
            "pymatgen_seconds_same_subset": pmg_subset_s,
            "extrapolation": "pymatgen full-set time x (ASE subset time / pymatgen subset time)",
        },
        "rows": rows,
        "read_and_graph": rw,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(result))
    print(render(result))
    return 0


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# {r['benchmark']}",
        "",
        f"- command: `{r['command']}`",
        f"- date: {r['date']}",
        f"- machine: {m['cpu']}, {m['cores_allowed']} cores allowed, OMP_NUM_THREADS={m['OMP_NUM_THREADS']}, "
        f"Python {m['python']}; load average before/after {tuple(round(x, 1) for x in r['load_average_before'])} / "
        f"{tuple(round(x, 1) for x in r['load_average_after'])} (shared machine)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        f"- data: {r['n_structures']} structures, {r['n_atoms']} atoms, {r['n_edges']} directed edges "
        f"(identical counts from atomssl, pymatgen and, on the ASE subset, ASE); loader: {r['loader']}",
        f"- timing: {r['timing']}; all single-threaded",
        f"- ASE: timed on every {r['ase_subset']['every']}th structure ({r['ase_subset']['structures']} structures, "
        f"{r['ase_subset']['seconds']:.2f} s wall vs pymatgen {r['ase_subset']['pymatgen_seconds_same_subset']:.3f} s) "
        f"and extrapolated: {r['ase_subset']['extrapolation']}",
        "",
        "| method | CPU s (all structures) | graphs / CPU s | speed vs pymatgen (CPU) | wall s | speed vs pymatgen (wall) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['method']} | {row['cpu_s']:.3f} | {row['graphs_per_cpu_s']:.0f} | {row['vs_pymatgen_cpu']:.2f}x "
            f"| {row['wall_s']:.3f} | {row['vs_pymatgen_wall']:.2f}x |"
        )
    rw = r.get("read_and_graph")
    if rw:
        lines += [
            "",
            "## Read + graph: dataset file -> training-ready torch graphs (`to_graphs`, cutoff 5 A, validated)",
            "",
            "Fresh process each, single-threaded; Python/torch import time excluded. cold = JSON parsed; "
            "warm = atomssl's parsed-array cache. CPU = process CPU time; wall includes waiting for the shared cores.",
            "",
            "| run | read CPU s | graph CPU s | total CPU s | total wall s | graphs | edges |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for label in ("cold", "warm"):
            x = rw[label]
            lines.append(
                f"| {label} | {x['read_cpu_s']:.2f} | {x['graph_cpu_s']:.2f} | {x['total_cpu_s']:.2f} "
                f"| {x['total_s']:.2f} | {x['n']} | {x['edges']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
