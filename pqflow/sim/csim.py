"""C simulation of generated HLS C++: g++ against the open ap_types headers, bit-exact.

``csim(graph_or_design, x)`` renders the design's HLS project, computes the oracle's
vectors at the hardware boundary (``pqflow.kernels.run``: the raws after the leading
``Quantize`` in, the raws of the last integer node out), compiles the project's C++ with
``g++ -std=c++17 -Wall -Werror`` (warning-free; the vendor headers are included with
``-isystem``), runs its test bench on the vectors and compares every output raw with
``np.array_equal``. ``csim_many`` links several designs into one binary (one compile for
a whole test module).

Binaries are cached by a hash of every source file, the flags, the compiler's version and
the headers' location, under ``cache_root()/hls-csim`` (``$PQFLOW_CACHE`` or
``~/.cache/pqflow``): a design is compiled once, whatever vectors it later runs on.

Headers: ``$PQFLOW_AP_TYPES`` when set, else the ``ap_types`` directory shipped inside
the hls4ml package (``hls4ml/templates/vivado/ap_types``, with ``hls_stream.h``; extra
``hls``), else ``$XILINX_HLS/include``. The compiler is ``$CXX`` or ``g++``.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from pqflow.errors import UserError
from pqflow.hwgen.design import Design
from pqflow.hwgen.hls.emit import HLSProject, _env, hls_boundary, render_hls
from pqflow.ir import Graph
from pqflow.sim.tools import cache_root

__all__ = [
    "CXXFLAGS",
    "CSimError",
    "CSimResult",
    "ToolNotFound",
    "build_csim",
    "csim",
    "csim_many",
    "find_ap_types",
    "find_compiler",
    "format_vectors",
    "oracle_vectors",
    "run_csim",
]

CXXFLAGS = ("-std=c++17", "-Wall", "-Werror", "-O0")
"""Flags every generated source compiles with (warnings are errors)."""


class ToolNotFound(UserError, RuntimeError):
    """The C++ compiler or the ap_types headers are missing; the message says how to fix it."""


class CSimError(UserError, RuntimeError):
    """The generated C++ did not compile or its test bench could not run."""


@dataclass(frozen=True)
class CSimResult:
    """The outcome of one C simulation.

    ``passed``: every output raw equals the oracle's. ``mismatches``: the number of
    samples with at least one differing raw. ``outputs``/``expected``: int64 raws shaped
    ``(N, *output_shape)`` (C simulation / oracle). ``compile_seconds`` is 0.0 when the
    binary came from the cache.
    """

    passed: bool
    mismatches: int
    outputs: np.ndarray
    expected: np.ndarray
    top: str
    binary: Path
    cached: bool
    compile_seconds: float
    run_seconds: float


# --- tools ----------------------------------------------------------------------------------


def find_ap_types() -> Path:
    """The directory holding ``ap_int.h``, ``ap_fixed.h`` and ``hls_stream.h``."""
    candidates: list[Path] = []
    env = os.environ.get("PQFLOW_AP_TYPES")
    if env:
        candidates.append(Path(env))
    spec = importlib.util.find_spec("hls4ml")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates.append(Path(loc) / "templates" / "vivado" / "ap_types")
    xilinx = os.environ.get("XILINX_HLS")
    if xilinx:
        candidates.append(Path(xilinx) / "include")
    for c in candidates:
        if all((c / h).is_file() for h in ("ap_int.h", "ap_fixed.h", "hls_stream.h")):
            return c.resolve()
    raise ToolNotFound(
        "ap_types headers not found (ap_int.h, ap_fixed.h, hls_stream.h): "
        "pip install 'pqflow[hls]' (hls4ml ships them) or set PQFLOW_AP_TYPES to their directory"
    )


def find_compiler() -> str:
    """The C++ compiler: ``$CXX`` or ``g++`` on PATH."""
    cxx = os.environ.get("CXX") or "g++"
    path = shutil.which(cxx)
    if path is None:
        raise ToolNotFound(f"C++ compiler {cxx!r} not found: apt-get install g++ (or set CXX)")
    return path


@lru_cache(maxsize=8)
def _compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout


# --- vectors --------------------------------------------------------------------------------


def oracle_vectors(graph: Graph, x) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's (input raws, output raws) at the hardware boundary, flat per sample."""
    from pqflow.kernels import run

    src, _, dst = hls_boundary(graph)
    got = run(graph, x, outputs=[src, dst])
    n = got[src].shape[0]
    return got[src].reshape(n, -1), got[dst].reshape(n, -1)


