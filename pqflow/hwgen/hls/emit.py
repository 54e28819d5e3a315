"""The HLS C++ emitter: a graph (or a ``Design``) to a Vitis HLS project, from Jinja templates.

Numbers in the C++ are the contract's *raws*: a value of ``Fixed(w, f, signed)`` is held as
``ap_int<w>`` (``ap_uint<w>`` when unsigned), ``Bipolar`` as ``ap_uint<1>``; the fraction
``f`` is a compile-time fact written beside each typedef (``// raw of ap_fixed<w, w-f>``),
not carried by the C++ type. Every op is then the contract's exact integer arithmetic
(``Dense`` is a sum of ``ap_int`` products into the IR's accumulator type, which interval
analysis sized so no partial sum can overflow). Precision is dropped only in ``Requant``,
and there through ``ap_fixed`` itself: the product ``x * mult`` is read as
``ap_fixed<PW, PW - shift>`` (value = raw / 2**shift, exactly) and converted to
``ap_[u]fixed<W, W, Q, O>`` with the modes mapped one to one (floor -> AP_TRN, half_up ->
AP_RND, half_even -> AP_RND_CONV; saturate -> AP_SAT, wrap -> AP_WRAP), whose bits are the
output raw. Raws keep frac-less C++ types exact for every ``frac`` (negative, or beyond
the width) and make the C simulation compare bit for bit with the oracle.

Boundary: as ``pqflow.hwgen.amaranth.top.hardware_chain``, the hardware part starts after
a leading ``Quantize`` (or at an integer graph input) and ends at the last integer node
(before a trailing ``Dequantize``), so the oracle's vectors apply unchanged. Unlike the
RTL chain, the HLS top accepts any DAG with one input and one output (``Add`` residuals).

Two interfaces, chosen from the graph:

- **array** (no 3-D value, e.g. MLPs): ``void top(const in_t x[N], out_t y[M])``, each
  node a function on arrays (hls4ml's ``io_parallel``);
- **stream** (any (H, W, C) value, CNNs): ``void top(hls::stream<in_item>&,
  hls::stream<out_item>&)`` under ``#pragma HLS DATAFLOW``; an item is one pixel's channels
  (a whole vector for 1-D values). Windowed ops buffer their input frame and slide a
  window over it; values read by several nodes are split into several streams.

Styles per matrix node (``Dense``, ``BinaryDense``) come from the ``Design``:

- ``unrolled``: every output a straight-line sum of its *nonzero* terms only (pruned
  weights emit no code), constants in the expressions, ``#pragma HLS UNROLL``, arrays
  partitioned completely, the array top pipelined at II=1 (hls4ml's latency strategy);
- ``folded(pe, simd)``: weights in a constant array partitioned cyclically by PE (rows)
  and SIMD (columns), a loop pipelined at II=1 over (MH/PE)*(MW/SIMD) folds (hls4ml's
  reuse factor = MH*MW/(PE*SIMD)); zeros stay in the ROM as FINN does;
- ``sparse(pe)``: only the nonzero weights are stored, as row lists (compressed sparse
  rows): rows are assigned to ``pe`` engines balancing their nonzeros (the RTL engine's
  greedy rule), each engine's (column, weight, row, first, last) entries are ROMs
  partitioned by engine, and one loop pipelined at II=1 feeds every engine one entry per
  iteration: max over engines of their nonzeros cycles per vector (zero activations are
  not skipped at run time, unlike the RTL engine).

``Conv2d``/``BinaryConv2d`` are a window generator plus the same matrix kernel on the
window (a grouped kernel's other-group weights are zeros, dropped when unrolled, masked
out of the popcount when binary); a convolution the ``Design`` names takes its own
implementation (any of the three; sparse for ``Conv2d`` only), otherwise the style of the
design's matrix nodes (folded when every one is folded, with PE/SIMD reduced to divisors
of the conv's sizes; else unrolled).
Binary layers are XNOR-popcount on packed ``ap_uint<N>`` words: y = 2*popcount - N.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from functools import singledispatch
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined

from ...ir import (
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
    Graph,
    MaxPool2d,
    MultiThreshold,
    Node,
    Op,
    Overflow,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    Rounding,
    TensorType,
    bits_for,
    verify,
)
from ..design import Design, DesignError, Folded, HardwareError, Impl, Sparse, Unrolled

__all__ = [
    "HLS_OPS",
    "HLSProject",
    "OVERFLOW_MODES",
    "ROUNDING_MODES",
    "generate_hls",
    "hls_boundary",
    "render_hls",
]

ROUNDING_MODES = {
    Rounding.FLOOR: "AP_TRN",
    Rounding.HALF_UP: "AP_RND",
    Rounding.HALF_EVEN: "AP_RND_CONV",
}
"""The contract's rounding modes and their ap_fixed quantization modes (one to one)."""

