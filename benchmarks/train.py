"""Training throughput of each net on one device, with the loop's speed options, and the protocol time.

    python benchmarks/train.py --device cuda --amp --channels-last --compile        # the GPU figures
    python benchmarks/train.py --device cpu --amp --channels-last --compile --size 64 --width 8 --steps 2 --nets colearn

For every net: training steps of :class:`colearn_pipeline.training.TrainingRun` (augmentation on
the device, forward, Eq. 6 loss, backward, SGD update; the speed options as ``TrainConfig``'s
``amp``, ``channels_last``, ``compile``) on random standardised slices, after untimed warm-up
steps (which absorb ``torch.compile``). Printed: steps/s, slices/s, achieved TFLOP/s (3 x the
counted forward FLOPs per slice, :func:`colearn_pipeline.training.plan.training_flop_per_slice`),
its ratio to a square matmul timed in the same run on the same device in the compute dtype (bf16
with ``--amp``, else fp32): the figure to compare across machines or on a shared one, and the
projected time of the protocol of ``conf/<--protocol-env>`` (all its nets x seeds x epochs x
training slices) on this device: each net's protocol FLOPs divided by the TFLOP/s it achieved
here (exact when ``--size``/``--width`` are the protocol's, an extrapolation at the same
efficiency otherwise; nets not benchmarked use the mean efficiency of those that were).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from colearn_pipeline.training import TrainConfig, TrainingRun
from colearn_pipeline.training.plan import device_summary, measure_seconds_per_step, training_flop_per_slice

CONF = Path(__file__).resolve().parents[1] / "conf"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int) -> float:
    """TFLOP/s of an ``n x n`` matmul on ``device`` in ``dtype`` (fastest of ``repeats``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def protocol(env: str) -> dict:
    """Nets, seeds, epochs, model and slice count of a conf environment (over conf/base)."""
    params: dict = {}
    for folder in (CONF / "base", CONF / env):
        for f in sorted(folder.glob("parameters*.yml")):
            params.update(yaml.safe_load(f.read_text()) or {})
    proto = params.get("protocol", {})
    return {
        "nets": proto.get("nets", ["colearn", "tb", "tc", "fs"]), "seeds": proto.get("seeds", [params["training"]["seed"]]),
        "epochs": int(params["training"]["epochs"]), "model": params["model"],
        "size": [int(v) for v in params["preprocess"]["model_input"]["model_size"]],
        "slices": int(proto.get("nominal_training_slices", 690)),
    }


def bench_net(net: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Seconds per training step and FLOPs per slice of one net with the options of ``args``."""
    rng = np.random.default_rng(0)
    n = 4 * args.batch
    data = {"x": rng.standard_normal((n, 2, args.size, args.size), dtype=np.float32),
            "y": rng.integers(0, 4, (n, args.size, args.size))}
    cfg = TrainConfig(seed=0, batch_size=args.batch, device=str(device), amp=args.amp, channels_last=args.channels_last,
                      compile=args.compile, deterministic=False, progress=False, checkpoint_root=None)
    kwargs = {"width": args.width, "depth": args.depth}
    seconds = measure_seconds_per_step(TrainingRun(net, kwargs, data, cfg), args.steps, args.warmup)
    return {"seconds_per_step": seconds, "flop_per_slice": training_flop_per_slice(net, kwargs, (args.size, args.size))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=["colearn", "tb", "tc", "fs"])
    p.add_argument("--size", type=int, default=256, help="axial size H = W")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="timed steps per net")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per net (absorb torch.compile)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:0")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA or CPU)")
    p.add_argument("--channels-last", action="store_true", help="channels_last net and input")
    p.add_argument("--compile", action="store_true", help="torch.compile the net")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--matmul-n", type=int, default=None, help="reference matmul size (2048 CPU, 8192 CUDA)")
    p.add_argument("--protocol-env", default="paper", help="conf environment whose protocol is projected")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    dtype = torch.bfloat16 if args.amp else torch.float32
    n = args.matmul_n or (8192 if device.type == "cuda" else 2048)
    repeats = 20 if device.type == "cuda" else 5
    ref = matmul_tflops(device, dtype, n, repeats)
    ref32 = ref if dtype == torch.float32 else matmul_tflops(device, torch.float32, n, repeats)
    proto = protocol(args.protocol_env)
    print(f"device {device_summary(device)}, torch {torch.__version__}")
    print(f"options amp {args.amp}, channels_last {args.channels_last}, compile {args.compile}; size {args.size}, "
          f"width {args.width}, depth {args.depth}, batch {args.batch}, warm-up {args.warmup}, steps {args.steps}")
    print(f"matmul reference: {ref:.3f} TFLOP/s ({n}x{n} {str(dtype).removeprefix('torch.')}), "
          f"fp32 {ref32:.3f} TFLOP/s (/ fp32: compare runs with and without --amp)")
    print(f"{'net':8s} {'steps/s':>8s} {'slices/s':>9s} {'TFLOP/s':>8s} {'/ matmul':>9s} {'/ fp32':>7s} "
          f"{'protocol h':>11s}")
    results = []
    for net in args.nets:
        r = bench_net(net, args, device)
        tflops = r["flop_per_slice"] * args.batch / r["seconds_per_step"] / 1e12
        hours = _protocol_hours(net, proto, tflops * 1e12)
        results.append({"net": net, **r, "steps_per_s": 1 / r["seconds_per_step"], "tflops": tflops,
                        "ratio_to_matmul": tflops / ref, "ratio_to_fp32_matmul": tflops / ref32,
                        "protocol_hours": hours})
        print(f"{net:8s} {1 / r['seconds_per_step']:8.3f} {args.batch / r['seconds_per_step']:9.2f} {tflops:8.4f} "
              f"{tflops / ref:9.3f} {tflops / ref32:7.3f} {hours:11.1f}", flush=True)
    mean_rate = float(np.mean([r["tflops"] for r in results])) * 1e12
    total = sum(next((r["protocol_hours"] for r in results if r["net"] == net), None) or _protocol_hours(net, proto, mean_rate)
                for net in proto["nets"])
    print(f"protocol ({args.protocol_env}): {len(proto['nets'])} nets x {len(proto['seeds'])} seeds x {proto['epochs']} "
          f"epochs x {proto['slices']} slices at {proto['size'][0]}x{proto['size'][1]}, width {proto['model']['width']}: "
          f"{total:.1f} h on this device, one job after another")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "matmul_tflops": ref, "fp32_matmul_tflops": ref32,
                                               "args": vars(args),
                                               "results": results, "protocol_hours": total}, indent=2))
    return 0


def _protocol_hours(net: str, proto: dict, flop_per_s: float) -> float:
    """Hours of one net's share of the protocol (all seeds) at ``flop_per_s``."""
    kwargs = {k: v for k, v in proto["model"].items()}
    flop = training_flop_per_slice(net, kwargs, proto["size"]) * proto["slices"] * proto["epochs"] * len(proto["seeds"])
    return flop / flop_per_s / 3600


if __name__ == "__main__":
    sys.exit(main())
