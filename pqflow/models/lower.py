"""Lowering quantized torch models to the integer dataflow IR.

A ``QuantizedMLP`` becomes, top to bottom::

    x: f64[64]
    quant    = Quantize(x, to=in_fmt, half_even, saturate)
    fc0      = Dense(quant, W0 raws, b0 raws at frac fw0 + fx)        accumulator, exact
    relu0    = ReLU(fc0)                                              signed -> unsigned
    requant0 = Requant(relu0, to=out_fmt0, mult=1, shift=s0, half_even, saturate)
    ...                                                               (each hidden layer)
    fc3      = Dense(requant2, W3, b3)                                integer logits
    dequant  = Dequantize(fc3)                                        only if asked

which is, op for op, the integer computation of ``QuantizedMLP.forward_int`` (see
``quant.py``), so the oracle's outputs equal the model's integer codes exactly. A left
shift (an activation frac above the accumulator's) is carried as ``mult = 2**k,
shift = 0``. Weights of a pruned layer are recorded with an unstructured sparsity
pattern.
"""

from __future__ import annotations

from functools import singledispatch

from pqflow.ir import (
    Dense,
    Dequantize,
    Float,
    Graph,
    GraphBuilder,
    Overflow,
    Pattern,
    Quantize,
    ReLU,
    Requant,
    Rounding,
    Sparsity,
    Weight,
)
from pqflow.models.quant import QuantizedMLP, QuantLayer

__all__ = ["lower", "lower_mlp"]


@singledispatch
def lower(qmodel, **kwargs) -> Graph:
    """The IR graph of a quantized model; dispatches on the model's class."""
    raise TypeError(
        f"no lowering for {type(qmodel).__name__}; lowerable models: "
        f"{sorted(c.__name__ for c in lower.registry if c is not object)}"
    )


def _requant(ly: QuantLayer) -> Requant:
    s = ly.shift
    mult, shift = (1, s) if s >= 0 else (1 << -s, 0)
    return Requant(
        to=ly.out_fmt,
        mult=(mult,),
        shift=(shift,),
        rounding=Rounding.HALF_EVEN,
        overflow=Overflow.SATURATE,
    )


@lower.register
def lower_mlp(qmodel: QuantizedMLP, *, dequantize: bool = False, name: str = "mlp") -> Graph:
    """The verified IR graph of ``qmodel`` (see the module docstring for its shape).

    Its single output is the last Dense accumulator (integer logits at
    ``qmodel.out_frac``), or with ``dequantize=True`` those logits as float64.
    Node names: ``quant``, ``fc{i}``, ``relu{i}``, ``requant{i}``, ``dequant``.
    """
    if not isinstance(qmodel, QuantizedMLP):
        raise TypeError(f"lower_mlp needs a QuantizedMLP, not {type(qmodel).__name__}")
    b = GraphBuilder(name)
    n_in = qmodel.layers[0].weight.shape[1]
    v = b.input("x", Float(), (n_in,))
    v = b.add(Quantize(qmodel.in_fmt, Rounding.HALF_EVEN, Overflow.SATURATE), v, name="quant")
    for i, ly in enumerate(qmodel.layers):
        sparsity = Sparsity(Pattern.UNSTRUCTURED if ly.pruned else Pattern.DENSE)
        dense = Dense(
            weight=Weight(ly.weight, ly.w_fmt, sparsity),
            bias=Weight(ly.bias, ly.bias_fmt),
        )
        v = b.add(dense, v, name=f"fc{i}")
        if ly.relu:
            v = b.add(ReLU(), v, name=f"relu{i}")
        if ly.out_fmt is not None:
            v = b.add(_requant(ly), v, name=f"requant{i}")
    if dequantize:
        v = b.add(Dequantize(), v, name="dequant")
    return b.build(v)