OVERFLOW_MODES = {Overflow.SATURATE: "AP_SAT", Overflow.WRAP: "AP_WRAP"}
"""The contract's overflow modes and their ap_fixed overflow modes (one to one)."""

DEFAULT_PART = "xcu250-figd2104-2L-e"
DEFAULT_CLOCK_NS = 5.0


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CValue:
    """One IR value in the C++: its identifier, raw type and item layout."""

    ir_name: str
    cid: str
    type: TensorType

    @property
    def t(self) -> str:
        """The typedef of one raw."""
        return f"{self.cid}_t"

    @property
    def item(self) -> str:
        """The typedef of one stream item (the last axis)."""
        return f"{self.cid}_item"

    @property
    def ctype(self) -> str:
        return ctype(self.type.dtype)

    @property
    def c(self) -> int:
        return self.type.shape[-1]

    @property
    def size(self) -> int:
        return self.type.size

    @property
    def count(self) -> int:
        return self.size // self.c

    @property
    def contract(self) -> str:
        """The contract type, and its ap_fixed twin, for a comment beside the typedef."""
        d = self.type.dtype
        if isinstance(d, Bipolar):
            return "bipolar: raw 0 = -1, raw 1 = +1"
        twin = "ap_fixed" if d.signed else "ap_ufixed"
        return f"{d}: raw of {twin}<{d.width}, {d.width - d.frac}>"


def ctype(dtype: Fixed | Bipolar) -> str:
    """The C++ type of a raw: ap_int<w> / ap_uint<w>; Bipolar is ap_uint<1>."""
    if isinstance(dtype, Bipolar):
        return "ap_uint<1>"
    return f"ap_int<{dtype.width}>" if dtype.signed else f"ap_uint<{dtype.width}>"


def native_ctype(lo: int, hi: int) -> str:
    """The narrowest <cstdint> type holding [lo, hi]. Constant tables (ROMs) hold native
    integers: g++ initialises them statically (an ap_int table costs constructor code and
    minutes of compile for a big CNN); each read converts to the exact ap_int type."""
    for bits in (8, 16, 32, 64):
        if lo >= 0 and hi < 2**bits:
            return f"uint{bits}_t"
        if -(2 ** (bits - 1)) <= lo and hi < 2 ** (bits - 1):
            return f"int{bits}_t"
    raise ValueError(f"no 64-bit integer type holds [{lo}, {hi}]")


def lit(v: int) -> str:
    """An exact C++ integer literal (LL beyond 32 bits)."""
    v = int(v)
    return str(v) if -(2**31) < v < 2**31 else f"{v}LL"


def _ident(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name) or "v"
    if base[0].isdigit() or base.startswith(("pq_", "ap_", "hls")):
        base = f"v_{base}"
    cid, k = base, 1
    while cid in taken:
        cid, k = f"{base}_{k}", k + 1
    taken.add(cid)
    return cid


# --- the hardware boundary ------------------------------------------------------------------


