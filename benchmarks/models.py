"""Benchmark the four nets: forward FLOPs, parameters, training-step time, achieved GFLOP/s.

For each net at ``--size`` x ``--size`` (256) and ``--width`` (64) the script prints, in one run:

- forward FLOPs per slice, counted with :class:`torch.utils.flop_counter.FlopCounterMode`
  (convolutions, transposed and 3D convolutions, matrix products; 1 multiply-add = 2 FLOPs;
  batch norm, activations, pooling and upsampling are not counted);
- trainable parameters;
- the time of a training step at batch ``--batch`` (5, Table I): forward, the paper's loss
  (:func:`colearn_pipeline.models.loss.colearn_loss`, lambda 0.1), backward and an SGD step with
  momentum 0.9, after ``--warmup`` untimed steps; fastest and median of ``--steps`` timed steps;
- achieved GFLOP/s, estimated as ``3 x forward FLOPs x batch / fastest step time`` (the usual
  estimate: the backward pass costs about twice the forward), and its ratio to the best GFLOP/s
  of a plain ``--matmul-size`` square matrix product measured in the same run, on the same
  device, in the same dtype (float32, or bfloat16 with ``--amp``), just before and just after
  each net's timing. The ratio is the figure to compare. Fastest-of-n on both sides keeps the
  figure stable on a machine shared with other jobs.

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/models.py                 # CPU, short
    .venv/bin/python benchmarks/models.py --device cuda --amp --channels-last --warmup 5 --steps 20
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from colearn_pipeline.models import MODEL_NAMES, build_model, count_parameters, to_channels_last
from colearn_pipeline.models.loss import DEFAULT_L2_LAMBDA, colearn_loss

LEARNING_RATE = 1e-4  # Table I
MOMENTUM = 0.9  # Table I
GIGA = 1e9


def _cpu_name() -> str:
    """CPU model from /proc/cpuinfo where there is one, else :func:`platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_gflops(size: int, device: torch.device, dtype: torch.dtype, warmup: int, repeats: int) -> float:
    """Best GFLOP/s of a plain ``size x size`` matrix product (``2 size**3`` FLOPs) over ``repeats``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size**3 / min(_timed(lambda: a @ b, device, warmup, repeats)) / GIGA


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``model`` on ``x`` (counted, not timed)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train()
    return counter.get_total_flops()


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(args.seed)
    model = build_model(name, width=args.width).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.channels_last:
        to_channels_last(model)
    flops = forward_flops(model, torch.randn(1, 2, args.size, args.size, device=device))

    x = torch.randn(args.batch, 2, args.size, args.size, device=device).contiguous(memory_format=memory_format)
    target = torch.randint(0, model.num_classes, (args.batch, args.size, args.size), device=device)
    optimiser = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            logits = model(x)
        loss = colearn_loss(logits, target, model, l2_lambda=DEFAULT_L2_LAMBDA)
        loss.backward()
        optimiser.step()

    times = _timed(step, device, args.warmup, args.steps)
    achieved = 3 * flops * args.batch / min(times) / GIGA
    return {
        "flops": flops,
        "params": count_parameters(model),
        "fastest": min(times),
        "median": statistics.median(times),
        "gflops": achieved,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--size", type=int, default=256, help="slice height and width (256)")
    parser.add_argument("--width", type=int, default=64, help="net width c (64)")
    parser.add_argument("--batch", type=int, default=5, help="training batch size (5, Table I)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps per net")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per net")
    parser.add_argument("--matmul-size", type=int, default=None, help="reference matmul size (2048 CPU, 8192 CUDA)")
    parser.add_argument("--matmul-repeats", type=int, default=None, help="timed matmuls (5 CPU, 50 CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    matmul_size = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    matmul_repeats = args.matmul_repeats or (50 if device.type == "cuda" else 5)
    dtype = torch.bfloat16 if args.amp else torch.float32

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(
        f"device {device} ({device_name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"amp {'bf16' if args.amp else 'off'}, channels_last {args.channels_last}, "
        f"input {args.batch}x2x{args.size}x{args.size}, width {args.width}, "
        f"warmup {args.warmup}, steps {args.steps}"
    )
    dtype_name = str(dtype).removeprefix("torch.")
    print(
        f"reference: {matmul_size}x{matmul_size} {dtype_name} matmul, best of {matmul_repeats}, "
        "measured just before and after each net (best of the two)"
    )
    print("achieved GFLOP/s = 3 x forward FLOPs x batch / fastest train step")
    print()
    print(
        f"| net | forward GFLOP / slice | parameters | train step (batch {args.batch}) s, fastest / median "
        "| achieved GFLOP/s | matmul GFLOP/s | achieved / matmul |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        # the reference sits next to each net's timing, so a shared, busy machine loads both alike
        before = matmul_gflops(matmul_size, device, dtype, warmup=2, repeats=matmul_repeats)
        r = bench_model(name, args, device)
        reference = max(before, matmul_gflops(matmul_size, device, dtype, warmup=1, repeats=matmul_repeats))
        print(
            f"| {name} | {r['flops'] / GIGA:.2f} | {r['params']:,} | {r['fastest']:.3f} / {r['median']:.3f} | "
            f"{r['gflops']:.1f} | {reference:.1f} | {r['gflops'] / reference:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
