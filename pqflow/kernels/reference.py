"""The slow, obviously correct numpy reference of every op: the oracle's oracle.

Each op is one ``evaluate`` entry, on batched raws: int64 arrays shaped
``(N, *sample_shape)`` (``Quantize`` takes float64). Rounding, overflow and quantizing use
``pqflow.ir.numeric``, the contract's definitions. Written for obviousness, not speed:
the Numba kernels in ``numba_ops`` are tested against this file bit for bit.
"""

from __future__ import annotations

from functools import singledispatch

import numpy as np

from pqflow.ir import (
    Add,
    AvgPool2d,
    BinaryConv2d,
    BinaryDense,
    ChannelGate,
    Conv2d,
    Dense,
    Dequantize,
    Flatten,
    Float,
    Graph,
    IRError,
    MaxPool2d,
    MultiThreshold,
    Op,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    TensorType,
    apply_overflow,
    dequantize,
    quantize_float,
    round_shift,
    verify,
)


@singledispatch
def evaluate(op: Op, in_types: list[TensorType], *xs: np.ndarray) -> np.ndarray:
    """The output raws of ``op`` on batched input raws (one array per input)."""
    raise NotImplementedError(
        f"the numpy reference has no definition for op {type(op).__name__}; "
        "add an @evaluate.register entry in pqflow/kernels/reference.py"
    )


# --- edges ----------------------------------------------------------------------------------


@evaluate.register
def _(op: Quantize, in_types, x):
    return quantize_float(x, op.to, op.rounding, op.overflow)


@evaluate.register
def _(op: Dequantize, in_types, x):
    return dequantize(x, in_types[0].dtype)


# --- arithmetic -----------------------------------------------------------------------------


