"""Episodic N-way K-shot Q-query task sampling and fixed task sets."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from gnn_cml.errors import GnnCmlError, require


@dataclass
class Episode:
    """One few-shot task.

    For graphs ``support``/``query`` are node indices into one shared graph; for the
    regression and image benchmarks they are the input tensors themselves. Labels
    are remapped to ``0..ways-1`` (class tasks) or are real targets (regression).
    ``classes`` holds the original class id of each way (graph/image tasks).
    """

    support: torch.Tensor
    support_y: torch.Tensor
    query: torch.Tensor
    query_y: torch.Tensor
    classes: Optional[torch.Tensor] = None

    @property
    def ways(self) -> int:
        return int(self.classes.numel()) if self.classes is not None else 1

    def to(self, device) -> "Episode":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Episode(move(self.support), move(self.support_y), move(self.query),
                       move(self.query_y), move(self.classes))


class EpisodeSampler:
    """Samples N-way K-shot Q-query episodes from the nodes of ``classes``.

    Parameters
    ----------
    y: node labels (array-like of ints; negative = unlabelled).
    classes: the class ids this sampler draws from (one part of a ClassSplit).
    ways, shots, queries: N, K and Q per class.
    seed: seeds the sampler's own ``numpy.random.Generator``; same seed, same episodes.
    labels_per_class: if set, every class keeps only this many (seeded) labelled
        nodes and episodes are drawn from those (TLP's "10 labels per class").
    """

    def __init__(self, y, classes: Sequence[int], ways: int, shots: int, queries: int,
                 seed: int = 0, labels_per_class: Optional[int] = None):
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).astype(np.int64).reshape(-1)
        classes = [int(c) for c in classes]
        for label, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            require(isinstance(value, (int, np.integer)) and value > 0,
                    f"{label} must be a positive integer, got {value!r}")
        require(len(classes) > 0, "the class split is empty: give it at least one class")
        require(ways <= len(classes),
                f"{ways}-way tasks need {ways} classes but this split has {len(classes)}: "
                f"use --ways {len(classes)} or fewer, or a split with more classes")
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        self.classes = np.asarray(classes, dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        order = np.argsort(y, kind="stable")
        starts = np.searchsorted(y[order], self.classes, side="left")
        ends = np.searchsorted(y[order], self.classes, side="right")
        pick = np.random.default_rng([seed, 7919]) if labels_per_class else None
        self.members: List[np.ndarray] = []
        need = self.shots + self.queries
        for c, a, b in zip(self.classes, starts, ends):
            nodes = order[a:b]
            require(len(nodes) > 0, f"class {c} has no labelled nodes: remove it from the split")
            if labels_per_class:
                require(labels_per_class <= len(nodes),
                        f"class {c} has {len(nodes)} nodes, fewer than labels_per_class="
                        f"{labels_per_class}: lower it")
                nodes = np.sort(pick.choice(nodes, labels_per_class, replace=False))
            require(len(nodes) >= need,
                    f"class {c} has {len(nodes)} usable nodes but shots + queries = {need}: "
                    f"lower --shots or --queries to at most {len(nodes)} in total")
            self.members.append(nodes)
        self._support_y = np.repeat(np.arange(self.ways), self.shots)
        self._query_y = np.repeat(np.arange(self.ways), self.queries)

    def sample(self) -> Episode:
        """Draw one episode; support and query never share a node."""
        rng, k = self.rng, self.shots
        ways = rng.choice(len(self.classes), self.ways, replace=False)
        picked = np.stack([self.members[w][rng.choice(len(self.members[w]), k + self.queries,
                                                       replace=False)] for w in ways])
        return Episode(
            support=torch.from_numpy(picked[:, :k].reshape(-1)),
            support_y=torch.from_numpy(self._support_y),
            query=torch.from_numpy(picked[:, k:].reshape(-1)),
            query_y=torch.from_numpy(self._query_y),
            classes=torch.from_numpy(self.classes[ways]),
        )

    def __iter__(self):
        while True:
            yield self.sample()

    def get_state(self) -> Dict:
        """The sampler's RNG state (JSON-serialisable), for checkpoints."""
        return self.rng.bit_generator.state

    def set_state(self, state: Dict) -> None:
        self.rng.bit_generator.state = state


class TaskSet:
    """A fixed list of episodes that can be saved and reloaded identically.

    Saved as ``.npz`` (no pickles) with a JSON ``meta`` entry, so that two methods,
    or two runs months apart, are evaluated on exactly the same tasks.
    """

    def __init__(self, episodes: List[Episode], meta: Optional[Dict] = None):
        require(len(episodes) > 0, "a task set needs at least one task: use --tasks 1 or more")
        self.episodes = episodes
        self.meta = dict(meta or {})

    @classmethod
    def generate(cls, sampler: EpisodeSampler, num_tasks: int, meta: Optional[Dict] = None) -> "TaskSet":
        require(num_tasks > 0, f"the number of tasks must be positive, got {num_tasks}")
        meta = dict(meta or {}, ways=sampler.ways, shots=sampler.shots, queries=sampler.queries)
        return cls([sampler.sample() for _ in range(num_tasks)], meta)

    def __len__(self):
        return len(self.episodes)

    def __iter__(self):
        return iter(self.episodes)

    def __getitem__(self, i):
        return self.episodes[i]

    def save(self, path: Union[str, Path]) -> None:
        path = Path(path)
        stack = lambda attr: np.stack([getattr(e, attr).numpy() for e in self.episodes])  # noqa: E731
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, support=stack("support"), support_y=stack("support_y"), query=stack("query"),
                     query_y=stack("query_y"), classes=stack("classes"),
                     meta=np.array(json.dumps(self.meta)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TaskSet":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in ("support", "support_y", "query", "query_y", "classes", "meta")}
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise GnnCmlError(f"{path} is not a valid task-set file ({exc}): regenerate it") from None
        episodes = [Episode(*(torch.from_numpy(arrays[k][i]) for k in
                              ("support", "support_y", "query", "query_y", "classes")))
                    for i in range(arrays["support"].shape[0])]
        return cls(episodes, json.loads(str(arrays["meta"])))


class ResampledTasks:
    """``count`` fresh tasks from ``sampler`` each time it is iterated, as the reference scripts
    validate (new validation tasks at every validation); its state is the sampler's."""

    def __init__(self, sampler: EpisodeSampler, count: int):
        require(count > 0, f"the number of tasks must be positive, got {count}")
        self.sampler, self.count = sampler, int(count)

    def __iter__(self):
        return iter([self.sampler.sample() for _ in range(self.count)])

    def __len__(self):
        return self.count

    def get_state(self) -> Dict:
        return self.sampler.get_state()

    def set_state(self, state: Dict) -> None:
        self.sampler.set_state(state)


def tasks_digest(tasks) -> str:
    """SHA-256 of a TaskSet's node ids, labels and classes (file-format and timestamp independent)."""
    h = hashlib.sha256()
    for e in tasks:
        for t in (e.support, e.support_y, e.query, e.query_y, e.classes):
            a = np.ascontiguousarray(t.numpy() if t is not None else np.zeros(0), dtype=np.int64)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()
