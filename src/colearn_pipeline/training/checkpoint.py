"""Atomic checkpoint files and the RNG states a bit-exact resume needs."""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d{5})\.pt$")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the target folder, then rename it into place.

    A reader (or a resumed run after a kill) sees either the old file or the complete new one.

    Parameters
    ----------
    obj : Any
        What to save (tensors, dicts, lists, numbers, strings).
    path : str or os.PathLike
        Destination file; its folder is created.

    Returns
    -------
    pathlib.Path
        The destination.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def capture_rng_states(data_generator: torch.Generator | None = None) -> dict[str, Any]:
    """Return the torch, CUDA, numpy and python RNG states (and a generator's) as plain objects.

    Parameters
    ----------
    data_generator : torch.Generator, optional
        The generator that drives augmentation.

    Returns
    -------
    dict
        Loadable with ``torch.load(weights_only=True)``.
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [int(py_state[0]), list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if data_generator is not None:
        states["data_generator"] = data_generator.get_state()
    return states


def restore_rng_states(states: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    """Restore what :func:`capture_rng_states` captured.

    Parameters
    ----------
    states : dict
        From :func:`capture_rng_states`.
    data_generator : torch.Generator, optional
        Receives the saved generator state.
    """
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if data_generator is not None and "data_generator" in states:
        data_generator.set_state(states["data_generator"])


def checkpoint_path(directory: str | os.PathLike, epoch: int) -> Path:
    """Path of the checkpoint written after ``epoch`` completed epochs."""
    return Path(directory) / f"epoch_{epoch:05d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the checkpoints in a folder, by increasing epoch."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = CHECKPOINT_PATTERN.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_checkpoints(directory: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` most recent checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for _, p in list_checkpoints(directory)[:-keep]:
        p.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code on load)."""
    return torch.load(path, map_location=map_location, weights_only=True)
