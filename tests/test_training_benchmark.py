"""benchmarks/train.py runs on CPU with every speed option; the plan's FLOP count and projection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from colearn_pipeline.models import build_model
from colearn_pipeline.training import TrainConfig
from colearn_pipeline.training.plan import JobPlan, format_plan, training_flop_per_slice

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "train.py"


def test_training_flops_are_three_forward_passes_counted_on_real_tensors():
    model = build_model("colearn", width=4, depth=2)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 2, 32, 32))
    assert training_flop_per_slice("colearn", {"width": 4, "depth": 2}, (32, 32)) == 3 * counter.get_total_flops()


def test_plan_totals_follow_from_the_jobs():
    jobs = [JobPlan("tc", 1, 0, 10, 4, 2e9, 0.5, 2**20), JobPlan("tc", 2, 5, 5, 4, 2e9, 0.5, 2**20)]
    text = format_plan(jobs, TrainConfig(device="cpu", keep_checkpoints=2), n_slices=20)
    # FLOP left: 2e9 x 20 slices x (10 + 5) epochs = 6e11 = 0.0006 PFLOP; time: (10 + 5) x 4 x 0.5 s = 30 s
    assert "0.00 PFLOP left" in text and f"{30 / 3600:.2f} h" in text
    assert f"{6 * 2**20 / 2**30:.2f} GiB" in text  # 2 jobs x (2 kept + 1 bundle) x 1 MiB
    assert [line.split()[2] for line in text.splitlines() if line.startswith("tc ")] == ["0/10", "5/5"]


@pytest.mark.slow
def test_benchmark_runs_on_cpu_with_amp_and_channels_last(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cpu", "--amp", "--channels-last", "--size", "32", "--width", "4",
         "--depth", "2", "--steps", "1", "--warmup", "1", "--nets", "colearn", "--matmul-n", "256", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "matmul reference" in proc.stdout and "protocol (paper): 4 nets x 3 seeds x 500 epochs" in proc.stdout
    import json

    (row,) = json.loads(out.read_text())["results"]
    assert row["net"] == "colearn" and row["steps_per_s"] > 0 and row["tflops"] > 0 and row["protocol_hours"] > 0
