"""Run a graph over a batch with the Numba kernels: the bit-accurate oracle's entry point.

The batch is processed in chunks of samples (every op is per sample, so chunking changes
nothing but memory use and cache locality); each chunk goes through every node, and the
chunks run on a small thread pool (the kernels release the GIL).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from pqflow.ir import Float, Graph, TensorType, verify

from .fused import BLOCK, FusedChain, find_chains, plan_chain
from .numba_ops import GEMM_PATHS, VIEW_OPS, Options, kernel

CHUNK_ELEMENTS = 1 << 17
"""A default chunk holds about this many elements (1 MiB of int64) in its largest value."""

MIN_CHUNK = 256
"""Smaller batches run in one chunk on the calling thread."""

THREADS = max(1, min(os.cpu_count() or 1, 8))
"""Threads running chunks in parallel."""

_pool: ThreadPoolExecutor | None = None


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="pqflow-run")
    return _pool


@lru_cache(maxsize=64)
def _checked(graph: Graph) -> tuple[dict[str, TensorType], int]:
    """Verify once per graph; return its types and the largest per-sample intermediate."""
    verify(graph)
    types = graph.types()
    return types, max(t.size for t in types.values())


_workspace = threading.local()
WORKSPACE_BYTES = 1 << 28
"""Each thread keeps its chunk buffers across runs (fresh memory costs page faults), up to
this many bytes; past it the thread's buffers are dropped and made anew."""


def _buffer(spec: tuple, rows: int) -> np.ndarray:
    """This thread's buffer of ``rows`` samples for (node index, sample shape, dtype),
    reused run after run (a C-contiguous leading slice of a possibly larger one)."""
    bufs = getattr(_workspace, "bufs", None)
    if bufs is None:
        bufs = _workspace.bufs = {}
    b = bufs.get(spec)
    if b is None or b.shape[0] < rows:
        if sum(a.nbytes for a in bufs.values()) > WORKSPACE_BYTES:
            bufs.clear()
        b = bufs[spec] = np.empty((rows, *spec[1]), dtype=spec[2])
    return b[:rows]


def _lanes(chain: FusedChain) -> np.ndarray:
    """This thread's scratch for a fused chain: (2, width, BLOCK) in the lane dtype."""
    bufs = getattr(_workspace, "lanes", None)
    if bufs is None:
        bufs = _workspace.lanes = {}
    key = np.dtype(chain.lane).name
    b = bufs.get(key)
    if b is None or b.shape[1] < chain.width:
        b = bufs[key] = np.empty((2, chain.width, BLOCK), dtype=chain.lane)
    return b


@lru_cache(maxsize=64)
def _fused(graph: Graph, keep: tuple[str, ...], gemm: str) -> dict[str, FusedChain]:
    """The exact fused chains of ``graph`` (keeping the values in ``keep``), by first node."""
    types = graph.types()
    plans = {}
    for chain in find_chains(graph, set(keep)):
        p = plan_chain(chain, types, gemm)
        if p is not None:
            plans[chain[0].name] = p
    return plans


def _dtype(t: TensorType) -> type:
    return np.float64 if isinstance(t.dtype, Float) else np.int64


def _check_input(name: str, t: TensorType, a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != len(t.shape) + 1 or tuple(a.shape[1:]) != t.shape:
        raise ValueError(
            f"input '{name}': expected shape (N, {', '.join(map(str, t.shape))}), "
            f"got {tuple(a.shape)}"
        )
    if isinstance(t.dtype, Float):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"input '{name}': expected real numbers for {t}, got dtype {a.dtype}")
        # float32 -> float64 is exact, and Quantize computes in float64 either way: keep
        # float32 batches as they are rather than copy them
        return np.ascontiguousarray(a, dtype=a.dtype if a.dtype == np.float32 else np.float64)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"input '{name}': expected integer raws for {t}, got dtype {a.dtype}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        d = t.dtype
        if lo < d.min_raw or hi > d.max_raw:
            raise ValueError(
                f"input '{name}': raws [{lo}, {hi}] do not fit {d} ([{d.min_raw}, {d.max_raw}])"
            )
    return np.ascontiguousarray(a, dtype=np.int64)


