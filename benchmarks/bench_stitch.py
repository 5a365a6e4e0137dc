"""Benchmark: seconds per stitching epoch, ours against the reference design.

Reference design (Dr. Frankenstein's FrankeinsteinNet): every step runs the WHOLE front network
with a hook that saves the front layer's output, then the WHOLE end network with a hook that
replaces the end layer's output by the stitch's. Ours: the front network only up to its layer and
the end network only after its layer (torch.fx cuts); with --cache-front the front activations of
the unaugmented training split are computed once and reused every epoch.

Same two models, layers, stitch, optimiser (Adam), batch size and data in one process. Usage::

    .venv/bin/python benchmarks/bench_stitch.py                     # Tiny10 bn3 -> bn3, Fashion-MNIST
    .venv/bin/python benchmarks/bench_stitch.py --model lenet --layer pool1 --epochs 2
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data import get_loader  # noqa: E402
from src.models import create_model  # noqa: E402
from src.models.checkpoint import load_checkpoint  # noqa: E402
from src.stitching.batches import CachedBatches, FrontCache  # noqa: E402
from src.stitching.build import build_frank  # noqa: E402
from src.training.optim import make_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def committed_or_random(model: str, seed: int):
    """A committed Fashion-MNIST checkpoint of ``model`` (seed ``seed``) if present, else a random network."""
    paths = sorted((ROOT / "model_weights").glob(f"*/FashionMNIST/in{seed}-gn{seed}/*.pt"), key=lambda p: int(p.stem))
    for path in reversed(paths):
        net, meta = load_checkpoint(path)
        if meta["model"] == model and int(path.stem) > 0:
            return net, str(path.relative_to(ROOT))
    return create_model(model, 10, 1, seed=seed).eval(), f"random {model} (seed {seed})"


class HookFrank(torch.nn.Module):
    """The reference design: both networks run fully every step; hooks carry the activation across."""

    def __init__(self, front_model, end_model, front_layer, end_layer, stitch):
        super().__init__()
        self.front_model, self.end_model, self.stitch = front_model, end_model, stitch
        self.saved = None
        dict(front_model.named_modules())[front_layer].register_forward_hook(self._save)
        dict(end_model.named_modules())[end_layer].register_forward_hook(self._override)

    def _save(self, module, inputs, output):
        self.saved = output

    def _override(self, module, inputs, output):
        return self.stitch(self.saved)

    def forward(self, x):
        with torch.no_grad():
            self.front_model(x)
        return self.end_model(x)


def epoch_seconds(step_inputs, forward, stitch, epochs: int) -> list:
    optimizer = make_optimizer(stitch.parameters(), "adam", 1e-3, 0.0)
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        for batch in step_inputs():
            logits = forward(batch)
            loss = F.cross_entropy(logits, batch["labels"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny10")
    parser.add_argument("--layer", default="bn3")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per design (median reported)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    (front, front_name), (end, end_name) = committed_or_random(args.model, 0), committed_or_random(args.model, 1)
    frank = build_frank(front, end, args.layer, args.layer, (1, 32, 32), device=device)
    reference = HookFrank(frank.front_model, frank.end_model, args.layer, args.layer, frank.stitch)
    data = dict(max_samples=args.max_samples, device=device)
    train = get_loader("fashion", "train", args.batch_size, augment=False, seed=0, drop_last=True, **data)

    def live():
        for x, y in train:
            yield {"x": x, "labels": y}

    x, _ = next(iter(train))
    with torch.no_grad():
        assert torch.allclose(reference(x), frank(x), atol=1e-4), "the two designs disagree"

    started = time.perf_counter()
    plain = get_loader("fashion", "train", 500, shuffle=False, augment=False, **data)
    cached = CachedBatches(frank, FrontCache(frank.front, plain, device), [], False, args.batch_size, seed=0)
    cache_seconds = time.perf_counter() - started
    folded = build_frank(front, end, args.layer, args.layer, (1, 32, 32), device=device, fold_batchnorm=True)

    results = {
        "reference design (both networks in full, hooks)": epoch_seconds(live, lambda b: reference(b["x"]), frank.stitch, args.epochs),
        "ours, live front network": epoch_seconds(live, lambda b: frank(b["x"]), frank.stitch, args.epochs),
        "ours, cached front activations": epoch_seconds(lambda: iter(cached), lambda b: frank.forward_from(b["x"], b["front"]),
                                                        frank.stitch, args.epochs),
        "ours, cached front activations, --fold-bn": epoch_seconds(
            lambda: iter(cached), lambda b: folded.forward_from(b["x"], b["front"]), folded.stitch, args.epochs),
    }
    base = statistics.median(results["reference design (both networks in full, hooks)"])
    print(f"{args.model} {args.layer} -> {args.layer}, Fashion-MNIST train ({train.num_samples} samples, batch "
          f"{args.batch_size}), device {device}, torch threads {torch.get_num_threads()}")
    print(f"front: {front_name}; end: {end_name}")
    print(f"{'design':52s} {'s/epoch':>8s} {'speed-up':>9s}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:52s} {median:8.2f} {base / median:8.2f}x")
    print(f"(one-time cost of caching the front activations: {cache_seconds:.2f} s)")


if __name__ == "__main__":
    main()