def hls_boundary(graph: Graph) -> tuple[str, list[Node], str]:
    """(input value, integer nodes, output value) of a one-input, one-output graph.

    The same boundary as ``hardware_chain``: a leading ``Quantize`` and a trailing
    ``Dequantize`` stay in software. Every other node must be integer (any DAG). Raises
    ValueError naming the problem.
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be a pqflow.ir.Graph, not {graph!r}")
    verify(graph)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(
            f"graph '{graph.name}' must have one input and one output for an HLS top, "
            f"not {len(graph.inputs)} and {len(graph.outputs)}"
        )
    nodes = list(graph.nodes)
    src = graph.inputs[0].name
    if nodes and isinstance(nodes[0].op, Quantize) and nodes[0].inputs == (src,):
        if len(graph.consumers(src)) != 1:
            raise ValueError(f"graph '{graph.name}': the float input may feed only the Quantize")
        src = nodes.pop(0).name
    dst = graph.outputs[0]
    if nodes and isinstance(nodes[-1].op, Dequantize) and nodes[-1].name == dst:
        dst = nodes.pop().inputs[0]
    for n in nodes:
        if isinstance(n.op, Quantize | Dequantize):
            raise ValueError(
                f"{n.describe()}: float conversions are allowed only at the graph's edges "
                "(a leading Quantize, a trailing Dequantize)"
            )
    types = graph.types()
    for what, v in (("input", src), ("output", dst)):
        if not isinstance(types[v].dtype, Fixed | Bipolar):
            raise ValueError(
                f"graph '{graph.name}': the hardware {what} must be integer raws, not {types[v]}"
            )
    if not nodes:
        raise ValueError(f"graph '{graph.name}' has no integer nodes to generate")
    if dst != nodes[-1].name:
        raise ValueError(f"graph '{graph.name}': output '{dst}' is not the last integer node")
    return src, nodes, dst


# --- per-op contexts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ctx:
    """What an op template needs besides the node: its style and interface mode."""

    mode: str  # "array" | "stream"
    impl: Impl | None  # the matrix node's implementation; None for other ops
    conv_impl: Impl  # the implementation convolutions follow


@dataclass
class NodeCode:
    """One node's template name and fields (the template also sees ``ins``/``out``)."""

    template: str
    fields: dict = field(default_factory=dict)


HLS_OPS: tuple[type[Op], ...] = ()
"""Ops the HLS emitter covers (filled by the ``op_code`` registrations below)."""


@singledispatch
def op_code(op: Op, node: Node, ins: list[CValue], out: CValue, ctx: Ctx) -> NodeCode:
    """The template and fields rendering ``node``; raises HardwareError for an op without one."""
    supported = ", ".join(sorted(c.__name__ for c in op_code.registry if c is not object))
    raise HardwareError(
        f"{node.describe()}: {type(op).__name__} has no HLS template; supported: {supported}"
    )


def _dense_kernel(w: np.ndarray, bias, impl: Impl, in_t: str, w_ctype: str) -> dict:
    """The fields of a matrix kernel y = W x + b (W as (out, in) raws)."""
    n_out, n_in = w.shape
    b = np.zeros(n_out, dtype=np.int64) if bias is None else bias.data
    k = {"n_in": n_in, "n_out": n_out, "w_ctype": w_ctype, "in_t": in_t}
    if isinstance(impl, Folded):
        k.update(
            folded=True,
            sparse=False,
            pe=impl.pe,
            simd=impl.simd,
            weights=[[lit(v) for v in row] for row in w.tolist()],
            w_native=native_ctype(int(min(w.min(), 0)), int(max(w.max(), 0))),
            bias=[lit(v) for v in b.tolist()],
            b_native=native_ctype(int(min(b.min(), 0)), int(max(b.max(), 0))),
            has_bias=bias is not None and bool(np.any(b)),
        )
        return k
    if isinstance(impl, Sparse):
        k.update(folded=False, sparse=True, **_row_lists(w, b, impl.pe))
        return k
    if not isinstance(impl, Unrolled):
        raise HardwareError(f"{impl.style!r} has no HLS kernel (use unrolled, folded or sparse)")
    rows = []
    for o in range(n_out):
        terms = []
        for i in np.flatnonzero(w[o]).tolist():
            v = int(w[o, i])
            terms.append((i, "+" if v == 1 else "-" if v == -1 else lit(v)))
        rows.append({"bias": lit(b[o]) if b[o] else None, "terms": terms})
    k.update(folded=False, sparse=False, rows=rows, nnz=int(np.count_nonzero(w)), total=int(w.size))
    return k


