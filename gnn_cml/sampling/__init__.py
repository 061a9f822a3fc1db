"""Class splits and episodic samplers, usable on their own.

Splits need only NumPy; the episode classes (torch) are imported on first use, so that
``gnn-cml --help`` stays fast.
"""
from gnn_cml.sampling.seeds import derive_seed
from gnn_cml.sampling.split import SPLIT_RULES, ClassSplit, default_split, distinct_split_seeds

__all__ = ["ClassSplit", "Episode", "EpisodeSampler", "SPLIT_RULES", "TaskSet", "default_split", "derive_seed",
           "distinct_split_seeds"]


def __getattr__(name):
    if name in ("Episode", "EpisodeSampler", "TaskSet"):
        from gnn_cml.sampling import episodes

        return getattr(episodes, name)
    raise AttributeError(f"module 'gnn_cml.sampling' has no attribute {name!r}")
