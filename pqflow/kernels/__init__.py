"""The bit-accurate oracle: Numba kernels and their executor, with a numpy reference beside.

``run(graph, x)`` runs a graph over a batch with the Numba kernels; ``run_reference``
evaluates it with the slow, obviously correct numpy reference. Both implement the
numeric contract of ``pqflow.ir`` exactly and agree bit for bit.
"""

from .executor import run
from .numba_ops import GEMM_PATHS, Options, choose_path, gemm_bound, kernel
from .reference import evaluate, run_reference

__all__ = [
    "GEMM_PATHS",
    "Options",
    "choose_path",
    "evaluate",
    "gemm_bound",
    "kernel",
    "run",
    "run_reference",
]
