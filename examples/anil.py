"""ANIL as a gnn-cml plugin: MAML that adapts only the classification head in the inner loop.

Almost No Inner Loop (Raghu et al., ICLR 2020): the GCN encoder is meta-learned in the outer loop
but frozen within a task; each task fine-tunes only the linear head on its support set. This file
is the whole method: gnn-cml is not edited. Use it by import path (the folder holding
``examples/`` on PYTHONPATH, or copy the file into your own package):

    PYTHONPATH=. gnn-cml train --graph citeseer --method examples.anil:ANIL --cml
    PYTHONPATH=. gnn-cml reproduce table3 --quick --graphs citeseer --methods examples.anil:ANIL,maml

or register it from an installed package (``pyproject.toml``)::

    [project.entry-points."gnn_cml.methods"]
    anil = "my_pkg.anil:ANIL"

and then ``gnn-cml train --method anil``. Its own option ``inner_params`` (``head``, or ``all``:
plain MAML, for a paired comparison) is a YAML key ``inner_params: all`` of a ``--config`` file.
"""
from __future__ import annotations

from gnn_cml.meta.maml import MAML
from gnn_cml.methods import Method, Option


class ANIL(MAML):
    """MAML whose inner loop adapts only the head (``inner_params: head``) or everything (``all``).

    Everything else (the run's encoder, the first-order protocol, the Trainer, CML's co-learner on
    the adapted features) is MAML's: ``from_config`` is inherited; only the constructor arguments
    read from the run config change.
    """

    method = Method(
        "anil", "MAML adapting only the head in the inner loop (ANIL)", paper="Raghu et al., ICLR 2020",
        defaults={"backbone": "gcn", "inner_steps": 20, "inner_lr": 0.05, "lr": 0.001, "inner_params": "head"},
        options=(Option("inner_params", "what the inner loop adapts: head (ANIL) or all (MAML)",
                        choices=("head", "all"), default_text="head"),),
        adapts=True,  # it has an inner loop, so CML applies (--cml)
        why_not_fast="the closed-form inner loop and batched runs adapt the whole network")

    @classmethod
    def config_kwargs(cls, cfg):
        adapt = ("head",) if cfg.option("inner_params") == "head" else ("encoder", "head")
        return dict(super().config_kwargs(cfg), adapt=adapt)
