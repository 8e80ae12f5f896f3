"""Ensembles, flip TTA and uncertainty of colearn-predict (inference/ensemble.py, inference/segment.py)."""

import copy
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from colearn_pipeline.dicom.discovery import discover, select_ct_pet
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.inference.cli import main
from colearn_pipeline.inference.ensemble import (
    combine_samples,
    component_uncertainty,
    disagreement_fraction,
    normalised_entropy,
    tumour_components,
)
from colearn_pipeline.inference.models import ModelLoadError, load_ensemble
from colearn_pipeline.inference.segment import (
    InferenceOptions,
    OnnxNet,
    model_input,
    prepare_model,
    segment_volume_ensemble,
    segment_volume_reference,
    softmax_samples,
)
from colearn_pipeline.inference.summary import summarise_labels
from colearn_pipeline.models import build_model
from colearn_pipeline.phantom.generate import generate_cohort
from colearn_pipeline.training.loop import MODEL_FORMAT

SLICES = [1, 2, 3, 4, 5]


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("colearn", width=4, depth=2).eval()


def _bundle(model: torch.nn.Module, input_hw=(16, 16)) -> dict:
    return {"format": MODEL_FORMAT, "net": "colearn", "model_kwargs": {"width": 4, "depth": 2},
            "state_dict": model.state_dict(), "input_hw": list(input_hw), "epochs": 0}


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(3)
    ct = rng.normal(0, 300, size=(7, 20, 24)).astype(np.float32)
    suv = np.abs(rng.normal(1, 2, size=ct.shape)).astype(np.float32)
    return ct, suv


def test_ensemble_of_one_is_the_single_net(volume):
    ct, suv = volume
    net = _net(0)
    reference = segment_volume_reference(net, ct, suv, SLICES, (16, 16), batch_size=2)
    for options in (InferenceOptions(batch_size=3), InferenceOptions(batch_size=2, channels_last=False)):
        single = prepare_model(copy.deepcopy(net), options)
        out = segment_volume_ensemble([single], ct, suv, SLICES, (16, 16), options)
        np.testing.assert_array_equal(out.labels, reference)  # bitwise
        assert out.disagreement.max() == 0.0
    x = model_input(ct, suv, np.array(SLICES), (16, 16))
    probs = combine_samples(softmax_samples([single], x, options)).probabilities
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


