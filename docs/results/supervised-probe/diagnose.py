"""Why the supervised-pretraining linear probe sits at chance on the paper's split (issue 23, point 2).

For each (graph, class-split seed) and run r = 0..R-1 (the run seeds of ``gnn-cml train --runs R``),
pretrain the supervised encoder exactly as ``--method tlp --pretrain supervised`` does and measure:
the 16-d output's effective rank and separation on the test classes and on the training classes
(:func:`gnn_cml.meta.tlp.embedding_stats`), the share of dead hidden ReLU units, the probe's
accuracy on the run's 100 fixed 2-way 1-shot and 5-shot test tasks, the share of queries it
assigns to way 1, its support loss after fitting (log 2 = 0.693 before), a nearest-class-mean
classifier on the unscaled embeddings (no probe, no scaling), and the same probe on the hidden
layer's 16 ReLU units instead of the output. ``--weight-decay 0`` and
``--epochs 0`` (the untrained encoder) are the controls.

    PYTHONPATH=. GNN_CML_DATA=/work/shared/data OMP_NUM_THREADS=1 \\
      python3 docs/results/supervised-probe/diagnose.py --runs 3 > docs/results/supervised-probe/diagnose.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from gnn_cml.config import resolve
from gnn_cml.experiments.graph import GraphTask, derive_seed
from gnn_cml.meta.tlp import (FullGraph, embedding_stats, fit_probes, minmax, pretrain, pretrain_settings,
                              training_labels)


def probe_figures(z, tasks):
    zs = torch.stack([z[e.support] for e in tasks])
    ys = torch.stack([e.support_y for e in tasks]).long()
    w, b = fit_probes(zs, ys, 2, 1.0)
    support = torch.einsum("tsd,twd->tsw", zs.double(), w) + b.unsqueeze(1)
    query = torch.einsum("tsd,twd->tsw", torch.stack([z[e.query] for e in tasks]).double(), w) + b.unsqueeze(1)
    qy = torch.stack([e.query_y for e in tasks])
    pred = query.argmax(-1)
    return {"accuracy": 100 * float((pred == qy).double().mean()),
            "share_predicted_way_1": float((pred == 1).double().mean()),
            "support_loss_after_fit": float(F.cross_entropy(support.reshape(-1, 2), ys.reshape(-1))),
            "weight_norm": float(w.norm(dim=(1, 2)).mean())}


def nearest_mean(z, tasks):
    hits = []
    for e in tasks:
        s, q = z[e.support], z[e.query]
        mu = torch.stack([s[e.support_y == k].mean(0) for k in range(2)])
        hits.append(float((torch.cdist(q, mu).argmin(1) == e.query_y).double().mean()))
    return 100 * float(np.mean(hits))


def measure(graph: str, split_seed: int, runs: int, overrides: dict):
    tasks, task = {}, None
    for shots in (1, 5):
        task = GraphTask.build(resolve(dict(graph=graph, method="tlp", pretrain="supervised", ways=2, shots=shots,
                                            split_seed=split_seed)))
        tasks[shots] = list(task.test_tasks())
    full, y = FullGraph(task.graph), task.data.y
    settings = dict(pretrain_settings(task.cfg, graph), **overrides)
    nodes, labels = training_labels(y, task.split.train)
    rows = []
    for run in range(runs):
        seed = derive_seed(task.cfg.seed, 100 + run)
        untrained = settings["epochs"] == 0
        encoder, info = pretrain(dict(settings, epochs=1, lr=0.0) if untrained else settings, full, seed, nodes, labels)
        with torch.no_grad():
            z = encoder(full.x, full.adj, xt=full.xt).double()
            first = encoder.layers[0]
            hidden = torch.relu(full.adj @ (full.x @ first.weight.t()) + first.bias)
        row = {"run": run, "pretrain_loss": None if untrained else info["final_loss"],
               "test_classes": embedding_stats(z, y, task.split.test),
               "train_classes": embedding_stats(z, y, task.split.train),
               "dead_hidden_units": float(((hidden > 0).sum(0) == 0).double().mean())}
        row["hidden_test_classes"] = embedding_stats(hidden.double(), y, task.split.test)
        for shots in (1, 5):
            row[f"probe_{shots}shot"] = probe_figures(minmax(z), tasks[shots])
            row[f"nearest_mean_unscaled_{shots}shot"] = nearest_mean(z, tasks[shots])
            row[f"probe_hidden_layer_{shots}shot"] = probe_figures(minmax(hidden.double()), tasks[shots])
        rows.append(row)
    return {"graph": graph, "split_seed": split_seed, "split": task.split.to_dict(), "overrides": overrides,
            "runs": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    cells = [("citeseer", 1234, {}), ("cora", 1234, {}), ("citeseer", 1236, {}),  # 1236: a split above chance
             ("citeseer", 1234, {"weight_decay": 0.0}), ("cora", 1234, {"weight_decay": 0.0}),
             ("citeseer", 1234, {"epochs": 0}), ("cora", 1234, {"epochs": 0})]
    start = time.perf_counter()
    out = [measure(g, s, args.runs, o) for g, s, o in cells]
    print(json.dumps({"command": "python3 docs/results/supervised-probe/diagnose.py --runs %d" % args.runs,
                      "wall_seconds": round(time.perf_counter() - start, 1), "cells": out}, indent=1))


if __name__ == "__main__":
    main()