def assign_rows(w: np.ndarray, pe: int) -> list[list[int]]:
    """The output rows of each of ``min(pe, n_out)`` PEs, balancing nonzeros.

    The RTL engine's ``greedy`` rule: rows by decreasing nonzero count (ties: lower row
    first), each to the PE with the fewest nonzeros so far among those with fewer than
    ceil(n_out / pe) rows (ties: fewer rows, then lower PE); each PE's rows ascending.
    """
    n_out = w.shape[0]
    pe = min(pe, n_out)
    nnz = np.count_nonzero(w, axis=1)
    cap = -(-n_out // pe)
    load, owned = [0] * pe, [[] for _ in range(pe)]
    for r in sorted(range(n_out), key=lambda r: (-int(nnz[r]), r)):
        p = min(
            (q for q in range(pe) if len(owned[q]) < cap), key=lambda q: (load[q], len(owned[q]), q)
        )
        owned[p].append(r)
        load[p] += int(nnz[r])
    return [sorted(o) for o in owned]


def _row_lists(w: np.ndarray, b: np.ndarray, pe: int) -> dict:
    """Sparse kernel fields: per PE, its rows' nonzeros as one list of (column, weight,
    row, first, last) entries (compressed sparse rows), padded to the longest PE's."""
    n_out, n_in = w.shape
    lists = []
    for rows in assign_rows(w, pe):
        entries = []
        for r in rows:
            cols = np.flatnonzero(w[r]).tolist()
            for i, c in enumerate(cols):
                entries.append((c, lit(w[r, c]), r, i == 0, i == len(cols) - 1))
        lists.append(entries)
    nnz = [len(e) for e in lists]
    lo, hi = int(min(w.min(), 0)), int(max(w.max(), 0))
    length = max(nnz)
    for e in lists:
        e.extend([(0, "0", 0, False, False)] * (length - len(e)))
    return {
        "pe": len(lists),
        "length": length,
        "pe_nnz": nnz,
        "entries": lists,
        "bias": [lit(v) for v in b.tolist()],
        "b_native": native_ctype(int(min(b.min(), 0)), int(max(b.max(), 0))),
        "has_bias": bool(np.any(b)),
        "col_ctype": native_ctype(0, n_in - 1),
        "row_ctype": native_ctype(0, n_out - 1),
        "val_ctype": native_ctype(lo, hi),
        "nnz": int(np.count_nonzero(w)),
        "total": int(w.size),
    }


def _binary_kernel(w: np.ndarray, mask: np.ndarray | None, impl: Impl) -> dict:
    """XNOR-popcount kernel fields; ``w`` (out, in) of 0/1, ``mask`` 1 where a bit counts."""
    n_out, n_in = w.shape
    m = np.ones_like(w) if mask is None else mask

    def word(bits) -> str:  # bit i of the word is column i
        v = sum(int(b) << i for i, b in enumerate(bits))
        return f"{v:x}"

    nvalid = m.sum(axis=1).tolist()
    k = {
        "n_in": n_in,
        "n_out": n_out,
        "weights": [word(r) for r in w.tolist()],
        "masks": None if mask is None else [word(r) for r in m.tolist()],
        "nvalid": [int(v) for v in nvalid],
        "pc_bits": max(n_in.bit_length(), 1),
    }
    if isinstance(impl, Folded):
        k.update(folded=True, pe=impl.pe, simd=impl.simd)
    elif isinstance(impl, Unrolled):
        k.update(folded=False, pe=n_out, simd=n_in)
    else:
        raise HardwareError(f"{impl.style!r} has no HLS kernel (use unrolled or folded)")
    return k


def _register(cls):
    def deco(fn):
        global HLS_OPS
        HLS_OPS = (*HLS_OPS, cls)
        return op_code.register(cls)(fn)

    return deco


@_register(Dense)
def _(op: Dense, node, ins, out, ctx):
    k = _dense_kernel(op.weight.data, op.bias, ctx.impl, ins[0].t, ctype(op.weight.dtype))
    return NodeCode("dense.j2", {"k": k, "sparsity": op.weight.describe()})


@_register(BinaryDense)
def _(op: BinaryDense, node, ins, out, ctx):
    if isinstance(ctx.impl, Sparse):
        raise HardwareError(
            f"{node.describe()}: BinaryDense has no sparse form (a bipolar weight is never "
            "zero); use unrolled or folded"
        )
    return NodeCode("binary_dense.j2", {"k": _binary_kernel(op.weight.data, None, ctx.impl)})


def _conv_matrix(w: np.ndarray, cin: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(out, kh*kw*cin) matrix over a flat window and its group mask."""
    cout, kh, kw, cg = w.shape
    og = cout // groups
    mat = np.zeros((cout, kh, kw, cin), dtype=np.int64)
    mask = np.zeros((cout, kh, kw, cin), dtype=np.int64)
    for o in range(cout):
        g = o // og
        mat[o, :, :, g * cg : (g + 1) * cg] = w[o]
        mask[o, :, :, g * cg : (g + 1) * cg] = 1
    return mat.reshape(cout, -1), mask.reshape(cout, -1)


def _conv_impl(ctx: Ctx, n_out: int, n_in: int) -> Impl:
    if isinstance(ctx.conv_impl, Folded):
        return Folded(math.gcd(ctx.conv_impl.pe, n_out), math.gcd(ctx.conv_impl.simd, n_in))
    return Unrolled()


def _window(op, x: CValue) -> dict:
    h, w, c = x.type.shape
    kh, kw = op.weight.shape[1:3] if hasattr(op, "weight") else op.kernel
    return {
        "h": h,
        "w": w,
        "c": c,
        "kh": kh,
        "kw": kw,
        "sh": op.stride[0],
        "sw": op.stride[1],
        "pt": op.padding[0],
        "pl": op.padding[2],
        "padded": any(op.padding),
    }


def _out_hw(out: CValue) -> dict:
    return {"ho": out.type.shape[0], "wo": out.type.shape[1]}


@_register(Conv2d)
def _(op: Conv2d, node, ins, out, ctx):
    mat, _ = _conv_matrix(op.weight.data, ins[0].c, op.groups)
    impl = ctx.impl or _conv_impl(ctx, *mat.shape)
    k = _dense_kernel(mat, op.bias, impl, ins[0].t, ctype(op.weight.dtype))
    win = _window(op, ins[0]) | _out_hw(out)
    return NodeCode("conv2d.j2", {"k": k, "win": win, "sparsity": op.weight.describe()})


@_register(BinaryConv2d)
def _(op: BinaryConv2d, node, ins, out, ctx):
    mat, mask = _conv_matrix(op.weight.data, ins[0].c, op.groups)
    impl = ctx.impl or _conv_impl(ctx, *mat.shape)
    if isinstance(impl, Sparse):
        raise HardwareError(
            f"{node.describe()}: BinaryConv2d has no sparse form (a bipolar weight is never "
            "zero); use unrolled or folded"
        )
    k = _binary_kernel(mat, mask if op.groups > 1 else None, impl)
    win = _window(op, ins[0]) | _out_hw(out)
    return NodeCode("binary_conv2d.j2", {"k": k, "win": win})


class _PoolWindow:
    padding = (0, 0, 0, 0)


@_register(MaxPool2d)
@_register(AvgPool2d)
def _(op, node, ins, out, ctx):
    view = _PoolWindow()
    view.kernel, view.stride = op.kernel, op.stride
    win = _window(view, ins[0]) | _out_hw(out)
    name = "maxpool2d.j2" if isinstance(op, MaxPool2d) else "avgpool2d.j2"
    return NodeCode(name, {"win": win})


@_register(Add)
def _(op: Add, node, ins, out, ctx):
    f = out.type.dtype.frac
    shifts = [f - x.type.dtype.frac for x in ins]
    return NodeCode("add.j2", {"shifts": shifts})


@_register(ReLU)
def _(op: ReLU, node, ins, out, ctx):
    return NodeCode("relu.j2")


@_register(Requant)
def _(op: Requant, node, ins, out, ctx):
    xt = ins[0].type.dtype
    c = ins[0].c
    mult = list(op.mult) * (c if len(op.mult) == 1 else 1)
    shift = list(op.shift) * (c if len(op.shift) == 1 else 1)
    chans = []
    for m, s in zip(mult, shift, strict=True):
        lo, hi = sorted((xt.min_raw * m, xt.max_raw * m))
        pw = max(bits_for(min(lo, -1), hi), s + 1)
        chans.append({"mult": lit(m), "shift": s, "pw": pw})
    # One product width for every channel (the widest): per-channel widths would make g++
    # instantiate an ap_fixed type per channel (a float-scale CNN compiled 50 s, not 10).
    pw = max(c["pw"] for c in chans)
    for c in chans:
        c["pw"] = pw
    uniform = len(op.mult) == 1 and len(op.shift) == 1
    return NodeCode(
        "requant.j2",
        {
            "chans": chans,
            "uniform": uniform,
            "q": ROUNDING_MODES[op.rounding],
            "o": OVERFLOW_MODES[op.overflow],
            "rounding": str(op.rounding),
            "overflow": str(op.overflow),
        },
    )


@_register(MultiThreshold)
def _(op: MultiThreshold, node, ins, out, ctx):
    t = op.thresholds
    n = t.shape[1]
    return NodeCode(
        "multithreshold.j2",
        {
            "rows": [[lit(v) for v in row] for row in t.data.tolist()],
            "per_channel": t.shape[0] > 1,
            "n_thr": n,
            "t_ctype": ctype(t.dtype),
            "offset": lit(op.offset),
            "cnt_bits": bits_for(min(op.offset, -1), op.offset + n),
        },
    )


@_register(ChannelGate)
def _(op: ChannelGate, node, ins, out, ctx):
    return NodeCode("channel_gate.j2", {"k": op.k, "scale": op.scale})


@_register(Flatten)
@_register(Reshape)
def _(op, node, ins, out, ctx):
    return NodeCode("reshape.j2")


# --- the project ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HLSProject:
    """A rendered Vitis HLS project: file texts by relative path, and its interface.

    ``files`` holds ``firmware/<top>.h``, ``firmware/<top>.cpp``, ``firmware/pqflow_common.h``,
    ``tb/<top>_tb.cpp`` and ``run_hls.tcl`` (plus ``tb/vectors.txt`` when vectors were
    given). ``in_value``/``out_value`` name the graph values at the hardware boundary (the
    oracle's vectors are read there); ``mode`` is ``"array"`` or ``"stream"``.
    ``digest`` is a hash of every file: two generations of one design are byte-identical.
    """

    top: str
    files: dict[str, str]
    in_value: str
    out_value: str
    in_type: TensorType
    out_type: TensorType
    mode: str
    out_dir: Path | None = None

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.files):
            h.update(path.encode() + b"\0" + self.files[path].encode() + b"\0")
        return h.hexdigest()

    @property
    def sources(self) -> list[str]:
        """The C++ files to compile (firmware and test bench)."""
        return [f"firmware/{self.top}.cpp", f"tb/{self.top}_tb.cpp"]

    def write(self, out_dir: str | Path) -> HLSProject:
        """Write every file under ``out_dir``; returns the project with ``out_dir`` set."""
        root = Path(out_dir)
        for rel, text in sorted(self.files.items()):
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists() or p.read_text() != text:
                p.write_text(text)
        return HLSProject(
            self.top,
            self.files,
            self.in_value,
            self.out_value,
            self.in_type,
            self.out_type,
            self.mode,
            root,
        )


_ENV: Environment | None = None


def _env() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(
            loader=PackageLoader("pqflow.hwgen.hls", "templates"),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            autoescape=False,
        )
    return _ENV


def _design(source: Graph | Design, style: str | None, pe: int, simd: int) -> tuple[Design, Impl]:
    """The design, and the implementation its convolutions follow."""
    if isinstance(source, Design):
        if style is not None:
            raise TypeError("generate_hls: style applies to a Graph; a Design carries its own")
        impls = [impl for _, impl in source.impls]
        if impls and all(isinstance(i, Folded) for i in impls):
            return source, impls[0]
        return source, Unrolled()
    if not isinstance(source, Graph):
        raise TypeError(f"generate_hls: source must be a Graph or a Design, not {source!r}")
    style = "unrolled" if style is None else style
    if style == "unrolled":
        return Design.uniform(source, "unrolled"), Unrolled()
    if style == "folded":
        return Design.uniform(source, "folded", pe=pe, simd=simd), Folded(pe, simd)
    if style == "sparse":
        return Design.uniform(source, "sparse", pe=pe), Unrolled()
    raise DesignError(f"HLS style must be 'unrolled', 'folded' or 'sparse', not {style!r}")


def render_hls(
    source: Graph | Design,
    style: str | None = None,
    *,
    top: str = "pqflow_top",
    pe: int = 1,
    simd: int = 1,
    part: str = DEFAULT_PART,
    clock_ns: float = DEFAULT_CLOCK_NS,
    vectors: str | None = None,
) -> HLSProject:
    """Render the HLS project of ``source`` in memory (see ``generate_hls``)."""
    if not isinstance(top, str) or not re.fullmatch(r"[A-Za-z_]\w*", top):
        raise DesignError(f"top must be a C identifier, not {top!r}")
    design, conv_impl = _design(source, style, pe, simd)
    graph = design.graph
    src, nodes, dst = hls_boundary(graph)
    types = graph.types()
    mode = (
        "stream"
        if any(len(types[v].shape) == 3 for v in [src, *(n.name for n in nodes)])
        else ("array")
    )
    taken = {top, "x", "y", "main"}
    values: dict[str, CValue] = {}
    for name in [src, *(n.name for n in nodes)]:
        values[name] = CValue(name, _ident(name, taken), types[name])
    matrix = {name for name, _ in design.impls}
    env = _env()
    blocks, calls = [], []
    for n in nodes:
        ins = [values[i] for i in n.inputs]
        out = values[n.name]
        impl = design.impl(n.name) if n.name in matrix else None
        code = op_code(n.op, n, ins, out, Ctx(mode, impl, conv_impl))
        alias = isinstance(n.op, Flatten | Reshape) and mode == "array"
        blocks.append(
            env.get_template(code.template).render(
                n=n,
                op=type(n.op).__name__,
                fn=out.cid,
                ins=ins,
                out=out,
                mode=mode,
                alias=alias,
                **code.fields,
            )
        )
        calls.append({"fn": out.cid, "ins": ins, "out": out, "alias": alias})
    # Stream fan-out: a value read by k > 1 nodes is split into k streams.
    readers: dict[str, list[int]] = {}
    for k, c in enumerate(calls):
        for j, v in enumerate(c["ins"]):
            readers.setdefault(v.ir_name, []).append((k, j))
    splits = []
    stream_of = {}  # (call index, input index) -> stream variable
    for name, rs in readers.items():
        v = values[name]
        base = "x" if name == src else f"{v.cid}_out"
        if mode == "stream" and len(rs) > 1:
            outs = [f"{v.cid}_to{i}" for i in range(len(rs))]
            splits.append({"v": v, "src": base, "outs": outs})
            for (k, j), s in zip(rs, outs, strict=True):
                stream_of[(k, j)] = s
        else:
            for k, j in rs:
                stream_of[(k, j)] = base
    for k, c in enumerate(calls):
        c["args"] = [stream_of[(k, j)] for j in range(len(c["ins"]))]
        c["dst"] = "y" if c["out"].ir_name == dst else f"{c['out'].cid}_out"
    # Array aliases: a reshape's output is its input array.
    arrays: dict[str, str] = {}
    for c in calls:
        c["args"] = [arrays.get(v.ir_name, a) for v, a in zip(c["ins"], c["args"], strict=True)]
        if c["alias"]:
            arrays[c["out"].ir_name] = c["args"][0]
    if calls[-1]["alias"]:  # the output is a reshape of another value: copy into y
        calls[-1]["copy"] = True
    styles = sorted({impl.style for _, impl in design.impls}) or [conv_impl.style]
    fields = {
        "top": top,
        "graph": graph,
        "mode": mode,
        "values": list(values.values()),
        "vin": values[src],
        "vout": values[dst],
        "blocks": blocks,
        "calls": calls,
        "splits": splits,
        "unrolled": all(isinstance(i, Unrolled) for _, i in design.impls)
        and not isinstance(conv_impl, Folded),
        "style": "/".join(styles),
        "design": design.describe(),
        "part": part,
        "clock_ns": clock_ns,
    }
    files = {
        "firmware/pqflow_common.h": env.get_template("pqflow_common.h.j2").render(),
        f"firmware/{top}.h": env.get_template("top.h.j2").render(**fields),
        f"firmware/{top}.cpp": env.get_template("top.cpp.j2").render(**fields),
        f"tb/{top}_tb.cpp": env.get_template("testbench.cpp.j2").render(**fields),
        "run_hls.tcl": env.get_template("run_hls.tcl.j2").render(**fields),
    }
    if vectors is not None:
        files["tb/vectors.txt"] = vectors
    return HLSProject(top, files, src, dst, types[src], types[dst], mode)


def generate_hls(
    source: Graph | Design,
    style: str | None = None,
    out_dir: str | Path | None = None,
    *,
    top: str = "pqflow_top",
    pe: int = 1,
    simd: int = 1,
    part: str = DEFAULT_PART,
    clock_ns: float = DEFAULT_CLOCK_NS,
    x=None,
) -> HLSProject:
    """The Vitis HLS project of a graph or ``Design``, written to ``out_dir`` when given.

    ``style`` (``"unrolled"``, the default, ``"folded"`` with ``pe``/``simd``, or
    ``"sparse"`` with ``pe``) applies
    to a Graph: it becomes ``Design.uniform(graph, style, pe=, simd=)`` (a folding factor
    must divide every matrix node's sizes, as in the RTL; pass a ``Design`` for per-node
    choices). ``top`` names the top function. ``x`` (optional, the graph's input batch)
    writes the oracle's vectors to ``tb/vectors.txt`` so that ``vitis_hls -f run_hls.tcl``
    runs C simulation and co-simulation against them. Raises ``HardwareError`` naming the
    node for an op without an HLS template, ``DesignError`` for a bad style or factor.
    """
    vectors = None
    if x is not None:
        from pqflow.sim.csim import format_vectors, oracle_vectors

        graph = source.graph if isinstance(source, Design) else source
        vectors = format_vectors(*oracle_vectors(graph, x))
    project = render_hls(
        source,
        style,
        top=top,
        pe=pe,
        simd=simd,
        part=part,
        clock_ns=clock_ns,
        vectors=vectors,
    )
    return project if out_dir is None else project.write(out_dir)
