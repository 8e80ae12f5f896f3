"""The training loop: SGD with momentum, augmentation, checkpoints, bit-exact resume and DDP.

One function, :func:`train_model`, trains one net on in-memory slices. It runs the same in a
single process and under ``torchrun`` (when a ``torch.distributed`` process group is
initialised it wraps the net in ``DistributedDataParallel``, shards every epoch like a
``DistributedSampler`` and lets rank 0 alone write checkpoints and show progress).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from colearn_pipeline.training.checkpoint import (
    atomic_torch_save,
    capture_rng_states,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng_states,
)
from colearn_pipeline.training.data import augment_batch, epoch_order

logger = logging.getLogger(__name__)

MODEL_FORMAT = "colearn-pipeline-model/1"

#: Keys of the training parameters that change the trained weights (and so the fingerprint).
_FINGERPRINT_KEYS = (
    "seed", "batch_size", "learning_rate", "momentum", "weight_decay", "l2_lambda", "augmentation",
    "drop_last",
)


class TrainingInterrupted(RuntimeError):
    """Raised when ``stop_after_epoch`` ends a run early (a kill simulated for resume tests)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (``training`` in ``conf/base/parameters_train_eval.yml``).

    Defaults are Table I of the paper; see that file for every field's meaning.
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
    deterministic: bool = True
    num_threads: int | None = None
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    resume: bool = True
    stop_after_epoch: int | None = None
    progress: bool = True
    eval_batch_size: int = 8
    checkpoint_root: str | None = "data/06_models"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "TrainConfig":
        """Build from a parameter mapping, rejecting unknown keys (typos fail loudly)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - names
        if unknown:
            raise ValueError(f"unknown training parameters: {sorted(unknown)}")
        return cls(**{k: v for k, v in params.items() if k in names})


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


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
    ``epochs``; device, AMP, progress and checkpoint cadence are not either.
    """
    cfg = dataclasses.asdict(config)
    payload = {
        "net": net,
        "model": dict(sorted(model_kwargs.items())),
        "training": {k: cfg[k] for k in _FINGERPRINT_KEYS},
        "data": digest,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _batches(indices: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
    n_full = len(indices) // batch_size
    out = [indices[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]
    if not drop_last and len(indices) % batch_size:
        out.append(indices[n_full * batch_size :])
    return out


@torch.no_grad()
def evaluate_loss_accuracy(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    l2_lambda: float,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    amp: bool = False,
) -> tuple[float, float]:
    """Mean loss (slice-weighted) and pixel accuracy of a net in eval mode on a slice set.

    Returns
    -------
    tuple of float
        ``(loss, accuracy)``.
    """
    from colearn_pipeline.models.loss import colearn_loss

    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum, correct, pixels = 0.0, 0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device)
            yb = torch.from_numpy(np.ascontiguousarray(y[i : i + batch_size])).long().to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                logits = model(xb)
            loss_sum += float(colearn_loss(logits.float(), yb, model, l2_lambda)) * len(xb)
            correct += int((logits.argmax(1) == yb).sum())
            pixels += yb.numel()
    finally:
        model.train(was_training)
    return loss_sum / len(x), correct / pixels


def train_model(
    net: str,
    model_kwargs: Mapping[str, Any],
    train_set: Mapping[str, np.ndarray],
    config: TrainConfig | Mapping[str, Any],
    val_set: Mapping[str, np.ndarray] | None = None,
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train one net and return its model bundle and per-epoch history.

    Parameters
    ----------
    net : str
        Name for :func:`colearn_pipeline.models.build_model`.
    model_kwargs : mapping
        Its keyword arguments (width, depth, ...).
    train_set : mapping
        ``x`` float32 ``(N, 2, H, W)`` standardised slices, ``y`` ``(N, H, W)`` labels
        (:func:`colearn_pipeline.training.data.assemble_slices`).
    config : TrainConfig or mapping
        Hyper-parameters.
    val_set : mapping, optional
        Evaluated (loss, pixel accuracy) after every epoch when given.
    checkpoint_dir : str or pathlib.Path, optional
        Folder for this run's checkpoints; a ``<fingerprint>`` subfolder holds
        ``epoch_XXXXX.pt`` files written every ``checkpoint_every`` epochs and after the last.
        With ``resume`` the latest matching checkpoint is loaded and training continues from
        it, reaching the same weights as an uninterrupted run (RNG states included).
    on_epoch_end : callable, optional
        Called (rank 0 only) with each epoch's history row.

    Returns
    -------
    bundle : dict
        ``format``, ``net``, ``model_kwargs``, ``state_dict`` (CPU tensors), ``input_hw``,
        ``epochs``, ``fingerprint``: everything :func:`load_model` needs.
    history : list of dict
        One row per epoch: ``epoch`` (1-based), ``train_loss``, ``train_accuracy`` (pixel
        accuracy of the augmented training batches, before each update), ``val_loss`` and
        ``val_accuracy`` (NaN without ``val_set``), ``seconds``, ``slices_per_s``, ``lr``.

    Raises
    ------
    TrainingInterrupted
        When ``config.stop_after_epoch`` is reached before ``config.epochs``.
    """
    from colearn_pipeline.models import build_model
    from colearn_pipeline.models.loss import colearn_loss

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_params(config)
    world, rank = _world()
    x_all, y_all = np.asarray(train_set["x"], dtype=np.float32), np.asarray(train_set["y"])
    if x_all.ndim != 4 or y_all.shape != (x_all.shape[0], *x_all.shape[2:]):
        raise ValueError(f"train_set x {x_all.shape} / y {y_all.shape} are not (N,2,H,W) / (N,H,W)")
    n, _, h, w = x_all.shape

    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    if cfg.deterministic and device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    use_amp = bool(cfg.amp) and device.type == "cuda"

    kwargs = dict(model_kwargs)
    fp = fingerprint(net, kwargs, cfg, data_digest(x_all, y_all))
    ckpt_dir = Path(checkpoint_dir) / fp if checkpoint_dir is not None else None

    _seed_everything(cfg.seed)
    model = build_model(net, **kwargs).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    aug_gen = torch.Generator()
    aug_gen.manual_seed(cfg.seed + 7919 * (rank + 1))
    history: list[dict[str, float]] = []
    start_epoch = 0

    if ckpt_dir is not None and cfg.resume:
        found = [(e, p) for e, p in list_checkpoints(ckpt_dir) if e <= cfg.epochs]
        if found:
            epoch_done, path = found[-1]
            state = load_checkpoint(path, map_location="cpu")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            rng = state["rng"][min(rank, len(state["rng"]) - 1)]
            restore_rng_states(rng, aug_gen)
            history = [dict(r) for r in state["history"]][:epoch_done]
            start_epoch = epoch_done
            if rank == 0:
                logger.info("%s: resumed from %s (epoch %d of %d)", net, path, epoch_done, cfg.epochs)

    train_model_ref = model
    if world > 1:
        ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
        model = torch.nn.parallel.DistributedDataParallel(model, **ddp_kwargs)

    aug = dict(cfg.augmentation)
    n_batches = len(_batches(epoch_order(n, 0, cfg.seed, world, rank), cfg.batch_size, cfg.drop_last))
    bar = tqdm(
        total=(cfg.epochs - start_epoch) * n_batches,
        desc=f"train {net}",
        unit="batch",
        disable=not cfg.progress or rank != 0,
        dynamic_ncols=True,
    )
    model.train()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            stats = torch.zeros(4, dtype=torch.float64)  # loss*slices, slices, correct, pixels
            for idx in _batches(epoch_order(n, epoch, cfg.seed, world, rank), cfg.batch_size, cfg.drop_last):
                xb = torch.from_numpy(x_all[idx])
                yb = torch.from_numpy(y_all[idx]).long()
                if aug.get("enabled", True):
                    xb, yb = augment_batch(
                        xb, yb, aug_gen, pad=int(aug.get("pad", 10)),
                        flip_lr=bool(aug.get("flip_lr", True)), flip_ud=bool(aug.get("flip_ud", True)),
                    )
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = model(xb)
                loss = colearn_loss(logits.float(), yb, train_model_ref, cfg.l2_lambda)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{net}: non-finite loss at epoch {epoch + 1}")
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    stats += torch.tensor(
                        [float(loss) * len(idx), len(idx), int((logits.argmax(1) == yb).sum()), yb.numel()],
                        dtype=torch.float64,
                    )
                bar.update(1)
            if world > 1:
                reduced = stats.to(device)
                dist.all_reduce(reduced)
                stats = reduced.cpu()
            seconds = time.perf_counter() - t0
            row = {
                "epoch": epoch + 1,
                "train_loss": float(stats[0] / stats[1]),
                "train_accuracy": float(stats[2] / stats[3]),
                "val_loss": math.nan,
                "val_accuracy": math.nan,
                "seconds": seconds,
                "slices_per_s": float(stats[1]) / seconds if seconds > 0 else math.nan,
                "lr": cfg.learning_rate,
            }
            if val_set is not None:
                row["val_loss"], row["val_accuracy"] = evaluate_loss_accuracy(
                    train_model_ref, np.asarray(val_set["x"], dtype=np.float32), np.asarray(val_set["y"]),
                    cfg.l2_lambda, cfg.eval_batch_size, device, use_amp,
                )
            history.append(row)
            bar.set_postfix(
                epoch=epoch + 1, loss=f"{row['train_loss']:.4f}", acc=f"{row['train_accuracy']:.3f}",
                slices_s=f"{row['slices_per_s']:.1f}",
            )
            done = epoch + 1
            if ckpt_dir is not None and (done % max(cfg.checkpoint_every, 1) == 0 or done == cfg.epochs):
                _save_checkpoint(ckpt_dir, done, train_model_ref, optimizer, aug_gen, history, fp, net, world, rank,
                                 cfg.keep_checkpoints)
            if rank == 0 and on_epoch_end is not None:
                on_epoch_end(dict(row))
            if cfg.stop_after_epoch is not None and done >= cfg.stop_after_epoch and done < cfg.epochs:
                raise TrainingInterrupted(f"{net}: stopped after epoch {done} (stop_after_epoch)")
    finally:
        bar.close()

    bundle = {
        "format": MODEL_FORMAT,
        "net": net,
        "model_kwargs": kwargs,
        "state_dict": {k: v.detach().cpu().clone() for k, v in train_model_ref.state_dict().items()},
        "input_hw": [int(h), int(w)],
        "epochs": int(cfg.epochs),
        "fingerprint": fp,
    }
    return bundle, history


def _save_checkpoint(ckpt_dir, epoch, model, optimizer, aug_gen, history, fp, net, world, rank, keep) -> None:
    """Gather every rank's RNG states, then rank 0 writes one atomic checkpoint."""
    rng = capture_rng_states(aug_gen)
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, rng)
        rngs = gathered
    else:
        rngs = [rng]
    if rank == 0:
        state = {
            "format": "colearn-pipeline-checkpoint/1",
            "net": net,
            "fingerprint": fp,
            "epoch": epoch,
            "world_size": world,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "rng": rngs,
            "history": history,
        }
        atomic_torch_save(state, checkpoint_path(ckpt_dir, epoch))
        prune_checkpoints(ckpt_dir, keep)
    if world > 1:
        dist.barrier()


def load_model(bundle: Mapping[str, Any], device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a net in eval mode from a model bundle returned by :func:`train_model`."""
    from colearn_pipeline.models import build_model

    if bundle.get("format") != MODEL_FORMAT:
        raise ValueError(f"not a {MODEL_FORMAT} bundle: format={bundle.get('format')!r}")
    model = build_model(bundle["net"], **dict(bundle["model_kwargs"]))
    model.load_state_dict(bundle["state_dict"])
    return model.to(device).eval()
