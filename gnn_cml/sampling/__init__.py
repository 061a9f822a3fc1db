"""Class splits and episodic samplers, usable on their own."""
from gnn_cml.sampling.episodes import Episode, EpisodeSampler, TaskSet
from gnn_cml.sampling.split import ClassSplit

__all__ = ["ClassSplit", "Episode", "EpisodeSampler", "TaskSet"]
