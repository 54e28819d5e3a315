"""``UnrolledDense``: a fully parallel Dense layer with its constant weights wired into logic."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ...ir import Dense, Fixed, IRError, TensorType
from .common import Pipeline, check_type, fitting_shape, vector_signature

__all__ = ["PRODUCTS", "UnrolledDense"]

PRODUCTS = ("mul", "csd")
"""How a weight becomes logic: ``mul`` multiplies by its odd part and shifts; ``csd`` splits
it into canonical-signed-digit shifts, so a layer is additions only."""


@dataclass(frozen=True)
class _Leaf:
    """One term of a dot product: ``(-1 if neg else 1) * (x[index] * mult << shift)``."""

    index: int
    mult: int  # odd and positive
    shift: int
    neg: bool


def _odd_split(w: int) -> tuple[int, int]:
    """|w| = odd * 2**shift."""
    a = abs(w)
    k = (a & -a).bit_length() - 1
    return a >> k, k


def _csd_digits(w: int) -> list[tuple[int, int]]:
    """Canonical signed digits of w: [(shift, +1 or -1), ...], no two adjacent nonzero."""
    out, k = [], 0
    while w:
        if w & 1:
            d = 2 - (w & 3)  # +1 when w = 1 mod 4, -1 when w = 3 mod 4
            out.append((k, d))
            w -= d
        w >>= 1
        k += 1
    return out


def _leaves(row, products: str) -> list[_Leaf]:
    leaves = []
    for i, w in enumerate(int(v) for v in row):
        if w == 0:
            continue  # a zero weight produces no logic at all
        if products == "mul":
            m, k = _odd_split(w)
            leaves.append(_Leaf(i, m, k, w < 0))
        else:
            leaves.extend(_Leaf(i, 1, k, (w < 0) != (d < 0)) for k, d in _csd_digits(abs(w)))
    return leaves


class _Node:
    """A partial sum: ``value`` (an Amaranth value, or an int for a constant) in [lo, hi];
    it enters the total negated when ``neg``."""

    __slots__ = ("value", "lo", "hi", "neg")

    def __init__(self, value: Value | int, lo: int, hi: int, neg: bool = False) -> None:
        self.value, self.lo, self.hi, self.neg = value, lo, hi, neg

    @property
    def const(self) -> bool:
        return isinstance(self.value, int)


def _combine(a: _Node, b: _Node) -> _Node:
    """One adder (or subtractor); signs are carried so no negation is ever built mid-tree."""
    if b.const and not a.const:
        a, b = b, a
    if a.const:  # constants are stored with neg=False
        c = a.value
        if b.const:
            return _Node(c + b.value, c + b.value, c + b.value)
        if b.neg:  # c - v = -(v - c)
            return _Node(b.value - c, b.lo - c, b.hi - c, True)
        return _Node(b.value + c, b.lo + c, b.hi + c)
    if a.neg == b.neg:
        return _Node(a.value + b.value, a.lo + b.lo, a.hi + b.hi, a.neg)
    if b.neg:
        return _Node(a.value - b.value, a.lo - b.hi, a.hi - b.lo)
    return _Node(b.value - a.value, b.lo - a.hi, b.hi - a.lo)


def _level(nodes: list[_Node]) -> list[_Node]:
    """One adder level: pairs combined in order, an odd last node passed on."""
    return [
        _combine(nodes[j], nodes[j + 1]) if j + 1 < len(nodes) else nodes[j]
        for j in range(0, len(nodes), 2)
    ]


class UnrolledDense(wiring.Component):
    """A Dense layer computing one whole output vector per cycle (II = 1).

    Each output is a pipelined adder tree over the products of its nonzero weights and
    the inputs; weights are constants in the logic, so a zero weight costs nothing and
    a power-of-two weight is a shift. The bias is a leaf of the tree. Level 1 of every
    tree is the constant products, each further level one adder; a register stage
    follows every ``levels_per_stage`` levels and the last level, so

        latency = ceil((1 + ceil(log2(max leaves per output))) / levels_per_stage)

    cycles, where the leaves of an output are its nonzero weights (their CSD digits
    with ``products="csd"``) plus one for a nonzero bias. The output elements have the
    IR's accumulator type, which the sum can never overflow.

    Ports: ``i`` (``in_type`` x n_in) and ``o`` (``out_type`` x n_out), ready/valid streams.
    """

    def __init__(
        self,
        op: Dense,
        in_type: Fixed,
        out_type: Fixed,
        *,
        levels_per_stage: int = 3,
        products: str = "mul",
    ) -> None:
        if not isinstance(op, Dense):
            raise TypeError(f"UnrolledDense: op must be a pqflow.ir.Dense, not {op!r}")
        check_type("UnrolledDense", "in_type", in_type)
        check_type("UnrolledDense", "out_type", out_type)
        if not isinstance(levels_per_stage, int) or levels_per_stage < 1:
            raise ValueError(
                f"UnrolledDense: levels_per_stage must be a positive integer, "
                f"not {levels_per_stage!r}"
            )
        if products not in PRODUCTS:
            raise ValueError(
                f"UnrolledDense: products must be one of {', '.join(PRODUCTS)}, not {products!r}"
            )
        n_out, n_in = op.weight.shape
        try:
            acc = op.infer(TensorType(in_type, (n_in,))).dtype
        except IRError as e:
            raise ValueError(f"UnrolledDense: {e}") from None
        if out_type != acc:
            raise ValueError(
                f"UnrolledDense: out_type must be the accumulator type {acc} the IR infers "
                f"for input {in_type}, not {out_type}"
            )
        self.op, self.in_type, self.out_type = op, in_type, out_type
        self.levels_per_stage, self.products = levels_per_stage, products
        self.n_in, self.n_out = n_in, n_out
        bias = op.bias.data if op.bias is not None else [0] * n_out
        self._rows = [_leaves(r, products) for r in op.weight.data]
        self._bias = [int(b) for b in bias]
        counts = [len(r) + (b != 0) for r, b in zip(self._rows, self._bias, strict=True)]
        self.depth = 1 + max((max(c, 1) - 1).bit_length() for c in counts)
        self.latency = -(-self.depth // levels_per_stage)
        self.adders = sum(max(c - 1, 0) for c in counts)
        """Two-input adders/subtractors in the trees (constant-only sums excluded)."""
        self.multipliers = len({(f.index, f.mult) for r in self._rows for f in r if f.mult > 1})
        """Constant multipliers, one per (input, odd factor) shared by all outputs
        (0 with ``products="csd"``)."""
        super().__init__(
            {
                "i": In(vector_signature(in_type, n_in)),
                "o": Out(vector_signature(out_type, n_out)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        pipe = Pipeline(m, self.i, self.o, self.latency)
        lo, hi = self.in_type.min_raw, self.in_type.max_raw
        x = [self.i.payload[k] for k in range(self.n_in)]

        products: dict[tuple[int, int], Value] = {}  # one multiplier per (input, odd factor)

        def leaf(f: _Leaf) -> _Node:
            v = x[f.index]
            if f.mult > 1:
                key = (f.index, f.mult)
                if key not in products:
                    products[key] = v * f.mult
                v = products[key]
            if f.shift:
                v = v << f.shift
            c = f.mult << f.shift
            return _Node(v, lo * c, hi * c, f.neg)

        trees = [
            [leaf(f) for f in row] + ([_Node(b, b, b)] if b else [])
            for row, b in zip(self._rows, self._bias, strict=True)
        ]
        stage = 0
        for level in range(1, self.depth + 1):
            if level > 1:
                trees = [_level(t) for t in trees]
            if level % self.levels_per_stage == 0 or level == self.depth:
                stage += 1
                trees = self._register(m, pipe, trees, f"stage{stage}")
        for k, t in enumerate(trees):
            if not t:
                continue  # the output is zero: the payload's reset value
            (root,) = t
            value = -root.value if root.neg else root.value
            if isinstance(value, int):
                value = Value.cast(value)
            m.d.comb += self.o.payload[k].eq(value)
        return m

    @staticmethod
    def _register(m: Module, pipe: Pipeline, trees: list[list[_Node]], name: str):
        """Register every non-constant node of every tree (constants need no register)."""
        out = []
        with m.If(pipe.advance):
            for k, t in enumerate(trees):
                row = []
                for j, node in enumerate(t):
                    if node.const:
                        row.append(node)
                        continue
                    reg = Signal(
                        fitting_shape(node.lo, node.hi), name=f"{name}_{k}_{j}", reset_less=True
                    )
                    m.d.sync += reg.eq(node.value)
                    row.append(_Node(reg, node.lo, node.hi, node.neg))
                out.append(row)
        return out
