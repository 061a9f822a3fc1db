"""Meta-learners: MAML and its graph variants, metric baselines, and the CML wrapper."""
from gnn_cml.meta.ammgnn import AMMGNN
from gnn_cml.meta.base import MetaLearner, TaskResult
from gnn_cml.meta.cml import CML
from gnn_cml.meta.maml import MAML, EncoderHead
from gnn_cml.meta.prototypical import GPN, ProtoNet

__all__ = ["AMMGNN", "CML", "EncoderHead", "GPN", "MAML", "MetaLearner", "ProtoNet", "TaskResult"]
