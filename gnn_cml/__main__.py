"""``python -m gnn_cml``: the ``gnn-cml`` command line (also under ``torchrun -m gnn_cml``)."""
import sys

from gnn_cml.cli import main

sys.exit(main())
