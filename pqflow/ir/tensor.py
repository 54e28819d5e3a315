"""Constant integer tensors (weights, biases, thresholds) and their sparsity record."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from .types import Bipolar, Fixed, IRError


class Pattern(StrEnum):
    """How a weight tensor's zeros were made; generators may exploit structured patterns."""

    DENSE = "dense"
    UNSTRUCTURED = "unstructured"  # element-wise
    NM = "n:m"  # at most n nonzeros in every m consecutive inputs
    KERNEL = "kernel"  # whole kh x kw kernels zero
    CHANNEL = "channel"  # whole input channels zero
    FILTER = "filter"  # whole output filters zero


@dataclass(frozen=True)
class Sparsity:
    """The recorded sparsity pattern of a weight tensor (density is read off the data)."""

    pattern: Pattern = Pattern.DENSE
    n: int = 0
    m: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", Pattern(self.pattern))
        if self.pattern is Pattern.NM and not (1 <= self.n <= self.m):
            raise IRError(f"Sparsity n:m needs 1 <= n <= m, not {self.n}:{self.m}")

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.pattern is Pattern.NM else str(self.pattern)


class Weight:
    """An immutable integer tensor of raws with its element type and sparsity record.

    The data is copied to a read-only int64 array; values must fit ``dtype``
    (0/1 for Bipolar). Equality and hashing go by dtype, shape, values and sparsity.
    """

    __slots__ = ("data", "dtype", "sparsity", "_digest")

    def __init__(self, data, dtype: Fixed | Bipolar, sparsity: Sparsity | None = None) -> None:
        if not isinstance(dtype, Fixed | Bipolar):
            raise IRError(f"Weight: dtype must be Fixed or Bipolar, not {dtype!r}")
        arr = np.asarray(data)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.asarray(arr) == np.round(arr)):
                raise IRError("Weight: data must be integers (raws), found non-integer values")
        arr = np.array(arr, dtype=np.int64, copy=True)
        arr.setflags(write=False)
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if not dtype.contains(lo, hi):
                raise IRError(
                    f"weight values [{lo}, {hi}] do not fit {dtype} "
                    f"([{dtype.min_raw}, {dtype.max_raw}])"
                )
        sp = sparsity if sparsity is not None else Sparsity()
        if not isinstance(sp, Sparsity):
            raise IRError(f"Weight: sparsity must be a Sparsity, not {sp!r}")
        object.__setattr__(self, "data", arr)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "sparsity", sp)
        h = hashlib.sha256()
        h.update(repr((str(dtype), arr.shape, str(sp))).encode())
        h.update(arr.tobytes())
        object.__setattr__(self, "_digest", h.hexdigest())

    def __setattr__(self, name, value):
        raise AttributeError("Weight is immutable")

    def __reduce__(self):
        return (Weight, (np.array(self.data), self.dtype, self.sparsity))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def density(self) -> float:
        """Fraction of nonzero values (Bipolar tensors are always dense)."""
        if isinstance(self.dtype, Bipolar) or self.data.size == 0:
            return 1.0
        return float(np.count_nonzero(self.data)) / self.data.size

    @property
    def nnz(self) -> int:
        if isinstance(self.dtype, Bipolar):
            return int(self.data.size)
        return int(np.count_nonzero(self.data))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Weight) and self._digest == other._digest

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        return f"Weight({self.dtype}[{','.join(map(str, self.shape))}], {self.describe()})"

    def describe(self) -> str:
        if isinstance(self.dtype, Bipolar):
            return "binary"
        return f"density={self.density:.3f} {self.sparsity}"
