"""Stitches between layers of different spatial size on the committed Tiny10s, end to end, rebuilt by eval_stitch.py."""
import json

import pytest

import eval_stitch
from src.stitching.job import StitchJob
from src.stitching.results import load_result
from src.stitching.run import stitch_from_args
from src.training.trainer import final_checkpoint
from tests.conftest import REPO

TINY10 = REPO / "model_weights" / "Tiny10" / "FashionMNIST"
SAMPLES = 2000


@pytest.mark.parametrize("front_layer,end_layer,kind", [
    ("bn3", "bn5", "resample_conv1x1"),  # 32x13x13 -> 32x9x9
    ("bn6", "bn7", "strided_conv"),  # 64x4x4 -> 64x2x2: a 2x2 convolution with stride 2
])
def test_stitch_across_spatial_sizes_trains_and_eval_stitch_reproduces_its_accuracy(
        tmp_path, capsys, fashion_available, front_layer, end_layer, kind):
    job = StitchJob(front_model=str(final_checkpoint(TINY10 / "in0-gn0")), end_model=str(final_checkpoint(TINY10 / "in1-gn1")),
                    front_layer=front_layer, end_layer=end_layer, dataset="fashion", epochs=1, init="ps_inv",
                    max_samples=SAMPLES, measure_samples=500, out_dir=str(tmp_path), run_name="kinds")
    path = stitch_from_args(job, ["test"])
    result = load_result(path)
    assert result["stitch"]["kind"] == kind and result["params"]["pool"] is False
    accuracies = result["model_results"]
    # 15 iterations from the least-squares start, fitted on 2000 images: both far above chance (0.1 +- 0.007 on
    # 2000 test images); bn3 -> bn5 skips two convolutions, so its least-squares stitch reaches only ~0.4 here
    assert accuracies["trans"]["acc"] > 0.3 and accuracies["ps_inv"]["acc"] > 0.3
    for mode, key in (("after", "trans"), ("ps_inv", "ps_inv")):
        capsys.readouterr()
        eval_stitch.main([str(path), mode, "--max-samples", str(SAMPLES), "--device", "cpu", "--json"])
        rebuilt = json.loads(capsys.readouterr().out)
        assert rebuilt["n"] == SAMPLES and rebuilt["acc"] == accuracies[key]["acc"], mode
