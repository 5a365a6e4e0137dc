"""Benchmark: the layer x layer CKA matrix of two Tiny10s, ours against torch_cka and pytorch-cka.

Two Tiny10s, 9 layers each, the first 2048 Fashion-MNIST test images, one pass over the data per
tool, the same ``torch.utils.data.DataLoader`` (same batches) for every tool:

- floor: the two forward passes alone (``model1(x); model2(x)`` under ``torch.no_grad()``);
- ours: ``src.similarity.layer_similarity(..., measure="cka_minibatch")``;
- torch_cka 0.21: ``CKA(...).compare(loader)`` (fresh model copies per repeat: it never removes its hooks);
- pytorch-cka 1.1.3: ``cka.compute_cka(model1, model2, loader, layers=...)``.

All three compute minibatch CKA (Nguyen et al.): per batch the unbiased HSIC (Song et al.) of every
layer pair and of every layer with itself, summed (or averaged, the same ratio) over the batches,
``CKA = sum HSIC_xy / sqrt(sum HSIC_xx * sum HSIC_yy)``, so the values must agree; the table gives
the largest difference from ours and from an all-float64 run of ours.

The 9 layers: ``relu1`` ... ``relu8`` (the outputs of the eight conv -> BN -> ReLU blocks) and ``fc``
(the logits), i.e. the representation after each of Tiny10's 9 weight layers; torch_cka and
pytorch-cka hook the modules they are given by name, so each tool gets the same 9 names.

Models: the committed ``model_weights/Tiny10/FashionMNIST/in0-gn0`` and ``in1-gn1`` checkpoints (their
last iteration) when present, else ``--checkpoints A B``, else two randomly initialised Tiny10s.

What bounds the ratio to the floor: exact Gram matrices cost ``2 B D`` flops per sample and layer
(3/4 of that with the symmetric blocking used from B = 128 on, 5/8 from B = 256), i.e. about ``2 * B * 40362 * 5/8``
flops per image and model for these 9 layers, against about 10 Mflop for Tiny10's forward pass; at
B = 256 the Grams alone cost more than the forward passes on a CPU, at B = 64 about a third. The batch
size does not change what minibatch CKA estimates (each batch's HSIC is unbiased), only its variance.

Allocator: glibc returns every freed block above its mmap threshold to the kernel, so each large
temporary of a CPU forward pass is a fresh mmap with page faults; here that made the plain forward
passes about 3x slower. The benchmark raises the thresholds as the project's scripts do
(:mod:`src.allocator`; the same for every tool; ``--default-malloc`` keeps glibc's defaults) so that the
floor is not inflated.

Usage (the comparison libraries come from benchmarks/requirements.txt, not the project's requirements)::

    .venv/bin/pip install -r benchmarks/requirements.txt
    .venv/bin/python benchmarks/bench_cka_matrix.py [--batch-sizes 64 256] [--repeats 3] [--threads 1] [--device cuda]
"""
import argparse
import contextlib
import copy
import io
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from src.data import get_loader  # noqa: E402
from src.models import create_model  # noqa: E402
from src.models.checkpoint import load_checkpoint  # noqa: E402
from src.allocator import keep_freed_memory  # noqa: E402
from src.similarity import layer_similarity  # noqa: E402

LAYERS = [f"relu{i}" for i in range(1, 9)] + ["fc"]
ABLATION = "ours, uncentred *"
COMMITTED = REPO / "model_weights" / "Tiny10" / "FashionMNIST"


def last_checkpoint(folder: Path) -> Optional[Path]:
    files = [p for p in folder.glob("*.pt") if p.stem.isdigit()]
    return max(files, key=lambda p: int(p.stem)) if files else None


def load_models(paths: Optional[Sequence[str]], device: torch.device):
    """The two models and a line saying where they came from."""
    if not paths:
        found = [last_checkpoint(COMMITTED / run) for run in ("in0-gn0", "in1-gn1")]
        paths = [str(p) for p in found] if all(found) else None
    if paths:
        models = [load_checkpoint(p, device=device)[0] for p in paths]
        return models, "checkpoints " + ", ".join(str(Path(p)) for p in paths)
    models = [create_model("tiny10", n_classes=10, n_channels=1, seed=s).to(device).eval() for s in (0, 1)]
    return models, "two randomly initialised Tiny10s (seeds 0, 1): no checkpoints found"


