"""Graph datasets as PyG ``Data``: registry, loaders and paper-default class splits."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from gnn_cml.data.paths import cache_root, data_root
from gnn_cml.data.registry import GRAPHS, GraphInfo, graph_info, list_graphs, load_graph
from gnn_cml.errors import require

if TYPE_CHECKING:  # torch_geometric is imported only where graphs are loaded (fast `--help`)
    from torch_geometric.data import Data

    from gnn_cml.sampling.split import ClassSplit


def default_split(data: "Data", seed: int = 1234, counts: Optional[Sequence[int]] = None,
                  rule: str = "reference") -> "ClassSplit":
    """The paper-default class split of ``data`` (or one from explicit ``counts``).

    Graphs with an upstream split (GPN sets, or a user ``.npz`` that carries
    ``train_classes``/``test_classes``) keep it and draw validation classes from the
    training classes; the others use a seeded random split by ``rule`` (default: the
    reference code's ``np.random.choice`` rule, see :meth:`ClassSplit.from_counts`).
    """
    from gnn_cml.sampling.split import ClassSplit

    upstream = getattr(data, "train_classes", None) is not None and getattr(data, "test_classes", None) is not None
    if getattr(data, "val_classes", None) is not None and upstream and counts is None:
        return ClassSplit(data.train_classes.tolist(), data.val_classes.tolist(), data.test_classes.tolist())
    info = GRAPHS.get(getattr(data, "name", ""), None)
    if upstream:
        num_val = counts[1] if counts is not None else (info.split[1] if info else max(1, len(data.train_classes) // 4))
        return ClassSplit.from_upstream(data.train_classes.tolist(), data.test_classes.tolist(), num_val, seed)
    if counts is None:
        if info is not None:
            counts = info.split
        else:
            c = int(data.num_classes)
            require(c >= 3, f"graph has {c} classes; few-shot splits need at least 3 (train, val, test)")
            counts = (c - 2 * (c // 3), c // 3, c // 3)
    return ClassSplit.from_counts(int(data.num_classes), counts, seed, rule)


__all__ = ["GRAPHS", "GraphInfo", "cache_root", "data_root", "default_split", "graph_info",
           "list_graphs", "load_graph"]
