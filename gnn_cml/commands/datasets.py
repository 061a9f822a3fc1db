"""``gnn-cml datasets``: the known graphs, their default class split and local availability."""
from __future__ import annotations

import argparse
import os

from gnn_cml.data.paths import data_root
from gnn_cml.data.registry import list_graphs

_COLUMNS = ("graph", "nodes", "edges", "features", "classes", "default split", "available")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("available: yes, no, or how many of the graph's files are present (e.g. 2/3 files). "
                     "Graphs that are not available are downloaded on first use when online; data/README.md "
                     "says which files go where.")
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="data root to check (default: $GNN_CML_DATA, else ./data)")


def _split(info) -> str:
    split = "/".join(str(c) for c in info.split)
    return f"{split} (upstream)" if info.split_source == "upstream" else split


def _available(info, root) -> str:
    present, total = info.file_status(root)
    if present == total:
        return "yes"
    return f"no ({present}/{total} files)" if present else "no"


def run(args: argparse.Namespace) -> int:
    """Print one row per registered graph; reads no graph, only checks that raw files exist."""
    root = data_root(args.root)
    rows = [(g.name, f"{g.nodes:,}", f"{g.edges:,}", f"{g.features:,}", str(g.classes), _split(g),
             _available(g, root)) for g in list_graphs()]
    widths = [max(len(r[i]) for r in rows + [_COLUMNS]) for i in range(len(_COLUMNS))]
    for row in [_COLUMNS] + rows:
        cells = [c.ljust(w) if i in (0, 5, 6) else c.rjust(w)  # numbers right-aligned
                 for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip())
    source = "--root" if args.root is not None else (
        "$GNN_CML_DATA" if os.environ.get("GNN_CML_DATA") else "default")
    hint = ("; for missing files see data/README.md (or let `gnn-cml train --graph NAME` download them "
            "when online)") if any(r[6] != "yes" for r in rows) else ""
    print(f"\ndata root: {root.resolve()} ({source}); edges count both directions{hint}")
    return 0
