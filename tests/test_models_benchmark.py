"""Smoke test of benchmarks/models.py on a tiny configuration."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from colearn_pipeline.models import build_model

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "models.py"


def _load():
    spec = importlib.util.spec_from_file_location("colearn_models_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forward_flops_counts_every_conv():
    bench = _load()
    c, s = 4, 32
    flops = bench.forward_flops(build_model("tc", width=c), torch.randn(1, 2, s, s))

    def conv(cin, cout, size, k=3):
        return 2 * cin * cout * k * k * size * size

    encoder = sum(conv(2 if b == 0 else c, c, s >> b) + conv(c, c, s >> b) for b in range(4))
    reconstruction = sum(conv(c, c, s >> (3 - b)) + 2 * conv(c, c, s >> (3 - b)) for b in range(4))
    assert flops == encoder + reconstruction + conv(c, 4, s, 1)


def test_benchmark_runs_and_prints_table(capsys):
    torch.set_num_threads(1)
    _load().main(
        ["--size", "32", "--width", "4", "--warmup", "0", "--steps", "1", "--matmul-size", "64", "--models", "tc", "fs"]
    )
    out = capsys.readouterr().out
    assert "reference: 64x64 float32 matmul" in out
    assert out.count("| tc |") == 1
    assert "| tc |" in out and "| fs |" in out and "| colearn |" not in out
