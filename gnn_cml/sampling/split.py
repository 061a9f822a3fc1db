"""Disjoint train/validation/test class splits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Sequence, Tuple

import random

import numpy as np

from gnn_cml.errors import GnnCmlError, require


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
    def from_counts(cls, classes, counts: Sequence[int], seed: int = 1234) -> "ClassSplit":
        """Random split of ``classes`` (an int means ``range(classes)``) into counts.

        This is the TLP protocol (Tan et al. 2022) behind the paper's Table 3: Python's
        ``random.shuffle`` of the class list with a fixed seed (1234 in the reference
        code), cut into train/val/test blocks; the same seed gives the same classes.
        """
        pool = list(range(classes)) if isinstance(classes, (int, np.integer)) else [int(c) for c in classes]
        counts = tuple(int(c) for c in counts)
        require(len(counts) == 3, f"a split needs three counts (train, val, test), got {counts}")
        require(all(c > 0 for c in counts),
                f"split counts must be positive, got {counts}: e.g. --split 3,2,2")
        require(sum(counts) <= len(pool),
                f"split {counts} needs {sum(counts)} classes but the graph has {len(pool)}: "
                f"use smaller counts")
        random.Random(seed).shuffle(pool)
        a, b, c = counts
        return cls(pool[:a], pool[a:a + b], pool[a + b:a + b + c])

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
