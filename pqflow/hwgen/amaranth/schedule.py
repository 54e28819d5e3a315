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
runs ahead of another: what a skip FIFO must hold.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Schedule", "compose", "elementwise", "lead"]


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


def lead(ahead: Schedule, behind: Schedule) -> int:
    """Beats a FIFO on the ``ahead`` path must hold so that the ``behind`` path never waits.

    Both paths read the same beats (a fork) and meet beat by beat (a join): output beat
    ``j`` of both is consumed together. The ``behind`` path needs ``behind.need[j]``
    input beats before its beat ``j``; by then the fork has handed the ``ahead`` path as
    many, of which only ``ahead.need[j]``-worth have turned into beats the join could
    wait on. The largest difference over ``j`` is the depth (in beats, before latency).
    """
    if ahead.in_beats != behind.in_beats or ahead.out_beats != behind.out_beats:
        raise ValueError("lead: the two paths must read and write the same beats per sample")
    return max(max(b - j for j, b in enumerate(behind.need)), 0)
