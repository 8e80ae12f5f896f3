"""Atomic file replacement shared by the datasets."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Write a file through a temporary sibling and rename it into place.

    Parameters
    ----------
    path : path-like
        Final location; its folder is created when missing.
    write : callable
        ``write(tmp_path)`` writes the whole file at ``tmp_path`` (same folder, same suffixes, so
        writers that choose their format by extension keep working).

    Notes
    -----
    ``os.replace`` is atomic on one file system, so a reader sees either the old file or the new
    one, never a partial file; the temporary file is removed when ``write`` fails.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
