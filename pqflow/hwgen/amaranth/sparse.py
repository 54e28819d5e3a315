"""``SparseDense``: an EIE-style sparse matrix-vector engine for a Dense layer.

Weights are stored compressed, per processing element (PE): each output row belongs to
one PE (rows assigned to balance the nonzeros, or interleaved as in EIE: see
``assign_rows``), and each PE keeps only its nonzero weights, in column-major (CSC)
order, as ``(value, local row)`` words in a ROM, with a constant table of where each
input column's run starts. At run time the engine takes one input vector, marks its
nonzero elements, and every PE walks, independently, the columns that are both nonzero
in the input (dynamic sparsity) and hold at least one of its weights (static
sparsity), one multiply-accumulate per cycle. The output vector (the IR's exact
accumulator type, bias included) is offered when every PE is done.

Cycles per vector (see :func:`expected_cycles` and ``docs/hw-sparse.md``)::

    S = max over PEs p of  sum over active columns j of nnz(p, j)
    cycles = 1 + S + (1 if S > 0 else 0)

where a column j is active when ``x[j] != 0`` (every column when zero skipping is
off) and ``nnz(p, j)`` counts the nonzero weights of column j in PE p's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...ir import Dense, Fixed, IRError, Node, TensorType
from ..design import DesignError, HardwareError, Sparse
from .common import check_type, element_shape, vector_signature
from .top import register_dense

__all__ = [
    "BALANCES",
    "SparseDense",
    "SparseWeights",
    "active_columns",
    "assign_rows",
    "build_sparse",
    "compress",
    "expected_cycles",
    "folded_cycles",
    "lockstep_cycles",
]


BALANCES = ("greedy", "interleave")
"""How output rows are assigned to PEs: ``greedy`` balances nonzeros (longest-processing-
time first, at most ceil(n_out / pe) rows per PE); ``interleave`` is EIE's row r -> PE
r % pe."""


@dataclass(frozen=True)
class SparseWeights:
    """A (n_out, n_in) weight matrix compressed for ``pe`` PEs.

    ``out_rows[p]`` lists the output rows PE p owns (ascending); its local row k is
    output row ``out_rows[p][k]``. ``values[p]`` and ``rows[p]`` list PE p's nonzero
    weights and their local rows, column by column (CSC); ``start[p][j]`` is where
    column j's run begins in them and ``counts[p][j]`` its length, nnz(p, j).
    """

    n_out: int
    n_in: int
    pe: int
    out_rows: tuple[tuple[int, ...], ...]
    values: tuple[tuple[int, ...], ...]
    rows: tuple[tuple[int, ...], ...]
    start: tuple[tuple[int, ...], ...]
    counts: tuple[tuple[int, ...], ...]

    @property
    def local_rows(self) -> int:
        """Accumulators of the largest PE: ceil(n_out / pe)."""
        return max(len(r) for r in self.out_rows)

    @property
    def nnz(self) -> int:
        return sum(len(v) for v in self.values)

    def column_counts(self) -> np.ndarray:
        """nnz(p, j) as an int64 array of shape (pe, n_in)."""
        return np.array(self.counts, dtype=np.int64).reshape(self.pe, self.n_in)

    def imbalance(self) -> float:
        """max over PEs / mean over PEs of each PE's nonzero count (1.0 is perfect): the
        cycles of an all-nonzero input are this times nnz / pe, plus 2."""
        per_pe = [len(v) for v in self.values]
        mean = sum(per_pe) / self.pe
        return max(per_pe) / mean if mean else 1.0

    def column_imbalance(self) -> float:
        """sum_j max_p nnz(p, j) / sum_j mean_p nnz(p, j): what a lockstep engine (all PEs
        on the same column, as in a broadcast without queues) would lose to imbalance."""
        c = self.column_counts()
        total = c.sum()
        return float(c.max(axis=0).sum() * self.pe / total) if total else 1.0


def _check_pe(owner: str, pe: object) -> int:
    if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1:
        raise ValueError(f"{owner}: pe must be a positive integer, not {pe!r}")
    return pe


def _check_balance(owner: str, balance: object) -> str:
    if balance not in BALANCES:
        raise ValueError(
            f"{owner}: balance must be one of {', '.join(map(repr, BALANCES))}, not {balance!r}"
        )
    return balance


def assign_rows(weight, pe: int, balance: str = "greedy") -> tuple[tuple[int, ...], ...]:
    """The output rows of each of ``min(pe, n_out)`` PEs (see ``BALANCES``).

    ``greedy`` takes rows by decreasing nonzero count (ties: lower row first) and gives
    each to the PE with the fewest nonzeros so far among those with fewer than
    ceil(n_out / pe) rows (ties: fewer rows, then lower PE).
    """
    w = np.asarray(weight)
    n_out = w.shape[0]
    pe = min(_check_pe("assign_rows", pe), n_out)
    if _check_balance("assign_rows", balance) == "interleave":
        return tuple(tuple(range(p, n_out, pe)) for p in range(pe))
    nnz = np.count_nonzero(w, axis=1)
    cap = -(-n_out // pe)
    load, owned = [0] * pe, [[] for _ in range(pe)]
    for r in sorted(range(n_out), key=lambda r: (-int(nnz[r]), r)):
        p = min(
            (q for q in range(pe) if len(owned[q]) < cap), key=lambda q: (load[q], len(owned[q]), q)
        )
        owned[p].append(r)
        load[p] += int(nnz[r])
    return tuple(tuple(sorted(o)) for o in owned)


def compress(weight, pe: int, balance: str = "greedy") -> SparseWeights:
    """Compress an integer (n_out, n_in) weight matrix for ``pe`` PEs (see SparseWeights
    and ``assign_rows``). ``pe`` larger than n_out is clamped to n_out."""
    w = np.asarray(weight)
    if w.ndim != 2:
        raise ValueError(f"compress: weight must be 2-D (out, in), not shape {w.shape}")
    n_out, n_in = w.shape
    out_rows = assign_rows(w, pe, balance)
    values, rows, start, counts = [], [], [], []
    for owned in out_rows:
        sub = w[list(owned)]  # local row k = output row owned[k]
        v, r, s, c = [], [], [], []
        for j in range(n_in):
            s.append(len(v))
            nz = np.flatnonzero(sub[:, j])
            v.extend(int(sub[k, j]) for k in nz)
            r.extend(int(k) for k in nz)
            c.append(len(nz))
        values.append(tuple(v))
        rows.append(tuple(r))
        start.append(tuple(s))
        counts.append(tuple(c))
    return SparseWeights(
        n_out, n_in, len(out_rows), out_rows, *map(tuple, (values, rows, start, counts))
    )


def _weights_of(op: Dense | SparseWeights, pe: int | None, balance: str) -> SparseWeights:
    if isinstance(op, SparseWeights):
        return op
    if not isinstance(op, Dense):
        raise TypeError(f"op must be a pqflow.ir.Dense or SparseWeights, not {op!r}")
    if pe is None:
        raise ValueError("pe is required when op is a Dense")
    return compress(op.weight.data, pe, balance)


def active_columns(x_raws, skip_zero_activations: bool = True) -> np.ndarray:
    """Boolean mask of the columns an input vector (or batch, last axis) makes active."""
    x = np.asarray(x_raws)
    return x != 0 if skip_zero_activations else np.ones(x.shape, dtype=bool)


def expected_cycles(
    op: Dense | SparseWeights,
    x_raws,
    pe: int | None = None,
    *,
    balance: str = "greedy",
    skip_zero_activations: bool = True,
):
    """Cycles ``SparseDense`` spends on input vector ``x_raws`` (an int), or on each
    vector of a batch (an int64 array): ``1 + S + (S > 0)`` with
    S = max_p sum_{j active} nnz(p, j). This is the initiation interval of that vector
    in a stall-free stream (accept of one vector to accept of the next), and its
    latency from accept to output valid minus one. ``op`` is a Dense (compressed with
    ``pe`` and ``balance``) or a ``SparseWeights``."""
    sw = _weights_of(op, pe, balance)
    x = np.asarray(x_raws)
    if x.shape[-1] != sw.n_in:
        raise ValueError(f"expected_cycles: input has {x.shape[-1]} elements, not {sw.n_in}")
    act = active_columns(x, skip_zero_activations).astype(np.int64)
    s = (act @ sw.column_counts().T).max(axis=-1)  # (..., pe) -> (...)
    cycles = 1 + s + (s > 0)
    return int(cycles) if np.ndim(cycles) == 0 else cycles.astype(np.int64)


def lockstep_cycles(
    op: Dense | SparseWeights, x_raws, pe: int | None = None, *, balance: str = "greedy"
):
    """What a lockstep engine (every PE on the same column) would need: sum over active
    columns of max_p nnz(p, j), plus the same overhead; for comparison only."""
    sw = _weights_of(op, pe, balance)
    act = active_columns(np.asarray(x_raws)).astype(np.int64)
    s = act @ sw.column_counts().max(axis=0)
    cycles = 1 + s + (s > 0)
    return int(cycles) if np.ndim(cycles) == 0 else cycles.astype(np.int64)


def folded_cycles(op: Dense, pe: int, simd: int = 1) -> int:
    """The folded (FINN MVU) style's cycles per vector, (MH/PE) * (MW/SIMD), rounded up."""
    n_out, n_in = op.weight.shape
    return -(-n_out // pe) * -(-n_in // simd)


class SparseDense(wiring.Component):
    """A Dense layer on ``pe`` sparse processing elements (EIE-style).

    Weights live compressed (nonzero values and their row indices) in one ROM per PE;
    each output row belongs to one PE, chosen by ``balance`` (``"greedy"``: balance the
    nonzeros; ``"interleave"``: row r on PE r % pe, as EIE). The engine takes one input
    vector, then each PE performs one multiply-accumulate per cycle over its nonzero
    weights in the columns whose input is nonzero, skipping zero weights (static
    pruning) and zero activations (dynamic), and finally offers the output vector in
    the IR's accumulator type, which no partial sum can overflow. A vector takes
    ``expected_cycles(op, x, pe)`` cycles; the next one is accepted as the output
    register is filled, so a stall-free stream takes exactly that many cycles per
    vector. With ``skip_zero_activations=False`` every column holding a nonzero
    weight is walked (static sparsity only).

    Ports: ``i`` (``in_type`` x n_in) and ``o`` (``out_type`` x n_out), ready/valid
    streams. ``latency`` is an upper bound of the stall-free latency (cycles from the
    edge an input is taken to the first cycle its output is offered): that of the
    slowest input, ``max_cycles + 1``; an input ``x`` takes ``expected_cycles(x) + 1``,
    an all-zero one 2. ``cycles_per_vector`` is None: the initiation interval depends on
    the data (``expected_cycles``).
    """

    def __init__(
        self,
        op: Dense,
        in_type: Fixed,
        out_type: Fixed,
        pe: int = 1,
        *,
        balance: str = "greedy",
        skip_zero_activations: bool = True,
    ) -> None:
        if not isinstance(op, Dense):
            raise TypeError(f"SparseDense: op must be a pqflow.ir.Dense, not {op!r}")
        check_type("SparseDense", "in_type", in_type)
        check_type("SparseDense", "out_type", out_type)
        _check_pe("SparseDense", pe)
        _check_balance("SparseDense", balance)
        if not isinstance(skip_zero_activations, bool):
            raise ValueError(
                f"SparseDense: skip_zero_activations must be True or False, "
                f"not {skip_zero_activations!r}"
            )
        n_out, n_in = op.weight.shape
        try:
            acc = op.infer(TensorType(in_type, (n_in,))).dtype
        except IRError as e:
            raise ValueError(f"SparseDense: {e}") from None
        if out_type != acc:
            raise ValueError(
                f"SparseDense: out_type must be the accumulator type {acc} the IR infers "
                f"for input {in_type}, not {out_type}"
            )
        self.op, self.in_type, self.out_type = op, in_type, out_type
        self.n_in, self.n_out = n_in, n_out
        self.skip_zero_activations = skip_zero_activations
        self.balance = balance
        self.weights = compress(op.weight.data, pe, balance)
        self.pe = self.weights.pe
        bias = op.bias.data if op.bias is not None else [0] * n_out
        self._bias = [int(b) for b in bias]
        worst = max((sum(c) for c in self.weights.counts), default=0)
        self.max_cycles = 1 + worst + (worst > 0)
        """Cycles of the slowest input vector (every column active)."""
        self.latency = self.max_cycles + 1
        """Upper bound of the stall-free latency; ``expected_cycles(x) + 1`` for input x."""
        self.cycles_per_vector = None
        """The initiation interval depends on the data: see ``expected_cycles``."""
        super().__init__(
            {
                "i": In(vector_signature(in_type, n_in)),
                "o": Out(vector_signature(out_type, n_out)),
            }
        )

    def expected_cycles(self, x_raws):
        """``expected_cycles`` for this engine's weights, PEs and zero-skipping mode."""
        return expected_cycles(
            self.weights, x_raws, skip_zero_activations=self.skip_zero_activations
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        sw, n_in = self.weights, self.n_in
        acc_shape = element_shape(self.out_type)
        w_shape = element_shape(self.op.weight.dtype)
        ww = w_shape.width
        rb = max(1, (sw.local_rows - 1).bit_length())

        busy = Signal()  # a vector is loaded and not yet moved to the output register
        out_valid = Signal()
        out_buf = Signal(self.o.payload.shape(), reset_less=True)
        x = Signal(self.i.payload.shape(), reset_less=True)
        m.d.comb += [self.o.valid.eq(out_valid), self.o.payload.eq(out_buf)]

        accept = Signal()
        nonzero = Cat(*(self.i.payload[j] != 0 for j in range(n_in)))
        pes = []  # (pending, in_flight, accumulators)
        for p in range(sw.pe):
            pes.append(self._pe(m, p, x, acc_shape, w_shape, ww, rb, accept, nonzero))

        done = Cat(*(pend == 0 for pend, _, _ in pes), *(~fl for _, fl, _ in pes)).all()
        finish = Signal()
        m.d.comb += [
            finish.eq(busy & done & (~out_valid | self.o.ready)),
            self.i.ready.eq(~busy | finish),
            accept.eq(self.i.valid & self.i.ready),
        ]
        with m.If(finish):
            m.d.sync += out_valid.eq(1)
            for p, owned in enumerate(sw.out_rows):
                for k, r in enumerate(owned):
                    m.d.sync += out_buf[r].eq(pes[p][2][k])
        with m.Elif(self.o.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(accept):
            m.d.sync += [busy.eq(1), x.eq(self.i.payload)]
        with m.Elif(finish):
            m.d.sync += busy.eq(0)
        return m

    def _pe(self, m, p, x, acc_shape, w_shape, ww, rb, accept, nonzero):
        """PE ``p``: its column scan, weight ROM and accumulators."""
        sw = self.weights
        counts, start = sw.counts[p], sw.start[p]
        rows = sw.out_rows[p]
        accs = [Signal(acc_shape, name=f"pe{p}_acc{k}", reset_less=True) for k in range(len(rows))]
        with m.If(accept):
            for k, r in enumerate(rows):
                m.d.sync += accs[k].eq(self._bias[r])
        nnz = len(sw.values[p])
        if nnz == 0:  # nothing to do, ever: the outputs are the biases
            return Const(0, 1), Const(0, 1), accs

        n_in = self.n_in
        holds = Const(int("".join("1" if c else "0" for c in reversed(counts)), 2), n_in)
        pending = Signal(n_in, name=f"pe{p}_pending")
        step = Signal(range(max(counts)), name=f"pe{p}_step")
        col = Signal(range(n_in), name=f"pe{p}_col")
        for j in reversed(range(n_in)):  # the lowest pending column wins
            if counts[j]:
                with m.If(pending[j]):
                    m.d.comb += col.eq(j)
        last = Array(Const(max(c - 1, 0), step.shape()) for c in counts)[col]
        addr_shape = unsigned(max(1, (nnz - 1).bit_length()))
        base = Array(Const(min(s, nnz - 1), addr_shape) for s in start)[col]

        mask = holds & nonzero if self.skip_zero_activations else holds
        with m.If(accept):
            m.d.sync += [pending.eq(mask), step.eq(0)]
        with m.Elif(pending != 0):
            with m.If(step == last):
                m.d.sync += [pending.eq(pending & (pending - 1)), step.eq(0)]
            with m.Else():
                m.d.sync += step.eq(step + 1)

        wmask = (1 << ww) - 1
        words = [(r << ww) | (v & wmask) for v, r in zip(sw.values[p], sw.rows[p], strict=True)]
        rom = Memory(shape=unsigned(ww + rb), depth=nnz, init=words)
        m.submodules[f"pe{p}_rom"] = rom
        rd = rom.read_port(domain="sync")
        m.d.comb += rd.addr.eq(base + step)

        # stage 1: the ROM word arrives; multiply-accumulate into its local row
        in_flight = Signal(name=f"pe{p}_in_flight")
        xj = Signal(element_shape(self.in_type), name=f"pe{p}_x", reset_less=True)
        m.d.sync += [in_flight.eq(pending != 0), xj.eq(x[col])]
        w = rd.data[:ww].as_signed() if w_shape.signed else rd.data[:ww]
        row = rd.data[ww:]
        total = Signal(acc_shape, name=f"pe{p}_sum")
        m.d.comb += total.eq(Array(accs)[row] + w * xj)
        with m.If(in_flight & ~accept):
            for k, acc in enumerate(accs):
                with m.If(row == k):
                    m.d.sync += acc.eq(total)
        return pending, in_flight, accs


@register_dense(Sparse)
def build_sparse(
    op, node: Node, in_type: TensorType, out_type: TensorType, impl: Sparse
) -> SparseDense:
    """The ``sparse`` style's unit for a matrix node: a ``SparseDense`` with ``impl.pe``
    PEs (nonzero-balanced rows, zero activations skipped)."""
    if not isinstance(op, Dense):
        raise HardwareError(
            f"{node.describe()}: {type(op).__name__} has no 'sparse' hardware implementation "
            "(binary weights have no zeros to skip); use the 'folded' style"
        )
    try:
        return SparseDense(op, in_type.dtype, out_type.dtype, impl.pe)
    except ValueError as e:
        raise DesignError(f"{node.describe()}: {e}") from None
