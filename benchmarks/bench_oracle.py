"""Oracle throughput on the digits MLP, dense and 80%-sparse, beside torch and numpy.

Trains the digits MLP (64-64-32-32-10), quantizes it to w8a8 fixed point and lowers it
to the IR, then times, on the same batch of real digits inputs (the test split tiled
to ``--batch`` rows):

- the Numba oracle ``pqflow.kernels.run`` (after JIT warm-up),
- torch float32 inference of the same (float) model,
- the plain numpy reference ``pqflow.kernels.run_reference`` (on a smaller batch).

Each figure is the best of ``--repeat`` timed runs. Run::

    .venv/bin/python benchmarks/bench_oracle.py --batch 100000

and paste the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def best_rate(fn, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=100_000, help="rows per timed call")
    ap.add_argument("--ref-batch", type=int, default=10_000, help="rows for the numpy reference")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sparsity", type=float, default=0.8)
    args = ap.parse_args()

    from pqflow.kernels import run, run_reference
    from pqflow.models.data import load_digits_split
    from pqflow.models.lower import lower_mlp
    from pqflow.models.quant import prune_and_finetune, quantize_mlp
    from pqflow.models.train import TrainConfig, evaluate, train
    from pqflow.models.zoo import build

    split = load_digits_split()
    reps = -(-args.batch // len(split.x_test))
    xb = np.ascontiguousarray(np.tile(split.x_test, (reps, 1))[: args.batch])
    xr = xb[: args.ref_batch]

    dense = train(build("mlp"), split.x_train, split.y_train, TrainConfig())
    sparse = train(build("mlp"), split.x_train, split.y_train, TrainConfig())
    sparse = prune_and_finetune(sparse, split.x_train, split.y_train, args.sparsity)

    rows = []
    for label, model in (("dense", dense), (f"{args.sparsity:.0%} sparse", sparse)):
        q = quantize_mlp(model, split.x_train)
        g = lower_mlp(q)
        nnz = sum(n.op.weight.nnz for n in g.nodes if hasattr(n.op, "weight"))
        acc = float((np.asarray(run(g, split.x_test)).argmax(1) == split.y_test).mean())
        assert np.array_equal(run(g, xr), run_reference(g, xr)), "oracle != reference"
        run(g, xb[:1000])  # JIT warm-up
        oracle = best_rate(lambda g=g: run(g, xb), len(xb), args.repeat)
        ref = best_rate(lambda g=g: run_reference(g, xr), len(xr), max(2, args.repeat // 2))
        model.eval()
        xt = torch.from_numpy(xb)
        with torch.inference_mode():
            model(xt[:1000])
            tfloat = best_rate(lambda m=model, xt=xt: m(xt), len(xb), args.repeat)
        rows.append(
            (label, nnz, acc, oracle, tfloat, ref, evaluate(model, split.x_test, split.y_test))
        )

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, batch {len(xb)} (numpy reference {len(xr)})"
    )
    print()
    print(
        "| model | nonzero weights | oracle acc | float acc | oracle samples/s "
        "| torch f32 samples/s | numpy ref samples/s | oracle / torch |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, nnz, acc, o, t, r, facc in rows:
        print(
            f"| {label} | {nnz} | {acc:.2%} | {facc:.2%} | {o:,.0f} | {t:,.0f} | {r:,.0f} "
            f"| {o / t:.2f}x |"
        )


if __name__ == "__main__":
    main()
