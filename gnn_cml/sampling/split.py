"""Disjoint train/validation/test class splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import random

import numpy as np

from gnn_cml.errors import GnnCmlError, require

SPLIT_RULES = ("reference", "shuffle")


def _as_classes(values: Iterable[int]) -> Tuple[int, ...]:
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class ClassSplit:
    """Disjoint tuples of class ids for meta-training, validation and meta-testing."""

    train: Tuple[int, ...]
    val: Tuple[int, ...]
    test: Tuple[int, ...]

    def __post_init__(self):
        for part in ("train", "val", "test"):
            object.__setattr__(self, part, _as_classes(getattr(self, part)))
        for part in ("train", "val", "test"):
            require(len(getattr(self, part)) > 0,
                    f"the {part} split has no classes: give it at least one class "
                    f"(e.g. --split 3,2,2)")
        seen: Dict[int, str] = {}
        for part in ("train", "val", "test"):
            for c in getattr(self, part):
                if c in seen:
                    raise GnnCmlError(
                        f"class {c} is in both the {seen[c]} and {part} splits: "
                        f"class splits must be disjoint")
                seen[c] = part

    @classmethod
    def from_counts(cls, classes, counts: Sequence[int], seed: int = 1234, rule: str = "reference") -> "ClassSplit":
        """Random split of ``classes`` (an int means ``range(classes)``) into train/val/test counts.

        ``rule='reference'`` (default) is the rule of the reference code behind the paper's
        Table 3 (TLP-FSNC's G-Meta and AMM-GNN scripts): ``np.random.seed(seed)``, then the
        test classes by ``np.random.choice(classes, n_test, replace=False)``, the validation
        classes likewise from the sorted remaining classes, and the rest (sorted) for training.
        Seed 1234 gives CiteSeer test classes [2, 1] and Cora [2, 1].
        ``rule='shuffle'`` is Python's ``random.shuffle`` of the class list cut into blocks,
        as some TLP linear-probing scripts do (other classes for the same seed).
        """
        pool = list(range(classes)) if isinstance(classes, (int, np.integer)) else [int(c) for c in classes]
        counts = tuple(int(c) for c in counts)
        require(rule in SPLIT_RULES, f"unknown split rule '{rule}': use one of {', '.join(SPLIT_RULES)}")
        require(len(counts) == 3, f"a split needs three counts (train, val, test), got {counts}")
        require(all(c > 0 for c in counts),
                f"split counts must be positive, got {counts}: e.g. --split 3,2,2")
        require(sum(counts) <= len(pool),
                f"split {counts} needs {sum(counts)} classes but the graph has {len(pool)}: "
                f"use smaller counts")
        a, b, c = counts
        if rule == "shuffle":
            random.Random(seed).shuffle(pool)
            return cls(pool[:a], pool[a:a + b], pool[a + b:a + b + c])
        rng = np.random.RandomState(seed)  # the legacy global-RNG stream of np.random.seed(seed)
        test = rng.choice(pool, c, replace=False).tolist()
        rest = sorted(set(pool) - set(test))
        val = rng.choice(rest, b, replace=False).tolist()
        train = sorted(set(rest) - set(val))
        return cls(train[:a], val, test)

    @classmethod
    def from_upstream(cls, train_classes, test_classes, num_val: int, seed: int = 0) -> "ClassSplit":
        """GPN protocol: fixed train/test classes; validation classes drawn from train."""
        train = np.asarray(sorted(set(int(c) for c in train_classes)))
        require(0 < num_val < len(train),
                f"cannot draw {num_val} validation classes from {len(train)} training classes: "
                f"use fewer validation classes")
        perm = np.random.default_rng(seed).permutation(len(train))
        val = train[perm[:num_val]]
        rest = train[np.sort(perm[num_val:])]
        return cls(rest, np.sort(val), sorted(set(int(c) for c in test_classes)))

    def part(self, name: str) -> Tuple[int, ...]:
        require(name in ("train", "val", "test"), f"unknown split part '{name}': use train, val or test")
        return getattr(self, name)

    def to_dict(self) -> Dict[str, list]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}

    @classmethod
    def from_dict(cls, d: Dict[str, Iterable[int]]) -> "ClassSplit":
        return cls(d["train"], d["val"], d["test"])


def distinct_split_seeds(classes, counts: Sequence[int], n: int, first: int = 1234, rule: str = "reference",
                         max_tries: int = 10_000) -> List[int]:
    """``n`` class-split seeds whose splits have pairwise different test-class sets.

    Starts at ``first`` (the paper's split) and walks up ``first + 1, first + 2, ...``,
    skipping any seed whose test classes (as a set) repeat an earlier seed's. Fails with a
    one-line error when the graph has fewer distinct test sets than ``n``.
    """
    require(n > 0, f"the number of class splits must be positive, got {n}")
    seeds: List[int] = []
    seen = set()
    for seed in range(first, first + max_tries):
        test = frozenset(ClassSplit.from_counts(classes, counts, seed, rule).test)
        if test not in seen:
            seen.add(test)
            seeds.append(seed)
            if len(seeds) == n:
                return seeds
    raise GnnCmlError(f"only {len(seeds)} distinct test-class sets found in {max_tries} seeds from {first}: "
                      f"ask for at most {len(seeds)} split seeds")


def default_split(data, seed: int = 1234, counts: Optional[Sequence[int]] = None,
                  rule: str = "reference") -> "ClassSplit":
    """The paper-default class split of ``data`` (or one from explicit ``counts``).

    Graphs with an upstream split (GPN sets, or a user ``.npz`` that carries
    ``train_classes``/``test_classes``) keep it and draw validation classes from the
    training classes; the others use a seeded random split by ``rule`` (default: the
    reference code's ``np.random.choice`` rule, see :meth:`ClassSplit.from_counts`).
    """
    from gnn_cml.data.registry import GRAPHS

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
