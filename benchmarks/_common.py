"""Helpers shared by the benchmark scripts: thread pinning, generated graphs, peak memory, tables."""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
import statistics
import sys
import threading
import time
from typing import List, Optional, Sequence


def setup(threads: int) -> None:
    """Use ``threads`` BLAS/OpenMP/intra-op threads everywhere (call before importing numpy/torch)
    and silence torch's notices about its sparse layouts being in beta."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import warnings

    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message=r"Sparse (CSR tensor support|invariant checks)")


def default_threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS", "1"))


def machine() -> str:
    """``nproc`` and the CPU model, for the table header."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}"


def synthetic_graph(nodes: int, edges: int, features: int, classes: int, density: Optional[float] = None,
                    seed: int = 0, tail: float = 2.5):
    """A random graph of a given size as a PyG ``Data``.

    Edge sources follow a heavy-tailed (Pareto, shape ``tail``) weight so that hubs exist as in
    citation graphs (a smaller ``tail``: bigger hubs); edges are symmetrised and deduplicated (about ``edges`` directed).
    ``density`` gives sparse binary bag-of-words features (a torch sparse tensor);
    without it features are dense standard normal. Labels are uniform over ``classes``.
    """
    import numpy as np
    import scipy.sparse as sp
    import torch
    from torch_geometric.data import Data

    rng = np.random.default_rng(seed)
    weight = rng.pareto(tail, nodes) + 1.0
    half = int(edges // 2 * 1.002)  # a few draws are self-loops or duplicates
    src = rng.choice(nodes, half, p=weight / weight.sum())
    dst = rng.integers(0, nodes, half)
    adj = sp.coo_matrix((np.ones(half, np.float32), (src, dst)), shape=(nodes, nodes)).tocsr()
    adj = (adj + adj.T).tocsr()
    adj.setdiag(0)
    adj.eliminate_zeros()
    adj = adj.tocoo()
    edge_index = torch.from_numpy(np.vstack([adj.row, adj.col]).astype(np.int64))
    y = torch.from_numpy(rng.integers(0, classes, nodes))
    if density:
        n = int(nodes * features * density)
        x = sp.coo_matrix((np.ones(n, np.float32), (rng.integers(0, nodes, n), rng.integers(0, features, n))),
                          shape=(nodes, features)).tocsr()
        x.data[:] = 1.0
        x = x.tocoo()
        x = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([x.row, x.col]).astype(np.int64)),
                                    torch.from_numpy(x.data), x.shape, is_coalesced=True)
    else:
        x = torch.from_numpy(rng.standard_normal((nodes, features), dtype=np.float32))
    return Data(x=x, edge_index=edge_index, y=y, num_nodes=nodes)


def rss() -> int:
    """Resident set size of this process in bytes."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim() -> None:
    """Return freed heap pages to the OS (glibc), so the next RSS rise is new memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Peak resident memory above the level at entry (MiB), sampled every 0.5 ms by a thread.

    The heap is trimmed first, so memory freed earlier and kept by the allocator is
    not reused silently. A sampler can miss a peak shorter than its interval: the
    result is a lower bound of the episode's peak extra memory.
    """

    def __enter__(self) -> "PeakRSS":
        import gc

        gc.collect()
        _trim()
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-4)
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(5e-4)

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, rss())
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._switch)
        self.mib = (self.peak - self.base) / 2 ** 20


def table(header: Sequence[str], rows: List[Sequence[object]]) -> str:
    """A GitHub-markdown table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row):
        return "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |"

    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


class ReplaySampler:
    """A sampler that hands out a fixed list of episodes in order (both sides get the same ones)."""

    def __init__(self, episodes):
        self.episodes, self.i = episodes, 0

    def sample(self):
        self.i += 1
        return self.episodes[self.i - 1]

    def get_state(self):
        return {"i": self.i}


def episode_speed_arguments(parser: argparse.ArgumentParser, episodes: int, episodes_help: str,
                            reference_episodes: Optional[int] = None, reference_help: str = "") -> None:
    """The options the per-episode speed benchmarks share: --graphs, --shots, --episodes,
    --reference-episodes (when ``reference_episodes`` is given), --threads, --root, --seed."""
    parser.add_argument("--graphs", default="citeseer,cora")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--episodes", type=int, default=episodes, help=episodes_help)
    if reference_episodes is not None:
        parser.add_argument("--reference-episodes", type=int, default=reference_episodes, help=reference_help)
    parser.add_argument("--threads", type=int, default=default_threads(),
                        help="threads for both sides (default $OMP_NUM_THREADS or 1)")
    parser.add_argument("--root", help="data root (default $GNN_CML_DATA)")
    parser.add_argument("--seed", type=int, default=0)


def lap(wall: float, cpu: float):
    """Milliseconds (wall, CPU) since ``time.perf_counter()`` read ``wall`` and ``time.process_time()`` ``cpu``."""
    return 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu)


def median_ms(times: Sequence[Sequence[float]]):
    """Median wall and median CPU milliseconds of ``(wall, cpu)`` laps."""
    return tuple(statistics.median(t[k] for t in times) for k in (0, 1))


def speed_row(ours, reference, ours_digits: int = 1, reference_digits: int = 1) -> List[str]:
    """Table cells ``ours ms``, ``reference ms`` (``wall / cpu``) and the speed-up ``reference / ours``
    from median ``(wall, cpu)`` pairs."""
    return [f"{ours[0]:.{ours_digits}f} / {ours[1]:.{ours_digits}f}",
            f"{reference[0]:.{reference_digits}f} / {reference[1]:.{reference_digits}f}",
            f"{reference[0] / ours[0]:.1f}x / {reference[1] / ours[1]:.1f}x"]


def graph_shot_rows(args, bench) -> List[list]:
    """One row ``bench(graph, shots, args, cache)`` per graph of ``args.graphs`` and shot count of
    ``args.shots`` (``cache``: shared across rows), each announced on stderr when done."""
    rows: List[list] = []
    cache: dict = {}
    for graph_name in args.graphs.split(","):
        for shots in (int(s) for s in args.shots.split(",")):
            rows.append(bench(graph_name.strip(), shots, args, cache))
            print(f"# {' '.join(rows[-1][:2])}: done", file=sys.stderr, flush=True)
    return rows


def print_speed_table(args, bench, title: str, per_episode: str, reference_column: str, check_column: str) -> None:
    """Set ``args.threads`` up, print the header lines (``title``, what one episode includes) and the
    table of :func:`graph_shot_rows` (ours, the reference, speed-up, episode counts, the check)."""
    setup(args.threads)
    import torch

    print(f"# {title}: {machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print(f"# {per_episode}; medians of interleaved episodes; ms wall / cpu")
    rows = graph_shot_rows(args, bench)
    print(table(["graph", "setting", "ours ms/ep", reference_column, "speed-up", "episodes ours / ref", check_column],
                rows))
