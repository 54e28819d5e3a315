"""Output folders that are never half-written: build beside, then move into place."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


def check_out_dir(out: Path, force: bool) -> Path:
    """``out`` as a Path; UserError when it exists (without ``force``) or is not a folder."""
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"output folder {out} exists; pass --force to replace it or choose another")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another output path")
    return out


@contextmanager
def staged_out_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; when the block succeeds it replaces ``out``.

    On any exception the temporary folder is removed and ``out`` is left as it was.
    """
    out = check_out_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield work
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
