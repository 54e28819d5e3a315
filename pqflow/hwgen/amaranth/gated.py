"""``GatedConvUnit``: a dynamically gated convolution block (FBS) as one streaming unit.

The lowering (``pqflow.models.lower``) writes a gated block as two branches from one
input ``x`` (H, W, Cin) that meet in a ``ChannelGate``::

    conv path:  Conv2d -> [post]*                                      -> a (H', W', C)
    gate path:  AvgPool2d (whole image) -> Flatten -> [post]* -> Dense -> [post]*
                                                                       -> s (C,)
    ChannelGate(k, scale)(a, s) -> [post]*                             -> y (H', W', C)

where each ``post`` is a ``ReLU``, ``Requant`` or ``MultiThreshold`` (per-channel
constants allowed).

``gated_blocks(graph)`` finds these groups and ``GatedConvUnit`` computes one, reading
the pixel stream of ``x`` (H * W beats of Cin raws, raster order) and writing the pixel
stream of ``y`` (H' * W' beats of C raws):

1. **load** (H * W cycles, one beat per cycle): the frame goes into a buffer and each
   channel's sum (the average pool) accumulates on the fly; when the compute side is
   idle the frame and sums are handed over (1 cycle) and the next frame may load;
2. **gate** (1 cycle): the gate path on the sums (requant, predictor ``Dense`` with
   constant weights, ReLU, requant) gives the saliency ``s``, registered;
3. **rank** (C cycles, one channel each): channel c is kept when fewer than ``k``
   channels rank before it (a larger ``s``, or an equal one at a lower index:
   ``ChannelGate``'s rule), giving the mask of kept channels;
4. **compute** (H' * W' * ceil(k / PE) * folds cycles): for each output pixel, ``PE``
   lanes each take the lowest kept channel not yet done (a priority encoder on the mask)
   and compute its window (weights and bias from the channel's ROM row), the conv path's
   post-ops, the gate (times ``s[c]`` when ``scale``) and the output post-ops. Channels
   not kept are never computed: their outputs are 0. The finished pixel goes to the
   output register (the unit waits while the consumer holds it).

The next frame loads while one computes. With a ready consumer one sample takes
``max(H*W + 1, 2 + C + H'*W' * ceil(k / PE) * folds)`` cycles (``cycles_per_vector``):
cycles fall with the number of kept channels. The first output beat is offered
``3 + C + ceil(k / PE) * folds`` cycles after the last input beat was taken (``latency``
as ``schedule`` counts it). Every value is the IR's exact integer; the unit
is bit-exact with the oracle (``ChannelGate``, ``Conv2d``, ``Requant``... of
``pqflow.kernels``).

The conv node's implementation in the ``Design`` picks the lanes: ``folded(pe, simd)``
gives ``PE = pe`` lanes, each taking ``simd`` window taps per cycle (``Kh*Kw*Cin / simd``
folds per kept channel, accumulated from the bias as in ``FoldedDense``; ``simd`` equal
to the window computes it in one cycle and skips taps whose weights are all zero); any
other style gives one lane and the whole window per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from amaranth.hdl import Array, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ...ir import (
    AvgPool2d,
    ChannelGate,
    Conv2d,
    Dense,
    Fixed,
    Flatten,
    Graph,
    MultiThreshold,
    Node,
    ReLU,
    Requant,
    TensorType,
)
from ..design import Design, Folded, HardwareError
from .common import element_shape, vector_signature
from .graph_top import Fusion, register_fusion
from .requant import requant_value
from .schedule import Schedule

__all__ = ["GatedBlock", "GatedConvUnit", "find_gated_blocks", "gated_blocks"]

POST_OPS = (ReLU, Requant, MultiThreshold)
"""Element-wise ops a gated block may hold between its main ops."""


@dataclass(frozen=True)
class GatedBlock:
    """The IR nodes of one gated block (see the module docstring) and their input types.

    Each ``*_post`` is a tuple of (node name, op, input element type) in order.
    """

    x: str
    x_type: TensorType
    conv: Node
    conv_post: tuple
    pool: Node
    flatten: Node
    pool_post: tuple
    dense: Node
    sal_post: tuple
    gate: Node
    gate_post: tuple
    out: str
    out_type: TensorType

    @property
    def nodes(self) -> frozenset[str]:
        ns = [self.conv, self.pool, self.flatten, self.dense, self.gate]
        names = {n.name for n in ns}
        for chain in (self.conv_post, self.pool_post, self.sal_post, self.gate_post):
            names |= {name for name, _, _ in chain}
        return frozenset(names)


# -- finding gated blocks in a graph ------------------------------------------------------


def _post_chain_back(graph: Graph, end: str, types) -> tuple[str, tuple]:
    """Walk back from value ``end`` over element-wise ops read only by their successor:
    (the value before them, ((name, op, in dtype), ...) in forward order)."""
    chain = []
    v = end
    while True:
        try:
            n = graph.node(v)
        except KeyError:
            break
        if not isinstance(n.op, POST_OPS) or len(graph.consumers(n.inputs[0])) != 1:
            break
        chain.append((n.name, n.op, types[n.inputs[0]].dtype))
        v = n.inputs[0]
    return v, tuple(reversed(chain))


def _post_chain_forward(graph: Graph, start: str, types) -> tuple[str, tuple]:
    chain = []
    v = start
    while True:
        readers = graph.consumers(v)
        if len(readers) != 1 or not isinstance(readers[0].op, POST_OPS) or v in graph.outputs:
            break
        n = readers[0]
        chain.append((n.name, n.op, types[v].dtype))
        v = n.name
    return v, tuple(chain)


def _node(graph: Graph, v: str) -> Node | None:
    try:
        return graph.node(v)
    except KeyError:
        return None


def find_gated_blocks(graph: Graph) -> list[GatedBlock]:
    """Every gated block of ``graph`` whose inner values are read only inside it."""
    types = graph.types()
    found = []
    for g in graph.nodes:
        if not isinstance(g.op, ChannelGate) or len(types[g.name].shape) != 3:
            continue
        a_src, conv_post = _post_chain_back(graph, g.inputs[0], types)
        s_src, sal_post = _post_chain_back(graph, g.inputs[1], types)
        conv, dense = _node(graph, a_src), _node(graph, s_src)
        if conv is None or not isinstance(conv.op, Conv2d) or conv.op.groups != 1:
            continue
        if dense is None or not isinstance(dense.op, Dense):
            continue
        f_src, pool_post = _post_chain_back(graph, dense.inputs[0], types)
        flat = _node(graph, f_src)
        if flat is None or not isinstance(flat.op, Flatten):
            continue
        pool = _node(graph, flat.inputs[0])
        if pool is None or not isinstance(pool.op, AvgPool2d):
            continue
        x = conv.inputs[0]
        h, w, _ = types[x].shape
        if pool.inputs[0] != x or pool.op.kernel != (h, w):
            continue
        single = [conv.name, *g.inputs, dense.name, dense.inputs[0], flat.name, pool.name]
        if any(len(graph.consumers(v)) != 1 for v in single):
            continue
        out, gate_post = _post_chain_forward(graph, g.name, types)
        found.append(
            GatedBlock(
                x, types[x], conv, conv_post, pool, flat, pool_post, dense, sal_post, g,
                gate_post, out, types[out],
            )
        )  # fmt: skip
    return found


@register_fusion
def gated_blocks(graph: Graph, design: Design) -> list[Fusion]:
    """The ``Fusion`` of every gated block of ``graph`` (a ``GatedConvUnit`` each)."""
    fusions = []
    for b in find_gated_blocks(graph):
        try:
            impl = design.impl(b.conv.name)
        except KeyError:  # a conv the design does not list: one lane
            impl = None
        pe, simd = (impl.pe, impl.simd) if isinstance(impl, Folded) else (1, None)

        def build(b=b, pe=pe, simd=simd) -> GatedConvUnit:
            return GatedConvUnit(b, pe=pe, simd=simd)

        fusions.append(Fusion(b.nodes, b.x, b.out, build))
    return fusions


# -- the unit -----------------------------------------------------------------------------


def _post_op(op, dt: Fixed, v: Value, c: int) -> tuple[Fixed, Value | int]:
    """(output type, logic) of element-wise ``op`` on raw ``v`` (of ``dt``) in channel c."""
    if isinstance(op, ReLU):
        return op.infer(TensorType(dt, (1,))).dtype, (Mux(v[-1], 0, v) if dt.signed else v)
    if isinstance(op, Requant):
        mult = op.mult[c if len(op.mult) > 1 else 0]
        shift = op.shift[c if len(op.shift) > 1 else 0]
        args = (dt.min_raw, dt.max_raw, mult, shift, op.rounding, op.overflow, op.to)
        return op.to, requant_value(v, *args)
    t = op.thresholds.data  # MultiThreshold: offset + #{i : v >= T[c, i]} (FINN's >=)
    row = t[c if t.shape[0] > 1 else 0]
    hits = [(v >= int(ti)).as_unsigned() for ti in row if dt.min_raw < ti <= dt.max_raw]
    always = sum(1 for ti in row if ti <= dt.min_raw)
    base = op.offset + always
    return op.out, reduce(lambda p, q: p + q, hits, Const(base, signed(base.bit_length() + 2)))


def _per_channel(op) -> int:
    if isinstance(op, Requant):
        return max(len(op.mult), len(op.shift))
    if isinstance(op, MultiThreshold):
        return op.thresholds.shape[0]
    return 1


def _post(m: Module, chain: tuple, v: Value, channel, name: str) -> Value:
    """``v`` through the element-wise ops of ``chain``; ``channel`` is an int or a Signal
    (per-channel constants are then selected by it)."""
    for k, (_, op, dt) in enumerate(chain):
        per = _per_channel(op)
        if per == 1 or isinstance(channel, int):
            out_t, val = _post_op(op, dt, v, channel if per > 1 else 0)
        else:
            out_t = _post_op(op, dt, v, 0)[0]
            val = Signal(element_shape(out_t), name=f"{name}_p{k}_sel")
            with m.Switch(channel):
                for c in range(per):
                    with m.Case(c):
                        m.d.comb += val.eq(_post_op(op, dt, v, c)[1])
        s = Signal(element_shape(out_t), name=f"{name}_p{k}")
        m.d.comb += s.eq(val)  # wrap is the truncation of this assignment
        v = s
    return v


class GatedConvUnit(wiring.Component):
    """One gated block in hardware (see the module docstring); ``pe`` kept channels per
    cycle. Ports ``i`` (Cin raws of the block input per beat) and ``o`` (C raws of the
    block output per beat); ``latency``, ``cycles_per_vector`` and ``schedule`` as the
    module docstring gives them."""

    def __init__(self, block: GatedBlock, *, pe: int = 1, simd: int | None = None) -> None:
        if not isinstance(block, GatedBlock):
            raise TypeError(f"GatedConvUnit: block must be a GatedBlock, not {block!r}")
        if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1:
            raise ValueError(f"GatedConvUnit: pe must be a positive integer, not {pe!r}")
        _, kh, kw, cin = block.conv.op.weight.shape
        window = kh * kw * cin
        simd = window if simd is None else simd
        if not isinstance(simd, int) or isinstance(simd, bool) or simd < 1 or window % simd:
            raise ValueError(
                f"GatedConvUnit: simd must be a positive integer dividing the {window} window "
                f"taps, not {simd!r}"
            )
        self.simd, self.folds = simd, window // simd
        for what, t in (("input", block.x_type), ("output", block.out_type)):
            if not isinstance(t.dtype, Fixed):
                raise HardwareError(f"GatedConvUnit: the block {what} must be Fixed, not {t}")
        self.block, self.pe = block, pe
        h, w, self.cin = block.x_type.shape
        ho, wo, self.c = block.out_type.shape
        self.k = block.gate.op.k
        self.groups = -(-self.k // pe)
        self.in_beats, self.out_beats = h * w, ho * wo
        self.compute_cycles = 2 + self.c + self.out_beats * self.groups * self.folds
        self.cycles_per_vector = max(self.in_beats + 1, self.compute_cycles)
        self.latency = 3 + self.c + self.groups * self.folds
        self.schedule = Schedule(
            self.in_beats,
            self.out_beats,
            (self.in_beats,) * self.out_beats,
            self.latency,
            self.cycles_per_vector,
        )
        super().__init__(
            {
                "i": In(vector_signature(block.x_type.dtype, self.cin)),
                "o": Out(vector_signature(block.out_type.dtype, self.c)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        b = self.block
        xdt, odt = b.x_type.dtype, b.out_type.dtype
        h, w, cin = b.x_type.shape
        conv = b.conv.op
        cout, kh, kw, _ = conv.weight.shape
        ho, wo, c = b.out_type.shape
        pix_in, pix_out = h * w, ho * wo
        sum_t = b.pool.type.dtype

        def regs(n: int, dt, name: str) -> list[Signal]:
            return [Signal(element_shape(dt), name=f"{name}{j}") for j in range(n)]

        # -- 1. loader: frame buffer and per-channel sums, handed over when compute is idle --
        lframe = [regs(cin, xdt, f"lpx{p}_") for p in range(pix_in)]
        cframe = [regs(cin, xdt, f"cpx{p}_") for p in range(pix_in)]
        lsums, gsums = regs(cin, sum_t, "lsum"), regs(cin, sum_t, "gsum")
        pin = Signal(range(max(pix_in, 2)), name="pin")
        full = Signal(name="full")
        IDLE, GATE, RANK, COMPUTE = range(4)
        state = Signal(range(4), name="state")
        start = Signal(name="start")
        m.d.comb += [self.i.ready.eq(~full), start.eq(full & (state == IDLE))]
        with m.If(self.i.valid & ~full):
            for p in range(pix_in):
                with m.If(pin == p):
                    m.d.sync += [lframe[p][ci].eq(self.i.payload[ci]) for ci in range(cin)]
            m.d.sync += [lsums[ci].eq(lsums[ci] + self.i.payload[ci]) for ci in range(cin)]
            m.d.sync += pin.eq(Mux(pin == pix_in - 1, 0, pin + 1))
            with m.If(pin == pix_in - 1):
                m.d.sync += full.eq(1)
        with m.If(start):
            for p in range(pix_in):
                m.d.sync += [cframe[p][ci].eq(lframe[p][ci]) for ci in range(cin)]
            m.d.sync += [gsums[ci].eq(lsums[ci]) for ci in range(cin)]
            m.d.sync += [lsums[ci].eq(0) for ci in range(cin)]
            m.d.sync += [full.eq(0), state.eq(GATE)]

        # -- 2. gate: the saliency from the sums, in one cycle ------------------------------
        s_dt = _chain_out(b.sal_post, b.dense.type.dtype)
        sal = regs(c, s_dt, "s")
        pooled = [_post(m, b.pool_post, gsums[ci], ci, f"pool{ci}") for ci in range(cin)]
        dense, ddt = b.dense.op, b.dense.type.dtype
        dw = dense.weight.data
        rnk = Signal(range(max(c, 2)), name="rank_ch")  # the channel being ranked
        mask = Signal(c, name="keep_mask")
        with m.If(state == GATE):
            for o in range(c):
                terms = [pooled[i] * int(dw[o, i]) for i in range(dw.shape[1]) if dw[o, i]]
                bias = 0 if dense.bias is None else int(dense.bias.data[o])
                acc = Signal(element_shape(ddt), name=f"pred{o}")
                m.d.comb += acc.eq(reduce(lambda p, q: p + q, terms, bias))
                m.d.sync += sal[o].eq(_post(m, b.sal_post, acc, o, f"sal{o}"))
            m.d.sync += [state.eq(RANK), rnk.eq(0), mask.eq(0)]

        # -- 3. rank: one channel per cycle; kept when fewer than k rank before it ----------
        sal_arr = Array(sal)
        sv = Signal(element_shape(s_dt), name="rank_s")
        m.d.comb += sv.eq(sal_arr[rnk])
        before = [Mux(j < rnk, sal[j] >= sv, sal[j] > sv) for j in range(c)]
        count = reduce(lambda p, q: p + q, [x.as_unsigned() for x in before], Const(0, 1))
        new_mask = Signal(c, name="keep_next")
        m.d.comb += new_mask.eq(mask | ((count < self.k).as_unsigned() << rnk))
        remaining = Signal(c, name="remaining")
        with m.If(state == RANK):
            m.d.sync += [mask.eq(new_mask), rnk.eq(rnk + 1)]
            with m.If(rnk == c - 1):
                m.d.sync += [state.eq(COMPUTE), remaining.eq(new_mask)]

        # -- 4. compute: PE lanes over the kept channels of each output pixel ---------------
        pout = Signal(range(max(pix_out, 2)), name="pout")
        sh, sw = conv.stride
        pt, _, pl, _ = conv.padding
        taps = []  # (ky, kx, ci) -> the window value at output pixel pout
        for ky in range(kh):
            for kx in range(kw):
                for ci in range(cin):
                    srcs = []
                    for oy in range(ho):
                        for ox in range(wo):
                            iy, ix = oy * sh + ky - pt, ox * sw + kx - pl
                            inside = 0 <= iy < h and 0 <= ix < w
                            srcs.append(cframe[iy * w + ix][ci] if inside else Const(0, 1))
                    if all(isinstance(v, Const) for v in srcs):
                        continue
                    tv = Signal(element_shape(xdt), name=f"win{ky}_{kx}_{ci}")
                    m.d.comb += tv.eq(Array(srcs)[pout])
                    taps.append(((ky, kx, ci), tv))
        # the weights (and bias) of channel o: row o of a ROM, one asynchronous read per lane
        wdt, wdata = conv.weight.dtype, conv.weight.data
        if self.folds == 1:  # the live taps (a nonzero weight, a real pixel) in one cycle
            live = [t for t in taps if wdata[:, t[0][0], t[0][1], t[0][2]].any()]
        else:  # every tap, SIMD per cycle; an all-padding tap is a constant 0
            have = dict(taps)
            live = [
                ((ky, kx, ci), have.get((ky, kx, ci), Const(0, 1)))
                for ky in range(kh)
                for kx in range(kw)
                for ci in range(cin)
            ]
        wb = wdt.width
        bw = 0 if conv.bias is None else conv.bias.dtype.width
        rows = []
        for o in range(cout):
            word = 0
            for j, ((ky, kx, ci), _) in enumerate(live):
                word |= (int(wdata[o, ky, kx, ci]) & ((1 << wb) - 1)) << (j * wb)
            if bw:
                word |= (int(conv.bias.data[o]) & ((1 << bw) - 1)) << (len(live) * wb)
            rows.append(word)
        rom_width = max(len(live) * wb + bw, 1)
        m.submodules.rom = rom = Memory(shape=unsigned(rom_width), depth=cout, init=rows)
        simd, folds = self.simd, self.folds
        sf = Signal(range(max(folds, 2)), name="fold")
        chunk = []  # the SIMD window values of fold sf
        if folds > 1:
            for j in range(simd):
                cv = Signal(element_shape(xdt), name=f"chunk{j}")
                m.d.comb += cv.eq(Array([live[f * simd + j][1] for f in range(folds)])[sf])
                chunk.append(cv)
        rem = remaining
        lane_ch, lane_ok, lane_val, lane_acc = [], [], [], []
        for lane in range(self.pe):
            # the lowest channel still to do (priority encoder), then clear it
            ch = Signal(range(max(c, 2)), name=f"lane{lane}_ch")
            idx = Const(0, 1)
            for chn in reversed(range(c)):
                idx = Mux(rem[chn], chn, idx)
            ok = Signal(name=f"lane{lane}_ok")
            m.d.comb += [ch.eq(idx), ok.eq(rem.any())]
            nxt = Signal(c, name=f"lane{lane}_rest")
            m.d.comb += nxt.eq(rem & (rem - 1))
            rem = nxt
            rd = rom.read_port(domain="comb")
            m.d.comb += rd.addr.eq(ch)
            bias = []
            if bw:
                bv = rd.data[len(live) * wb : len(live) * wb + bw]
                bias = [bv.as_signed() if conv.bias.dtype.signed else bv]
            acc = Signal(element_shape(b.conv.type.dtype), name=f"lane{lane}_acc")
            if folds == 1:
                terms = []
                for j, (_, tv) in enumerate(live):
                    wv = rd.data[j * wb : (j + 1) * wb]
                    terms.append((wv.as_signed() if wdt.signed else wv) * tv)
                m.d.comb += acc.eq(reduce(lambda p, q: p + q, terms + bias, Const(0, 1)))
            else:  # fold sf: the partial sum of SIMD taps, started at the bias (FoldedDense)
                held = Signal.like(acc, name=f"lane{lane}_held")
                terms = []
                for j in range(simd):
                    ws = Signal(wb, name=f"lane{lane}_w{j}")
                    parts = [
                        rd.data[(f * simd + j) * wb : (f * simd + j + 1) * wb] for f in range(folds)
                    ]
                    m.d.comb += ws.eq(Array(parts)[sf])
                    terms.append((ws.as_signed() if wdt.signed else ws) * chunk[j])
                start = bias[0] if bias else Const(0, 1)
                psum = reduce(lambda p, q: p + q, terms)
                m.d.comb += acc.eq(Mux(sf == 0, start, held) + psum)
                lane_acc.append((held, acc))
            a = _post(m, b.conv_post, acc, ch, f"lane{lane}_conv")
            gv = Signal(element_shape(b.gate.type.dtype), name=f"lane{lane}_gated")
            m.d.comb += gv.eq(a * sal_arr[ch] if b.gate.op.scale else a)
            lane_ch.append(ch)
            lane_ok.append(ok)
            lane_val.append(_post(m, b.gate_post, gv, ch, f"lane{lane}_out"))
        pixbuf = regs(c, odt, "pb")
        merged = []
        for chn in range(c):
            v = pixbuf[chn]
            for lane in range(self.pe):
                v = Mux(lane_ok[lane] & (lane_ch[lane] == chn), lane_val[lane], v)
            mv = Signal(element_shape(odt), name=f"merged{chn}")
            m.d.comb += mv.eq(v)
            merged.append(mv)
        out_valid = Signal()
        out_data = regs(c, odt, "ob")
        m.d.comb += self.o.valid.eq(out_valid)
        m.d.comb += [self.o.payload[chn].eq(out_data[chn]) for chn in range(c)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += out_valid.eq(0)
        last_grp = ~rem.any()  # no kept channel left for this pixel after this cycle
        if folds == 1:
            go = (state == COMPUTE) & (~last_grp | ~out_valid | self.o.ready)
        else:  # a group ends with its last fold; the other folds only accumulate
            last_fold = sf == folds - 1
            go = (state == COMPUTE) & (~last_fold | ~last_grp | ~out_valid | self.o.ready)
            with m.If(go):
                m.d.sync += sf.eq(Mux(last_fold, 0, sf + 1))
                with m.If(~last_fold):
                    m.d.sync += [held.eq(acc) for held, acc in lane_acc]
            go = go & last_fold
        with m.If(go):
            with m.If(last_grp):
                m.d.sync += [out_data[chn].eq(merged[chn]) for chn in range(c)]
                m.d.sync += [pixbuf[chn].eq(0) for chn in range(c)]
                m.d.sync += [out_valid.eq(1), remaining.eq(mask)]
                m.d.sync += pout.eq(Mux(pout == pix_out - 1, 0, pout + 1))
                with m.If(pout == pix_out - 1):
                    m.d.sync += state.eq(IDLE)
            with m.Else():
                m.d.sync += [pixbuf[chn].eq(merged[chn]) for chn in range(c)]
                m.d.sync += remaining.eq(rem)
        return m


def _chain_out(chain: tuple, dt: Fixed) -> Fixed:
    """The element type after ``chain``."""
    for _, op, _ in chain:
        if isinstance(op, Requant):
            dt = op.to
        elif isinstance(op, MultiThreshold):
            dt = op.out
        else:
            dt = op.infer(TensorType(dt, (1,))).dtype
    return dt
