"""How a streaming unit moves one sample, in beats: the contract FIFO sizing works from.

A tensor travels as a stream of *beats*. A 1-D tensor (a vector) is one beat of all its
raws; an (H, W, C) tensor is H * W beats of C raws each, one pixel per beat in raster
order (row by row, left to right), as the IR's channels-last layout stores it.

Every unit of a dataflow design has a ``schedule`` (a :class:`Schedule`): per sample it
reads ``in_beats`` beats and writes ``out_beats`` beats; its output beat ``j`` cannot
leave before input beat ``need[j] - 1`` was accepted (so ``need[j]`` input beats in
all), and then it leaves ``latency`` cycles later at the earliest; at full throughput it
takes ``cycles_per_sample`` cycles per sample. ``need`` is non-decreasing and ends at
most at ``in_beats``.

:func:`compose` chains two schedules (the second reads what the first writes), which is
how a path of units gets its schedule, and :func:`lead` says by how many beats a path
runs ahead of another: what a skip FIFO must hold. :class:`Arrival` follows the beats of
every value of a DAG from the design's input (when each beat exists, how many input
beats it needs), and :func:`fifo_depths` sizes a join's FIFO from its operands' arrivals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Arrival", "Schedule", "compose", "elementwise", "fifo_depths", "lead"]


@dataclass(frozen=True)
class Schedule:
    """Per-sample beat schedule of a streaming unit (see the module docstring)."""

    in_beats: int
    out_beats: int
    need: tuple[int, ...]
    latency: int
    cycles_per_sample: int

    def __post_init__(self) -> None:
        need = tuple(int(n) for n in self.need)
        object.__setattr__(self, "need", need)
        if self.in_beats < 1 or self.out_beats < 1:
            raise ValueError(
                f"Schedule: beats must be positive, not {self.in_beats}, {self.out_beats}"
            )
        if len(need) != self.out_beats:
            raise ValueError(f"Schedule: need has {len(need)} entries for {self.out_beats} beats")
        if any(b < a for a, b in zip(need, need[1:], strict=False)) or not (
            1 <= need[0] and need[-1] <= self.in_beats
        ):
            raise ValueError(f"Schedule: need must rise within 1..{self.in_beats}, not {need}")
        if self.latency < 0 or self.cycles_per_sample < 1:
            raise ValueError("Schedule: latency must be >= 0 and cycles_per_sample >= 1")


def elementwise(beats: int, latency: int, cycles_per_beat: int = 1) -> Schedule:
    """A unit that maps input beat j to output beat j (Requant, ReLU, Dense on vectors...)."""
    return Schedule(beats, beats, tuple(range(1, beats + 1)), latency, beats * cycles_per_beat)


def compose(first: Schedule, second: Schedule) -> Schedule:
    """The schedule of ``first`` followed by ``second``."""
    if first.out_beats != second.in_beats:
        raise ValueError(
            f"compose: the first unit writes {first.out_beats} beats per sample, "
            f"the second reads {second.in_beats}"
        )
    need = tuple(first.need[n - 1] for n in second.need)
    return Schedule(
        first.in_beats,
        second.out_beats,
        need,
        first.latency + second.latency,
        max(first.cycles_per_sample, second.cycles_per_sample),
    )


@dataclass(frozen=True)
class Arrival:
    """When the beats of one sample of a value exist, relative to a design's input.

    ``need[j]``: input beats the design must have taken before beat ``j`` can exist;
    ``time[j]``: the cycle beat ``j`` is first offered in a stall-free run where input
    beat ``k`` of a sample is taken at cycle ``k * period`` (sample ``s`` adds ``s * II``).
    """

    need: tuple[int, ...]
    time: tuple[float, ...]

    @classmethod
    def source(cls, beats: int, period: float = 1.0) -> Arrival:
        """The design's input: ``beats`` beats, ``period`` cycles apart."""
        return cls(tuple(range(1, beats + 1)), tuple(k * period for k in range(beats)))

    def through(self, s: Schedule) -> Arrival:
        """The arrival of the output of a unit with schedule ``s`` reading this value (its
        beat ``j`` ``s.latency`` cycles after input beat ``s.need[j] - 1``, one per cycle
        at most)."""
        if s.in_beats != len(self.need):
            raise ValueError(
                f"a unit reading {len(self.need)} beats per sample has a schedule of "
                f"{s.in_beats} input beats"
            )
        times: list[float] = []
        for n in s.need:
            t = self.time[n - 1] + s.latency
            times.append(max(t, times[-1] + 1) if times else t)
        return Arrival(tuple(self.need[n - 1] for n in s.need), tuple(times))

    def join(self, other: Arrival) -> Arrival:
        """Both operands of a beat-by-beat join: each beat exists once both do."""
        return Arrival(
            tuple(max(a, b) for a, b in zip(self.need, other.need, strict=True)),
            tuple(max(a, b) for a, b in zip(self.time, other.time, strict=True)),
        )


