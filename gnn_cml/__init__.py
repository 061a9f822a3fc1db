"""gnn-cml: few-shot node classification with meta-learning and CML."""

__version__ = "0.1.0"

from gnn_cml.errors import GnnCmlError  # noqa: F401
