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


def atomic_move(src: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move a finished file into place atomically (rename, or copy to a sibling then rename).

    Parameters
    ----------
    src : path-like
        The finished file; it is gone afterwards.
    path : path-like
        Final location; its folder is created when missing.
    """
    import shutil

    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, final)  # same file system: one atomic rename
        return
    except OSError:
        pass
    atomic_write(final, lambda tmp: shutil.copyfile(src, tmp))
    os.unlink(src)
