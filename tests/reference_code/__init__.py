"""Test-only transcriptions of the authors' reference computations (shared by tests and benchmarks)."""
