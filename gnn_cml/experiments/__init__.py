"""The three experiments of the paper, side by side on the one engine (``gnn_cml.engine``).

- :mod:`gnn_cml.experiments.graph`: few-shot node classification (graph -> split -> episodes ->
  learner -> runs -> ``results.json``), behind ``gnn-cml train`` and ``reproduce table3``;
- :mod:`gnn_cml.experiments.regression`: sinusoid regression (``reproduce regression``);
- :mod:`gnn_cml.experiments.image`: Omniglot (``reproduce omniglot``).

:mod:`~gnn_cml.experiments.common` holds what the regression and image experiments share;
:mod:`~gnn_cml.experiments.options` their command-line options (no torch import, for fast help).
Nothing is imported here, so ``import gnn_cml.experiments.options`` stays light.
"""
