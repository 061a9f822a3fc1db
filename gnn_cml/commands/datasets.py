"""``gnn-cml datasets``: the known graphs, their default class split and local availability."""
from __future__ import annotations

import argparse
import os

from gnn_cml.data.paths import data_root
from gnn_cml.data.registry import list_graphs

_COLUMNS = ("graph", "nodes", "edges", "features", "classes", "default split", "available")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=None,
                        help="data root to check (default: $GNN_CML_DATA, else ./data)")


def _split(info) -> str:
    split = "/".join(str(c) for c in info.split)
    return f"{split} (upstream)" if info.split_source == "upstream" else split


def run(args: argparse.Namespace) -> int:
    """Print one row per registered graph; reads no graph, only checks that raw files exist."""
    root = data_root(args.root)
    rows = [(g.name, f"{g.nodes:,}", f"{g.edges:,}", f"{g.features:,}", str(g.classes), _split(g),
             "yes" if g.available(root) else "no") for g in list_graphs()]
    widths = [max(len(r[i]) for r in rows + [_COLUMNS]) for i in range(len(_COLUMNS))]
    for row in [_COLUMNS] + rows:
        cells = [c.ljust(w) if i in (0, 5, 6) else c.rjust(w)  # numbers right-aligned
                 for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
    source = "--root" if args.root is not None else (
        "$GNN_CML_DATA" if os.environ.get("GNN_CML_DATA") else "default")
    print(f"\ndata root: {root.resolve()} ({source}); edges count both directions")
    return 0
