"""Fused chains: Quantize/Dense/ReLU/Requant/Dequantize runs in one Numba pass, exactly.

A chain is a run of per-sample vector nodes (shape ``(C,)``) where each node's value feeds
only the next one and is not asked for. ``fused_chain`` takes a block of samples at a
time, keeps every intermediate in a feature-major scratch (``lanes[c, r]``: channel c of
row r, so the batch is the SIMD axis) and writes only the chain's last value. Dense skips
zero weights (each output row lists its nonzero inputs), so a pruned MLP costs its
nonzeros, not its shape.

Exactness. The lanes are float32 or float64 (``plan_chain`` picks the narrowest that holds
the chain) and hold integer raws. Every value a step produces is an integer of magnitude
below the lane limit L (2**24 for float32, 2**53 for float64), which ``plan_chain``
proves from the types before choosing the path:

- Dense: every partial sum (bias first, then products W[o, k] * x[k], in any order) is
  bounded by ``max_o |b[o]| + sum_k |W[o, k]| * max|x|`` < L, so no float operation
  rounds (an FMA, allowed by ``contract``, rounds once and is exact too);
- Requant: ``x * mult`` is bounded by ``max|x| * max|mult|`` < L; multiplying by 2**-shift
  is exact (a power of two, far from underflow); floor, rint (ties to even) and the
  half-up rule of ``round_float_scalar`` round the exact quotient as ``round_shift`` does;
  saturation clamps against the range clipped to +-L (values never reach L anyway); wrap
  subtracts ``floor(q / 2**w) * 2**w``, exact when ``|q| + 1 + 2**w`` < L;
- ReLU is a comparison; Quantize rounds in float64 as its kernel does, and its raw (of
  magnitude < L) converts exactly; Dequantize converts the exact raw to float64 and scales
  as its kernel does; the final raw converts back to the same int64.

Bounds of values entering the chain come from their types (as ``matmul_plan`` does);
the executor checks graph inputs against their types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from pqflow.ir import Dense, Dequantize, Fixed, Float, Graph, Quantize, ReLU, Requant, TensorType

from .numba_ops import (
    F32_LIMIT,
    F64_LIMIT,
    FLOOR,
    HALF_EVEN,
    OVERFLOW_CODE,
    ROUNDING_CODE,
    SATURATE,
    matmul_plan,
    quantize_scalar,
)

OP_QUANT, OP_DENSE, OP_RELU, OP_REQUANT, OP_DEQUANT = range(5)

BLOCK = 256
"""Rows per block: the lanes of the widest layer stay in L1/L2 between layers."""

FUSABLE = (Quantize, Dense, ReLU, Requant, Dequantize)

fjit = njit(cache=True, nogil=True, fastmath={"contract"})


@fjit
def _clamp(v, lo, hi):
    v = 0.0 if v != v else v  # NaN -> 0
    return lo if v < lo else (hi if v > hi else v)


@fjit
def _load_quantized(x, m0, nr, scale, rm, lo, hi, tmp, dst):
    """dst[c, r] = quantize(x[m0 + r, c]) with saturation: the float clamp to [lo, hi]
    (integers a float64 holds) gives quantize_scalar's raw. The loops are specialised per
    rounding mode so they vectorise; ``tmp`` (rows x channels, the lane dtype) is then
    transposed in 8 x 8 tiles."""
    c0 = x.shape[1]
    if rm == FLOOR:
        for r in range(nr):
            for c in range(c0):
                tmp[r, c] = _clamp(np.floor(x[m0 + r, c] * scale), lo, hi)
    elif rm == HALF_EVEN:
        for r in range(nr):
            for c in range(c0):
                tmp[r, c] = _clamp(np.rint(x[m0 + r, c] * scale), lo, hi)
    else:
        for r in range(nr):
            for c in range(c0):
                v = x[m0 + r, c] * scale
                f = np.floor(v)
                tmp[r, c] = _clamp(f + 1.0 if (v != f) & (v >= f + 0.5) else f, lo, hi)
    r8, c8 = nr - nr % 8, c0 - c0 % 8
    for r0 in range(0, r8, 8):
        for cc in range(0, c8, 8):  # constant trip counts: unrolled into shuffles
            for c in range(8):
                for r in range(8):
                    dst[cc + c, r0 + r] = tmp[r0 + r, cc + c]
        for c in range(c8, c0):
            for r in range(r0, r0 + 8):
                dst[c, r] = tmp[r, c]
    for r in range(r8, nr):
        for c in range(c0):
            dst[c, r] = tmp[r, c]


@fjit
def _store_raws(src, out, m0, nr):
    """out[m0 + r, c] = int64(src[c, r]), transposed in 8 x 8 tiles."""
    c_last = out.shape[1]
    r8, c8 = nr - nr % 8, c_last - c_last % 8
    for r0 in range(0, r8, 8):
        for cc in range(0, c8, 8):
            for r in range(8):
                for c in range(8):
                    out[m0 + r0 + r, cc + c] = np.int64(src[cc + c, r0 + r])
        for r in range(r0, r0 + 8):
            for c in range(c8, c_last):
                out[m0 + r, c] = np.int64(src[c, r])
    for r in range(r8, nr):
        for c in range(c_last):
            out[m0 + r, c] = np.int64(src[c, r])


@fjit
def fused_chain(x, prog, ip, lp, fp, lanes, out):
    """Run the encoded chain on x (N, C0) into out (N, C_last); see ``FusedChain``.

    prog rows: (code, c_in, c_out, a, b, c, d, e). ip: int64 params (Dense row pointers
    and column indices); lp: lane-dtype params (0, 1, 1/2, then weights, biases, mults,
    2**-shift, limits); fp: float64 params (scales). lanes: (2, C_max, BLOCK) scratch
    in the lane dtype.
    """
    n = x.shape[0]
    blk = lanes.shape[2]
    n_ops = prog.shape[0]
    zero, one, half = lp[0], lp[1], lp[2]  # typed constants
    tmp = np.empty((blk, x.shape[1]), dtype=lanes.dtype)
    for m0 in range(0, n, blk):
        nr = min(blk, n - m0)
        cur = 0
        # load (transposed): quantize floats, or take raws
        c0 = x.shape[1]
        if prog[0, 0] == OP_QUANT:
            rm, w, sg, om = prog[0, 3], prog[0, 4], prog[0, 5] != 0, prog[0, 6]
            scale = fp[prog[0, 7]]
            if om == SATURATE and w <= 53:
                lo, hi = fp[prog[0, 7] + 1], fp[prog[0, 7] + 2]
                _load_quantized(x, m0, nr, scale, rm, lo, hi, tmp, lanes[0])
            else:
                for r in range(nr):
                    for c in range(c0):
                        lanes[0, c, r] = quantize_scalar(x[m0 + r, c], scale, rm, w, sg, om)
            first = 1
        else:
            for r in range(nr):
                for c in range(c0):
                    lanes[0, c, r] = x[m0 + r, c]
            first = 0
        out_float = False
        dq_scale = 1.0
        for i in range(first, n_ops):
            code = prog[i, 0]
            c_in, c_out = prog[i, 1], prog[i, 2]
            src = lanes[cur]
            if code == OP_DENSE:
                dst = lanes[1 - cur]
                pa, woff, boff = prog[i, 3], prog[i, 4], prog[i, 5]
                kbase = prog[i, 6]
                for o in range(c_out):
                    d = dst[o]
                    bv = lp[boff + o]
                    for r in range(nr):
                        d[r] = bv
                    j, end = ip[pa + o], ip[pa + o + 1]
                    while j + 8 <= end:  # eight nonzeros per pass: fewer loads and stores of d
                        s0, s1 = src[ip[kbase + j]], src[ip[kbase + j + 1]]
                        s2, s3 = src[ip[kbase + j + 2]], src[ip[kbase + j + 3]]
                        s4, s5 = src[ip[kbase + j + 4]], src[ip[kbase + j + 5]]
                        s6, s7 = src[ip[kbase + j + 6]], src[ip[kbase + j + 7]]
                        w0, w1 = lp[woff + j], lp[woff + j + 1]
                        w2, w3 = lp[woff + j + 2], lp[woff + j + 3]
                        w4, w5 = lp[woff + j + 4], lp[woff + j + 5]
                        w6, w7 = lp[woff + j + 6], lp[woff + j + 7]
                        for r in range(nr):
                            d[r] += ((w0 * s0[r] + w1 * s1[r]) + (w2 * s2[r] + w3 * s3[r])) + (
                                (w4 * s4[r] + w5 * s5[r]) + (w6 * s6[r] + w7 * s7[r])
                            )
                        j += 8
                    while j + 4 <= end:
                        s0, s1 = src[ip[kbase + j]], src[ip[kbase + j + 1]]
                        s2, s3 = src[ip[kbase + j + 2]], src[ip[kbase + j + 3]]
                        w0, w1 = lp[woff + j], lp[woff + j + 1]
                        w2, w3 = lp[woff + j + 2], lp[woff + j + 3]
                        for r in range(nr):
                            d[r] += (w0 * s0[r] + w1 * s1[r]) + (w2 * s2[r] + w3 * s3[r])
                        j += 4
                    while j < end:
                        s = src[ip[kbase + j]]
                        wv = lp[woff + j]
                        for r in range(nr):
                            d[r] += wv * s[r]
                        j += 1
                cur = 1 - cur
            elif code == OP_RELU:
                for c in range(c_in):
                    s = src[c]
                    for r in range(nr):
                        v = s[r]
                        s[r] = v if v > zero else zero
            elif code == OP_REQUANT:
                off, rm, om, sg = prog[i, 3], prog[i, 4], prog[i, 5], prog[i, 6] != 0
                lim = prog[i, 7]
                lo, hi, pw, ipw = lp[lim], lp[lim + 1], lp[lim + 2], lp[lim + 3]
                for c in range(c_in):
                    s = src[c]
                    mu = lp[off + c]
                    inv = lp[off + c_in + c]
                    for r in range(nr):
                        q = s[r] * mu * inv
                        if rm == FLOOR:
                            q = np.floor(q)
                        elif rm == HALF_EVEN:
                            q = np.rint(q)
                        else:
                            f = np.floor(q)
                            q = f + one if (q != f) & (q >= f + half) else f
                        if om == SATURATE:
                            q = lo if q < lo else (hi if q > hi else q)
                        else:
                            q = q - np.floor(q * ipw) * pw
                            if sg and q > hi:
                                q -= pw
                        s[r] = q
            elif code == OP_DEQUANT:
                out_float = True
                dq_scale = fp[prog[i, 7]]
        # store (transposed)
        src = lanes[cur]
        c_last = out.shape[1]
        if out_float:
            for r in range(nr):
                for c in range(c_last):
                    out[m0 + r, c] = np.float64(src[c, r]) * dq_scale
        else:
            _store_raws(src, out, m0, nr)
    return out


def _abs_max(t: TensorType) -> int:
    d = t.dtype
    return max(abs(d.min_raw), abs(d.max_raw))


@dataclass(frozen=True)
class FusedChain:
    """An encoded chain, ready for ``fused_chain`` (see its doc for the layout)."""

    names: tuple[str, ...]
    lane: type
    prog: np.ndarray
    ip: np.ndarray
    lp: np.ndarray
    fp: np.ndarray
    width: int  # widest value, rows of the scratch

    def __call__(self, x: np.ndarray, out: np.ndarray, lanes: np.ndarray) -> np.ndarray:
        return fused_chain(x, self.prog, self.ip, self.lp, self.fp, lanes, out)


def _fits(node, in_type: TensorType) -> bool:
    op = node.op
    if not isinstance(op, FUSABLE) or len(node.type.shape) != 1 or len(in_type.shape) != 1:
        return False
    if isinstance(op, Quantize):
        return isinstance(in_type.dtype, Float)
    return isinstance(in_type.dtype, Fixed)


def _bounds(nodes, types: dict[str, TensorType]) -> list[int] | None:
    """The largest magnitude each step computes (partial sums, products), or None."""
    out = []
    vb = None if isinstance(nodes[0].op, Quantize) else _abs_max(types[nodes[0].inputs[0]])
    if vb is not None:
        out.append(vb)  # the raws entering the chain convert exactly
    for node in nodes:
        op, t = node.op, node.type
        if isinstance(op, Quantize):
            step = vb = _abs_max(t)
        elif isinstance(op, Dense):
            w = np.abs(op.weight.data.astype(object))
            b = (
                np.zeros(w.shape[0], dtype=object)
                if op.bias is None
                else np.abs(op.bias.data.astype(object))
            )
            step = int(max(w.sum(axis=1) * vb + b))
            vb = min(step, _abs_max(t))
        elif isinstance(op, ReLU):
            step = vb
        elif isinstance(op, Requant):
            step = vb * max(abs(m) for m in op.mult)
            step = max(step, max(abs(m) for m in op.mult))
            if op.overflow.name == "WRAP":
                step = step + 1 + (1 << op.to.width)
            vb = _abs_max(t)
        elif isinstance(op, Dequantize):
            step = vb
        else:  # pragma: no cover
            return None
        out.append(step)
    return out


def plan_chain(nodes, types: dict[str, TensorType], gemm: str) -> FusedChain | None:
    """Encode ``nodes`` (a chain) if some lane dtype holds it exactly, else None."""
    if gemm == "int" or not any(isinstance(n.op, Dense) for n in nodes):
        return None
    for n in nodes:  # a forced inexact path raises as the per-node kernels would
        if isinstance(n.op, Dense):
            matmul_plan(n.op, types[n.inputs[0]], gemm)
    bounds = _bounds(nodes, types)
    if bounds is None:
        return None
    top = max(bounds)
    lane = {"f32": np.float32, "f64": np.float64}.get(gemm)
    limit = {"f32": F32_LIMIT, "f64": F64_LIMIT}.get(gemm)
    if lane is None:
        lane, limit = (np.float32, F32_LIMIT) if top < F32_LIMIT else (np.float64, F64_LIMIT)
    if top >= limit:
        return None
    prog = np.zeros((len(nodes), 8), dtype=np.int64)
    ip: list[int] = []
    lp: list[float] = [0.0, 1.0, 0.5]
    fp: list[float] = []
    width = max(types[nodes[0].inputs[0]].shape[0], *(n.type.shape[0] for n in nodes))
    for i, node in enumerate(nodes):
        op = node.op
        c_in, c_out = types[node.inputs[0]].shape[0], node.type.shape[0]
        row = [0, c_in, c_out, 0, 0, 0, 0, 0]
        if isinstance(op, Quantize):
            t = op.to
            fp.extend([float(2.0**t.frac), float(t.min_raw), float(t.max_raw)])
            row[0] = OP_QUANT
            row[3:8] = [
                ROUNDING_CODE[op.rounding],
                t.width,
                int(t.signed),
                OVERFLOW_CODE[op.overflow],
                len(fp) - 3,
            ]
        elif isinstance(op, Dense):
            w = np.asarray(op.weight.data, dtype=np.int64)
            ptr, ks, ws = [0], [], []
            for o in range(c_out):
                nz = np.flatnonzero(w[o])
                ks.extend(int(k) for k in nz)
                ws.extend(int(w[o, k]) for k in nz)
                ptr.append(len(ks))
            row[0] = OP_DENSE
            row[3] = len(ip)
            ip.extend(ptr)
            row[6] = len(ip)
            ip.extend(ks)
            row[4] = len(lp)
            lp.extend(ws)
            row[5] = len(lp)
            b = np.zeros(c_out, dtype=np.int64) if op.bias is None else op.bias.data
            lp.extend(int(v) for v in b)
        elif isinstance(op, ReLU):
            row[0] = OP_RELU
        elif isinstance(op, Requant):
            t = op.to
            mult = np.broadcast_to(np.array(op.mult, dtype=np.int64), (c_in,))
            shift = np.broadcast_to(np.array(op.shift, dtype=np.int64), (c_in,))
            row[0] = OP_REQUANT
            row[3] = len(lp)
            lp.extend(int(m) for m in mult)
            lp.extend(2.0 ** -int(s) for s in shift)
            row[4:8] = [
                ROUNDING_CODE[op.rounding],
                OVERFLOW_CODE[op.overflow],
                int(t.signed),
                len(lp),
            ]
            lo, hi = max(t.min_raw, -limit), min(t.max_raw, limit)
            pw = 1 << t.width
            lp.extend([lo, hi, min(pw, 2**62), 1.0 / pw])
        elif isinstance(op, Dequantize):
            fp.append(float(2.0 ** -types[node.inputs[0]].dtype.frac))
            row[0] = OP_DEQUANT
            row[7] = len(fp) - 1
        prog[i] = row
    return FusedChain(
        names=tuple(n.name for n in nodes),
        lane=lane,
        prog=prog,
        ip=np.array(ip or [0], dtype=np.int64),
        lp=np.array(lp, dtype=lane),
        fp=np.array(fp or [1.0], dtype=np.float64),
        width=width,
    )


def find_chains(graph: Graph, keep: set[str]) -> list[list]:
    """Maximal chains of fusable vector nodes whose inner values only feed the next node
    and are not in ``keep`` (values asked for)."""
    types = graph.types()
    consumers: dict[str, list] = {}
    for node in graph.nodes:
        for i in node.inputs:
            consumers.setdefault(i, []).append(node)
    outs = set(graph.outputs) | keep
    taken: set[str] = set()
    chains = []
    for node in graph.nodes:
        if node.name in taken or not _fits(node, types[node.inputs[0]]):
            continue
        chain = [node]
        while True:
            last = chain[-1]
            nxt = consumers.get(last.name, [])
            if isinstance(last.op, Dequantize) or last.name in outs or len(nxt) != 1:
                break
            n2 = nxt[0]
            if len(n2.inputs) != 1 or isinstance(n2.op, Quantize):
                break
            if n2.name in taken or not _fits(n2, types[last.name]):
                break
            chain.append(n2)
        taken.update(n.name for n in chain)
        chains.append(chain)
    return chains
