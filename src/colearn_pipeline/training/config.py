"""Training hyper-parameters, the device they resolve to, and the fingerprint of a run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

#: Keys of the training parameters that change the trained weights (and so the fingerprint).
_FINGERPRINT_KEYS = (
    "seed", "batch_size", "learning_rate", "momentum", "weight_decay", "l2_lambda", "augmentation",
    "drop_last",
)

#: Keys that left the training parameters; accepted only as ``null`` while older conf carries them.
_RETIRED_KEYS = {"stop_after_epoch": "interrupt a run from an on_epoch_end callback instead"}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (``training`` in ``conf/base/parameters_train_eval.yml``).

    Defaults are Table I of the paper; see that file for every field's meaning. The device
    options ``amp`` (bf16 autocast, CUDA or CPU), ``channels_last``, ``compile``
    (``torch.compile``) and ``device_augment`` (training set resident on the device, augmented
    there; ``"auto"``: on any device but the CPU) change speed, not the protocol.
    """

    seed: int = 42
    epochs: int = 500
    batch_size: int = 5
    learning_rate: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    l2_lambda: float = 0.1
    augmentation: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"enabled": True, "pad": 10, "flip_lr": True, "flip_ud": True}
    )
    drop_last: bool = False
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    device_augment: bool | str = "auto"
    deterministic: bool = True
    num_threads: int | None = None
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    resume: bool = True
    progress: bool = True
    eval_batch_size: int = 8
    checkpoint_root: str | None = "data/06_models"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "TrainConfig":
        """Build from a parameter mapping, rejecting unknown keys (typos fail loudly)."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key, instead in _RETIRED_KEYS.items():
            if params.get(key) is not None:
                raise ValueError(f"training parameter {key!r} is retired: {instead}")
        unknown = set(params) - names - set(_RETIRED_KEYS)
        if unknown:
            raise ValueError(f"unknown training parameters: {sorted(unknown)}")
        if params.get("device_augment", "auto") not in (True, False, "auto"):
            raise ValueError(f"training.device_augment must be true, false or auto, not {params['device_augment']!r}")
        return cls(**{k: v for k, v in params.items() if k in names})

    def with_seed(self, seed: int) -> "TrainConfig":
        """The same configuration with another training seed."""
        return dataclasses.replace(self, seed=int(seed))


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def data_digest(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-1 of the training arrays (part of the checkpoint fingerprint)."""
    h = hashlib.sha1()
    for a in (x, y):
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.data)
    return h.hexdigest()


def fingerprint(net: str, model_kwargs: Mapping[str, Any], config: TrainConfig, digest: str) -> str:
    """Identify a training configuration: net, architecture, the weight-changing parameters, data.

    The number of epochs is not part of it, so a finished run can be extended by raising
    ``epochs``; device, AMP, channels-last, compilation, progress and checkpoint cadence are not
    either (a run checkpointed on one device resumes on another).
    """
    cfg = dataclasses.asdict(config)
    payload = {
        "net": net,
        "model": dict(sorted(model_kwargs.items())),
        "training": {k: cfg[k] for k in _FINGERPRINT_KEYS},
        "data": digest,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
