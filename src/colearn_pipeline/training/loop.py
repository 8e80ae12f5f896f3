"""The training loop: SGD with momentum, augmentation, checkpoints, bit-exact resume, DDP.

A :class:`TrainingRun` is one net trained with one seed; its phases (``on_train_start``,
``on_epoch_start``, ``train_step``, ``validation_step``, ``on_epoch_end``, ``on_train_end``)
are called by :func:`run_training`, which steps several runs round-robin on one device (each
in its own CUDA stream on a GPU, where a batch of 5 leaves most of the device idle).
:func:`train_model` trains one net. The same code runs in a single process and under
``torchrun``: with a ``torch.distributed`` process group the net is wrapped in
``DistributedDataParallel``, every epoch is sharded like a ``DistributedSampler`` and rank 0
alone writes checkpoints and shows progress.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
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
from colearn_pipeline.training.config import TrainConfig, data_digest, fingerprint, resolve_device
from colearn_pipeline.training.data import augment_batch, epoch_order

__all__ = [
    "MODEL_FORMAT", "TrainConfig", "TrainingInterrupted", "TrainingRun", "evaluate_loss_accuracy", "load_model",
    "resolve_device", "run_training", "train_model",
]

logger = logging.getLogger(__name__)

MODEL_FORMAT = "colearn-pipeline-model/1"

EpochCallback = Callable[[dict[str, float]], None]


class TrainingInterrupted(RuntimeError):
    """Raise it from an ``on_epoch_end`` callback to stop a run (a kill, e.g. in resume tests)."""


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _batches(indices: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
    n_full = len(indices) // batch_size
    out = [indices[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]
    if not drop_last and len(indices) % batch_size:
        out.append(indices[n_full * batch_size :])
    return out


def _check_train_set(train_set: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(train_set["x"], dtype=np.float32), np.asarray(train_set["y"])
    if x.ndim != 4 or y.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"train_set x {x.shape} / y {y.shape} are not (N,2,H,W) / (N,H,W)")
    return x, y


def _configure_backend(cfg: TrainConfig, device: torch.device) -> None:
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = bool(cfg.deterministic)
        torch.backends.cudnn.benchmark = not cfg.deterministic


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

    ``amp`` runs the forward pass under bf16 autocast (CUDA or CPU).

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
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(xb)
            loss_sum += float(colearn_loss(logits.float(), yb, model, l2_lambda)) * len(xb)
            correct += int((logits.argmax(1) == yb).sum())
            pixels += yb.numel()
    finally:
        model.train(was_training)
    return loss_sum / len(x), correct / pixels


class TrainingRun:
    """One net trained with one seed: its model, optimizer, data, RNG, history and checkpoints.

    Parameters
    ----------
    net : str
        Name for :func:`colearn_pipeline.models.build_model`.
    model_kwargs : mapping
        Its keyword arguments (width, depth, ...).
    train_set : mapping
        ``x`` float32 ``(N, 2, H, W)`` standardised slices, ``y`` ``(N, H, W)`` labels
        (:func:`colearn_pipeline.training.data.assemble_slices`).
    config : TrainConfig
        Hyper-parameters.
    val_set : mapping, optional
        Evaluated (loss, pixel accuracy) after every epoch when given.
    checkpoint_dir : str or pathlib.Path, optional
        Folder whose ``<fingerprint>`` subfolder holds this run's ``epoch_XXXXX.pt`` files.
    on_epoch_end : callable, optional
        Called (rank 0 only) with each epoch's history row, after its checkpoint.
    """

    def __init__(self, net: str, model_kwargs: Mapping[str, Any], train_set: Mapping[str, np.ndarray],
                 config: TrainConfig, val_set: Mapping[str, np.ndarray] | None = None,
                 checkpoint_dir: str | Path | None = None, on_epoch_end: EpochCallback | None = None) -> None:
        from colearn_pipeline.models import build_model

        self.net, self.model_kwargs, self.config = net, dict(model_kwargs), config
        self.x, self.y = _check_train_set(train_set)
        self.val_set = val_set
        self.world, self.rank = _world()
        self.device = resolve_device(config.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.fingerprint = fingerprint(net, self.model_kwargs, config, data_digest(self.x, self.y))
        self.checkpoint_dir = Path(checkpoint_dir) / self.fingerprint if checkpoint_dir is not None else None
        self.callback = on_epoch_end
        _seed_everything(config.seed)
        self.module = build_model(net, **self.model_kwargs).to(self.device)
        self.model: torch.nn.Module = self.module
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=config.learning_rate,
                                         momentum=config.momentum, weight_decay=config.weight_decay)
        self.aug_generator = torch.Generator()
        self.aug_generator.manual_seed(config.seed + 7919 * (self.rank + 1))
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.stream = None
        self._bar = None

    # ---- phases -------------------------------------------------------------------------------
    def on_train_start(self, concurrent: bool = False) -> None:
        """Resume from the latest checkpoint, then place data and model for speed (options of conf)."""
        from colearn_pipeline.models import to_channels_last

        cfg = self.config
        _configure_backend(cfg, self.device)
        self._resume()
        on_device = cfg.device_augment is True or (cfg.device_augment == "auto" and self.device.type != "cpu")
        data_device = self.device if on_device else torch.device("cpu")
        self.x_data = torch.from_numpy(self.x).to(data_device)
        small_labels = self.y.size and 0 <= self.y.min() and self.y.max() < 256
        self.y_data = torch.from_numpy(self.y.astype(np.uint8 if small_labels else np.int64)).to(data_device)
        if cfg.channels_last:
            to_channels_last(self.module)
        if self.world > 1:
            ddp_kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.model = torch.nn.parallel.DistributedDataParallel(self.module, **ddp_kwargs)
        if cfg.compile:
            self.model = torch.compile(self.model)
        if concurrent and self.device.type == "cuda":
            self.stream = torch.cuda.Stream(self.device)
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        n_batches = len(self._epoch_batches(0))
        self._bar = tqdm(total=(cfg.epochs - self.start_epoch) * n_batches, desc=f"train {self.net} seed {cfg.seed}",
                         unit="batch", disable=not cfg.progress or self.rank != 0, dynamic_ncols=True)
        self.model.train()

    def on_epoch_start(self, epoch: int) -> list[np.ndarray]:
        """Start the clock and the statistics of ``epoch`` (0-based); return its batches of indices."""
        self.epoch = epoch
        self._t0 = time.perf_counter()
        with self.on_stream():
            self.stats = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss*n, n, correct, pixels
        return self._epoch_batches(epoch)

    def train_step(self, indices: np.ndarray) -> None:
        """One SGD step on the slices ``indices`` (augmented); statistics stay on the device."""
        from colearn_pipeline.models.loss import colearn_loss

        cfg = self.config
        with self.on_stream():
            xb, yb = self._batch(indices)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                logits = self.model(xb)
            loss = colearn_loss(logits.float(), yb, self.module, cfg.l2_lambda)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                self.stats[0] += loss.detach().double() * len(indices)
                self.stats[1] += len(indices)
                self.stats[2] += (logits.argmax(1) == yb).sum()
                self.stats[3] += yb.numel()
        self._bar.update(1)

    def validation_step(self) -> dict[str, float]:
        """Close the epoch's statistics (all ranks) and evaluate on ``val_set``: the history row."""
        cfg = self.config
        with self.on_stream():
            stats = self.stats
            if self.world > 1:
                dist.all_reduce(stats)
            stats = stats.cpu()
            seconds = time.perf_counter() - self._t0
            if not math.isfinite(float(stats[0])):
                raise FloatingPointError(f"{self.net}: non-finite loss in epoch {self.epoch + 1}")
            row = {
                "epoch": self.epoch + 1, "train_loss": float(stats[0] / stats[1]),
                "train_accuracy": float(stats[2] / stats[3]), "val_loss": math.nan, "val_accuracy": math.nan,
                "seconds": seconds, "slices": int(stats[1]),
                "slices_per_s": float(stats[1]) / seconds if seconds > 0 else math.nan, "lr": cfg.learning_rate,
            }
            if self.val_set is not None:
                row["val_loss"], row["val_accuracy"] = evaluate_loss_accuracy(
                    self.module, np.asarray(self.val_set["x"], dtype=np.float32), np.asarray(self.val_set["y"]),
                    cfg.l2_lambda, cfg.eval_batch_size, self.device, cfg.amp,
                )
        return row

    def on_epoch_end(self, row: dict[str, float]) -> None:
        """Record the row, checkpoint on cadence (and after the last epoch), call the callback."""
        cfg = self.config
        self.history.append(row)
        self._bar.set_postfix(epoch=row["epoch"], loss=f"{row['train_loss']:.4f}", acc=f"{row['train_accuracy']:.3f}",
                              slices_s=f"{row['slices_per_s']:.1f}")
        done = self.epoch + 1
        if self.checkpoint_dir is not None and (done % max(cfg.checkpoint_every, 1) == 0 or done == cfg.epochs):
            with self.on_stream():
                self._save_checkpoint(done)
        if self.rank == 0 and self.callback is not None:
            self.callback(dict(row))

    def on_train_end(self) -> tuple[dict[str, Any], list[dict[str, float]]]:
        """The model bundle (everything :func:`load_model` needs) and the history."""
        self.close()
        with self.on_stream():
            state = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        bundle = {
            "format": MODEL_FORMAT, "net": self.net, "model_kwargs": self.model_kwargs, "state_dict": state,
            "input_hw": [int(self.x.shape[2]), int(self.x.shape[3])], "epochs": int(self.config.epochs),
            "fingerprint": self.fingerprint,
        }
        return bundle, list(self.history)

    def close(self) -> None:
        """Close the progress bar."""
        if self._bar is not None:
            self._bar.close()

    # ---- helpers ------------------------------------------------------------------------------
    def on_stream(self) -> contextlib.AbstractContextManager:
        """Context that issues this run's device work on its own CUDA stream (no-op elsewhere)."""
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        cfg = self.config
        return _batches(epoch_order(len(self.x), epoch, cfg.seed, self.world, self.rank), cfg.batch_size,
                        cfg.drop_last)

    def _batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(indices).to(self.x_data.device, non_blocking=True)
        xb, yb = self.x_data[index], self.y_data[index]
        aug = dict(self.config.augmentation)
        if aug.get("enabled", True):
            xb, yb = augment_batch(xb, yb, self.aug_generator, pad=int(aug.get("pad", 10)),
                                   flip_lr=bool(aug.get("flip_lr", True)), flip_ud=bool(aug.get("flip_ud", True)))
        xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True).long()
        if self.config.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb, yb

    def _resume(self) -> None:
        cfg = self.config
        if self.checkpoint_dir is None or not cfg.resume:
            return
        found = [(e, p) for e, p in list_checkpoints(self.checkpoint_dir) if e <= cfg.epochs]
        if not found:
            return
        epoch_done, path = found[-1]
        state = load_checkpoint(path, map_location="cpu")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng_states(state["rng"][min(self.rank, len(state["rng"]) - 1)], self.aug_generator)
        self.history = [dict(r) for r in state["history"]][:epoch_done]
        self.start_epoch = epoch_done
        if self.rank == 0:
            logger.info("%s: resumed from %s (epoch %d of %d)", self.net, path, epoch_done, cfg.epochs)

    def _save_checkpoint(self, epoch: int) -> None:
        """Gather every rank's RNG states, then rank 0 writes one atomic checkpoint."""
        rng = capture_rng_states(self.aug_generator)
        rngs: list[Any] = [rng]
        if self.world > 1:
            rngs = [None] * self.world
            dist.all_gather_object(rngs, rng)
        if self.rank == 0:
            state = {
                "format": "colearn-pipeline-checkpoint/1", "net": self.net, "fingerprint": self.fingerprint,
                "epoch": epoch, "world_size": self.world,
                "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "rng": rngs, "history": self.history,
            }
            atomic_torch_save(state, checkpoint_path(self.checkpoint_dir, epoch))
            prune_checkpoints(self.checkpoint_dir, self.config.keep_checkpoints)
        if self.world > 1:
            dist.barrier()


