"""Class splits and episodic samplers, usable on their own."""
from gnn_cml.sampling.episodes import Episode, EpisodeSampler, TaskSet
from gnn_cml.sampling.split import SPLIT_RULES, ClassSplit, distinct_split_seeds

__all__ = ["ClassSplit", "Episode", "EpisodeSampler", "SPLIT_RULES", "TaskSet", "distinct_split_seeds"]