def _dot(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(N, K) . (O, K) -> (N, O), each output an explicit sum of products (int64, exact)."""
    out = np.zeros((x.shape[0], w.shape[0]), dtype=np.int64)
    for k in range(w.shape[1]):
        out += x[:, k : k + 1] * w[None, :, k]
    return out


@evaluate.register
def _(op: Dense, in_types, x):
    y = _dot(x, op.weight.data)
    if op.bias is not None:
        y = y + op.bias.data
    return y


def _conv(x: np.ndarray, w: np.ndarray, stride, padding, groups: int) -> np.ndarray:
    """Channels-last grouped convolution with zero padding, as a sum over kernel taps."""
    n, h, wd, cin = x.shape
    cout, kh, kw, cg = w.shape
    pt, pb, pl, pr = padding
    sh, sw = stride
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, cin), dtype=np.int64)
    xp[:, pt : pt + h, pl : pl + wd, :] = x
    ho = (h + pt + pb - kh) // sh + 1
    wo = (wd + pl + pr - kw) // sw + 1
    og = cout // groups
    y = np.zeros((n, ho, wo, cout), dtype=np.int64)
    for g in range(groups):
        ins = slice(g * cg, (g + 1) * cg)
        outs = slice(g * og, (g + 1) * og)
        for ky in range(kh):
            for kx in range(kw):
                patch = xp[
                    :, ky : ky + sh * (ho - 1) + 1 : sh, kx : kx + sw * (wo - 1) + 1 : sw, ins
                ]
                tap = w[outs, ky, kx, :]  # (og, cg)
                flat = _dot(patch.reshape(-1, cg), tap)
                y[:, :, :, outs] += flat.reshape(n, ho, wo, og)
    return y


@evaluate.register
def _(op: Conv2d, in_types, x):
    y = _conv(x, op.weight.data, op.stride, op.padding, op.groups)
    if op.bias is not None:
        y = y + op.bias.data
    return y


def _bipolar(raw: np.ndarray) -> np.ndarray:
    """Bipolar raws 0/1 as the values -1/+1."""
    return 2 * np.asarray(raw, dtype=np.int64) - 1


@evaluate.register
def _(op: BinaryDense, in_types, x):
    return _dot(_bipolar(x), _bipolar(op.weight.data))


@evaluate.register
def _(op: BinaryConv2d, in_types, x):
    return _conv(_bipolar(x), _bipolar(op.weight.data), op.stride, op.padding, op.groups)


@evaluate.register
def _(op: Add, in_types, a, b):
    fa, fb = in_types[0].dtype.frac, in_types[1].dtype.frac
    f = max(fa, fb)
    return a * (1 << (f - fa)) + b * (1 << (f - fb))


@evaluate.register
def _(op: Requant, in_types, x):
    mult = np.array(op.mult, dtype=np.int64)
    shift = np.array(op.shift, dtype=np.int64)
    return apply_overflow(round_shift(x * mult, shift, op.rounding), op.to, op.overflow)


@evaluate.register
def _(op: MultiThreshold, in_types, x):
    t = op.thresholds.data  # (C or 1, n)
    hits = x[..., None] >= t  # broadcast over the channel axis
    return op.offset + hits.sum(axis=-1, dtype=np.int64)


@evaluate.register
def _(op: ReLU, in_types, x):
    return np.maximum(x, 0)


# --- pooling and shape ----------------------------------------------------------------------


def _windows(x: np.ndarray, kernel, stride) -> list[np.ndarray]:
    """Every kernel tap's (N, Ho, Wo, C) view of an (N, H, W, C) input."""
    _, h, w, _ = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    return [
        x[:, ky : ky + sh * (ho - 1) + 1 : sh, kx : kx + sw * (wo - 1) + 1 : sw, :]
        for ky in range(kh)
        for kx in range(kw)
    ]


@evaluate.register
def _(op: MaxPool2d, in_types, x):
    return np.maximum.reduce(_windows(x, op.kernel, op.stride))


@evaluate.register
def _(op: AvgPool2d, in_types, x):
    return np.add.reduce(_windows(x, op.kernel, op.stride)).astype(np.int64)


@evaluate.register
def _(op: Flatten, in_types, x):
    return x.reshape(x.shape[0], -1)


@evaluate.register
def _(op: Reshape, in_types, x):
    return x.reshape(x.shape[0], *op.shape)


# --- dynamic pruning ------------------------------------------------------------------------


def kept_channels(s: np.ndarray, k: int) -> np.ndarray:
    """Boolean (N, C): the ``k`` largest of each row of ``s``, ties to the lower index."""
    order = np.argsort(-s, axis=1, kind="stable")  # descending, stable (exact on int64)
    keep = np.zeros(s.shape, dtype=bool)
    np.put_along_axis(keep, order[:, :k], True, axis=1)
    return keep


@evaluate.register
def _(op: ChannelGate, in_types, x, s):
    keep = kept_channels(s, op.k)
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
    keep, sv = keep.reshape(shape), s.reshape(shape)
    return np.where(keep, x * sv if op.scale else x, 0).astype(np.int64)


# --- graphs ---------------------------------------------------------------------------------


def run_reference(
    graph: Graph, inputs, *, outputs: str | list[str] | tuple[str, ...] | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """Evaluate ``graph`` node by node with the numpy reference.

    ``inputs`` is one array (a graph with one input) or a dict by input name: float for a
    Float input, integer raws otherwise. ``outputs`` picks values to return (any node or
    input name; a string returns that one array). Returns the array of the graph's output
    when it has one, else a dict by name. No input checking beyond shapes:
    ``pqflow.kernels.run`` is the checked entry point.
    """
    verify(graph)
    if not isinstance(inputs, dict):
        if len(graph.inputs) != 1:
            raise IRError(
                f"graph '{graph.name}' has {len(graph.inputs)} inputs; pass a dict by name"
            )
        inputs = {graph.inputs[0].name: inputs}
    env: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        a = np.asarray(inputs[v.name])
        env[v.name] = a.astype(np.float64 if isinstance(v.type.dtype, Float) else np.int64)
    types = graph.types()
    for node in graph.nodes:
        in_types = [types[i] for i in node.inputs]
        env[node.name] = evaluate(node.op, in_types, *(env[i] for i in node.inputs))
    if isinstance(outputs, str):
        return env[outputs]
    names = tuple(outputs) if outputs is not None else graph.outputs
    if len(names) == 1 and outputs is None:
        return env[names[0]]
    return {o: env[o] for o in names}
