"""Benchmark: a stitch matrix the naive way (one single-stitch run per cell) against stitch_matrix.py's way.

Same cells, epochs, seeds and data, twice in one process:

- naive: one ``stitch_from_args`` per cell, as a shell loop over ``stitch_nets.py ... --cache-front`` would run
  (each call loads both checkpoints and the data, caches its front layer's activations, fits the least-squares
  stitch, trains, and evaluates everything on the test split, including both networks' own logits). It runs in
  this process, so the interpreter and torch start-up a real shell loop pays per cell is NOT counted (the
  naive time is a lower bound). ``--cache-front`` makes every naive cell compute exactly what a matrix cell
  computes (same batches, same seed), so the matrices must be identical (tolerance 0);
- matrix: ``run_matrix`` (stitch_matrix.py): the networks and loaders made once, each front layer's
  activations cached once for all end layers, the networks' own test logits once; it also computes the
  CKA matrix of the same layers (reported separately: the naive loop does not compute it);
- floor: the end tails' forward and backward passes alone (stitch -> end part -> cross-entropy -> backward ->
  Adam step) over the cached front activations, for every cell and epoch: the training work no sweep can avoid.
  It takes the cached inputs as given; the matrix run's time to make them (the cache fill: one forward pass of
  each network over each split) is printed beside it, because it alone can exceed the floor (late layers have
  small tails but need nearly whole forward passes).

Usage (committed Fashion-MNIST Tiny10s; numbers in the README)::

    .venv/bin/python benchmarks/bench_sweep.py [--layers bn2 bn4 bn6 bn8] [--epochs 1] [--max-samples 10000] [--threads 2]
"""
import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.allocator import keep_freed_memory  # noqa: E402
from src.stitching.batches import CachedBatches  # noqa: E402
from src.stitching.cut import FrontPart  # noqa: E402
from src.stitching.job import StitchJob  # noqa: E402
from src.matrix import MatrixJob, run_matrix  # noqa: E402
from src.stitching.results import load_result  # noqa: E402
from src.stitching.run import build_cell, front_cache, load_pair, stitch_from_args  # noqa: E402
from src.training.optim import make_optimizer  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "model_weights" / "Tiny10" / "FashionMNIST"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--front", default=str(TINY / "in0-gn0" / "8580.pt"))
    p.add_argument("--end", default=str(TINY / "in1-gn1" / "8580.pt"))
    p.add_argument("--layers", nargs="+", default=["bn2", "bn4", "bn6", "bn8"], help="front and end layers")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-samples", type=int, default=10000, help="first N samples of each split")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--default-malloc", action="store_true",
                   help="keep glibc's default mmap/trim thresholds (the scripts raise them: src/allocator.py)")
    return p.parse_args(argv)


def floor_seconds(base: StitchJob, layers) -> float:
    """Training work alone: per cell and epoch, stitch + end part forward, loss, backward, Adam step on the cache."""
    pair = load_pair(base)
    total = 0.0
    for s in layers:
        cache = front_cache(pair, base, FrontPart(pair.front_model, s, base.fold_bn))
        for r in layers:
            frank = build_cell(pair, replace(base, front_layer=s, end_layer=r))
            batches = CachedBatches(frank, cache, [], False, base.batch_size, base.seed)
            optimizer = make_optimizer(frank.stitch.parameters(), base.optimizer, base.lr, base.weight_decay)
            started = time.perf_counter()
            for _ in range(base.epochs):
                for batch in batches:
                    loss = F.cross_entropy(frank.end(batch["x"], frank.stitch(batch["front"])), batch["labels"])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            total += time.perf_counter() - started
    return total


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    malloc = "glibc defaults" if args.default_malloc else ("raised as the scripts do" if keep_freed_memory()
                                                           else "defaults")
    layers = args.layers
    with tempfile.TemporaryDirectory() as out:
        base = StitchJob(front_model=args.front, end_model=args.end,
                         dataset="fashion", epochs=args.epochs, max_samples=args.max_samples, cache_front=True,
                         no_augment=True, out_dir=out, device="cpu")
        n = len(layers) ** 2
        print(f"{len(layers)} x {len(layers)} cells ({', '.join(layers)}), {args.epochs} epoch(s), "
              f"--max-samples {args.max_samples}, batch {base.batch_size}, {torch.get_num_threads()} torch threads, "
              f"malloc thresholds {malloc}")

        started = time.perf_counter()
        naive = {}
        for s in layers:
            for r in layers:
                path = stitch_from_args(replace(base, front_layer=s, end_layer=r, run_name="naive"))
                naive[(s, r)] = load_result(path)["model_results"]
        naive_seconds = time.perf_counter() - started
        print(f"naive:  {naive_seconds:7.1f} s ({naive_seconds / n:.2f} s per cell)")

        started = time.perf_counter()
        _, summary = run_matrix(MatrixJob(job=replace(base, run_name="matrix"), front_layers=layers,
                                          end_layers=layers), progress=False)
        matrix_seconds = time.perf_counter() - started
        cka_seconds = summary["timing"]["cka_seconds"]
        print(f"matrix: {matrix_seconds:7.1f} s ({matrix_seconds / n:.2f} s per cell), of which the CKA matrix "
              f"{cka_seconds:.1f} s")

        floor = floor_seconds(base, layers)
        print(f"floor:  {floor:7.1f} s (end tails' forward + backward on cached inputs)")
        fill = sum(sum(parts.values()) for parts in summary["timing"]["cache_seconds"].values())
        print(f"cache fill: {fill:5.1f} s of the matrix run (each network's forward passes over the train, val and "
              f"test splits that make the inputs the floor takes as given)")

        diff = max(max(abs(summary[table].loc[s, r] - naive[(s, r)][key]["acc"]) for s in layers for r in layers)
                   for table, key in (("matrix", "trans"), ("ps_inv", "ps_inv")))
        print(f"speed-up {naive_seconds / matrix_seconds:.1f}x (without the CKA matrix "
              f"{naive_seconds / (matrix_seconds - cka_seconds):.1f}x)")
        print(f"max abs difference of the matrices (stitched and least-squares accuracy): {diff:.3g} "
              f"(tolerance 0: the same computation with the same seeds)")
        print(f"ratio to the floor {matrix_seconds / floor:.2f}x (without the CKA matrix "
              f"{(matrix_seconds - cka_seconds) / floor:.2f}x); the cache fill alone is {fill / floor:.2f}x the floor, "
              f"and the rest of the run {(matrix_seconds - cka_seconds - fill) / floor:.2f}x")
        return 0 if np.isfinite(diff) else 1


if __name__ == "__main__":
    sys.exit(main())
