"""The plan printed before a long training: device, FLOPs, projected wall time, checkpoint disk.

The projection times a few real training steps of every net (after warm-up steps, which also
absorb ``torch.compile``) with the configured options, then scales them to the epochs still to
run, so a resumed protocol projects only what is left.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from colearn_pipeline.training.checkpoint import list_checkpoints
from colearn_pipeline.training.config import TrainConfig, data_digest, fingerprint, resolve_device
from colearn_pipeline.training.loop import TrainingRun


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """One (net, seed) training job of a plan."""

    net: str
    seed: int
    epochs_done: int
    epochs_left: int
    steps_per_epoch: int
    flop_per_slice: float
    seconds_per_step: float
    checkpoint_bytes: int

    @property
    def seconds_left(self) -> float:
        """Projected seconds of the epochs left, run alone."""
        return self.epochs_left * self.steps_per_epoch * self.seconds_per_step


def device_summary(device: torch.device) -> str:
    """Name (and memory) of a device, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3, 79.1 GiB)``."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    return f"{device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def training_flop_per_slice(net: str, model_kwargs: Mapping[str, Any], hw: Sequence[int]) -> float:
    """FLOPs of one training slice: 3 x the counted forward FLOPs (backward ~ 2 x forward).

    Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the meta device (no
    arithmetic is done; convolutions and matrix products, 1 multiply-add = 2 FLOPs).
    """
    from colearn_pipeline.models import build_model

    with torch.device("meta"):
        model = build_model(net, **dict(model_kwargs)).eval()
        x = torch.empty(1, 2, int(hw[0]), int(hw[1]))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return 3.0 * counter.get_total_flops()


def checkpoint_bytes(module: torch.nn.Module) -> int:
    """Bytes of a checkpoint of ``module``: its state plus the SGD momentum of every parameter."""
    state = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    return state + sum(p.numel() * p.element_size() for p in module.parameters())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_seconds_per_step(run: TrainingRun, steps: int = 3, warmup: int = 1) -> float:
    """Mean seconds of ``steps`` training steps of a fresh run after ``warmup`` steps (not saved)."""
    run.on_train_start()
    batches = run.on_epoch_start(0)
    full = [b for b in batches if len(b) == run.config.batch_size] or batches
    for i in range(warmup):
        run.train_step(full[i % len(full)])
    _sync(run.device)
    start = time.perf_counter()
    for i in range(steps):
        run.train_step(full[(warmup + i) % len(full)])
    _sync(run.device)
    run.close()
    return (time.perf_counter() - start) / max(steps, 1)


def plan_jobs(jobs: Sequence[tuple[str, int]], model_kwargs: Mapping[str, Any], train_set: Mapping[str, np.ndarray],
              config: TrainConfig, checkpoint_dirs: Sequence[str | Path | None], steps: int = 3,
              warmup: int = 1, n_slices: int | None = None) -> list[JobPlan]:
    """Measure and project every (net, seed) job; epochs already checkpointed count as done.

    ``checkpoint_dirs`` are the jobs' ``checkpoint_dir`` (as given to :class:`TrainingRun`).
    Each net is timed once (the seed does not change its speed), with ``config``'s device options,
    on ``train_set``; an epoch has the steps of ``n_slices`` slices (default: the train set's).
    """
    x, y = np.asarray(train_set["x"], dtype=np.float32), np.asarray(train_set["y"])
    digest = data_digest(x, y)
    timed: dict[str, tuple[float, int, int]] = {}
    plans = []
    for (net, seed), checkpoint_dir in zip(jobs, checkpoint_dirs, strict=True):
        cfg = dataclasses.replace(config.with_seed(seed), progress=False)
        if net not in timed:
            run = TrainingRun(net, model_kwargs, train_set, cfg)
            n = len(x) if n_slices is None else int(n_slices)
            n_steps = n // cfg.batch_size + int(n % cfg.batch_size > 0 and not cfg.drop_last)
            timed[net] = (measure_seconds_per_step(run, steps, warmup), n_steps, checkpoint_bytes(run.module))
        seconds, n_steps, ckpt = timed[net]
        done = 0
        if checkpoint_dir is not None:
            folder = Path(checkpoint_dir) / fingerprint(net, dict(model_kwargs), cfg, digest)
            done = max([e for e, _ in list_checkpoints(folder) if e <= cfg.epochs], default=0)
        plans.append(JobPlan(net, int(seed), done, cfg.epochs - done, n_steps,
                             training_flop_per_slice(net, model_kwargs, x.shape[2:]), seconds, ckpt))
    return plans


def format_plan(plans: Sequence[JobPlan], config: TrainConfig, n_slices: int) -> str:
    """The plan as text: device, options, one line per job, totals (FLOP, wall time, disk)."""
    device = resolve_device(config.device)
    lines = [
        f"device      {device_summary(device)}, torch {torch.__version__}",
        f"options     amp {config.amp}, channels_last {config.channels_last}, compile {config.compile}, "
        f"device_augment {config.device_augment}, batch {config.batch_size}, {n_slices} training slices",
        f"{'net':8s} {'seed':>6s} {'epochs done/left':>17s} {'GFLOP/slice':>12s} {'s/step':>8s} "
        f"{'TFLOP/s':>8s} {'hours left':>10s}",
    ]
    total_flop, total_s, disk = 0.0, 0.0, 0
    for p in plans:
        flop_left = p.flop_per_slice * n_slices * p.epochs_left
        tflops = p.flop_per_slice * config.batch_size / p.seconds_per_step / 1e12
        lines.append(f"{p.net:8s} {p.seed:6d} {f'{p.epochs_done}/{p.epochs_left}':>17s} "
                     f"{p.flop_per_slice / 1e9:12.2f} {p.seconds_per_step:8.3f} {tflops:8.3f} "
                     f"{p.seconds_left / 3600:10.2f}")
        total_flop += flop_left
        total_s += p.seconds_left
        disk += p.checkpoint_bytes * (max(config.keep_checkpoints, 1) + 1)  # + bundle ~ one checkpoint
    lines.append(f"total       {total_flop / 1e15:.2f} PFLOP left, {total_s / 3600:.2f} h if run one after "
                 f"another (concurrent runs overlap on a GPU), checkpoints {disk / 2**30:.2f} GiB")
    return "\n".join(lines)
