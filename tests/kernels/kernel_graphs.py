"""Small graphs the kernel tests and benchmarks build with the IR builder."""

from __future__ import annotations

import numpy as np

from pqflow.ir import (
    Dense,
    Fixed,
    Float,
    Graph,
    GraphBuilder,
    Pattern,
    Quantize,
    ReLU,
    Requant,
    Sparsity,
    Weight,
)


def digits_mlp(seed: int = 0, density: float = 1.0) -> Graph:
    """A digits-like MLP: Quantize u8 -> 64x64 -> 64x32 -> 32x32 -> 32x10, 8-bit weights.

    Each hidden layer is Dense -> Requant (to s8) -> ReLU; ``density`` < 1 zeroes weights
    at random (unstructured pruning).
    """
    rng = np.random.default_rng(seed)
    b = GraphBuilder("digits_mlp")
    x = b.input("x", Float(), (64,))
    h = b.add(Quantize(Fixed(8, 4, False)), x, name="q")
    sizes = [64, 64, 32, 32, 10]
    wt = Fixed(8, 6, True)
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = rng.integers(-128, 128, size=(n_out, n_in))
        sp = Sparsity()
        if density < 1.0:
            w = w * (rng.random(w.shape) < density)
            sp = Sparsity(Pattern.UNSTRUCTURED)
        x_frac = b.type_of(h).dtype.frac
        bias = Weight(rng.integers(-4096, 4096, size=n_out), Fixed(16, wt.frac + x_frac, True))
        h = b.add(Dense(Weight(w, wt, sp), bias), h, name=f"fc{i}")
        if i < len(sizes) - 2:
            acc = b.type_of(h).dtype
            mult = tuple(int(m) for m in rng.integers(1, 256, size=n_out))
            h = b.add(Requant(Fixed(8, 4, True), mult, (acc.frac - 4 + 8,)), h, name=f"rq{i}")
            h = b.add(ReLU(), h, name=f"relu{i}")
    return b.build(h)
