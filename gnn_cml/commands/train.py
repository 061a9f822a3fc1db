"""``gnn-cml train``: meta-train one method on one graph, test it, write a run directory."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from gnn_cml.config import METHODS, resolve


def _split(text: str):
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated class counts like 3,2,2, got {text!r}")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated class counts like 3,2,2, got {text!r}")
    return parts


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--graph", help="graph name (see `gnn-cml datasets`) or a path to your .npz graph")
    p.add_argument("--method", type=str.lower,
                   help=f"one of {', '.join(METHODS)} (tlp: linear probes on a pretrained GCN, no meta-training)")
    p.add_argument("--cml", action="store_const", const=True, help="add CML's co-learner (gradient augmentation)")
    p.add_argument("--gamma", type=float, help="weight of the co-learner loss (default 0.2)")
    p.add_argument("--dagger", action="store_const", const=True, help="CML-dagger: test with the co-learner")
    p.add_argument("--ways", type=int, help="N classes per task")
    p.add_argument("--shots", type=int, help="K support nodes per class")
    p.add_argument("--queries", type=int, help="query nodes per class in training/validation (default 5)")
    p.add_argument("--test-queries", type=int, help="query nodes per class at meta-test (default 10)")
    p.add_argument("--split", type=_split, help="train,val,test class counts (default: the paper's)")
    p.add_argument("--split-seed", type=int, help="seed of the class split (default 1234, the reference code's)")
    p.add_argument("--split-rule", choices=("reference", "shuffle"),
                   help="class split rule: reference (np.random.choice, the paper's code; default) or shuffle "
                        "(Python random.shuffle, as TLP's linear-probing scripts)")
    p.add_argument("--episodes", type=int, help="the most meta-training episodes")
    p.add_argument("--meta-batch", type=int, help="tasks per meta-update (default 1)")
    p.add_argument("--lr", type=float, help="outer (Adam) learning rate")
    p.add_argument("--inner-lr", type=float, help="inner-loop step size")
    p.add_argument("--inner-steps", type=int, help="inner-loop steps")
    p.add_argument("--first-order", dest="first_order", action="store_const", const=True,
                   help="first-order inner loop (default, as the reference code)")
    p.add_argument("--second-order", dest="first_order", action="store_const", const=False,
                   help="back-propagate through the inner updates (second-order MAML)")
    p.add_argument("--init", choices=("reference", "torch"),
                   help="reference: uniform +-1/sqrt(out_features) as the paper's code (default); torch: nn.Linear")
    p.add_argument("--out-activation", choices=("none", "relu", "elu"),
                   help="activation on the GCN output (default none, as the reference code)")
    p.add_argument("--modulation", choices=("reference", "scalar", "feature"),
                   help="AMM-GNN feature modulation (default reference: per feature column)")
    p.add_argument("--backbone", help="gcn, sgc, sage, gat or subgraph_gcn")
    p.add_argument("--norm", choices=("row", "sym"), help="adjacency normalisation (default row)")
    p.add_argument("--pretrain", type=str.lower,
                   help="--method tlp: dgi (Deep Graph Infomax, default), grace (GRACE contrastive) or supervised "
                        "(GCN classifier on the training classes). Pretraining sees the whole graph's structure "
                        "and features (transductive, as TLP) but never a label of a validation or test class")
    p.add_argument("--pretrain-epochs", type=int,
                   help="--method tlp: pretraining epochs (dgi: the most, stops after 20 without a lower loss; "
                        "default dgi 300, grace 200, supervised 200)")
    p.add_argument("--pretrain-lr", type=float, help="--method tlp: pretraining Adam lr (default: the method's)")
    p.add_argument("--pretrain-hidden", type=int,
                   help="--method tlp: embedding size (default dgi 512, grace 128 on Cora / 256, supervised 16)")
    p.add_argument("--probe-c", type=float, help="--method tlp: inverse L2 strength of the logistic probe (default 1)")
    p.add_argument("--probe-solver", type=str.lower,
                   help="--method tlp: torch (all tasks' probes at once by L-BFGS, default) or sklearn")
    p.add_argument("--probe-scale", type=str.lower,
                   help="--method tlp: embedding scaling before the probe: minmax (per dimension over all nodes, "
                        "as TLP; default) or none")
    p.add_argument("--pretrained", help="--method tlp: reuse the pretrained encoders (run_<r>/encoder.pt) of this "
                                        "earlier tlp run directory: same graph, seed and pretraining (supervised: "
                                        "and class split), e.g. the 1-shot run for a 5-shot one")
    p.add_argument("--val-every", type=int)
    p.add_argument("--val-tasks", type=int)
    p.add_argument("--patience", type=int, help="validations without gain before stopping")
    p.add_argument("--test-tasks", type=int, help="number of fixed test tasks (default 100)")
    p.add_argument("--runs", type=int, help="independent runs (default 5)")
    p.add_argument("--seed", type=int)
    p.add_argument("--root", dest="data_root", help="data root (default $GNN_CML_DATA or ./data)")
    p.add_argument("--config", type=Path, help="YAML file with any of these settings")
    p.add_argument("--task-file", type=Path, help="fixed test tasks (.npz) to evaluate on, e.g. another run's")
    p.add_argument("--out", type=Path, help="run directory (default runs/<graph>-<method>-<N>w<K>s)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


OVERRIDES = ("graph", "method", "cml", "gamma", "dagger", "ways", "shots", "queries", "test_queries", "split", "split_seed",
             "split_rule", "episodes", "meta_batch", "lr", "inner_lr", "inner_steps", "first_order", "init",
             "out_activation", "modulation", "backbone", "norm",
             "val_every", "val_tasks", "patience", "test_tasks", "runs", "seed", "data_root",
             "pretrain", "pretrain_epochs", "pretrain_lr", "pretrain_hidden", "probe_c", "probe_solver", "probe_scale",
             "pretrained")


def run(args) -> int:
    from gnn_cml.engine import distributed as dist
    from gnn_cml.experiment import run_experiment

    cfg = resolve({k: getattr(args, k) for k in OVERRIDES}, args.config)
    if cfg.pretrained:  # a --pretrained folder that cannot serve this run fails before anything is written
        from gnn_cml.meta.tlp import check_pretrained

        check_pretrained(cfg)
    out = args.out or Path("runs") / f"{Path(cfg.graph).stem}-{cfg.method}{'-cml' if cfg.cml else ''}-{cfg.ways}w{cfg.shots}s"
    if dist.init_from_env():  # first loads fill the data cache: rank 0, then one process per other machine
        from gnn_cml.data import load_graph

        local_main = os.environ.get("LOCAL_RANK", "0") == "0"
        for turn in (dist.is_main(), local_main and not dist.is_main()):
            if turn:
                load_graph(cfg.graph, cfg.data_root)
            dist.barrier()
    result = run_experiment(cfg, out, resume=args.resume, overwrite=args.overwrite, task_file=args.task_file,
                            progress=not args.no_progress)
    if dist.is_main():
        acc = result["test_accuracy"]
        print(json.dumps({"out": str(out), "test_accuracy": round(acc["mean"], 2),
                          "ci95": None if acc["ci95"] != acc["ci95"] else round(acc["ci95"], 2),
                          "runs": len(acc["runs"]), "episodes_per_s": result["episodes_per_s"],
                          "wall_time_s": round(result["wall_time_s"], 1)}))
    return 0
