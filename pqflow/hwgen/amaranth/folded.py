"""``FoldedDense``: a FINN-style matrix-vector unit, PE x SIMD multiply-accumulates per cycle.

The weight matrix (MH outputs x MW inputs) is folded into ``NF = MH / PE`` neuron folds
and ``SF = MW / SIMD`` synapse folds. Row ``nf * SF + sf`` of a ROM holds the PE x SIMD
weights used in cycle (nf, sf): PE ``p`` reads ``W[nf*PE + p, sf*SIMD : (sf+1)*SIMD]``.
"""

from __future__ import annotations

from functools import reduce

from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...ir import BinaryDense, Bipolar, Dense, Fixed, IRError, TensorType
from .common import check_type, element_shape, vector_signature

__all__ = ["FoldedDense"]


class FoldedDense(wiring.Component):
    """A ``Dense`` or ``BinaryDense`` layer computed PE outputs x SIMD inputs per cycle.

    Contract (``pqflow.hwgen.amaranth.top.DenseBuilder``): ``i`` takes a whole input
    vector, which is held in a buffer while the unit works; ``o`` offers the whole output
    vector (the IR's exact accumulator type) once every fold is done, and holds it until
    taken while the next vector is already being computed. With a ready consumer:

        cycles_per_vector = (MH / PE) * (MW / SIMD)      (the initiation interval)
        latency           = cycles_per_vector + 1

    (one cycle for the ROM's synchronous read that the first fold waits for is hidden
    behind the load of the input buffer; the extra cycle is the output register).

    Weights sit in an Amaranth ``Memory`` with a synchronous read port (block or
    distributed ROM), one row of PE*SIMD weights per cycle. Each PE keeps one accumulator
    of the accumulator type, starting at the bias: every partial sum then lies inside
    the final sum's interval (each product's interval contains 0), so that width is
    exact. For ``BinaryDense`` (Bipolar x Bipolar) a PE counts agreeing bits,
    popcount(XNOR(w, x)), and outputs 2 * count - MW.

    PE must divide MH and SIMD must divide MW (ValueError otherwise).
    """

    def __init__(
        self,
        op: Dense | BinaryDense,
        in_type: Fixed | Bipolar,
        out_type: Fixed,
        *,
        pe: int = 1,
        simd: int = 1,
    ) -> None:
        if not isinstance(op, Dense | BinaryDense):
            raise TypeError(f"FoldedDense: op must be a pqflow.ir.Dense or BinaryDense, not {op!r}")
        self.binary = isinstance(op, BinaryDense)
        check_type("FoldedDense", "in_type", in_type, allow_bipolar=self.binary)
        check_type("FoldedDense", "out_type", out_type)
        for name, v in (("pe", pe), ("simd", simd)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"FoldedDense: {name} must be a positive integer, not {v!r}")
        n_out, n_in = op.weight.shape
        try:
            acc = op.infer(TensorType(in_type, (n_in,))).dtype
        except IRError as e:
            raise ValueError(f"FoldedDense: {e}") from None
        if out_type != acc:
            raise ValueError(
                f"FoldedDense: out_type must be the accumulator type {acc} the IR infers "
                f"for input {in_type}, not {out_type}"
            )
        if n_out % pe:
            raise ValueError(f"FoldedDense: pe={pe} must divide the {n_out} outputs (MH)")
        if n_in % simd:
            raise ValueError(f"FoldedDense: simd={simd} must divide the {n_in} inputs (MW)")
        self.op, self.in_type, self.out_type = op, in_type, out_type
        self.pe, self.simd, self.mh, self.mw = pe, simd, n_out, n_in
        self.nf, self.sf = n_out // pe, n_in // simd
        self.cycles_per_vector = self.nf * self.sf
        self.latency = self.cycles_per_vector + 1
        self.weight_width = 1 if self.binary else op.weight.dtype.width
        super().__init__(
            {
                "i": In(vector_signature(in_type, n_in)),
                "o": Out(vector_signature(out_type, n_out)),
            }
        )

    @property
    def has_bias(self) -> bool:
        return not self.binary and self.op.bias is not None

    @property
    def rom_width(self) -> int:
        """Bits per ROM row: PE*SIMD weights, then PE biases (accumulator width) if any."""
        bias = self.pe * self.out_type.width if self.has_bias else 0
        return self.pe * self.simd * self.weight_width + bias

    def rom_rows(self) -> list[int]:
        """The ROM contents: row nf*SF + sf packs W[nf*PE + p, sf*SIMD + s] at bit
        (p*SIMD + s) * weight_width, two's complement; rows with sf = 0 also hold the
        biases b[nf*PE + p] above the weights (the value an accumulator starts from)."""
        w = self.op.weight.data
        wb, mask = self.weight_width, (1 << self.weight_width) - 1
        base, aw = self.pe * self.simd * wb, self.out_type.width
        rows = []
        for nf in range(self.nf):
            for sf in range(self.sf):
                word = 0
                for p in range(self.pe):
                    for s in range(self.simd):
                        v = int(w[nf * self.pe + p, sf * self.simd + s]) & mask
                        word |= v << ((p * self.simd + s) * wb)
                    if self.has_bias and sf == 0:
                        b = int(self.op.bias.data[nf * self.pe + p]) & ((1 << aw) - 1)
                        word |= b << (base + p * aw)
                rows.append(word)
        return rows

    def elaborate(self, platform) -> Module:
        m = Module()
        pe, simd, mh, mw, nfs, sfs = self.pe, self.simd, self.mh, self.mw, self.nf, self.sf
        cycles, wb = self.cycles_per_vector, self.weight_width
        out_shape = element_shape(self.out_type)

        m.submodules.rom = rom = Memory(
            shape=unsigned(self.rom_width), depth=cycles, init=self.rom_rows()
        )
        rd = rom.read_port()

        busy = Signal()  # a vector is in the input buffer and being computed
        j = Signal(range(cycles), name="fold")  # nf * SF + sf: the ROM row in use
        nf = Signal(range(nfs), name="nf")
        sf = Signal(range(sfs), name="sf")
        ob_valid = Signal()
        xb = [Signal(element_shape(self.in_type), name=f"x{k}") for k in range(mw)]
        ob = [Signal(out_shape, name=f"y{k}") for k in range(mh)]
        rb = [Signal(out_shape, name=f"r{k}") for k in range(mh - pe)]  # finished folds

        last_sf = sf == sfs - 1
        last = Signal()
        can_finish = Signal()
        step = Signal()  # one fold cycle is done on this edge
        accept = Signal()
        m.d.comb += [
            last.eq(busy & (j == cycles - 1)),
            can_finish.eq(~ob_valid | self.o.ready),
            step.eq(busy & (~last | can_finish)),
            self.i.ready.eq(~busy | (last & can_finish)),
            accept.eq(self.i.valid & self.i.ready),
            # the ROM row for the next cycle: j + 1 while folding, 0 when idle or finishing
            rd.addr.eq(Mux(busy & ~last, j + 1, 0)),
            rd.en.eq(~busy | step),
            self.o.valid.eq(ob_valid),
        ]
        m.d.comb += [self.o.payload[k].eq(ob[k]) for k in range(mh)]

        # the PEs: one partial sum of SIMD products each, added to the accumulator
        acc_shape = unsigned(mw.bit_length()) if self.binary else out_shape
        bias_at, aw = pe * simd * wb, self.out_type.width
        results = []
        for p in range(pe):
            acc = Signal(acc_shape, name=f"acc{p}")
            terms = []
            for s in range(simd):
                w = rd.data[(p * simd + s) * wb : (p * simd + s + 1) * wb]
                if self.binary:
                    terms.append(~(w ^ xb[s]))
                else:
                    if self.op.weight.dtype.signed:
                        w = w.as_signed()
                    terms.append(w * xb[s])
            psum = reduce(lambda a, b: a + b, terms)
            if self.has_bias:  # no constant table indexed by nf: Icarus misses its first value
                start = rd.data[bias_at + p * aw : bias_at + (p + 1) * aw].as_signed()
                if not acc_shape.signed:
                    start = start.as_unsigned()
            else:
                start = Const(0, acc_shape)
            total = Signal.like(acc, name=f"sum{p}")
            m.d.comb += total.eq(Mux(sf == 0, start, acc) + psum)
            with m.If(step):
                m.d.sync += acc.eq(total)
            if self.binary:
                value = Signal(out_shape, name=f"dot{p}")
                m.d.comb += value.eq(2 * total - mw)
                results.append(value)
            else:
                results.append(total)

        with m.If(step):
            m.d.sync += [
                j.eq(Mux(last, 0, j + 1)),
                sf.eq(Mux(last_sf, 0, sf + 1)),
                # the input buffer rotates by SIMD: xb[0:SIMD] is always the current slice
                *[xb[k].eq(xb[(k + simd) % mw]) for k in range(mw)],
            ]
            with m.If(last_sf):
                m.d.sync += nf.eq(Mux(last, 0, nf + 1))
                n = len(rb)
                m.d.sync += [rb[k].eq(rb[k + pe]) for k in range(n - pe)]
                m.d.sync += [rb[n - pe + p].eq(results[p]) for p in range(pe) if n >= pe]
            with m.If(last):
                m.d.sync += busy.eq(0)
                m.d.sync += [ob[k].eq(rb[k]) for k in range(len(rb))]
                m.d.sync += [ob[len(rb) + p].eq(results[p]) for p in range(pe)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += ob_valid.eq(0)
        with m.If(step & last):
            m.d.sync += ob_valid.eq(1)
        with m.If(accept):
            m.d.sync += busy.eq(1)
            m.d.sync += [xb[k].eq(self.i.payload[k]) for k in range(mw)]
        return m