def test_onnxruntime_engine_gives_the_torch_net_labels(volume):
    ct, suv = volume
    net = _net(5)
    options = InferenceOptions(engine="onnxruntime", batch_size=3)
    fast = prepare_model(copy.deepcopy(net), options, (16, 16))
    assert isinstance(fast, OnnxNet)
    out = segment_volume_ensemble([fast], ct, suv, SLICES, (16, 16), options)
    np.testing.assert_array_equal(out.labels, segment_volume_reference(net, ct, suv, SLICES, (16, 16)))
    x = model_input(ct, suv, np.array(SLICES), (16, 16))
    with torch.no_grad():
        np.testing.assert_allclose(fast(torch.from_numpy(x)).numpy(), net(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_identical_members_do_not_disagree_and_different_ones_do(volume):
    ct, suv = volume
    options = InferenceOptions(batch_size=4)
    net = prepare_model(_net(1), options)
    one = segment_volume_ensemble([net], ct, suv, SLICES, (16, 16), options)
    three = segment_volume_ensemble([net, copy.deepcopy(net), copy.deepcopy(net)], ct, suv, SLICES, (16, 16), options)
    np.testing.assert_array_equal(three.labels, one.labels)
    assert three.disagreement.max() == 0.0
    np.testing.assert_allclose(three.entropy, one.entropy, atol=1e-6)
    mixed = segment_volume_ensemble([net, prepare_model(_net(2), options)], ct, suv, SLICES, (16, 16), options)
    # two members: 0, 1/2 or both (the argmax of the mean can be a third class)
    assert set(np.unique(mixed.disagreement)) <= {0.0, 0.5, 1.0} and mixed.disagreement.max() > 0
    assert 0.0 < mixed.disagreement[SLICES].mean() < 0.5
    assert mixed.entropy[[0, 6]].max() == 0.0 and mixed.labels[[0, 6]].max() == 0  # slices not segmented


class _FlipEquivariant(torch.nn.Module):
    """Per-pixel (1x1) convolutions: commute with every flip of the image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 1), torch.nn.LeakyReLU(0.1), torch.nn.Conv2d(8, 4, 1))

    def forward(self, x):
        return self.body(x)


class _LeftHalf(torch.nn.Module):
    """Tumour (3) on the left half of the model grid, background on the right: not flip-equivariant."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 4, *x.shape[2:])
        logits[:, 3, :, : x.shape[3] // 2] = 5.0
        return logits + 0 * x[:, :1]


def test_flip_tta_of_a_flip_equivariant_net_equals_no_tta(volume):
    ct, suv = volume
    net = _FlipEquivariant().eval()
    plain = segment_volume_ensemble([net], ct, suv, SLICES, (16, 16), InferenceOptions(tta="none"))
    flipped = segment_volume_ensemble([net], ct, suv, SLICES, (16, 16), InferenceOptions(tta="flip"))
    np.testing.assert_array_equal(flipped.labels, plain.labels)
    np.testing.assert_allclose(flipped.entropy, plain.entropy, atol=1e-6)
    assert flipped.disagreement.max() == 0.0
    # a net that is not equivariant: its flipped views are flipped back, so they disagree on the left half
    half = segment_volume_ensemble([_LeftHalf()], ct, suv, SLICES, (16, 16), InferenceOptions(tta="flip"))
    assert half.disagreement[SLICES].max() == 0.5 and half.entropy[SLICES].max() > 0.3


def test_entropy_and_disagreement_of_known_probabilities():
    certain = np.zeros((1, 4, 1, 1), np.float32)
    certain[0, 2] = 1.0
    uniform = np.full((1, 4, 1, 1), 0.25, np.float32)
    assert normalised_entropy(certain).item() == 0.0
    assert normalised_entropy(uniform).item() == pytest.approx(1.0)
    samples = np.stack([certain, certain, uniform + np.array([0, 0.1, 0, 0], np.float32)[None, :, None, None]])
    assert disagreement_fraction(samples, np.array([[[2]]])).item() == pytest.approx(1 / 3)


def test_component_uncertainty_follows_the_summary_numbering_and_flags():
    labels = np.zeros((6, 10, 10), np.uint8)
    labels[1:3, 1:3, 1:3] = LABELS["tumour"]  # 8 voxels, confident
    labels[1:5, 5:9, 5:9] = LABELS["tumour"]  # 64 voxels, unsure
    entropy = np.zeros(labels.shape, np.float32)
    entropy[1:5, 5:9, 5:9] = 0.8
    entropy[1, 1, 1] = 0.4
    disagreement = np.where(labels == LABELS["tumour"], 0.25, 0.0).astype(np.float32)
    components, ids = tumour_components(labels, LABELS["tumour"])
    rows = component_uncertainty(components, ids, {"entropy": entropy, "disagreement": disagreement}, 0.5)
    summary = summarise_labels(labels, np.ones(labels.shape, np.float32), (1, 1, 1), (0, 0, 0), np.eye(3).ravel())
    assert [t["voxels"] for t in summary["tumours"]] == [int((components == i).sum()) for i in ids] == [64, 8]
    assert rows[0] == {"entropy_mean": 0.8, "entropy_max": 0.8, "low_confidence": True,
                       "disagreement_mean": 0.25, "disagreement_max": 0.25}
    assert rows[1]["entropy_mean"] == 0.05 and rows[1]["entropy_max"] == 0.4 and not rows[1]["low_confidence"]


def test_ensemble_members_must_share_input_size(tmp_path):
    torch.save(_bundle(_net(0), (16, 16)), tmp_path / "a.pt")
    torch.save(_bundle(_net(1), (32, 32)), tmp_path / "b.pt")
    with pytest.raises(ModelLoadError, match="input size"):
        load_ensemble([tmp_path / "a.pt", tmp_path / "b.pt"], "cpu")
    assert len(load_ensemble([tmp_path / "a.pt", tmp_path / "a.pt"], "cpu").models) == 2


def test_inference_options_refuse_unknown_keys():
    with pytest.raises(ValueError, match="unknown key"):
        InferenceOptions.from_mapping({"channel_last": True})
    with pytest.raises(ValueError, match="tta"):
        InferenceOptions.from_mapping({}, tta="rotate")
    assert InferenceOptions.from_mapping({"tta": "none"}, tta="flip", batch_size=None).tta == "flip"


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    generate_cohort(raw, n_studies=1, seed=6, size="tiny", progress=False)
    shutil.rmtree(raw / "reports")
    models = tmp_path_factory.mktemp("models")
    for seed in range(2):
        torch.save(_bundle(_net(seed), (32, 32)), models / f"m{seed}.pt")
    out = tmp_path_factory.mktemp("out")
    code = main([str(raw / "dicom"), "--model", str(models / "m0.pt"), str(models / "m1.pt"), "--tta", "flip",
                 "--out", str(out), "--device", "cpu"])
    return code, raw, out


def test_cli_ensemble_writes_uncertainty_on_the_ct_grid(ensemble_run):
    code, raw, out = ensemble_run
    assert code == 0
    (pseudonym, files), = discover(raw / "dicom").studies.items()
    ct_info, _, _ = select_ct_pet(files, str(raw / "dicom"))
    ct = read_series(ct_info.files, pseudonym)
    summary = json.loads((out / f"{pseudonym}.summary.json").read_text())
    assert summary["ensemble_members"] == 2 and summary["tta"] == "flip"
    first, last = summary["thorax_slices"]
    for name in ("uncertainty", "disagreement"):
        image = sitk.ReadImage(str(out / f"{pseudonym}.{name}.nii.gz"))
        assert image.GetPixelID() == sitk.sitkFloat32
        assert image.GetSize() == ct.shape_zyx[::-1]
        np.testing.assert_allclose(image.GetOrigin(), ct.origin_xyz_mm, atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), ct.spacing_xyz_mm, atol=1e-4)
        np.testing.assert_allclose(image.GetDirection(), ct.direction, atol=1e-6)
        values = sitk.GetArrayFromImage(image)
        assert values.min() >= 0.0 and values.max() <= 1.0
        assert values[first : last + 1].max() > 0.0  # two different untrained nets are unsure somewhere
        assert values[:first].max(initial=0.0) == 0.0 and values[last + 1 :].max(initial=0.0) == 0.0
    for tumour in summary["tumours"]:
        assert set(tumour["uncertainty"]) >= {"entropy_mean", "entropy_max", "disagreement_mean", "low_confidence"}
    assert summary["low_confidence_tumours"] == sum(t["uncertainty"]["low_confidence"] for t in summary["tumours"])
