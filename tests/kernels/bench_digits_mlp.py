"""Throughput of the oracle on the digits MLP (a benchmark, not a test).

Run ``python tests/kernels/bench_digits_mlp.py``. Prints samples/s (wall clock) and
samples per CPU-second at batch 10k and 100k after warm-up, for the random digits-like
MLP of ``kernel_graphs`` (dense and 80% sparse).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from kernel_graphs import digits_mlp  # noqa: E402

from pqflow.kernels import run  # noqa: E402


def main() -> None:
    x = np.random.default_rng(1).random((100_000, 64)) * 16
    for density in (1.0, 0.2):
        g = digits_mlp(density=density)
        run(g, x)
        for n in (10_000, 100_000):
            wall, cpu = [], []
            for _ in range(7):
                t, c = time.perf_counter(), time.process_time()
                run(g, x[:n])
                wall.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            print(
                f"density {density:.1f}, batch {n:>7,}: {n / min(wall):>11,.0f} samples/s, "
                f"{n / min(cpu):>11,.0f} samples per CPU-second"
            )


if __name__ == "__main__":
    main()