def fashion_images(n: int) -> TensorDataset:
    """The first ``n`` Fashion-MNIST test images, normalised as the project's loader yields them."""
    loader = get_loader("fashion", "test", 1000, max_samples=n, device="cpu")
    xs, ys = zip(*loader)
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(run: Callable[[], object], device: torch.device, prepare: Optional[Callable[[], object]] = None,
          clock: Callable[[], float] = time.perf_counter):
    """(seconds, result) of one call; ``prepare`` runs first, untimed, and its result is passed on."""
    arg = prepare() if prepare else None
    sync(device)
    start = clock()
    out = run(arg) if prepare else run()
    sync(device)
    return clock() - start, out


def quiet():
    """Silence the libraries' progress bars and warnings."""
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def run_floor(models, loader, device):
    with torch.no_grad():
        for x, _ in loader:
            x = x.to(device)
            models[0](x)
            models[1](x)


def run_ours(models, loader, device, precision="float32"):
    sim = layer_similarity(models[0], models[1], loader, layers1=LAYERS, layers2=LAYERS, measure="cka_minibatch",
                           device=device, precision=precision)
    return sim.values


@contextlib.contextmanager
def uncentred_grams():
    """Ablation, never what the library does: Grams of the raw rows, without the column centring that
    :func:`src.similarity.gram.centered_rows` does before any product. Timing ``ours`` inside it shows what
    the centre-first guarantee costs (one more pass over every activation), and the offset-300 check below
    shows what it buys."""
    from src.similarity import gram

    centred = gram.centered_rows
    gram.centered_rows = lambda x, dtype=torch.float32: x.reshape(x.shape[0], -1).to(dtype)
    try:
        yield
    finally:
        gram.centered_rows = centred


def run_ours_uncentred(models, loader, device):
    with uncentred_grams():
        return run_ours(models, loader, device)


def run_torch_cka(copies, loader, device):
    from torch_cka import CKA

    with quiet():
        tool = CKA(copies[0], copies[1], model1_name="model1", model2_name="model2", model1_layers=LAYERS,
                   model2_layers=LAYERS, device=str(device))
        tool.compare(loader)
        result = tool.export()
    assert result["model1_layers"] == LAYERS and result["model2_layers"] == LAYERS
    return result["CKA"].detach().cpu().double().numpy()


def run_pytorch_cka(models, loader, device):
    from cka import compute_cka

    with quiet():
        (matrix,) = compute_cka(models[0], models[1], loader, layers=LAYERS, device=str(device), progress=False)
    return matrix.detach().cpu().double().numpy()


def bench(batch_size: int, dataset: TensorDataset, models, device, repeats: int,
          clock: Callable[[], float] = time.perf_counter) -> Dict[str, Dict[str, object]]:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    tools: Dict[str, Dict[str, object]] = {name: {"times": [], "values": None} for name in
                                           ("floor", "ours", ABLATION, "torch_cka 0.21", "pytorch-cka 1.1.3")}
    exact = run_ours(models, loader, device, precision="float64")
    for _ in range(repeats):  # interleaved, so that a change of load hits every tool alike
        for name, call, prepare in (
                ("floor", lambda: run_floor(models, loader, device), None),
                ("ours", lambda: run_ours(models, loader, device), None),
                (ABLATION, lambda: run_ours_uncentred(models, loader, device), None),
                ("torch_cka 0.21", lambda c: run_torch_cka(c, loader, device), lambda: copy.deepcopy(models)),
                ("pytorch-cka 1.1.3", lambda: run_pytorch_cka(models, loader, device), None)):
            seconds, values = timed(call, device, prepare, clock)
            tools[name]["times"].append(seconds)
            tools[name]["values"] = values
    tools["exact"] = {"values": exact}
    return tools