def _inputs(graph: Graph, x) -> dict[str, np.ndarray]:
    if isinstance(x, dict):
        missing = [v.name for v in graph.inputs if v.name not in x]
        if missing:
            raise ValueError(f"graph '{graph.name}': missing input(s) {', '.join(missing)}")
        extra = sorted(set(x) - {v.name for v in graph.inputs})
        if extra:
            raise ValueError(f"graph '{graph.name}': unknown input(s) {', '.join(extra)}")
    elif len(graph.inputs) == 1:
        x = {graph.inputs[0].name: x}
    else:
        names = ", ".join(v.name for v in graph.inputs)
        raise ValueError(
            f"graph '{graph.name}' has {len(graph.inputs)} inputs ({names}); pass a dict by name"
        )
    arrays = {v.name: _check_input(v.name, v.type, x[v.name]) for v in graph.inputs}
    sizes = {a.shape[0] for a in arrays.values()}
    if len(sizes) > 1:
        raise ValueError(f"graph '{graph.name}': inputs have different batch sizes {sorted(sizes)}")
    return arrays


def run(
    graph: Graph,
    x,
    *,
    outputs: str | list[str] | tuple[str, ...] | None = None,
    gemm: str = "auto",
    chunk: int | None = None,
    fuse: bool = True,
) -> np.ndarray | dict[str, np.ndarray]:
    """Run ``graph`` on a batch with the Numba kernels, bit-exactly.

    ``x`` is one array (for a graph with one input) or a dict by input name, shaped
    ``(N, *input_shape)``: floats for a Float input, integer raws in the input type's range
    for Fixed/Bipolar inputs (else ValueError naming the problem). Returns the array of the
    graph's one output, else a dict by name; ``outputs`` picks other values (any node or
    input name; a string returns that array). Float values are float64, raws int64.

    ``gemm`` forces the matrix-product path ("f32", "f64", "int"; "auto" picks the
    cheapest exact one per node; a forced path that is not exact for a node raises).
    ``chunk`` is the number of samples per chunk (default: sized from the graph).
    ``fuse`` runs chains of vector Quantize/Dense/ReLU/Requant/Dequantize nodes in one
    pass (``pqflow.kernels.fused``) where a float lane provably holds them exactly.
    """
    if gemm not in GEMM_PATHS:
        raise ValueError(f"gemm must be one of {', '.join(GEMM_PATHS)}, not {gemm!r}")
    types, biggest = _checked(graph)
    arrays = _inputs(graph, x)
    if isinstance(outputs, str):
        names: tuple[str, ...] = (outputs,)
    else:
        names = tuple(outputs) if outputs is not None else graph.outputs
    for o in names:
        if o not in types:
            raise ValueError(f"graph '{graph.name}' has no value '{o}'")
    n = next(iter(arrays.values())).shape[0]
    if chunk is None:
        chunk = max(MIN_CHUNK, CHUNK_ELEMENTS // biggest)
        n_chunks = max(1, -(-n // chunk))
        if n >= THREADS * MIN_CHUNK:  # a multiple of the threads, so they finish together
            n_chunks = -(-n_chunks // THREADS) * THREADS
        chunk = max(1, -(-n // n_chunks))
    elif isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, not {chunk!r}")
    chunk = max(1, min(chunk, n))
    options = Options(gemm=gemm)
    results = {o: np.empty((n, *types[o].shape), dtype=_dtype(types[o])) for o in names}

    fused = _fused(graph, names, gemm) if fuse else {}
    inner = {name for f in fused.values() for name in f.names[1:]}
    nodes = graph.nodes
    specs = [
        None if isinstance(node.op, VIEW_OPS) else (i, node.type.shape, _dtype(node.type))
        for i, node in enumerate(nodes)
    ]
    last = {nd.name: (i, nd) for i, nd in enumerate(nodes)}
    direct = {f.names[-1] for f in fused.values()} & set(names)  # written in place

    def one_chunk(start: int) -> None:
        stop = min(start + chunk, n)
        env = {k: a[start:stop] for k, a in arrays.items()}
        for node, spec in zip(nodes, specs, strict=True):
            if node.name in inner:
                continue
            f = fused.get(node.name)
            if f is not None:
                i, end = last[f.names[-1]]
                if end.name in direct:  # straight into the result rows
                    buf = results[end.name][start:stop]
                else:
                    buf = _buffer((i, end.type.shape, _dtype(end.type)), stop - start)
                x_in = np.ascontiguousarray(env[node.inputs[0]])
                env[end.name] = f(x_in, buf, _lanes(f))
                continue
            buf = None if spec is None else _buffer(spec, stop - start)
            env[node.name] = kernel(
                node.op,
                [types[i] for i in node.inputs],
                *(env[i] for i in node.inputs),
                options=options,
                out=buf,
            )
        for o in names:
            if o not in direct:
                results[o][start:stop] = env[o]

    starts = list(range(0, n, chunk)) or [0]
    if len(starts) == 1:
        one_chunk(0)
    else:
        for f in [_get_pool().submit(one_chunk, s) for s in starts]:
            f.result()
    if isinstance(outputs, str) or (outputs is None and len(names) == 1):
        return results[names[0]]
    return results
