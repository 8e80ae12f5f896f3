"""Every thorax slice scored, the paper's training sample, the skip-less Table II baselines and one
seed list (protocol.seeds) that train_eval trains and evaluates in every environment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kedro.config import OmegaConfigLoader
from synthetic_studies import synthetic_study

from colearn_pipeline.pipelines.train_eval import nodes
from colearn_pipeline.pipelines.train_eval.params import ProtocolParams, strict
from colearn_pipeline.training import assemble_slices
from colearn_pipeline.training.data import training_slice_mask

REPO = Path(__file__).resolve().parents[1]
NAMES = [f"study-{i:010x}" for i in range(5)]


def _params(env: str) -> dict:
    loader = OmegaConfigLoader(str(REPO / "conf"), base_env="base", default_run_env=env,
                               merge_strategy={"parameters": "soft"})
    return loader["parameters"]


def _model_input(tumour_free: int = 2) -> dict:
    return {n: synthetic_study(n, n_slices=6, size=32, seed=i, tumour_free=tumour_free) for i, n in enumerate(NAMES)}


def test_training_sample_is_the_tumour_slices_plus_a_share_of_tumour_free_ones():
    flags = np.array([True] * 4 + [False] * 10)
    np.testing.assert_array_equal(training_slice_mask(flags, 0.0, seed=1), flags)
    half = training_slice_mask(flags, 0.5, seed=1)
    assert half[:4].all() and half[4:].sum() == 2
    assert not np.array_equal(half, training_slice_mask(flags, 0.5, seed=2))     # the draw follows the seed
    np.testing.assert_array_equal(half, training_slice_mask(flags, 0.5, seed=1))
    assert training_slice_mask(flags, 10.0, seed=1).all()                      # capped at what exists
    with pytest.raises(ValueError, match="tumour_free_share"):
        training_slice_mask(flags, -1.0, seed=1)


def test_model_input_flag_drives_tumour_and_all_thorax_scoring():
    data = assemble_slices(_model_input(), NAMES)
    assert data["has_tumour"].sum() == 5 * 4 and len(data["has_tumour"]) == 5 * 6
    params = _params("demo")
    from colearn_pipeline.pipelines.train_eval.params import EvaluationParams

    every = nodes.test_set_of(data, NAMES[:2], strict(EvaluationParams, params["evaluation"], "evaluation"))
    assert len(every["x"]) == 2 * 6                                              # the default: all thorax
    paper = {**params["evaluation"], "slices": "tumour"}
    assert len(nodes.test_set_of(data, NAMES[:2], strict(EvaluationParams, paper, "evaluation"))["x"]) == 2 * 4
    train = nodes.training_slices(data, params["sampling"])
    assert train["has_tumour"].all() and len(train["x"]) == 5 * 4                # the paper's sample by default


def test_a_model_input_without_the_flag_takes_it_from_its_labels():
    old = {n: {k: v for k, v in s.items() if k != "has_tumour"} for n, s in _model_input().items()}
    np.testing.assert_array_equal(assemble_slices(old, NAMES)["has_tumour"],
                                  assemble_slices(_model_input(), NAMES)["has_tumour"])


@pytest.mark.parametrize("env", ["demo", "paper"])
def test_table_ii_baselines_are_skipless_in_every_env(env):
    params = _params(env)
    assert params["model"]["baseline_skips"] is False
    assert params["evaluation"]["baselines"] == ["tb", "tc", "fs"]
    assert params["evaluation"]["ablation"] == ["tb_skips", "tb_skips_conv"]
    with pytest.raises(ValueError, match="skip-less"):
        nodes._net_settings("tb", {**params["model"], "baseline_skips": True}, params["training"], {})
    with pytest.raises(ValueError, match="skip-less"):
        nodes._net_settings("fs", params["model"], params["training"], {"fs": {"model": {"baseline_skips": True}}})


def test_every_seed_of_the_paper_env_is_trained_and_evaluated():
    params = _params("paper")
    seeds = strict(ProtocolParams, params["protocol"], "protocol").seeds
    assert seeds == [2019, 2020, 2021] and "seeds" not in params["evaluation"]
    model_input = _model_input()
    data = assemble_slices(model_input, NAMES)
    split = nodes.split_studies(model_input, params["split"])
    # the paper's protocol, evaluation and sampling blocks; a tiny net, one epoch, on the CPU
    model = {**params["model"], "width": 4, "depth": 2}
    training = {**params["training"], "epochs": 1, "amp": False, "compile": False, "channels_last": False,
                "checkpoint_root": None, "progress": False, "device": "cpu"}
    evaluation = {**params["evaluation"], "device": "cpu"}
    _, history, metrics, _, lesions = nodes.train_evaluate_net(
        data, split, model_input, model, training, evaluation, params["protocol"], params["sampling"], {}, net="tc")
    assert sorted(set(history["seed"])) == sorted(set(metrics["seed"])) == sorted(set(lesions["seed"])) == seeds
    n_test = len(split["outer"][0]["test"])
    assert len(lesions) == 3 * n_test
    per_seed = metrics[metrics["roi"] == "tumours"].groupby("seed")["slice"].count()
    assert (per_seed == 6 * n_test).all()                                       # every thorax slice, every seed
    with pytest.raises(ValueError, match="training.seed"):
        nodes.train_evaluate_net(data, split, model_input, model, {**training, "seed": 7}, evaluation,
                                 params["protocol"], params["sampling"], {}, net="tc")


def test_all_slice_scoring_shows_false_positives_that_the_tumour_slices_hide():
    import pandas as pd

    from colearn_pipeline.evaluation.metrics import slice_metrics
    from colearn_pipeline.evaluation.tables import scoring_comparison_markdown

    truth = np.zeros((2, 8, 8), np.int64)
    truth[:, :, :4] = 1                     # lung on both slices
    truth[0, 2:4, 2:4] = 3                  # tumour on slice 0 only
    pred = truth.copy()
    pred[1, 5:7, 5:7] = 3                   # a false-positive tumour on the tumour-free slice
    rows = []
    for net, p in (("colearn", pred), ("tb", truth)):
        m = slice_metrics(p, truth, ["study-a"] * 2, [0, 1])
        m["has_tumour"] = np.array([True, False])[m["slice"].to_numpy()]
        rows.append(m.assign(net=net, seed=1))
    md = scoring_comparison_markdown(pd.concat(rows, ignore_index=True), ["tb", "colearn"])
    ours = next(line for line in md.splitlines() if line.startswith("| our method"))
    cells = [c.strip() for c in ours.split("|")[2:-1]]
    # precision: all thorax (1 + 0) / 2, tumour slices 1; specificity: (1 + 60/64) / 2 vs 1; Dice 0.5 vs 1
    assert cells == ["50.00", "100.00", f"{100 * (1 + 60 / 64) / 2:.2f}", "100.00", "50.00", "100.00"]
    tb = [c.strip() for c in next(x for x in md.splitlines() if x.startswith("| TB")).split("|")[2:-1]]
    assert tb == ["100.00"] * 6             # nothing predicted on the tumour-free slice: NaN, left out


def test_lesion_table_compares_the_reference_per_study_in_the_metrics_units():
    import pandas as pd

    from colearn_pipeline.evaluation.lesions import LESION_METRICS

    rows = []
    for net, fpv in (("colearn", [1.0, 2.0, 3.0]), ("tb", [2.0, 4.0, 7.0])):
        for i, v in enumerate(fpv):
            rows.append({"net": net, "seed": 1, "fold": 1, "study": f"s{i}",
                         **{m: 0.5 for m in LESION_METRICS}, "fpv_ml": v})
    table, md = nodes.build_lesion_table(pd.DataFrame(rows), _params("demo")["evaluation"])
    fpv = table[(table["metric"] == "fpv_ml") & (table["net"] == "tb")].iloc[0]
    assert fpv["difference"] == pytest.approx(-7 / 3) and fpv["n_pairs"] == 3
    assert table[(table["metric"] == "fpv_ml") & (table["net"] == "colearn")]["mean"].iloc[0] == pytest.approx(2.0)
    assert "| fpv_ml | TB | 4.33 ± 2.52 |" in md and "| dice_3d (%) | TB | 50.00 ± 0.00 |" in md
