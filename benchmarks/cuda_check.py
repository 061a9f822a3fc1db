"""``--device cuda`` end to end, where a GPU exists: CPU and CUDA agree on one episode, time per
training episode on each, and a 2-run ``gnn-cml train --device cuda`` per learner.

For each learner (G-Meta, AMM-GNN, MAML, with and without CML, real CiteSeer): the same weights and
episode with dropout off give the query loss and meta-gradients on both devices (max |difference|);
then the median time of 30 Trainer steps (paper protocol, dropout on) on each device; then
``gnn-cml train --device cuda --runs 2 --episodes 200`` for each learner +CML, 2-way 5-shot.

    GNN_CML_DATA=../shared/data python benchmarks/cuda_check.py    # needs a CUDA GPU
"""
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from gnn_cml.config import resolve
from gnn_cml.experiments.graph import GraphTask
from gnn_cml.meta.factory import build_learner
from gnn_cml.engine.trainer import Trainer, TrainerConfig
from gnn_cml.sampling import EpisodeSampler
if not torch.cuda.is_available():
    sys.exit("benchmarks/cuda_check.py: torch sees no CUDA GPU here")
print("torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
out = os.environ.get("OUT", "/tmp")
rows = []
for method, cml, shots in [("gmeta", True, 1), ("gmeta", False, 5), ("ammgnn", True, 1), ("ammgnn", False, 5), ("maml", True, 1)]:
    cfg = resolve(dict(graph="citeseer", method=method, cml=cml, ways=2, shots=shots, dropout=0.0))
    task = GraphTask.build(cfg)
    ep = EpisodeSampler(task.data.y, task.split.train, 2, shots, 5, seed=3).sample()
    res = {}
    for dev in ("cpu", "cuda"):
        l = build_learner(cfg, task.graph, seed=1).to(dev)
        torch.manual_seed(5)
        r = l(ep, train=True); r.loss.backward()
        res[dev] = (float(r.loss.detach()), {k: p.grad.detach().cpu() for k, p in l.named_parameters() if p.grad is not None})
    diff = max([abs(res["cpu"][0] - res["cuda"][0])] + [float((res["cpu"][1][k] - g).abs().max()) for k, g in res["cuda"][1].items()])
    # time per training episode (dropout 0.5, paper protocol) on both devices
    times = {}
    for dev in ("cpu", "cuda"):
        cfg2 = resolve(dict(graph="citeseer", method=method, cml=cml, ways=2, shots=shots))
        l = build_learner(cfg2, task.graph, seed=1).to(dev)
        t = Trainer(l, EpisodeSampler(task.data.y, task.split.train, 2, shots, 5, seed=4), [], TrainerConfig(lr=cfg2.lr, progress=False), tensorboard=False)
        for _ in range(5): t.step()
        if dev == "cuda": torch.cuda.synchronize()
        ms = []
        for _ in range(30):
            a = time.perf_counter(); t.step()
            if dev == "cuda": torch.cuda.synchronize()
            ms.append(1000 * (time.perf_counter() - a))
        times[dev] = statistics.median(ms)
    row = [method + ("+cml" if cml else ""), f"2-way {shots}-shot", f"{diff:.1e}", f"{times['cpu']:.2f}", f"{times['cuda']:.2f}"]
    rows.append(row); print(row, flush=True)
for method in ("gmeta", "ammgnn", "maml"):
    d = f"{out}/run_{method}"
    a = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "gnn_cml.cli", "train", "--graph", "citeseer", "--method", method, "--cml", "--shots", "5",
                        "--runs", "2", "--device", "cuda", "--episodes", "200", "--out", d], capture_output=True, text=True)
    print(method, "rc", p.returncode, f"{time.perf_counter() - a:.1f}s", p.stdout.strip()[-300:], p.stderr.strip().splitlines()[-4:], flush=True)
json.dump(rows, open(f"{out}/rows.json", "w"))