def run_training(runs: Sequence[TrainingRun]) -> list[tuple[dict[str, Any], list[dict[str, float]]]]:
    """Train several runs on one device, stepping them round-robin; return each one's bundle and history.

    A run's weights, history and checkpoints are those it would reach alone: the runs share no
    state but the device.
    """
    for run in runs:
        run.on_train_start(concurrent=len(runs) > 1)
    try:
        last_epoch = max(run.config.epochs for run in runs)
        for epoch in range(min(run.start_epoch for run in runs), last_epoch):
            active = [run for run in runs if run.start_epoch <= epoch < run.config.epochs]
            batches = [run.on_epoch_start(epoch) for run in active]
            for step in range(max(map(len, batches))):
                for run, run_batches in zip(active, batches):
                    if step < len(run_batches):
                        run.train_step(run_batches[step])
            for run in active:
                run.on_epoch_end(run.validation_step())
    finally:
        for run in runs:
            run.close()
    return [run.on_train_end() for run in runs]


def train_model(
    net: str,
    model_kwargs: Mapping[str, Any],
    train_set: Mapping[str, np.ndarray],
    config: TrainConfig | Mapping[str, Any],
    val_set: Mapping[str, np.ndarray] | None = None,
    checkpoint_dir: str | Path | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train one net and return its model bundle and per-epoch history.

    Parameters
    ----------
    net, model_kwargs, train_set, val_set, checkpoint_dir, on_epoch_end
        As for :class:`TrainingRun`. Checkpoints are written every ``checkpoint_every`` epochs
        and after the last; with ``resume`` the latest matching checkpoint is loaded and training
        continues from it, reaching the same weights as an uninterrupted run (RNG states included).
        A callback that raises (e.g. :class:`TrainingInterrupted`) stops the run after that
        epoch's checkpoint.
    config : TrainConfig or mapping
        Hyper-parameters.

    Returns
    -------
    bundle : dict
        ``format``, ``net``, ``model_kwargs``, ``state_dict`` (CPU tensors), ``input_hw``,
        ``epochs``, ``fingerprint``: everything :func:`load_model` needs.
    history : list of dict
        One row per epoch: ``epoch`` (1-based), ``train_loss``, ``train_accuracy`` (pixel
        accuracy of the augmented training batches, before each update), ``val_loss`` and
        ``val_accuracy`` (NaN without ``val_set``), ``seconds``, ``slices`` (slices seen by all
        ranks), ``slices_per_s``, ``lr``.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_params(config)
    run = TrainingRun(net, model_kwargs, train_set, cfg, val_set, checkpoint_dir, on_epoch_end)
    ((bundle, history),) = run_training([run])
    return bundle, history


def load_model(bundle: Mapping[str, Any], device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a net in eval mode from a model bundle returned by :func:`train_model`."""
    from colearn_pipeline.models import build_model

    if bundle.get("format") != MODEL_FORMAT:
        raise ValueError(f"not a {MODEL_FORMAT} bundle: format={bundle.get('format')!r}")
    model = build_model(bundle["net"], **dict(bundle["model_kwargs"]))
    model.load_state_dict(bundle["state_dict"])
    return model.to(device).eval()
