"""Does memory stay flat over a long run? Process RSS at episode 100 and at the end (default 10,000).

Runs the real meta-training loop (``Trainer.fit``: episodes, validation, metrics.jsonl,
atomic checkpoints, TensorBoard) on a cheap setting, by default Cora 2-way 1-shot
MAML+CML with 2 inner steps, and reports the resident set size and the number of live
tensors after chosen episodes. A leak of even one small tensor or autograd graph per
episode shows up as steady growth between episode 100 (allocator and caches warmed up)
and the end.

    python benchmarks/memory_long_run.py                      # 10,000 episodes
    python benchmarks/memory_long_run.py --episodes 500 --graph citeseer --no-cml

Needs psutil and the Planetoid files (``--root`` or ``$GNN_CML_DATA``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def live_tensors() -> int:
    import torch

    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some module proxies warns about deprecated names
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=10_000)
    p.add_argument("--graph", default="cora")
    p.add_argument("--method", default="maml")
    p.add_argument("--no-cml", action="store_true", help="plain MAML (default: MAML+CML)")
    p.add_argument("--inner-steps", type=int, default=2)
    p.add_argument("--val-every", type=int, default=100, help="validate (and checkpoint) every N episodes")
    p.add_argument("--val-tasks", type=int, default=5)
    p.add_argument("--root", default=None, help="data root (default $GNN_CML_DATA or ./data)")
    p.add_argument("--marks", default="100,500,1000,2500,5000,7500",
                   help="episodes after which to measure (the last episode is always measured)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", type=Path, help="also write the measurements here")
    args = p.parse_args(argv)

    import psutil
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from gnn_cml.config import resolve
    from gnn_cml.engine.trainer import Trainer, TrainerConfig
    from gnn_cml.experiments.graph import GraphTask
    from gnn_cml.sampling import derive_seed
    from gnn_cml.meta.factory import build_learner
    from gnn_cml.sampling import TaskSet

    cfg = resolve({"graph": args.graph, "method": args.method, "cml": not args.no_cml, "ways": 2, "shots": 1,
                   "inner_steps": args.inner_steps, "episodes": args.episodes, "val_every": args.val_every,
                   "val_tasks": args.val_tasks, "patience": 10**9, "data_root": args.root})
    task = GraphTask.build(cfg)
    learner = build_learner(cfg, task.graph, seed=1)
    val = TaskSet.generate(task.sampler("val", cfg.queries, derive_seed(1, 2)), cfg.val_tasks)
    marks = sorted({int(m) for m in args.marks.split(",") if 0 < int(m) < args.episodes} | {args.episodes})
    proc = psutil.Process()
    rows = []

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(learner, task.sampler("train", cfg.queries, derive_seed(1, 1)), val,
                          TrainerConfig(episodes=cfg.episodes, lr=cfg.lr, val_every=cfg.val_every,
                                        patience=cfg.patience, seed=1, progress=False),
                          run_dir=Path(run_dir), log_name="memory")
        step, started = trainer.step, time.perf_counter()

        def measured_step():
            out = step()
            if trainer.episode in marks:
                rows.append({"episode": trainer.episode, "rss_mb": proc.memory_info().rss / 2**20,
                             "live_tensors": live_tensors(), "seconds": time.perf_counter() - started})
                r = rows[-1]
                print(f"episode {r['episode']:>6}: RSS {r['rss_mb']:8.1f} MB, {r['live_tensors']:>5} live tensors, "
                      f"{r['seconds']:7.1f} s", flush=True)
            return out

        trainer.step = measured_step
        trainer.fit()
        checkpoint = os.path.getsize(Path(run_dir) / "checkpoint.pt") / 2**20

    first = rows[0]
    last = rows[-1]
    growth = last["rss_mb"] - first["rss_mb"]
    summary = {"setting": f"{cfg.graph} {cfg.ways}-way {cfg.shots}-shot {cfg.method}{'+cml' if cfg.cml else ''}, "
                          f"{cfg.inner_steps} inner steps, validation every {cfg.val_every} on {cfg.val_tasks} tasks",
               "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows,
               "rss_growth_mb": growth, "from_episode": first["episode"], "to_episode": last["episode"],
               "growth_kb_per_episode": 1024 * growth / max(1, last["episode"] - first["episode"]),
               "live_tensor_growth": last["live_tensors"] - first["live_tensors"],
               "checkpoint_mb": checkpoint}
    print(f"RSS growth from episode {first['episode']} to {last['episode']}: {growth:+.1f} MB "
          f"({summary['growth_kb_per_episode']:+.2f} KB/episode); live tensors "
          f"{first['live_tensors']} -> {last['live_tensors']}; checkpoint {checkpoint:.2f} MB")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
