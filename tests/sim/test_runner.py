"""The stream harness against tiny hand-written Amaranth components."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from hypothesis import given, settings
from hypothesis import strategies as st

from pqflow.sim import (
    SimulationError,
    build_design,
    pack_payload,
    unpack_payload,
    verify_stream,
)

N, W = 16, 8
CONSTS = list(range(-8, 8))


class AddConst(wiring.Component):
    """o[k] = i[k] + c[k], two pipeline stages (latency 2, II 1), full back-pressure."""

    def __init__(self, n: int, width: int, consts: list[int], drop_when_stalled: bool = False):
        self.n, self.width, self.consts = n, width, consts
        self.drop_when_stalled = drop_when_stalled
        super().__init__(
            {
                "i": In(stream.Signature(data.ArrayLayout(signed(width), n))),
                "o": Out(stream.Signature(data.ArrayLayout(signed(width + 1), n))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        v1 = Signal()
        d1 = Signal(data.ArrayLayout(signed(self.width + 1), self.n))
        # The buggy variant ignores o.ready: words are lost under back-pressure.
        advance = 1 if self.drop_when_stalled else (~self.o.valid | self.o.ready)
        m.d.comb += self.i.ready.eq(advance)
        with m.If(advance):
            m.d.sync += [v1.eq(self.i.valid), self.o.valid.eq(v1), self.o.payload.eq(d1)]
            for k in range(self.n):
                m.d.sync += d1[k].eq(self.i.payload[k] + self.consts[k])
        return m


@pytest.fixture(scope="module")
def design() -> str:
    return verilog.convert(AddConst(N, W, CONSTS), name="addconst", emit_src=False)


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << (W - 1)), 1 << (W - 1), size=(200, N))
    return x, x + np.array(CONSTS)


# -- payload packing --------------------------------------------------------------------


def test_pack_layout():
    # element k at bits [k*w, (k+1)*w), two's complement
    assert pack_payload(np.array([[1, -1, 0, 5]]), 4) == [0x50F1]
    assert pack_payload(np.array([[3, 0]]), 2) == [0b0011]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 64).flatmap(
        lambda w: st.tuples(
            st.just(w),
            st.integers(1, 7),
            st.lists(st.integers(-(1 << (w - 1)), (1 << (w - 1)) - 1), min_size=1, max_size=40),
        )
    )
)
def test_pack_unpack_roundtrip_signed(args):
    width, n, flat = args
    vals = np.array((flat * n)[: n * max(1, len(flat) // n)], dtype=np.int64).reshape(-1, n)
    words = pack_payload(vals, width)
    assert all(0 <= w < (1 << (n * width)) for w in words)
    assert np.array_equal(unpack_payload(words, n, width, signed=True), vals)


@pytest.mark.parametrize("width", [1, 7, 8, 33, 63])
def test_pack_unpack_roundtrip_unsigned(width):
    rng = np.random.default_rng(width)
    vals = rng.integers(0, 1 << width, size=(20, 5), dtype=np.int64)
    assert np.array_equal(unpack_payload(pack_payload(vals, width), 5, width, False), vals)


# -- the DUT convention -----------------------------------------------------------------


def test_amaranth_port_convention(design):
    header = re.search(r"module addconst\((.*?)\);", design).group(1)
    ports = {p.strip() for p in header.split(",")}
    assert ports == {
        "clk",
        "rst",
        "i__valid",
        "i__ready",
        "i__payload",
        "o__valid",
        "o__ready",
        "o__payload",
    }
    assert f"input [{N * W - 1}:0] i__payload;" in design
    assert f"output [{N * (W + 1) - 1}:0] o__payload;" in design
    # element 1 of the input is bits [w, 2w)
    assert f"i__payload[{2 * W - 1}:{W}]" in design


# -- simulation -------------------------------------------------------------------------


def test_passes_bit_exact(design, vectors, sim):
    x, y = vectors
    result = verify_stream(design, "addconst", x, W, True, y, W + 1, True, sim=sim, seed=3)
    assert result.passed, result.summary()
    assert np.array_equal(result.outputs, y)
    assert result.n_mismatches == 0 and result.error is None
    assert result.latency_cycles == 2
    assert result.ii_cycles == 1.0
    # with 30% stalls and 30% back-pressure the stream phase needs more than N cycles
    assert result.cycles > len(x)
    assert result.vectors_per_second > 0


def test_wrong_expected_is_reported(design, vectors, sim):
    x, y = vectors
    wrong = y.copy()
    wrong[7, 3] += 1
    result = verify_stream(design, "addconst", x, W, True, wrong, W + 1, True, sim=sim)
    assert not result.passed
    assert result.n_mismatches >= 1
    first = result.mismatches[0]
    assert (first.index, first.phase) == (7, "stream")
    assert first.expected[3] == y[7, 3] + 1 and first.got[3] == y[7, 3]
    assert "stream vector 7" in result.summary()
    # everything received is still returned, and is the design's true output
    assert np.array_equal(result.outputs, y)


def test_stall_free_stream(design, vectors, sim):
    x, y = vectors
    result = verify_stream(
        design, "addconst", x, W, True, y, W + 1, True, sim=sim, stall_prob=0, backpressure_prob=0
    )
    assert result.passed, result.summary()
    # reset release to last output: N vectors at II 1 plus the 2-cycle latency
    assert result.cycles == len(x) + 2


@pytest.mark.verilator
def test_verilator_build_is_cached(design, vectors):
    x, y = vectors
    verify_stream(design, "addconst", x[:4], W, True, y[:4], W + 1, True)  # builds if needed
    t0 = time.perf_counter()
    result = verify_stream(design, "addconst", x[:4], W, True, y[:4], W + 1, True)
    assert result.build.cached and result.build.build_seconds == 0.0
    assert result.passed
    assert time.perf_counter() - t0 < 8.0  # a Verilator compile takes 10-20 s


@pytest.mark.icarus
def test_build_dir_is_reused_and_keyed(design, tmp_path):
    first = build_design(design, "addconst", "icarus", build_dir=tmp_path / "b")
    second = build_design(design, "addconst", "icarus", build_dir=tmp_path / "b")
    assert not first.cached and second.cached and first.key == second.key
    other = design.replace("module addconst", "module addconst2")
    third = build_design(other, "addconst2", "icarus", build_dir=tmp_path / "b")
    assert not third.cached and third.key != first.key


@pytest.mark.icarus
def test_lost_outputs_are_a_failure_not_a_hang(vectors):
    x, y = vectors
    buggy = verilog.convert(
        AddConst(N, W, CONSTS, drop_when_stalled=True), name="addconst_drop", emit_src=False
    )
    result = verify_stream(
        buggy, "addconst_drop", x, W, True, y, W + 1, True, sim="icarus", timeout_cycles=200
    )
    assert not result.passed
    assert "timeout" in result.error
    assert len(result.outputs) < len(x)


@pytest.mark.icarus
def test_port_width_mismatch_raises(design, vectors, tmp_path):
    x, y = vectors
    with pytest.raises(SimulationError, match=r"i__payload is 128 bits .* need 32"):
        verify_stream(
            design,
            "addconst",
            x[:, :4],
            W,
            True,
            y[:, :4],
            W + 1,
            True,
            sim="icarus",
            run_dir=tmp_path,
        )
    assert (tmp_path / "sim.log").is_file()


def test_out_of_range_vectors_are_rejected(design):
    x = np.full((2, N), 200)
    with pytest.raises(ValueError, match=r"in_vectors\[0, 0\] = 200 does not fit signed\(8\)"):
        verify_stream(design, "addconst", x, W, True, x, W + 1, True)
    with pytest.raises(ValueError, match="one output vector per input vector"):
        verify_stream(design, "addconst", x[:, :1] * 0, W, True, x[:1] * 0, W + 1, True)