def format_vectors(in_raws: np.ndarray, out_raws: np.ndarray) -> str:
    """The test bench's vector file: "samples n_in n_out", then one sample per line."""
    a = np.asarray(in_raws, dtype=np.int64)
    b = np.asarray(out_raws, dtype=np.int64)
    n = a.shape[0]
    a, b = a.reshape(n, -1), b.reshape(n, -1)
    lines = [f"{n} {a.shape[1]} {b.shape[1]}"]
    both = np.concatenate([a, b], axis=1)
    lines.extend(" ".join(map(str, row)) for row in both.tolist())
    return "\n".join(lines) + "\n"


# --- build ----------------------------------------------------------------------------------


def _key(projects: Sequence[HLSProject], main: str, cxx: str, ap: Path) -> str:
    h = hashlib.sha256()
    h.update(repr(("unity-v1", CXXFLAGS, str(ap), _compiler_version(cxx))).encode())
    for p in projects:
        h.update(p.top.encode() + b"\0" + p.digest.encode() + b"\0")
    h.update(main.encode())
    return h.hexdigest()[:20]


def _compile(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CSimError(
            f"g++ failed ({' '.join(cmd[-3:])}), exit {r.returncode}:\n{r.stderr[-4000:]}"
        )


def _size(p: HLSProject) -> int:
    return sum(len(p.files[s]) for s in p.sources)


def build_csim(projects: Sequence[HLSProject]) -> tuple[Path, bool, float]:
    """Compile the projects' C++ (and a driver) into one binary, cached by content hash.

    Returns (binary, cached, seconds spent compiling). Top names must be distinct.
    """
    tops = [p.top for p in projects]
    if len(set(tops)) != len(tops):
        raise ValueError(f"csim: top names must be distinct, got {tops}")
    cxx, ap = find_compiler(), find_ap_types()
    main = _env().get_template("csim_main.cpp.j2").render(tops=tops)
    key = _key(projects, main, cxx, ap)
    final = cache_root() / "hls-csim" / key
    binary = final / "csim"
    if binary.is_file():
        return binary, True, 0.0
    final.parent.mkdir(parents=True, exist_ok=True)
    # One builder per key: a second process (e.g. another pytest-xdist worker) waits for
    # the first and then takes its binary from the cache.
    with open(final.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary, True, 0.0
        return _build(projects, main, cxx, ap, key, final)


def _build(
    projects: Sequence[HLSProject], main: str, cxx: str, ap: Path, key: str, final: Path
) -> tuple[Path, bool, float]:
    binary = final / "csim"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f"{key}.tmp") as tmp:
        work = Path(tmp) / "build"
        roots = [p.write(work / p.top).out_dir for p in projects]
        # Unity builds: the vendor headers cost most of a compile, so each job compiles
        # several designs (each in its own namespace) as one translation unit.
        n_jobs = max(1, min(len(projects), os.cpu_count() or 1))
        groups: list[list[int]] = [[] for _ in range(n_jobs)]
        loads = [0] * n_jobs
        for i in sorted(range(len(projects)), key=lambda i: -_size(projects[i])):
            j = loads.index(min(loads))
            groups[j].append(i)
            loads[j] += _size(projects[i])
        jobs = []
        for j, group in enumerate(groups):
            lines = ["#define PQFLOW_TB_NO_MAIN"]
            for i in sorted(group):
                lines += [f'#include "{roots[i] / src}"' for src in projects[i].sources]
            if j == 0:
                lines.append('#include "csim_main.cpp"')
            (work / f"unity{j}.cpp").write_text("\n".join(lines) + "\n")
            cmd = [cxx, *CXXFLAGS, "-isystem", str(ap), "-c", f"unity{j}.cpp", "-o", f"unity{j}.o"]
            jobs.append(cmd)
        (work / "csim_main.cpp").write_text(main)
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            for f in [pool.submit(_compile, cmd, work) for cmd in jobs]:
                f.result()
        _compile([cxx, *(f"unity{j}.o" for j in range(n_jobs)), "-o", "csim"], work)
        try:
            os.replace(work, final)
        except OSError:  # another process built the same key first
            if not binary.is_file():
                raise
    return binary, False, time.perf_counter() - t0


def run_csim(
    binary: Path,
    project: HLSProject,
    in_raws: np.ndarray,
    expected: np.ndarray,
    *,
    cached: bool = False,
    compile_seconds: float = 0.0,
) -> CSimResult:
    """Run ``project``'s test bench in ``binary`` on (input raws, expected raws)."""
    in_raws = np.asarray(in_raws, dtype=np.int64)
    n = in_raws.shape[0]
    expected = np.asarray(expected, dtype=np.int64).reshape(n, *project.out_type.shape)
    with tempfile.TemporaryDirectory(prefix="pqflow-csim-") as tmp:
        vec, out = Path(tmp) / "vectors.txt", Path(tmp) / "outputs.txt"
        vec.write_text(format_vectors(in_raws, expected))
        t0 = time.perf_counter()
        r = subprocess.run(
            [str(binary), project.top, str(vec), str(out)], capture_output=True, text=True
        )
        seconds = time.perf_counter() - t0
        if r.returncode not in (0, 1):
            raise CSimError(
                f"C simulation of {project.top} failed (exit {r.returncode}): "
                f"{(r.stderr or r.stdout).strip()[-2000:]}"
            )
        text = out.read_text().split()
    outputs = np.array([int(v) for v in text], dtype=np.int64).reshape(expected.shape)
    same = (outputs == expected).reshape(n, -1).all(axis=1)
    return CSimResult(
        passed=bool(np.array_equal(outputs, expected)),
        mismatches=int(n - same.sum()),
        outputs=outputs,
        expected=expected,
        top=project.top,
        binary=binary,
        cached=cached,
        compile_seconds=compile_seconds,
        run_seconds=seconds,
    )


def csim_many(
    cases: Sequence[tuple[Graph | Design, object]],
    *,
    style: str | None = None,
    pe: int = 1,
    simd: int = 1,
    top: str = "pqflow_top",
) -> list[CSimResult]:
    """C-simulate several (graph or design, input batch) cases linked into one binary.

    Case i gets the top function ``f"{top}{i}"``; ``style``/``pe``/``simd`` apply to the
    cases given as Graphs. One compile (cached) for all of them; the runs go in parallel
    (one per core).
    """
    projects, vectors = [], []
    for i, (source, x) in enumerate(cases):
        graph = source.graph if isinstance(source, Design) else source
        kw = {} if isinstance(source, Design) else {"style": style, "pe": pe, "simd": simd}
        projects.append(render_hls(source, top=f"{top}{i}", **kw))
        vectors.append(oracle_vectors(graph, x))
    binary, cached, seconds = build_csim(projects)
    # The designs' test benches run in parallel, one per core (each is one process).
    with ThreadPoolExecutor(max_workers=max(1, min(len(projects), os.cpu_count() or 1))) as pool:
        runs = [
            pool.submit(run_csim, binary, p, a, b, cached=cached, compile_seconds=seconds)
            for p, (a, b) in zip(projects, vectors, strict=True)
        ]
        return [r.result() for r in runs]


def csim(
    source: Graph | Design,
    x,
    *,
    style: str | None = None,
    pe: int = 1,
    simd: int = 1,
    top: str = "pqflow_top",
) -> CSimResult:
    """C-simulate the HLS C++ of ``source`` on batch ``x`` against the oracle, bit-exact.

    ``x`` is the graph's input batch (floats before a leading ``Quantize``, else raws).
    ``style``/``pe``/``simd`` as in ``generate_hls`` (for a Graph).
    """
    graph = source.graph if isinstance(source, Design) else source
    kw = {} if isinstance(source, Design) else {"style": style, "pe": pe, "simd": simd}
    project = render_hls(source, top=top, **kw)
    a, b = oracle_vectors(graph, x)
    binary, cached, seconds = build_csim([project])
    return run_csim(binary, project, a, b, cached=cached, compile_seconds=seconds)
