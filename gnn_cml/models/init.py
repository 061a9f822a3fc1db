"""Parameter initialisations: PyTorch's defaults, or the reference code's behind Table 3."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from gnn_cml.errors import require

INITS = ("reference", "torch")


@torch.no_grad()
def reference_init_(module: nn.Module, generator: Optional[torch.Generator] = None) -> nn.Module:
    """Every ``nn.Linear`` of ``module``: weight and bias uniform in ``±1/sqrt(out_features)``.

    This is the initialisation of the GCN layers and the linear head in the reference
    scripts behind the paper's Table 3 (their ``reset_parameters`` uses the size of the
    weight's output dimension, not PyTorch's fan-in), a ~15x larger first layer on
    CiteSeer than ``nn.Linear``'s default. Layers are visited in registration order.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            bound = 1.0 / math.sqrt(layer.out_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            if layer.bias is not None:
                layer.bias.uniform_(-bound, bound, generator=generator)
    return module


def initialise_(module: nn.Module, scheme: str, generator: Optional[torch.Generator] = None) -> nn.Module:
    """Apply ``scheme`` ('reference' or 'torch': leave PyTorch's default init) to ``module``."""
    require(scheme in INITS, f"unknown init '{scheme}': use one of {', '.join(INITS)}")
    return reference_init_(module, generator) if scheme == "reference" else module