def table(tools: Dict[str, Dict[str, object]]) -> List[str]:
    floor = statistics.median(tools["floor"]["times"])
    ours = statistics.median(tools["ours"]["times"])
    ours_values, exact = tools["ours"]["values"], tools["exact"]["values"]
    lines = [f"{'tool':<20} {'seconds':>8} {'/ floor':>8} {'/ ours':>8} {'max|d| ours':>12} {'max|d| f64':>11}"]
    for name, entry in tools.items():
        if name == "exact":
            continue
        seconds = statistics.median(entry["times"])
        values = entry["values"]
        d_ours = d_exact = ""
        if values is not None:
            values = np.asarray(values, dtype=float)
            d_ours = f"{np.nanmax(np.abs(values - ours_values)):.1e}" if name != "ours" else "0"
            d_exact = f"{np.nanmax(np.abs(values - exact)):.1e}"
        lines.append(f"{name:<20} {seconds:8.3f} {seconds / floor:8.2f} {seconds / ours:8.2f} {d_ours:>12} {d_exact:>11}")
    return lines


# ---------------------------------------------------------------------------------------------
# where the libraries are wrong: small, exact demonstrations
# ---------------------------------------------------------------------------------------------

class _Backwards(torch.nn.Module):
    """``head`` is defined before ``body`` but called after it."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(16, 3)
        self.body = torch.nn.Linear(5, 16)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


class _Split(torch.nn.Module):
    """``a``: the first 4 input features, ``b``: the other 4, ``dead``: always 0."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.dead = torch.nn.Identity(), torch.nn.Identity(), torch.nn.ReLU()

    def forward(self, x):
        return self.a(x[:, :4]), self.b(x[:, 4:]), self.dead(-x.abs())


def _loader(x: torch.Tensor, batch_size: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=batch_size)


def _torch_cka(m1, m2, layers1, layers2, loader):
    from torch_cka import CKA

    try:
        with quiet():
            tool = CKA(m1, m2, model1_name="m1", model2_name="m2", model1_layers=layers1, model2_layers=layers2)
            tool.compare(loader)
        return tool.export()["CKA"].numpy(), tool
    except AssertionError as err:
        return f"AssertionError: {err}", None


def _pytorch_cka(m1, m2, layers1, layers2, loader):
    from cka import compute_cka

    with quiet():
        (matrix,) = compute_cka(m1, m2, loader, layers=layers1, model2_layers=layers2, device="cpu", progress=False)
    return matrix.numpy()


def _fmt(values) -> str:
    return values if isinstance(values, str) else np.array2string(np.asarray(values, dtype=float), precision=4,
                                                                   suppress_small=True).replace("\n", "")


