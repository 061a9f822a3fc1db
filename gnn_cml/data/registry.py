"""Known graphs: name -> loader, published statistics and paper-default class split."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple, Union

from gnn_cml.data.paths import PathLike, cache_root, data_root
from gnn_cml.errors import GnnCmlError

if TYPE_CHECKING:  # torch_geometric is imported only where graphs are loaded (fast `--help`)
    from torch_geometric.data import Data


@dataclass(frozen=True)
class GraphInfo:
    """What we know about a graph before loading it."""

    name: str
    family: str  # planetoid | pyg | ogb | gpn
    module: str  # "gnn_cml.data.<module>" whose SOURCE (a GraphSource) reads the graph
    nodes: int
    edges: int  # directed edges after symmetrisation (PyG convention: each undirected edge twice)
    features: int
    classes: int
    # (train, val, test) class counts (TLP protocol), or for GPN graphs the
    # number of validation classes drawn from the upstream training classes.
    split: Tuple[int, int, int]
    split_source: str = "random"  # random (seeded, from counts) | upstream (GPN files)
    aliases: Tuple[str, ...] = field(default=())
    paper: str = ""

    def source(self):
        """The :class:`~gnn_cml.data.source.GraphSource` that reads this graph (imported on first use)."""
        return importlib.import_module(f"gnn_cml.data.{self.module}").SOURCE

    def available(self, root: Optional[PathLike] = None) -> bool:
        """True when the raw files are present under the data root (no network needed)."""
        return bool(self.source().available(data_root(root), self.name))

    def files(self, root: Optional[PathLike] = None):
        """Every raw file this graph needs, where the loader looks for it under the data root."""
        return list(self.source().files(data_root(root), self.name))

    def file_status(self, root: Optional[PathLike] = None) -> Tuple[int, int]:
        """(files present, files needed) under the data root."""
        paths = self.files(root)
        return sum(p.exists() for p in paths), len(paths)


GRAPHS = {
    g.name: g
    for g in [
        GraphInfo("cora", "planetoid", "planetoid", 2708, 10556, 1433, 7, (3, 2, 2),
                  paper="Planetoid (Yang et al. 2016)"),
        GraphInfo("citeseer", "planetoid", "planetoid", 3327, 9104, 3703, 6, (2, 2, 2),
                  paper="Planetoid (Yang et al. 2016)"),
        GraphInfo("corafull", "pyg", "pyg_datasets", 19793, 126842, 8710, 70, (40, 15, 15),
                  aliases=("cora_full",), paper="CitationFull (Bojchevski & Guennemann 2018)"),
        GraphInfo("amazon_computers", "pyg", "pyg_datasets", 13752, 491722, 767, 10, (4, 3, 3),
                  aliases=("amazon_computer", "computers"), paper="Amazon (Shchur et al. 2018)"),
        GraphInfo("coauthor_cs", "pyg", "pyg_datasets", 18333, 163788, 6805, 15, (5, 5, 5),
                  aliases=("cs",), paper="Coauthor (Shchur et al. 2018)"),
        GraphInfo("ogbn_arxiv", "ogb", "ogb_datasets", 169343, 2315598, 128, 40, (20, 10, 10),
                  aliases=("arxiv",), paper="OGB (Hu et al. 2020)"),
        GraphInfo("amazon_clothing", "gpn", "gpn", 24919, 183360, 9034, 77, (40, 17, 20),
                  split_source="upstream", paper="GPN (Ding et al. 2020)"),
        GraphInfo("amazon_electronics", "gpn", "gpn", 42318, 87112, 8669, 167, (91, 36, 40),
                  split_source="upstream", aliases=("amazon_eletronics",),
                  paper="GPN (Ding et al. 2020)"),
        GraphInfo("dblp", "gpn", "gpn", 40672, 288270, 7202, 137, (80, 27, 30),
                  split_source="upstream", paper="GPN (Ding et al. 2020)"),
    ]
}


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


_ALIASES = {alias: g.name for g in GRAPHS.values() for alias in (g.name,) + g.aliases}


def list_graphs():
    """All known graphs, in registry order."""
    return list(GRAPHS.values())


def is_graph_file(name: Union[str, os.PathLike]) -> bool:
    return str(name).endswith(".npz")


def graph_info(name: str) -> GraphInfo:
    """Registry entry for ``name`` (case-insensitive; ``-`` and ``_`` are interchangeable)."""
    key = _ALIASES.get(_normalise(str(name)))
    if key is None:
        known = ", ".join(GRAPHS)
        raise GnnCmlError(
            f"unknown graph '{name}': use one of {known}, or a path to your own graph .npz file"
        )
    return GRAPHS[key]


def canonicalise(data: "Data") -> "Data":
    """Make ``edge_index`` undirected, coalesced and free of self-loops; set ``num_classes``."""
    from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

    n = int(data.num_nodes)
    ei = data.edge_index.long()
    ei, _ = remove_self_loops(ei)
    ei = to_undirected(ei, num_nodes=n)
    data.edge_index = coalesce(ei, num_nodes=n)
    data.y = data.y.long().view(-1)
    data.num_nodes = n
    data.num_classes = int(data.y.max().item()) + 1 if data.y.numel() else 0
    return data


def load_graph(name: Union[str, os.PathLike], root: Optional[PathLike] = None) -> "Data":
    """Load a graph as a PyG ``Data`` with ``x``, ``edge_index``, ``y`` and ``num_classes``.

    ``name`` is a registry name (see :func:`list_graphs`) or a path to a ``.npz``
    file holding a user graph. ``root`` defaults to ``$GNN_CML_DATA`` or ``./data``;
    it may be read-only, in which case processed caches go to :func:`cache_root`.
    ``x`` is a dense float tensor, or a sparse CSR tensor for wide bag-of-words graphs.
    """
    if is_graph_file(name):
        from gnn_cml.data.user_graph import load_npz_graph

        data = load_npz_graph(Path(name))
        data.name = Path(name).stem
        return canonicalise(data)
    info = graph_info(str(name))
    root_path = data_root(root)
    data = info.source().load(root_path, cache_root(root_path), info.name)
    data = canonicalise(data)
    data.name = info.name
    return data
