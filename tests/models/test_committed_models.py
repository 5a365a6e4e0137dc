"""The committed Fashion-MNIST models: they load, are as accurate as documented, and stitch."""
import re

import pytest

from src.models.checkpoint import load_checkpoint
from src.stitching.job import StitchJob
from src.stitching.results import load_result
from src.stitching.run import stitch_from_args
from src.training.trainer import final_checkpoint
from tests.conftest import REPO

WEIGHTS = REPO / "model_weights"
FAMILIES = {"LeNet": ("lenet", 3), "Tiny10": ("tiny10", 3), "ResNet20_w1": ("resnet20_w1", 2),
            "ResNet_1111_w8": ("resnet_1111_w8", 2), "ResNet_2222_w8": ("resnet_2222_w8", 2)}


def final(family: str, seed: int):
    return final_checkpoint(WEIGHTS / family / "FashionMNIST" / f"in{seed}-gn{seed}")


@pytest.mark.parametrize("family", FAMILIES)
def test_committed_models_are_complete_and_load_from_the_file_alone(family):
    name, seeds = FAMILIES[family]
    for seed in range(seeds):
        folder = WEIGHTS / family / "FashionMNIST" / f"in{seed}-gn{seed}"
        assert (folder / "training_log.csv").is_file() and (folder / "0.pt").is_file()
        model, meta = load_checkpoint(final(family, seed))
        assert meta["model"] == name and meta["dataset"] == "fashion" and meta["init_seed"] == seed
        assert meta["provenance"]["git"]["commit"]


def test_readme_lists_the_committed_accuracies():
    readme = (REPO / "README.md").read_text()
    for family, (name, seeds) in FAMILIES.items():
        for seed in range(seeds):
            path = final(family, seed).relative_to(REPO)
            assert re.search(re.escape(str(path)), readme), f"{path} is not in the README's table"


@pytest.mark.parametrize("model,layer", [("Tiny10", "bn3")])
def test_stitch_between_two_seeds_reaches_90_percent_of_the_end_model_after_one_epoch(tmp_path, model, layer):
    job = StitchJob(front_model=str(final(model, 0)), end_model=str(final(model, 1)), front_layer=layer,
                    end_layer=layer, dataset="fashion", epochs=1, cache_front=True,
                    measure_samples=500, out_dir=str(tmp_path), run_name="one-epoch")
    result = load_result(stitch_from_args(job, ["test"]))
    end, trans = result["model_results"]["end"]["acc"], result["model_results"]["trans"]["acc"]
    assert end > 0.88 and trans >= 0.9 * end
