"""Time ``atomssl order`` (experiment c) on a trajectory and record the result.

Usage: ``python benchmarks/order.py TRAJECTORY --checkpoint CKPT [--particles N] [--stride S]``
writes ``benchmarks/results/order_timing.json`` (appending one record per run) and prints it.
The analysis itself writes into ``runs/order-bench-*``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("trajectory")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--particles", type=int, default=None)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument(
        "--results", default=str(Path(__file__).parent / "results" / "order_timing.json")
    )
    args = p.parse_args()

    import torch

    from atomssl.order import analyse_trajectory
    from atomssl.train import load_backbone
    from atomssl.utils import make_run_dir

    backbone = load_backbone(args.checkpoint)
    out = make_run_dir("runs", "order-bench")
    t0 = time.perf_counter()
    summary = analyse_trajectory(
        args.trajectory, backbone, out, stride=args.stride, particles=args.particles
    )
    record = {
        "trajectory": args.trajectory,
        "checkpoint": args.checkpoint,
        "backbone": backbone.config,
        "frames": summary["frames"],
        "n_atoms": summary["n_atoms"],
        "particles_per_frame": summary["particles_per_frame"],
        "seconds": {**summary["seconds"], "wall": time.perf_counter() - t0},
        "onset_frame": summary["onset_frame"],
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "cpu": platform.processor() or platform.machine(),
        "load_average_at_end": os.getloadavg(),
    }
    path = Path(args.results)
    records = json.loads(path.read_text()) if path.exists() else []
    records.append(record)
    path.write_text(json.dumps(records, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
