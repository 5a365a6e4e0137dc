"""Learning-rate schedules of the stitch (step, warm-up + cosine) and the training presets with their overrides."""
import math

import pytest
import torch

import stitch_nets
from src.errors import UserError
from src.stitching.job import PRESETS, TRAINING_DEFAULTS, StitchJob
from src.stitching.affine import make_stitch
from src.stitching.train import StitchSettings, train_stitch
from src.training.optim import warmup_cosine_schedule

LAYERS = ["front.pt", "end.pt", "bn3", "bn5"]


def _rates(total, warmup, lr=0.5):
    """The learning rate each optimizer step runs at, as the scheduler sets it."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = warmup_cosine_schedule(optimizer, total, warmup)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates, optimizer.param_groups[0]["lr"]


def test_warmup_rises_linearly_to_the_full_rate_then_half_a_cosine_falls_to_zero():
    lr, total, warmup = 0.5, 40, 8
    rates, after = _rates(total, warmup, lr)
    # warm-up: equal increments lr / warmup, the last warm-up step at the full rate, no step at zero
    assert rates[0] == pytest.approx(lr / warmup, rel=1e-12)
    assert all(b - a == pytest.approx(lr / warmup, rel=1e-9) for a, b in zip(rates[:warmup], rates[1:warmup]))
    assert rates[warmup - 1] == pytest.approx(lr, rel=1e-12)
    # cosine from the full rate (cos 0 = 1); half way down at the middle; symmetric: f(j) + f(D - j) = lr
    decay = total - warmup
    assert rates[warmup] == pytest.approx(lr, rel=1e-12)
    assert rates[warmup + decay // 2] == pytest.approx(lr / 2, rel=1e-12)
    for j in range(1, decay):
        assert rates[warmup + j] + (rates[warmup + decay - j] if warmup + decay - j < total else after) == \
            pytest.approx(lr, rel=1e-12)
    assert all(a > b for a, b in zip(rates[warmup:], rates[warmup + 1:]))  # strictly falling
    assert after == pytest.approx(0.0, abs=1e-15) and min(rates) > 0
    # and the closed form at one point: step warmup + 10 of 32 decay steps runs at lr (1 + cos(10 pi / 32)) / 2
    assert rates[warmup + 10] == pytest.approx(lr * (1 + math.cos(10 * math.pi / 32)) / 2, rel=1e-12)


def test_without_warmup_cosine_starts_at_the_full_rate():
    rates, after = _rates(10, 0, lr=1.0)
    assert rates[0] == 1.0 and rates[5] == pytest.approx(0.5, rel=1e-12) and after == pytest.approx(0.0, abs=1e-15)


class _Frank(torch.nn.Module):
    """A stand-in stitched network: the stitch feeds a fixed linear head (what the training loop needs)."""

    def __init__(self):
        super().__init__()
        self.stitch = make_stitch((3,), (4,))
        self.head = torch.nn.Linear(4, 2).requires_grad_(False)

    def end(self, x, activation):
        return self.head(activation)

    def forward(self, x):
        return self.end(x, self.stitch(x))


def _train(schedule, warmup, epochs=3, steps=5, lr=0.2):
    gen = torch.Generator().manual_seed(0)
    batches = [{"x": None, "front": torch.randn(8, 3, generator=gen), "labels": torch.randint(0, 2, (8,), generator=gen),
                "teachers": {}, "end_target": None} for _ in range(steps)]
    val = [(torch.randn(8, 3, generator=gen), torch.randint(0, 2, (8,), generator=gen))]
    settings = StitchSettings.from_job(StitchJob(*LAYERS, epochs=epochs, lr=lr, optimizer="sgd", schedule=schedule,
                                                 warmup_epochs=warmup))
    curve, _ = train_stitch(_Frank(), batches, val, settings, progress=False)
    return list(curve["lr"])


def test_stitch_training_steps_cosine_per_iteration_and_step_per_epoch():
    epochs, steps, lr, warmup = 3, 5, 0.2, 1
    expected = [lr * (1 + math.cos(math.pi * (e * steps - warmup * steps) / ((epochs - warmup) * steps))) / 2
                if e >= warmup else lr / steps for e in range(epochs)]  # each epoch's first step
    assert _train("cosine", warmup, epochs, steps, lr) == pytest.approx(expected, rel=1e-12)
    assert _train("step", 0, epochs, steps, lr) == pytest.approx([lr, lr * 0.1, lr * 0.01], rel=1e-12)


def test_hernandez_preset_sets_the_paper_training_and_explicit_values_override_it():
    job = StitchJob(*LAYERS, preset="hernandez")
    assert (job.optimizer, job.batch_size, job.weight_decay, job.lr, job.epochs, job.schedule) == \
        ("sgd", 256, 0.01, 0.01, 4, "cosine")
    assert 0 < job.warmup_epochs < job.epochs
    assert StitchJob(*LAYERS, preset="hernandez", lr=0.1, epochs=8).lr == 0.1
    plain = StitchJob(*LAYERS)
    assert {name: getattr(plain, name) for name in TRAINING_DEFAULTS} == TRAINING_DEFAULTS
    parsed = stitch_nets.parse_args([*LAYERS, "--preset", "hernandez", "-lr", "0.05", "-e", "6"])
    assert (parsed.lr, parsed.epochs, parsed.batch_size, parsed.schedule) == (0.05, 6, 256, "cosine")
    # a flag given with the default's value still overrides the preset
    assert stitch_nets.parse_args([*LAYERS, "--preset", "hernandez", "-b", "128"]).batch_size == 128
    assert stitch_nets.parse_args([*LAYERS, "--pool"]).pool and set(PRESETS) == {"hernandez"}


@pytest.mark.parametrize("argv,message", [
    (["--schedule", "cosine", "--warmup-epochs", "3", "-e", "3"], r"--warmup-epochs 3 must be shorter than training \(--epochs 3\)"),
    (["--preset", "hernandez", "-e", "1"], r"--warmup-epochs 1 must be shorter than training \(--epochs 1\)"),
    (["--warmup-epochs", "1"], r"--warmup-epochs 1 needs --schedule cosine"),
    (["--schedule", "cosine", "--warmup-epochs", "-1"], r"--warmup-epochs must be a finite number >= 0"),
])
def test_a_warmup_that_cannot_work_is_one_line_before_anything_runs(argv, message):
    with pytest.raises(UserError, match=message) as err:
        stitch_nets.parse_args([*LAYERS, *argv])
    assert "\n" not in str(err.value)
