"""Reproducible seeds derived from one seed."""
from __future__ import annotations

import numpy as np


def derive_seed(seed: int, *keys: int) -> int:
    """An independent, reproducible seed per (seed, keys...): e.g. per run and purpose (training,
    validation, test tasks) from the one ``--seed``.

    Example::

        derive_seed(0, 100 + run)       # run ``run``'s seed
        derive_seed(run_seed, 2)        # its validation tasks' sampler
    """
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])
