"""Moved to :mod:`gnn_cml.experiments.graph`; this alias keeps old imports working."""
from gnn_cml.experiments.graph import *  # noqa: F401,F403
from gnn_cml.experiments.graph import GraphTask, evaluate_run, run_experiment, summarise  # noqa: F401
