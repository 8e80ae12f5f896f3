"""Training throughput (slices/s) of each net, relative to a matmul reference in the same run.

    python benchmarks/train.py --size 256 --width 64 --batch 5 --steps 20            # auto device
    python benchmarks/train.py --size 128 --width 16 --device cpu --threads 2 --json out.json

For every net: SGD steps (forward, Eq. 6 loss, backward, update) on random standardised input
and random labels, after warm-up steps; reported as slices/s and as slices per GFLOP/s of a
square float32 matmul timed on the same device in the same process (a machine-speed
normaliser, so numbers from different machines can be compared). On CUDA, ``--amp`` uses bf16
autocast as the training option does, and timings synchronise the device.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of an ``n x n`` float32 matmul on ``device`` (median of ``repeats``)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return 2 * n**3 / times[len(times) // 2] / 1e9


def train_throughput(net: str, size: int, width: int, depth: int, batch: int, steps: int, warmup: int,
                     device: torch.device, amp: bool) -> float:
    """Slices per second of SGD training steps of one net."""
    from colearn_pipeline.models import build_model
    from colearn_pipeline.models.loss import colearn_loss

    torch.manual_seed(0)
    model = build_model(net, width=width, depth=depth).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.randn(batch, 2, size, size, device=device)
    y = torch.randint(0, 4, (batch, size, size), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(x)
        colearn_loss(logits.float(), y, model, 0.1).backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=["colearn", "tb", "tc", "fs"])
    p.add_argument("--size", type=int, default=256, help="axial size H = W")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:0")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ref = matmul_gflops(device, args.matmul_n)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"matmul reference: {ref:.1f} GFLOP/s (n={args.matmul_n}, float32)")
    print(f"size {args.size}, width {args.width}, depth {args.depth}, batch {args.batch}, amp {args.amp}")
    print(f"{'net':8s} {'slices/s':>10s} {'slices/s per TFLOP/s':>22s}")
    results = []
    for net in args.nets:
        sps = train_throughput(net, args.size, args.width, args.depth, args.batch, args.steps, args.warmup,
                               device, args.amp)
        ratio = sps / (ref / 1000)
        results.append({"net": net, "slices_per_s": sps, "slices_per_s_per_tflops": ratio})
        print(f"{net:8s} {sps:10.2f} {ratio:22.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "device_name": name, "matmul_gflops": ref, "args": vars(args),
                       "results": results}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