def fifo_depths(
    ahead: Arrival, behind: Arrival, ii: float | None = None, fifo_latency: int = 0
) -> tuple[int, int]:
    """(depth for no deadlock, depth for full throughput) of a FIFO on the ``ahead``
    operand of a join whose other operand is ``behind`` (same beats per sample).

    No deadlock: while the join waits for beat ``jj`` of ``behind``, ``behind`` has taken
    ``behind.need[jj]`` input beats; the fork before the two paths holds the last of them
    until ``ahead`` takes it too, so ``ahead`` must hold every beat that needs fewer,
    minus the ``jj`` beats already joined. Full throughput (samples ``ii``
    cycles apart; None: only the first bound): beat ``j`` of ``ahead`` is written at
    ``ahead.time[j]``, beat ``jj`` read at ``max(ahead.time[jj] + fifo_latency,
    behind.time[jj])``; every write must find room (a FIFO that is full refuses a write
    even on the edge it is read, as ``amaranth.lib.fifo`` does).
    """
    if len(ahead.need) != len(behind.need):
        raise ValueError("fifo_depths: the operands must have the same beats per sample")
    dead = max(sum(1 for n in ahead.need if n < b) - jj for jj, b in enumerate(behind.need))
    dead = max(dead, 0)
    if ii is None:
        return dead, dead
    if ii <= 0:
        raise ValueError(f"fifo_depths: ii must be positive, not {ii}")
    read = [max(a + fifo_latency, b) for a, b in zip(ahead.time, behind.time, strict=True)]
    samples = int(math.ceil((max(read) - min(ahead.time)) / ii)) + 2
    writes = sorted(s * ii + t for s in range(samples) for t in ahead.time)
    reads = sorted(s * ii + t for s in range(samples) for t in read)
    full, r = 0, 0
    for j, t in enumerate(writes):  # level when write j is offered: j written, r read
        while r < len(reads) and reads[r] < t:
            r += 1
        full = max(full, j - r + 1)
    return dead, max(full, dead)


def lead(ahead: Schedule, behind: Schedule, ii: float | None = None, fifo_latency: int = 0) -> int:
    """Beats a FIFO at the end of the ``ahead`` path must hold so that the ``behind`` path
    never waits, for two paths from a fork (both read the same beats) to a join (output
    beat ``j`` of both is consumed together).

    Without ``ii``: the no-deadlock bound, from ``need`` alone (the ``behind`` path needs
    ``behind.need[j]`` input beats before its beat ``j``; by then the ``ahead`` path may
    have made every beat needing no more). With ``ii`` (cycles per sample): also no loss
    of throughput, counting the beats in flight while the ``behind`` path's extra
    latency elapses (:func:`fifo_depths`, input beats ``ii / in_beats`` cycles apart).
    """
    if ahead.in_beats != behind.in_beats or ahead.out_beats != behind.out_beats:
        raise ValueError("lead: the two paths must read and write the same beats per sample")
    period = 1.0 if ii is None else ii / ahead.in_beats
    src = Arrival.source(ahead.in_beats, period)
    return fifo_depths(src.through(ahead), src.through(behind), ii, fifo_latency)[1]
