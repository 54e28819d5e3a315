"""Lowering quantized torch models to the integer dataflow IR.

``lower(model, example_input)`` traces a model made by ``quantize_model`` (PTQ, QAT,
pruned, binary, ternary, mixed precision) with ``torch.fx`` and emits, node by node,
the integer computation that its fake-quantized forward performs:

==============================  ===========================================================
torch (fake-quant)              IR
==============================  ===========================================================
input ``QuantAct``              ``Quantize`` (power-of-two scale), or a 24-bit ``Quantize``
                                then a ``Requant`` (float scale)
``QuantLinear``/``QuantConv2d``  ``Dense``/``Conv2d`` on the integer codes, bias at the
                                accumulator scale (weights minus their zero point; masks
                                give exact zeros); ±1/ternary weights as ``Fixed(2, 0)``;
                                ±1 weights on a Bipolar input as ``BinaryDense``/
                                ``BinaryConv2d`` (the bias moves into the next threshold)
``QuantAct`` (uniform, > 4 b)    [``ReLU``] + ``Requant`` with per-channel ``mult``/``shift``
                                (``requant.py``: power-of-two ratios are pure shifts)
``QuantAct`` (uniform, <= 4 b)   ``MultiThreshold`` with exact integer thresholds (the ReLU,
                                the bias of a binary layer and every scale absorbed)
``QuantAct`` (binary, sign)     ``MultiThreshold`` to ``Bipolar`` (threshold ``-bias``) when
                                every reader is an XNOR layer, else to ``Fixed(2, 0)`` ±1
residual ``+``                  ``Add`` (operands first brought to one power-of-two grid by
                                ``Requant`` when their scales differ per channel)
``MaxPool2d``/``AvgPool2d``      ``MaxPool2d``/``AvgPool2d`` (power-of-two windows)
``QuantGatedConvBlock``         conv + act as above; the gate: ``AvgPool2d`` over the whole
                                (power-of-two) image, ``Flatten``, its ``QuantAct``, the
                                predictor ``Dense`` and the saliency act; then
                                ``ChannelGate(k, scale)`` of (act, saliency) and, with
                                ``scale=True``, the ``out_quant`` requant of the product
``ChannelsFirst``/``FlattenHWC`` nothing / ``Flatten`` (the IR is channels-last throughout)
folded batch norm (Identity)    nothing (``quantize_model`` folded it into the conv)
==============================  ===========================================================

**Scales.** Every lowered value carries the real scale of its raws per channel. When
that scale is one power of two the IR type's ``frac`` is exact; a per-channel or float
scale (an accumulator of a per-channel-quantized layer, a float-scaled activation) is
carried by the ``Requant`` (or ``MultiThreshold``) that consumes it, and the type's
``frac`` is then nominal (``round(-log2(scale))``). The graph's output is always on one
power-of-two grid: a last accumulator with per-channel or float scales gets a final
``Requant`` named ``output`` onto ``2**-ceil(-log2(min scale))`` (power-of-two channel
scales: exact) or ``GRID_EXTRA_BITS`` finer (float scales: the rounding moves a logit by at
most 2**-9 of its own step, so top-1 is kept except at near-ties).

**Faithfulness.** With power-of-two scales every step is exact, so the oracle's output
raws equal the torch forward's integer codes (run in float64) bit for bit. With float
scales, each ``Requant`` is within 1 LSB of the ideal ``sat(round(x * r))`` (the bound in
``requant.py``); ``MultiThreshold`` steps are exact for the real scales.

**Sparsity.** Zero weights stay zeros in ``W``; a pruned layer's ``Weight.sparsity``
records the pattern of its mask (filter, channel, kernel, N:M or unstructured). Channels
that every producer writes as exactly zero, or that every reader ignores, are removed
from the graph (producer rows, per-channel requant/threshold entries, reader columns):
structured pruning becomes physical.

A ``QuantizedMLP`` (``quant.quantize_mlp``) is lowered by ``lower_mlp``::

    quant = Quantize(x); fc{i} = Dense; relu{i} = ReLU; requant{i} = Requant; ...

``lower`` dispatches to it. Anything not listed above raises ``LoweringError`` naming
the module path, its type and what is supported; no graph is returned half-built.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from pqflow.errors import UserError
from pqflow.ir import (
    Add,
    AvgPool2d,
    BinaryConv2d,
    BinaryDense,
    Bipolar,
    ChannelGate,
    Conv2d,
    Dense,
    Dequantize,
    Fixed,
    Flatten,
    Float,
    Graph,
    GraphBuilder,
    MaxPool2d,
    MultiThreshold,
    Overflow,
    Pattern,
    Quantize,
    ReLU,
    Requant,
    Rounding,
    Sparsity,
    Weight,
    bits_for,
    value_range,
)
from pqflow.models.dynamic import GatedConvBlock
from pqflow.models.qmodules import QuantAct, QuantConv2d, QuantGatedConvBlock, QuantLinear
from pqflow.models.quant import QuantizedMLP, QuantLayer, pow2_frac
from pqflow.models.requant import MULT_BITS, is_pow2, requant_params
from pqflow.models.zoo import ChannelsFirst, FlattenHWC

__all__ = [
    "MODEL_FORMAT",
    "THRESHOLD_BITS",
    "Lowered",
    "LoweringError",
    "load_model",
    "lower",
    "lower_mlp",
    "lower_with_info",
    "save_model",
]

THRESHOLD_BITS = 4
"""Activations of at most this many bits become ``MultiThreshold`` (2**bits - 1 thresholds
per channel); wider ones become ``ReLU`` + ``Requant``."""

GRID_EXTRA_BITS = 8
"""A value with float per-channel scales brought onto one power-of-two grid (the graph's
output, a residual add's operands) gets this many bits below its finest channel's step, so
the rounding to the grid moves a value by at most 2**-9 of that step."""

INPUT_BITS = 24
"""Width of the fine ``Quantize`` in front of a float-scaled input quantizer."""

SUPPORTED = (
    "QuantLinear, QuantConv2d (dilation 1, zero padding), QuantAct (uniform, per-tensor, "
    "any zero point; or binary sign with unit scale), MaxPool2d, AvgPool2d (power-of-two "
    "windows), Identity, Dropout, ChannelsFirst, FlattenHWC, Flatten, residual add, "
    "QuantGatedConvBlock (global-average gate, pool=1)"
)


class LoweringError(UserError):
    """A model (or one of its modules) that the lowering cannot express in the IR."""


def _unsupported(path: str, what: object, why: str = "") -> LoweringError:
    kind = what if isinstance(what, str) else type(what).__name__
    extra = f" ({why})" if why else ""
    return LoweringError(f"cannot lower module '{path}' ({kind}){extra}; supported: {SUPPORTED}")


# --- lowered values -------------------------------------------------------------------------


@dataclass
class _Val:
    """A torch value in the IR: ``value[c] = (raw[c] + offset[c]) * scale[c]``.

    ``kind``: ``float`` (the graph input), ``int`` (Fixed raws), ``bipolar``, ``zero`` (a
    constant 0, e.g. a residual path multiplied by a zero mask) or ``const`` (a tensor).
    ``layout``: how the torch tensor relates to the IR's channels-last shape: ``nhwc``
    (same order), ``nchw`` (torch's conv layout; the IR keeps HWC) or ``flat``.
    """

    name: str | None
    kind: str
    scale: np.ndarray = field(default_factory=lambda: np.ones(1))
    offset: np.ndarray | None = None
    layout: str = "flat"
    const: torch.Tensor | None = None


@dataclass(frozen=True)
class Lowered:
    """A lowered graph plus what the lowering knows about it.

    ``output_scale``: real value of one output LSB (``2**-frac`` of the output type).
    ``requants``: per ``Requant`` node name, the ideal real ratios ``S_in / S_out`` per
    channel it approximates (for checking the error bound). ``dropped``: channels removed
    per channel space (by the first producing node's name).
    """

    graph: Graph
    output_scale: float
    requants: dict[str, np.ndarray]
    dropped: dict[str, int]


def _uniform(scale: np.ndarray) -> bool:
    return bool(np.all(scale == scale[0]))


def _nominal_frac(scale: np.ndarray) -> int:
    s = float(np.median(scale))
    return int(max(-200, min(200, round(-math.log2(s)))))


def _frac_of(scale: np.ndarray) -> int:
    """The exact frac of a uniform power-of-two scale, else a nominal one."""
    if _uniform(scale) and is_pow2(float(scale[0])):
        return -(math.frexp(float(scale[0]))[1] - 1)
    return _nominal_frac(scale)


def _honest(v: _Val, t) -> bool:
    """Whether the IR type's frac is the value's true scale (one power of two)."""
    return (
        v.offset is None
        and _uniform(v.scale)
        and is_pow2(float(v.scale[0]))
        and isinstance(t.dtype, Fixed)
        and float(v.scale[0]) == 2.0**-t.dtype.frac
    )


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


# --- tracing --------------------------------------------------------------------------------

_LEAVES = (QuantAct, QuantLinear, QuantConv2d, ChannelsFirst, FlattenHWC, GatedConvBlock)
_TRANSPARENT = (nn.Identity, nn.Dropout, nn.MaxPool2d, ChannelsFirst, FlattenHWC, nn.Flatten)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> fx.Graph:
    try:
        return _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure is reported as one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LoweringError(
            f"cannot trace {type(model).__name__} with torch.fx: {msg}; lowerable models are "
            f"built from: {SUPPORTED}"
        ) from None


# --- the lowering ---------------------------------------------------------------------------


class _Lowering:
    def __init__(self, model: nn.Module, example: torch.Tensor, name: str, mult_bits: int):
        self.model = model
        self.example = example
        self.b = GraphBuilder(name)
        self.mult_bits = mult_bits
        self.modules = dict(model.named_modules())
        self.requants: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray] = {}  # node name -> IR-layout keep mask (pruned)
        self.pruned: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------

    def type_of(self, v: _Val):
        return self.b.type_of(v.name)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while True:
            try:
                self.b.type_of(name)
            except KeyError:
                return name
            name = f"{base}_{k}"
            k += 1

    def add(self, op, *inputs: str, name: str) -> str:
        return self.b.add(op, *inputs, name=self.fresh(name))

    def requant(self, v: _Val, ratios: np.ndarray, to: Fixed, name: str, path: str) -> str:
        """A Requant of ``v`` by per-channel real ``ratios`` into ``to``."""
        t = self.type_of(v)
        p = requant_params(ratios, t.dtype.width, to.width, self.mult_bits)
        op = Requant(to, p.mult, p.shift, Rounding.HALF_EVEN, Overflow.SATURATE)
        out = self.add(op, v.name, name=name)
        self.requants[out] = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
        return out

    def to_grid(self, v: _Val, name: str, path: str) -> tuple[str, float]:
        """``v`` on one power-of-two grid no coarser than its finest channel."""
        t = self.type_of(v)
        if _honest(v, t):
            return v.name, float(v.scale[0])
        if v.offset is not None:
            raise _unsupported(path, "binary layer", "its bias has no threshold to absorb it")
        smin = float(v.scale.min())
        exact = all(is_pow2(float(c)) for c in v.scale)
        frac = math.ceil(-math.log2(smin)) + (0 if exact else GRID_EXTRA_BITS)
        s_out = 2.0**-frac
        ratios = v.scale / s_out
        lo, hi = value_range(t.dtype)
        rmax = float(ratios.max())
        to = Fixed.fitting(math.floor(lo * rmax) - 1, math.ceil(hi * rmax) + 1, frac)
        return self.requant(v, ratios, to, name, path), s_out

    # -- walk ------------------------------------------------------------------------------

    def run(self) -> tuple[str, float]:
        graph = _trace(self.model)
        vals: dict[fx.Node, _Val] = {}
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise LoweringError(
                f"the model takes {len(placeholders)} inputs; lowering needs exactly one"
            )
        out_val = None
        for node in graph.nodes:
            if node.op == "placeholder":
                shape = tuple(self.example.shape[1:])
                name = self.b.input("x", Float(), shape)
                vals[node] = _Val(name, "float", layout="nhwc" if len(shape) == 3 else "flat")
            elif node.op == "get_attr":
                vals[node] = _Val(None, "const", const=self._attr(node.target))
            elif node.op == "call_module":
                mod = self.modules[node.target]
                ins = [vals[a] for a in node.args if isinstance(a, fx.Node)]
                if len(ins) != 1 or node.kwargs:
                    raise _unsupported(node.target, mod, "takes one tensor argument")
                vals[node] = self.module(node, str(node.target), mod, ins[0])
            elif node.op in ("call_function", "call_method"):
                vals[node] = self.function(node, vals)
            elif node.op == "output":
                arg = node.args[0]
                if not isinstance(arg, fx.Node):
                    raise LoweringError("the model must return one tensor")
                out_val = vals[arg]
        if out_val is None or out_val.kind not in ("int", "bipolar"):
            raise LoweringError("the model's output is not an integer value of the graph")
        if out_val.kind == "bipolar":
            return out_val.name, 1.0
        return self.to_grid(out_val, "output", "output")

    def _attr(self, target: str) -> torch.Tensor:
        obj = self.model
        for part in target.split("."):
            obj = getattr(obj, part)
        return torch.as_tensor(obj)

    # -- functions (residual add, mask multiply) -------------------------------------------

    def function(self, node: fx.Node, vals: dict) -> _Val:
        t = node.target
        name = node.name
        args = [vals[a] if isinstance(a, fx.Node) else a for a in node.args]
        is_add = t in (operator.add, torch.add) or (node.op == "call_method" and t == "add")
        is_mul = t in (operator.mul, torch.mul) or (node.op == "call_method" and t == "mul")
        if is_mul and len(args) == 2:
            consts = [a for a in args if isinstance(a, _Val) and a.kind == "const"]
            others = [a for a in args if isinstance(a, _Val) and a.kind != "const"]
            if len(consts) == 1 and len(others) == 1 and consts[0].const.numel() == 1:
                c = float(consts[0].const)
                if c == 1.0:
                    return others[0]
                if c == 0.0:
                    return _Val(None, "zero", layout=others[0].layout)
            raise _unsupported(name, f"multiply {t}", "only by a constant 0 or 1 mask")
        if is_add and len(args) == 2 and not node.kwargs:
            a, b = args
            if not (isinstance(a, _Val) and isinstance(b, _Val)):
                raise _unsupported(name, f"add {t}", "adds of two tensors only")
            return self.residual_add(name, a, b)
        raise _unsupported(name, f"{node.op} {getattr(t, '__name__', t)}")

    def residual_add(self, name: str, a: _Val, b: _Val) -> _Val:
        if a.kind == "zero":
            return b
        if b.kind == "zero":
            return a
        for v in (a, b):
            if v.kind != "int" or v.offset is not None:
                raise _unsupported(name, "add", "operands must be integer activations")
        if a.layout != b.layout:
            raise _unsupported(name, "add", f"operand layouts {a.layout} and {b.layout}")
        ta, tb = self.type_of(a), self.type_of(b)
        if _honest(a, ta) and _honest(b, tb):
            out = self.add(Add(), a.name, b.name, name=name)
            return _Val(out, "int", np.array([min(a.scale[0], b.scale[0])]), layout=a.layout)
        # bring both onto one power-of-two grid as fine as the finest channel of either
        smin = float(min(a.scale.min(), b.scale.min()))
        exact = all(is_pow2(float(v)) for v in np.concatenate([a.scale, b.scale]))
        frac = math.ceil(-math.log2(smin)) + (0 if exact else GRID_EXTRA_BITS)
        s = 2.0**-frac
        names = []
        for tag, v, t in (("a", a, ta), ("b", b, tb)):
            if _honest(v, t) and float(v.scale[0]) == s:
                names.append(v.name)
                continue
            ratios = v.scale / s
            lo, hi = value_range(t.dtype)
            rmax = float(ratios.max())
            to = Fixed.fitting(math.floor(lo * rmax) - 1, math.ceil(hi * rmax) + 1, frac)
            names.append(self.requant(v, ratios, to, f"{name}.{tag}", name))
        out = self.add(Add(), *names, name=name)
        return _Val(out, "int", np.array([s]), layout=a.layout)

    # -- modules ---------------------------------------------------------------------------

    def module(self, node: fx.Node, path: str, mod: nn.Module, v: _Val) -> _Val:
        if v.kind == "zero":
            raise _unsupported(path, mod, "its input is a constant zero")
        if isinstance(mod, QuantAct):
            return self.act(node, path, mod, v)
        if isinstance(mod, QuantLinear | QuantConv2d):
            return self.weighted(path, mod, v)
        if isinstance(mod, nn.Identity | nn.Dropout):
            return v
        if isinstance(mod, GatedConvBlock):
            return self.gated(node, path, mod, v)
        if v.kind == "float":
            raise _unsupported(path, mod, "the model input must be quantized first")
        if isinstance(mod, ChannelsFirst):
            if v.layout != "nhwc":
                raise _unsupported(path, mod, f"expects channels-last images, got {v.layout}")
            return replace(v, layout="nchw")
        if isinstance(mod, FlattenHWC):
            if v.layout != "nchw":
                raise _unsupported(path, mod, "expects (N, C, H, W) input")
            return self.flatten(path, v)
        if isinstance(mod, nn.Flatten):
            shape = self.type_of(v).shape
            if mod.start_dim != 1 or mod.end_dim != -1:
                raise _unsupported(path, mod, "only start_dim=1, end_dim=-1")
            if v.layout == "nchw" and (len(shape) == 3 and shape[0] * shape[1] != 1):
                raise _unsupported(
                    path, mod, "flattens channels-first (C, H, W) order; use zoo.FlattenHWC"
                )
            return self.flatten(path, v) if len(shape) > 1 else v
        if isinstance(mod, nn.MaxPool2d | nn.AvgPool2d):
            return self.pool(path, mod, v)
        if isinstance(mod, nn.ReLU):
            raise _unsupported(path, mod, "a float activation: quantize it (QuantConfig.act)")
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            raise _unsupported(path, mod, "fold batch norms first (QuantConfig.fold_bn=True)")
        if isinstance(mod, nn.Linear | nn.Conv2d):
            raise _unsupported(path, mod, "a float layer: quantize it with quantize_model")
        raise _unsupported(path, mod)

    def flatten(self, path: str, v: _Val) -> _Val:
        shape = self.type_of(v).shape
        out = self.add(Flatten(), v.name, name=path)
        reps = int(np.prod(shape[:-1]))
        scale = v.scale if _uniform(v.scale) else np.tile(v.scale, reps)
        off = None if v.offset is None else np.tile(v.offset, reps)
        return _Val(out, v.kind, scale, off, "flat")

    def pool(self, path: str, mod: nn.Module, v: _Val) -> _Val:
        if v.layout != "nchw":
            raise _unsupported(path, mod, "pools (N, C, H, W) tensors after ChannelsFirst")

        def pair(x):
            return (x, x) if isinstance(x, int) else tuple(x)

        k, s, pad = pair(mod.kernel_size), pair(mod.stride or mod.kernel_size), pair(mod.padding)
        if pad != (0, 0) or mod.ceil_mode:
            raise _unsupported(path, mod, "padding 0 and ceil_mode=False only")
        if isinstance(mod, nn.MaxPool2d):
            if pair(mod.dilation) != (1, 1) or mod.return_indices:
                raise _unsupported(path, mod, "dilation 1, no indices")
            out = self.add(MaxPool2d(k, s), v.name, name=path)
            return replace(v, name=out)
        if v.offset is not None or v.kind != "int" or mod.divisor_override is not None:
            raise _unsupported(path, mod, "averages integer activations only")
        n = k[0] * k[1]
        if n & (n - 1):
            raise _unsupported(path, mod, f"a {k[0]}x{k[1]} window is not a power of two")
        out = self.add(AvgPool2d(k, s), v.name, name=path)
        return replace(v, name=out, scale=v.scale / n)

    def gated(self, node: fx.Node, path: str, mod: GatedConvBlock, v: _Val) -> _Val:
        """A quantized gated block: conv -> act, gated by ``ChannelGate`` (module doc)."""
        if not isinstance(mod, QuantGatedConvBlock):
            raise _unsupported(path, mod, "a float gated block: quantize it with quantize_model")
        gate = mod.gate
        if v.kind != "int" or v.offset is not None or not _uniform(v.scale):
            raise _unsupported(path, mod, "its input must be activation codes")
        if v.layout != "nchw":
            raise _unsupported(path, mod, "gates (N, C, H, W) tensors after ChannelsFirst")
        if gate.pool != 1:
            raise _unsupported(path, mod, f"gate pool={gate.pool}; only pool=1 (global average)")
        h, w, _ = self.type_of(v).shape
        if (h * w) & (h * w - 1):
            raise _unsupported(path, mod, f"a {h}x{w} global average is not a power of two")
        pooled = self.add(AvgPool2d((h, w)), v.name, name=f"{path}.gate.pool")
        flat = self.add(Flatten(), pooled, name=f"{path}.gate.flatten")
        pv = _Val(flat, "int", v.scale / (h * w), layout="flat")
        pq = self.act(node, f"{path}.gate.pool_quant", gate.pool_quant, pv)
        sal = self.weighted(f"{path}.gate.predictor", gate.predictor, pq)
        sq = self.act(node, f"{path}.gate.sal_quant", gate.sal_quant, sal)
        a = self.act(node, f"{path}.relu", mod.relu, self.weighted(f"{path}.conv", mod.conv, v))
        out = self.add(ChannelGate(gate.k, bool(gate.scale)), a.name, sq.name, name=f"{path}.gate")
        if not gate.scale:
            return _Val(out, "int", a.scale, layout=a.layout)
        prod = _Val(out, "int", a.scale * sq.scale, layout=a.layout)
        return self.act(node, f"{path}.out_quant", mod.out_quant, prod)

    # -- activations -----------------------------------------------------------------------

    def act(self, node: fx.Node, path: str, mod: QuantAct, v: _Val) -> _Val:
        q = mod.quant
        spec = q.spec
        if not q.enabled:
            raise _unsupported(path, mod, "its quantizer is disabled")
        if spec.mode == "binary":
            return self.sign(node, path, mod, v)
        if spec.mode != "uniform":
            raise _unsupported(path, mod, f"{spec.mode} activations")
        if q.scale.dim() != 0:
            raise _unsupported(path, mod, "per-channel activation scales")
        if spec.narrow:
            raise _unsupported(path, mod, "narrow-range activations")
        s_out = float(q.scale)
        # codes q = clamp(round(x / s) + zp, qmin, qmax) stand for (q - zp) * s: the IR
        # carries the honest raws q - zp, clamped to [qmin - zp, qmax - zp]
        zp = int(round(float(q.zero_point)))
        lo, hi = spec.qmin - zp, spec.qmax - zp
        if v.kind == "float":
            return self.quantize_input(path, mod, v, s_out, lo, hi)
        if v.kind != "int":
            raise _unsupported(path, mod, f"a uniform quantizer on a {v.kind} value")
        to = Fixed.fitting(lo, hi, _frac_of(np.array([s_out])))
        t = self.type_of(v)
        exact = (to.min_raw, to.max_raw) == (lo, hi)  # a saturating Requant clamps right
        if spec.bits <= THRESHOLD_BITS or v.offset is not None or not exact:
            return self.thresholds(path, v, t, s_out, to, lo, hi, mod.relu)
        src = v.name
        if mod.relu and t.dtype.signed:
            src = self.add(ReLU(), src, name=f"{path}.relu")
        out = self.requant(replace(v, name=src), v.scale / s_out, to, path, path)
        return _Val(out, "int", np.array([s_out]), layout=v.layout)

    def quantize_input(self, path: str, mod: QuantAct, v: _Val, s: float, lo: int, hi: int):
        """The model input onto codes [lo, hi] (honest raws, see ``act``)."""
        if mod.relu:
            raise _unsupported(path, mod, "a ReLU on the model input")
        to = Fixed.fitting(lo, hi, _frac_of(np.array([s])))
        exact = (to.min_raw, to.max_raw) == (lo, hi)
        if is_pow2(s):
            name = path if exact else f"{path}.wide"
            out = self.add(Quantize(to, Rounding.HALF_EVEN, Overflow.SATURATE), v.name, name=name)
            val = _Val(out, "int", np.array([s]), layout=v.layout)
            if exact:
                return val
            return self.thresholds(path, val, self.type_of(val), s, to, lo, hi, False)
        top = max(abs(lo), abs(hi)) * s
        fine_frac = pow2_frac(top, INPUT_BITS, lo < 0)
        fine = Fixed(INPUT_BITS, fine_frac, lo < 0)
        f = self.add(
            Quantize(fine, Rounding.HALF_EVEN, Overflow.SATURATE), v.name, name=f"{path}.fine"
        )
        fv = _Val(f, "int", np.array([2.0**-fine_frac]), layout=v.layout)
        if not exact:
            return self.thresholds(path, fv, self.type_of(fv), s, to, lo, hi, False)
        to = Fixed(to.width, _nominal_frac(np.array([s])), to.signed)
        out = self.requant(fv, fv.scale / s, to, path, path)
        return _Val(out, "int", np.array([s]), layout=v.layout)

    def thresholds(self, path, v: _Val, t, s_out, to, qmin, qmax, relu, bipolar=False) -> _Val:
        """MultiThreshold computing clamp(round(relu?((raw + offset) * r)), qmin, qmax)."""
        lo, hi = value_range(t.dtype)
        c = t.shape[-1]
        scale = np.broadcast_to(v.scale, (c,)) if len(v.scale) in (1, c) else None
        if scale is None:
            raise _unsupported(path, "QuantAct", "scale does not match the channels")
        off = np.zeros(c, dtype=np.int64) if v.offset is None else np.broadcast_to(v.offset, (c,))
        rows = []
        for ch in range(c):
            r = Fraction(float(scale[ch])) / Fraction(s_out)
            o = int(off[ch])
            row = []
            for k in range(qmin + 1, qmax + 1):
                if relu and k <= 0:
                    tk = lo
                else:
                    u = Fraction(2 * k - 1, 2) / r
                    if u.denominator == 1:
                        tk = int(u) if k % 2 == 0 else int(u) + 1
                    else:
                        tk = math.ceil(u)
                    tk -= o
                row.append(min(max(tk, lo), hi + 1))
            rows.append(row)
        th = np.array(rows, dtype=object)
        if np.all(th == th[:1]):
            th = th[:1]
        tmin, tmax = int(th.min()), int(th.max())
        tw = Weight(th.astype(np.int64), Fixed.fitting(tmin, tmax, t.dtype.frac))
        out = self.add(MultiThreshold(tw, to, offset=qmin), v.name, name=path)
        return _Val(out, "int", np.array([s_out]), layout=v.layout)

    def sign(self, node: fx.Node, path: str, mod: QuantAct, v: _Val) -> _Val:
        spec = mod.quant.spec
        if spec.scale != "unit" or mod.relu:
            raise _unsupported(path, mod, "binary activations must be a unit-scale sign")
        if v.kind != "int":
            raise _unsupported(path, mod, f"a sign of a {v.kind} value")
        t = self.type_of(v)
        c = t.shape[-1]
        off = np.zeros(c, dtype=np.int64) if v.offset is None else np.broadcast_to(v.offset, (c,))
        lo, hi = value_range(t.dtype)
        th = np.clip(-off.astype(np.int64), lo, hi + 1).reshape(c, 1)
        if np.all(th == th[0]):
            th = th[:1]
        tdt = Fixed.fitting(int(th.min()), int(th.max()), t.dtype.frac)
        if _feeds_xnor(node, self.modules):
            op = MultiThreshold(Weight(th, tdt), Bipolar())
            out = self.add(op, v.name, name=path)
            return _Val(out, "bipolar", np.ones(1), layout=v.layout)
        th2 = np.concatenate([th, th], axis=1)
        op = MultiThreshold(Weight(th2, tdt), Fixed(2, 0, True), offset=-1)
        out = self.add(op, v.name, name=path)
        return _Val(out, "int", np.ones(1), layout=v.layout)

    # -- weighted layers -------------------------------------------------------------------

    def weighted(self, path: str, mod: QuantLinear | QuantConv2d, v: _Val) -> _Val:
        wq = mod.weight_quant
        spec = wq.spec
        conv = isinstance(mod, QuantConv2d)
        if v.kind not in ("int", "bipolar") or v.offset is not None:
            raise _unsupported(path, mod, f"its input is a {v.kind} value, not activation codes")
        if not _uniform(v.scale):
            raise _unsupported(path, mod, "its input has per-channel scales (no activation)")
        if mod.input_quant is None and v.kind != "bipolar":
            raise _unsupported(path, mod, "its input is not quantized")
        if conv and v.layout != "nchw":
            raise _unsupported(path, mod, "convolves (N, C, H, W) tensors after ChannelsFirst")
        if not conv and v.layout != "flat":
            raise _unsupported(path, mod, "a Linear on a multi-dimensional tensor")
        if spec.axis not in (None, 0):
            raise _unsupported(path, mod, f"weight scales along axis {spec.axis}")
        codes = _np(mod.weight_codes()).astype(np.int64)  # refreshes the scale
        n_out = codes.shape[0]
        ws = np.broadcast_to(_np(wq.scale).reshape(-1), (n_out,)).copy()
        zp = np.broadcast_to(_np(wq.zero_point).reshape(-1), (n_out,)).astype(np.int64)
        w = codes - zp.reshape((-1,) + (1,) * (codes.ndim - 1))
        mask = getattr(mod, "weight_mask", None)
        keep = None if mask is None else _np(mask) != 0
        if conv:
            w = w.transpose(0, 2, 3, 1)
            keep = None if keep is None else keep.transpose(0, 2, 3, 1)
        s_in = float(v.scale[0])
        acc_scale = ws * s_in
        bias = self.bias(path, mod, acc_scale)
        if spec.mode == "binary" and v.kind == "bipolar":
            wb = Weight((w > 0).astype(np.int64), Bipolar())
            if conv:
                self.conv_checks(path, mod, xnor=True)
                op = BinaryConv2d(wb, stride=tuple(mod.stride), groups=mod.groups)
            else:
                op = BinaryDense(wb)
            out = self.add(op, v.name, name=path)
            return _Val(out, "int", acc_scale, bias, layout="nchw" if conv else "flat")
        if v.kind == "bipolar":
            raise _unsupported(path, mod, f"{spec} weights on a Bipolar (sign) input")
        in_t = self.type_of(v)
        if spec.mode == "uniform":
            wlo, whi = int(min(w.min(), -1)), int(max(w.max(), 0))
            width = max(spec.bits, bits_for(wlo, whi))
            wfrac = _frac_of(ws)
            wdt = Fixed(width, wfrac, True)
        else:  # binary / ternary: {-1, 0, +1} codes
            wfrac = 0
            wdt = Fixed(2, 0, True)
        acc_frac = wfrac + in_t.dtype.frac
        bw = None
        if bias is not None:
            blo, bhi = int(min(bias.min(), -1)), int(max(bias.max(), 0))
            bw = Weight(bias, Fixed(bits_for(blo, bhi), acc_frac, True))
        weight = Weight(w, wdt)
        if conv:
            pad = self.conv_checks(path, mod, xnor=False)
            op = Conv2d(weight, bw, stride=tuple(mod.stride), padding=pad, groups=mod.groups)
        else:
            op = Dense(weight, bw)
        out = self.add(op, v.name, name=path)
        if keep is not None:
            self.masks[out] = keep
        return _Val(out, "int", acc_scale, layout="nchw" if conv else "flat")

    def bias(self, path: str, mod, acc_scale: np.ndarray) -> np.ndarray | None:
        if mod.bias is None:
            return None
        codes = mod.bias_codes()
        bs = mod.bias_scale()
        if codes is None or bs is None:
            raise _unsupported(
                path,
                mod,
                "its bias is not quantized (set QuantConfig.bias_bits and quantize the input)",
            )
        ratio = np.broadcast_to(_np(bs).reshape(-1), acc_scale.shape) / acc_scale
        k = np.exp2(np.round(np.log2(ratio)))
        if np.any(np.abs(ratio / k - 1) > 1e-5) or np.any(k < 1):
            raise _unsupported(path, mod, "its bias scale is not the accumulator scale")
        return np.rint(_np(codes) * k).astype(np.int64)

    def conv_checks(self, path: str, mod: nn.Conv2d, xnor: bool) -> tuple[int, int, int, int]:
        if tuple(mod.dilation) != (1, 1):
            raise _unsupported(path, mod, f"dilation {tuple(mod.dilation)}")
        if mod.padding_mode != "zeros":
            raise _unsupported(path, mod, f"padding_mode={mod.padding_mode!r}")
        if isinstance(mod.padding, str):
            if mod.padding == "valid":
                pad = (0, 0, 0, 0)
            else:  # "same" (stride 1): torch puts the odd pixel at the bottom/right
                kh, kw = mod.kernel_size
                pad = ((kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2)
        else:
            ph, pw = mod.padding
            pad = (ph, ph, pw, pw)
        if xnor and any(pad):
            raise _unsupported(path, mod, "a padded XNOR convolution")
        return pad


def _feeds_xnor(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether every reader of a sign activation is an XNOR layer whose bias a following
    sign can absorb (so the activation may be Bipolar)."""

    def readers(n: fx.Node) -> list[fx.Node]:
        out = []
        for u in n.users:
            m = modules.get(str(u.target)) if u.op == "call_module" else None
            if isinstance(m, _TRANSPARENT):
                out += readers(u)
            else:
                out.append(u)
        return out

    rs = readers(node)
    if not rs:
        return False
    for r in rs:
        m = modules.get(str(r.target)) if r.op == "call_module" else None
        if not isinstance(m, QuantLinear | QuantConv2d) or m.weight_quant.spec.mode != "binary":
            return False
        if isinstance(m, QuantConv2d) and (
            isinstance(m.padding, str) and m.padding != "valid" or any(np.atleast_1d(m.padding))
        ):
            return False
        if m.bias is not None:
            nxt = readers(r)
            for u in nxt:
                mm = modules.get(str(u.target)) if u.op == "call_module" else None
                if not (isinstance(mm, QuantAct) and mm.quant.spec.mode == "binary"):
                    return False
            if not nxt:
                return False
    return True


# --- structured sparsity made physical ------------------------------------------------------


class _Spaces:
    """Union-find over channel spaces: the last axis of values that share channels."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.fixed: set[int] = set()

    def new(self) -> int:
        i = len(self.parent)
        self.parent[i] = i
        return i

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            if rb in self.fixed:
                self.fixed.add(ra)
        return ra

    def fix(self, i: int) -> None:
        self.fixed.add(self.find(i))

    def is_fixed(self, i: int) -> bool:
        return self.find(i) in self.fixed


def _mt_zero(op: MultiThreshold) -> np.ndarray:
    """Per threshold row: whether raw 0 maps to raw 0."""
    t = op.thresholds.data
    return op.offset + (t <= 0).sum(axis=1) == 0


def _drop_dead_channels(graph: Graph, masks: dict[str, np.ndarray]):
    """Remove channels every producer writes as 0 or every reader ignores (see module doc)."""
    sp = _Spaces()
    space: dict[str, tuple[int, int]] = {}  # value -> (space id, positions per channel)
    producers: dict[str, int] = {}
    consumers: list[tuple[str, int]] = []
    types = graph.types()
    for v in graph.inputs:
        s = sp.new()
        sp.fix(s)
        space[v.name] = (s, 1)
    for n in graph.nodes:
        op = n.op
        ins = [space[i] for i in n.inputs]
        c = n.type.shape[-1]
        if isinstance(op, Dense | Conv2d):
            s = sp.new()
            producers[n.name] = s
            consumers.append((n.name, ins[0][0]))
            space[n.name] = (s, 1)
            if isinstance(op, Conv2d) and op.groups != 1:
                sp.fix(s)
                sp.fix(ins[0][0])
        elif isinstance(op, ReLU | Requant | MaxPool2d | AvgPool2d | MultiThreshold):
            space[n.name] = ins[0]
            if isinstance(n.type.dtype, Bipolar):
                sp.fix(ins[0][0])
        elif isinstance(op, Add):
            if ins[0][1] != ins[1][1]:
                sp.fix(ins[0][0])
                sp.fix(ins[1][0])
            space[n.name] = (sp.union(ins[0][0], ins[1][0]), ins[0][1])
        elif isinstance(op, Flatten):
            shape = types[n.inputs[0]].shape
            space[n.name] = (ins[0][0], ins[0][1] * int(np.prod(shape[:-1])))
        else:  # Quantize, Dequantize, Reshape, Binary*, anything new: keep its channels
            for s, _ in ins:
                sp.fix(s)
            s = sp.new()
            sp.fix(s)
            space[n.name] = (s, 1)
        del c
    for o in graph.outputs:
        sp.fix(space[o][0])

    # channel count per space, zero-producing and ignored channels
    size: dict[int, int] = {}
    zero: dict[int, np.ndarray] = {}
    ignored: dict[int, np.ndarray] = {}
    nodes = {n.name: n for n in graph.nodes}
    for name, s in producers.items():
        op = nodes[name].op
        r = sp.find(s)
        w = op.weight.data.reshape(op.weight.shape[0], -1)
        z = ~w.any(axis=1)
        if op.bias is not None:
            z &= op.bias.data == 0
        size[r] = len(z)
        zero[r] = zero.get(r, np.ones(len(z), bool)) & z
    for n in graph.nodes:  # ops that do not keep zero at zero in a channel
        if isinstance(n.op, MultiThreshold) and n.inputs[0] in space:
            r = sp.find(space[n.inputs[0]][0])
            if r in zero:
                zero[r] = zero[r] & np.broadcast_to(_mt_zero(n.op), zero[r].shape)
    for name, s in consumers:
        if name in masks and _pattern(masks[name], False).pattern is Pattern.NM:
            sp.fix(s)  # removing a column would break the N:M groups of this reader
    for name, s in consumers:
        r = sp.find(s)
        op = nodes[name].op
        if r not in size:
            continue
        cn = size[r]
        w = op.weight.data
        if isinstance(op, Conv2d):
            ig = ~w.reshape(-1, cn).any(axis=0)
        else:
            ig = ~w.reshape(w.shape[0], -1, cn).any(axis=(0, 1))
        ignored[r] = ignored.get(r, np.ones(cn, bool)) & ig
    keep: dict[int, np.ndarray] = {}
    for r, cn in size.items():
        if sp.is_fixed(r) or r not in ignored:
            continue
        dead = zero.get(r, np.zeros(cn, bool)) | ignored[r]
        if dead.all():
            dead[0] = False
        if dead.any():
            keep[r] = ~dead
    if not keep:
        return graph, masks, {}

    dropped = {}
    b = GraphBuilder(graph.name)
    for v in graph.inputs:
        b.input(v.name, v.type.dtype, v.type.shape)
    new_masks = dict(masks)
    for n in graph.nodes:
        op = n.op
        out_r = sp.find(space[n.name][0])
        in_r = sp.find(space[n.inputs[0]][0]) if n.inputs else None
        if isinstance(op, Dense | Conv2d):
            w = op.weight.data
            m = masks.get(n.name)
            bias = None if op.bias is None else op.bias.data
            if in_r in keep:
                k = keep[in_r]
                if isinstance(op, Conv2d):
                    w = w[..., k]
                    m = None if m is None else m[..., k]
                else:
                    cols = np.tile(k, w.shape[1] // len(k))
                    w = w[:, cols]
                    m = None if m is None else m[:, cols]
            if out_r in keep:
                k = keep[out_r]
                w = w[k]
                m = None if m is None else m[k]
                bias = None if bias is None else bias[k]
                if n.name in producers and out_r not in {sp.find(producers[p]) for p in dropped}:
                    dropped[n.name] = int((~k).sum())
            bw = None if bias is None else Weight(bias, op.bias.dtype)
            op = replace(op, weight=Weight(w, op.weight.dtype), bias=bw)
            if m is not None:
                new_masks[n.name] = m
        elif isinstance(op, Requant) and in_r in keep and len(op.mult) > 1:
            k = keep[in_r]
            op = replace(
                op,
                mult=tuple(np.array(op.mult)[k]),
                shift=tuple(np.array(op.shift)[k]),
            )
        elif isinstance(op, MultiThreshold) and in_r in keep and op.thresholds.shape[0] > 1:
            k = keep[in_r]
            op = replace(op, thresholds=Weight(op.thresholds.data[k], op.thresholds.dtype))
        b.add(op, *n.inputs, name=n.name)
    return b.build(*graph.outputs), new_masks, dropped


def _pattern(keep: np.ndarray, conv: bool) -> Sparsity:
    """The most specific sparsity pattern that holds every zero of a keep mask (IR layout)."""
    z = ~keep
    if not z.any():
        return Sparsity(Pattern.DENSE)
    o = z.shape[0]
    rows = z.reshape(o, -1)
    if (rows.all(axis=1)[:, None] | ~rows).all():
        return Sparsity(Pattern.FILTER)
    cols = z.reshape(-1, z.shape[-1]) if conv else z
    if (cols.all(axis=0)[None, :] | ~cols).all():
        return Sparsity(Pattern.CHANNEL)
    if conv:
        kern = z.transpose(0, 3, 1, 2).reshape(o, z.shape[3], -1)
        if (kern.all(axis=2)[..., None] | ~kern).all():
            return Sparsity(Pattern.KERNEL)
    last = keep.reshape(-1, keep.shape[-1])
    for m in (4, 8):
        if last.shape[1] % m == 0:
            cnt = last.reshape(last.shape[0], -1, m).sum(axis=2)
            if cnt.max() < m and (cnt == cnt.max()).all():
                return Sparsity(Pattern.NM, int(cnt.max()), m)
    return Sparsity(Pattern.UNSTRUCTURED)


def _record_sparsity(graph: Graph, masks: dict[str, np.ndarray]) -> Graph:
    if not masks:
        return graph
    nodes = []
    for n in graph.nodes:
        if n.name in masks and isinstance(n.op, Dense | Conv2d):
            sp = _pattern(masks[n.name], isinstance(n.op, Conv2d))
            w = Weight(n.op.weight.data, n.op.weight.dtype, sp)
            n = replace(n, op=replace(n.op, weight=w))
        nodes.append(n)
    return graph.replace(nodes=tuple(nodes))


# --- entry points ---------------------------------------------------------------------------


def _example(model: nn.Module, example_input) -> torch.Tensor:
    if example_input is None:
        raise LoweringError(
            "lower needs an example input (one batch, e.g. the first rows of the data) to "
            "trace the model and fix its input shape"
        )
    x = torch.as_tensor(np.asarray(example_input, dtype=np.float32))
    if x.dim() < 2:
        raise LoweringError(f"example input must be a batch (N, ...), not shape {tuple(x.shape)}")
    return x


def lower_with_info(
    model: nn.Module,
    example_input=None,
    *,
    name: str | None = None,
    dequantize: bool = False,
    mult_bits: int = MULT_BITS,
    drop_dead_channels: bool = True,
) -> Lowered:
    """``lower`` plus the output scale, each Requant's ideal ratios and dropped channels."""
    if isinstance(model, QuantizedMLP):
        g = lower_mlp(model, dequantize=dequantize, name=name or "mlp")
        return Lowered(g, 2.0**-model.out_frac, {}, {})
    if not isinstance(model, nn.Module):
        raise LoweringError(f"lower needs a torch nn.Module, not {type(model).__name__}")
    if not any(isinstance(m, QuantAct | QuantLinear | QuantConv2d) for m in model.modules()):
        raise LoweringError(
            f"no lowering for {type(model).__name__}: it has no quantized layers; quantize it "
            "with pqflow.models.quantize_model (or quantize_mlp) first"
        )
    x = _example(model, example_input)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)  # refreshes every quantizer's effective scale (LSQ/PACT/weights)
        lw = _Lowering(model, x, name or type(model).__name__.lower(), mult_bits)
        out, out_scale = lw.run()
    finally:
        model.train(was_training)
    if dequantize:
        out = lw.add(Dequantize(), out, name="dequant")
    graph = lw.b.build(out)
    dropped: dict[str, int] = {}
    masks = lw.masks
    if drop_dead_channels:
        graph, masks, dropped = _drop_dead_channels(graph, masks)
    graph = _record_sparsity(graph, masks)
    return Lowered(graph, out_scale, lw.requants, dropped)


def lower(model, example_input=None, **kwargs) -> Graph:
    """The verified IR graph of a quantized model (see the module docstring).

    ``model``: a ``quantize_model`` result (optionally QAT'd, pruned, binary/ternary) or a
    ``QuantizedMLP``. ``example_input``: one batch of inputs in the model's layout
    (``(N, 64)`` rows, ``(N, H, W, C)`` images); it fixes the input shape and refreshes
    learned quantizer scales. Keywords: ``name``, ``dequantize`` (append a
    ``Dequantize``), ``mult_bits`` (requant multiplier width, ``requant.MULT_BITS``),
    ``drop_dead_channels`` (default True). Raises ``LoweringError`` (one line naming the
    module, its type and what is supported) for anything it cannot express.
    """
    return lower_with_info(model, example_input, **kwargs).graph


# --- saved models (the CLI's model.pt) ------------------------------------------------------

MODEL_FORMAT = "pqflow-model/1"
"""``model.pt`` for ``pqflow lower``: ``torch.save({"format": MODEL_FORMAT, "model": <the
quantized nn.Module, pickled whole>, "example_input": <a float tensor batch>})``. It is a
pickle (loaded with ``weights_only=False``): open only files you trust."""


def save_model(path: str | Path, model: nn.Module, example_input) -> None:
    """Write ``model`` and an example batch as a ``MODEL_FORMAT`` file (atomically)."""
    import io
    import os
    import tempfile

    path = Path(path)
    x = torch.as_tensor(np.asarray(example_input, dtype=np.float32))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        buf = io.BytesIO()  # a file name would become the archive's folder name
        torch.save({"format": MODEL_FORMAT, "model": model, "example_input": x}, buf)
        Path(tmp).write_bytes(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path: str | Path) -> tuple[nn.Module, torch.Tensor]:
    """``(model, example_input)`` from a ``MODEL_FORMAT`` file; ``LoweringError`` if not one."""
    path = Path(path)
    if not path.is_file():
        raise LoweringError(f"{path}: no such model file")
    try:
        obj = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise LoweringError(f"{path}: not a torch file ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        raise LoweringError(
            f"{path}: not a {MODEL_FORMAT} file; write one with "
            "pqflow.models.lower.save_model(path, model, example_input)"
        )
    model, x = obj.get("model"), obj.get("example_input")
    if not isinstance(model, nn.Module) or not isinstance(x, torch.Tensor):
        raise LoweringError(f"{path}: needs 'model' (nn.Module) and 'example_input' (tensor)")
    return model, x


# --- the fixed-point MLP of quant.py --------------------------------------------------------


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