def correctness_checks() -> List[str]:
    """Cases where torch_cka / pytorch-cka give wrong numbers (each against ours, float64-checked)."""
    lines = []
    torch.manual_seed(0)
    m1, m2 = _Backwards(), _Backwards()
    loader = _loader(torch.randn(256, 5))
    ours = layer_similarity(m1, m2, loader, layers1=["head", "body"], layers2=["head", "body"])
    tc, tool = _torch_cka(m1, m2, ["head", "body"], ["head", "body"], loader)
    lines.append(f"labels: torch_cka labels its rows {tool.export()['model1_layers']} (definition order) but fills "
                 f"them in call order: its (head, head) = {tc[0, 0]:.4f} is ours (body, body) = {ours.values[1, 1]:.4f}; "
                 f"ours (head, head) = {ours.values[0, 0]:.4f}")
    lines.append(f"hooks: torch_cka leaves {sum(len(m._forward_hooks) for m in m1.modules())} forward hooks on model 1 "
                 f"after compare(), and runs the models without torch.no_grad()")
    split = _Split()
    clamped = []
    for seed in range(6):
        x = torch.randn(512, 8, generator=torch.Generator().manual_seed(seed))
        o = layer_similarity(split, split, _loader(x), layers1="a", layers2="b").values[0, 0]
        p = _pytorch_cka(split, split, ["a"], ["b"], _loader(x))[0, 0]
        clamped.append(f"{o:+.4f}->{p:.4f}")
    lines.append("clamping: pytorch-cka clamps to [0, 1]; independent features, ours -> pytorch-cka: " + ", ".join(clamped))
    x = torch.randn(512, 8, generator=torch.Generator().manual_seed(0)) + 300
    exact = layer_similarity(split, split, _loader(x), layers1="a", layers2=["a", "b"], precision="float64").values
    ours = layer_similarity(split, split, _loader(x), layers1="a", layers2=["a", "b"]).values
    with uncentred_grams():
        ablation = layer_similarity(split, split, _loader(x), layers1="a", layers2=["a", "b"]).values
    lines.append(f"offset 300 (unit-variance features): CKA(a, a), CKA(a, b): float64 {_fmt(exact)}, ours {_fmt(ours)}, "
                 f"ours uncentred * {_fmt(ablation)}, "
                 f"pytorch-cka {_fmt(_pytorch_cka(split, split, ['a'], ['a', 'b'], _loader(x)))}, "
                 f"torch_cka {_fmt(_torch_cka(_Split(), _Split(), ['a'], ['a', 'b'], _loader(x))[0])} "
                 f"(float32 Grams of uncentred data)")
    x = torch.randn(512, 8, generator=torch.Generator().manual_seed(1))
    try:
        layer_similarity(split, split, _loader(x), layers1=["a", "dead"], layers2=["a", "dead"])
        ours_dead = "no error"
    except Exception as err:  # noqa: BLE001 - we print what it is
        ours_dead = f"{type(err).__name__} ({str(err)[:60]}...)"
    lines.append(f"dead layer (always 0): pytorch-cka {_fmt(_pytorch_cka(split, split, ['a', 'dead'], ['a', 'dead'], _loader(x)))} "
                 f"(0 even for dead vs dead), torch_cka {_fmt(_torch_cka(_Split(), _Split(), ['a', 'dead'], ['a', 'dead'], _loader(x))[0])}, "
                 f"ours {ours_dead}")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", nargs=2, default=None, metavar=("A", "B"),
                        help="two Tiny10 checkpoints (default: the committed in0-gn0 and in1-gn1, else random init)")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256],
                        help="minibatch sizes to time (the same for every tool); default 64 256")
    parser.add_argument("--repeats", type=int, default=3, help="timings per tool; the median is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads; default 1")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time (default) or this process's CPU time (for one thread on a shared machine)")
    parser.add_argument("--default-malloc", action="store_true", help="keep glibc's default mmap/trim thresholds")
    parser.add_argument("--no-checks", action="store_true", help="skip the small demonstrations of the libraries' errors")
    args = parser.parse_args(argv)

    malloc = "glibc defaults" if args.default_malloc else ("tuned (mallopt)" if keep_freed_memory() else "defaults")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models, source = load_models(args.checkpoints, device)
    dataset = fashion_images(args.samples)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Tiny10 x 2, layers {', '.join(LAYERS)}; {len(dataset)} Fashion-MNIST test images; {source}")
    print(f"device {device}, torch {torch.__version__}, {args.threads} thread(s), malloc {malloc}, "
          f"load average {load:.2f} at start, {args.clock} clock, median of {args.repeats}")
    for batch_size in args.batch_sizes:
        tools = bench(batch_size, dataset, models, device, args.repeats, CLOCKS[args.clock])
        print(f"\nbatch size {batch_size} ({-(-len(dataset) // batch_size)} batches):")
        print("\n".join(table(tools)))
    print("\nmax|d| ours: largest |CKA - ours| over the 81 pairs; max|d| f64: against ours with float64 Grams.")
    print("* ablation, not a mode of the library: ours without centring the columns before the Gram products, "
          "i.e. what the centre-first guarantee costs (see the offset-300 case below for what it buys)")
    if not args.no_checks:
        print("\nwhere the libraries are wrong (small exact cases, CPU):")
        print("\n".join(f"- {line}" for line in correctness_checks()))


if __name__ == "__main__":
    main()
