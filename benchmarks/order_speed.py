"""Per-particle inference speed of ``atomssl order`` beside freud's Steinhardt q4/q6, in one run (issue #24, item 3).

On one thread (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``): the small checkpoint
(``src/atomssl/configs/order_pretrain.yaml``, trained here in ~20 s unless ``--checkpoint`` is given) and its distilled
fast student (:mod:`atomssl.order._student`, trained here unless ``--student`` is given) embed a
4,000-particle and a 100,000-particle noisy fcc frame (sigma 0.05); freud computes q4 and q6 of the same
frames (12 nearest neighbours, its own neighbour query included). Each time is the best of ``--repeats``
(the machine is shared; the load average is recorded). Rates count the clouds (``frame_clouds``) and the
embedding; "embedding only" leaves the clouds out. The whole ``analyse_trajectory`` pipeline (reading,
clouds, embedding, nearest reference, q6 and solid fraction from one freud query) is timed on a 3-frame
extxyz of the 4,000-particle frame.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/order_speed.py [--checkpoint CKPT] [--student FILE] [--device cuda]
    .venv/bin/python benchmarks/order_speed.py --quick --out /tmp/x      # smoke test: tiny, untrained, never results/

Writes ``order_speed.json`` (key ``ssl_particles_per_s_per_core``: the small checkpoint, 4,000-particle frame, one
thread) and ``order_speed.md`` (command at the top) into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GOAL = 20000.0  # particles/s per core (issue #24)
GOAL_BIG_S = 10.0  # 100,000-particle frame, one core


def _best(fn, repeats: int, sync=lambda: None) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times)


def _teacher(args, work: Path):
    from atomssl.train import load_backbone

    if args.checkpoint:
        return load_backbone(args.checkpoint), args.checkpoint
    if args.quick:  # untrained backbone of the shipped config: timing smoke test only
        import torch

        from atomssl.representation import build_backbone
        from atomssl.utils import load_config

        torch.manual_seed(0)
        return build_backbone(
            load_config(ROOT / "src" / "atomssl" / "configs" / "order_pretrain.yaml")["backbone"]
        ).eval(), "untrained (quick)"
    from atomssl.cli.main import main as atomssl_main

    run = work / "small"  # the run folder; the backbone is run/backbone.ckpt
    ckpt = run / "backbone.ckpt"
    argv = [
        "order",
        "pretrain",
        "--config",
        str(ROOT / "src" / "atomssl" / "configs" / "order_pretrain.yaml"),
        "--out",
        str(run),
        "-q",
    ]
    if atomssl_main(argv) != 0:
        raise SystemExit("training the small checkpoint failed")
    return load_backbone(ckpt), "trained here: atomssl order pretrain --config order_pretrain"


def _student(args, teacher, work: Path):
    from atomssl.order._distil import distil, distillation_clouds
    from atomssl.order._student import load_student, save_student

    if args.student:
        return load_student(args.student), args.student
    if args.quick:
        groups = distillation_clouds(k=teacher.k, per_crystal=60, n_min=256, wide=0)
        st = distil(teacher, groups, hidden=32, steps=50, batch=64)
    else:
        st = distil(teacher, hidden=args.student_hidden, steps=args.student_steps)
    path = Path(args.out) / "order_student.pt"
    save_student(st, path)
    return st, f"distilled here ({path.name}, {args.student_steps if not args.quick else 50} steps)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        help="small order checkpoint (default: train src/atomssl/configs/order_pretrain.yaml here)",
    )
    p.add_argument(
        "--student", help="order student file (default: distil one here from the checkpoint)"
    )
    p.add_argument("--student-hidden", type=int, default=128)
    p.add_argument("--student-steps", type=int, default=4000)
    p.add_argument("--device", default="cpu", help="cpu or cuda (timings then synchronise the GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n", type=int, default=4000, help="particles of the small frame")
    p.add_argument("--big", type=int, default=100000, help="particles of the big frame")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny frames, untrained models; needs --out outside results/",
    )
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    if args.quick and out == (HERE / "results").resolve():
        p.error("--quick never writes into benchmarks/results: give --out DIR")
    if args.quick:
        args.n, args.big, args.repeats = min(args.n, 300), min(args.big, 1000), 1
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from atomssl.cli._paths import check_device
    from atomssl.errors import AtomsslError

    try:
        device = check_device(args.device)
    except AtomsslError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    import freud

    from atomssl.data import idealized_crystal
    from atomssl.order import (
        analyse_trajectory,
        embed_clouds,
        frame_clouds,
        freud_system,
    )
    from atomssl.order._analysis import DEFAULT_CHUNK

    load_before = os.getloadavg()
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/order_speed.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        teacher, teacher_src = _teacher(args, work)
        student, student_src = _student(args, teacher, work)
        models = {
            "teacher": (teacher, DEFAULT_CHUNK),
            "student": (student, student.inference_chunk),
        }
        frames = {
            "small": idealized_crystal("cF4-Cu", n_min=args.n, sigma=0.05, seed=0),
            "big": idealized_crystal("cF4-Cu", n_min=args.big, sigma=0.05, seed=1),
        }
        res: dict = {"frames": {k: int(v.n_atoms) for k, v in frames.items()}}
        for fname, s in frames.items():
            n = s.n_atoms
            reps = args.repeats if fname == "small" else max(1, args.repeats - 1)
            clouds = frame_clouds(s, teacher.k)
            t_clouds = _best(lambda s=s: frame_clouds(s, teacher.k), reps)
            system = freud_system(s)
            ql = freud.order.Steinhardt([4, 6])
            t_freud = _best(
                lambda ql=ql, system=system: ql.compute(system, neighbors={"num_neighbors": 12}),
                reps,
            )
            row = {
                "n": n,
                "clouds_s": t_clouds,
                "freud_q4_q6_s": t_freud,
                "freud_particles_per_s": n / t_freud,
            }
            for mname, (model, chunk) in models.items():
                model.to(device)
                dev = device if cuda else None
                r = 1 if (fname == "big" and mname == "teacher" and not cuda) else reps
                t_emb = _best(
                    lambda m=model, c=clouds, ch=chunk, d=dev: embed_clouds(
                        m, c, chunk=ch, device=d
                    ),
                    r,
                    sync,
                )
                model.to("cpu")
                row[mname] = {
                    "chunk": chunk,
                    "embed_s": t_emb,
                    "embed_particles_per_s": n / t_emb,
                    "particles_per_s": n / (t_emb + t_clouds),
                    "seconds": t_emb + t_clouds,
                    "ratio_to_freud": (n / (t_emb + t_clouds)) / (n / t_freud),
                }
            res[fname] = row
            print(json.dumps({fname: row}, indent=1), flush=True)
        # the whole analysis pipeline on a 3-frame trajectory of the small frame
        from ase.io import write

        traj = work / "traj.extxyz"
        write(traj, [frames["small"].to_ase()] * 3, format="extxyz")
        pipeline = {}
        for mname, (model, _) in models.items():
            sm = analyse_trajectory(
                traj,
                model,
                work / f"run-{mname}",
                per_crystal=64 if args.quick else 256,
                reference_n_min=256 if args.quick else 4096,
                device=device if cuda else None,
            )
            pipeline[mname] = {"particles_per_s": sm["particles_per_s"], "seconds": sm["seconds"]}
        res["pipeline_3_frames"] = pipeline
    small, big = res["small"], res["big"]
    result = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "ssl_particles_per_s_per_core": small["teacher"]["particles_per_s"],
        "student_particles_per_s_per_core": small["student"]["particles_per_s"],
        "freud_q4_q6_particles_per_s_per_core": small["freud_particles_per_s"],
        "ratio_ssl_to_freud": small["teacher"]["ratio_to_freud"],
        "ratio_student_to_freud": small["student"]["ratio_to_freud"],
        "big_frame_seconds": {
            "teacher": big["teacher"]["seconds"],
            "student": big["student"]["seconds"],
            "freud_q4_q6": big["freud_q4_q6_s"],
        },
        "goal": {
            "particles_per_s_per_core": GOAL,
            "big_frame_s": GOAL_BIG_S,
            "teacher_meets": bool(
                small["teacher"]["particles_per_s"] >= GOAL
                and big["teacher"]["seconds"] <= GOAL_BIG_S
            ),
            "student_meets": bool(
                small["student"]["particles_per_s"] >= GOAL
                and big["student"]["seconds"] <= GOAL_BIG_S
            ),
        },
        "student_r2": {k: v for k, v in student.metrics.items() if k.startswith("r2")},
        "student_metrics": student.metrics,
        "teacher": teacher_src,
        "student": student_src,
        "results": res,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores_allowed": len(os.sched_getaffinity(0)),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "freud": freud.__version__,
        },
    }
    (out / "order_speed.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (out / "order_speed.md").write_text(_markdown(result))
    print(f"wrote {out / 'order_speed.json'} and order_speed.md")
    return 0


def _markdown(r: dict) -> str:
    s, b, pipe = r["results"]["small"], r["results"]["big"], r["results"]["pipeline_3_frames"]
    lines = [
        "# order inference speed (issue #24 item 3)",
        "",
        f"- command: `{r['command']}`",
        f"- date: {r['date']}; device: {r['device']}; torch threads: {r['torch_threads']}",
        (
            f"- machine: {r['machine']['cpu']}, {r['machine']['cores_allowed']} cores allowed, shared; load average "
            f"before/after {tuple(round(x, 1) for x in r['load_average']['before'])} / {tuple(round(x, 1) for x in r['load_average']['after'])}"
        ),
        f"- versions: python {r['machine']['python']}, torch {r['machine']['torch']}, freud {r['machine']['freud']}",
        f"- teacher: {r['teacher']}",
        f"- student: {r['student']}",
        "- frames: noisy fcc (sigma 0.05); times are the best of the repeats; particles/s count clouds + embedding",
        "",
        "| frame | method | chunk | clouds + embedding s | particles/s | embedding only particles/s | vs freud q4+q6 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for _name, row in (("small", s), ("big", b)):
        for m in ("teacher", "student"):
            x = row[m]
            lines.append(
                f"| {row['n']} | {m} | {x['chunk']} | {x['seconds']:.3f} | {x['particles_per_s']:,.0f} | "
                f"{x['embed_particles_per_s']:,.0f} | {x['ratio_to_freud']:.3f} |"
            )
        lines.append(
            f"| {row['n']} | freud Steinhardt q4+q6 | - | {row['freud_q4_q6_s']:.3f} | {row['freud_particles_per_s']:,.0f} | - | 1 |"
        )
    g = r["goal"]
    lines += [
        "",
        (
            f"Goal: >= {g['particles_per_s_per_core']:,.0f} particles/s per core on the 4,000-particle frame and the "
            f"100,000-particle frame in <= {g['big_frame_s']:.0f} s on one core: teacher "
            f"{'meets' if g['teacher_meets'] else 'does not meet'} it, student {'meets' if g['student_meets'] else 'does not meet'} it."
        ),
        "",
        (
            f"Whole `analyse_trajectory` pipeline, 3 frames of the {s['n']:,}-particle frame (reading, clouds, embedding, "
            "nearest reference, q6 + solid fraction from one freud query; references excluded):"
        ),
        "",
    ]
    for m, x in pipe.items():
        lines.append(f"- {m}: {x['particles_per_s']:,.0f} particles/s")
    r2 = r["student_r2"]
    lines += [
        "",
        "Student (distilled regression of the teacher's embedding): R^2 "
        + ", ".join(f"{k[3:]} {v:.3f}" for k, v in r2.items())
        + " (validation: held-out environments of the training distribution; held_out: the held-out prototypes "
        "diamond, alpha-Mn, beta-Mn, beta-Sn, simple hexagonal, alpha-Hg, never trained on).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
