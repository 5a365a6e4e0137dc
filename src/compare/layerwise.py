"""What ``compare_layers.py`` does: the layer x layer matrix of two checkpoints, written to a folder.

The output folder is claimed before any work (a second run with the same folder is refused while the
first one runs) and the run is written into a fresh folder whose files then replace the old run's,
so ``--overwrite`` never leaves a previous run's ``pvalues.csv`` or ``ci_*.csv`` beside a new matrix.
"""
import hashlib
import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from src.compare.common import check_input_fits, eval_loader, load_models
from src.models.describe import display_name, model_label
from src.config import get_config, resolve_device, resolve_path
from src.data import dataset_info, is_imagefolder_name
from src.errors import UserError
from src.provenance import provenance
from src.results_io import claim_output
from src.similarity import SimilarityMatrix, layer_similarity
from src.similarity.result import OUTPUT_FILES
from src.validation import check_writable_dir


def default_out_dir(args, results_dir: Path, dataset: str, dataset2: Optional[str], meta1: Dict[str, Any],
                    meta2: Dict[str, Any]) -> Path:
    """``RESULTS_DIR/compare/<Family>-<label1>_vs_<Family>-<label2>_<measure>_<dataset>[_vs_<dataset2>]_<layers>``.

    The model family and the layer selection are part of the name, so that LeNets and Tiny10s of the
    same seeds, or two layer selections of the same models, get folders of their own.
    """
    names = [dataset_info(d).display_name if is_imagefolder_name(d) else d for d in (dataset, dataset2) if d]
    data = names[0] if len(names) == 1 or names[0] == names[1] else f"{names[0]}_vs_{names[1]}"
    models = f"{model_label(meta1, args.model1)}_vs_{model_label(meta2, args.model2)}"
    return results_dir / "compare" / f"{models}_{args.measure}_{data}_{_layers_tag(args.layers1, args.layers2)}"


def _layers_tag(layers1: Optional[Sequence[str]], layers2: Optional[Sequence[str]]) -> str:
    """``all-layers``, or the patterns as a file name (plus a hash of the exact text where that lost characters)."""
    def side(patterns):
        if not patterns:
            return "all"
        text = " ".join(patterns)
        slug = re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-.")[:40] or "layers"
        exact = slug == text
        return slug if exact else f"{slug}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"

    first, second = side(layers1), side(layers2)
    return f"layers-{first}" if first == second else f"layers-{first}_vs_{second}"


def _refuse_existing(out_dir: Path, overwrite: bool) -> None:
    """Fail before any work when the folder already holds a result (rather than after the computation)."""
    existing = [n for n in OUTPUT_FILES if (out_dir / n).exists()]
    if existing and not overwrite:
        raise UserError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite to replace them "
                        f"or choose another output folder (-o)")


def compare_layers(args, argv=None) -> Tuple[SimilarityMatrix, Dict[str, Path]]:
    """Compute the matrix described by the parsed ``compare_layers.py`` arguments and write its files."""
    config = get_config()
    device = resolve_device(args.device or config.device)
    (model1, meta1), (model2, meta2) = load_models(args.model1, args.model2, args.arch1, args.arch2, args.dataset,
                                                   device, args.weights1, args.weights2)
    dataset = args.dataset or meta1["dataset"]
    dataset2 = args.dataset2
    out_dir = resolve_path(args.out_dir) if args.out_dir else default_out_dir(args, config.results_dir, dataset, dataset2,
                                                                               meta1, meta2)
    for folder in (out_dir.parent, out_dir):  # the run is staged beside out_dir, then moved in
        check_writable_dir(folder)
    with claim_output(out_dir):
        _refuse_existing(out_dir, args.overwrite)
        sim = _compute(args, model1, model2, meta1, meta2, dataset, dataset2, device, config)
        sim.save(out_dir, overwrite=True, provenance=provenance(args, argv))  # refused above unless --overwrite;
        # the files are staged and moved in together, the pickle (the mark of a complete run) last
    return sim, sim.output_files(out_dir)


def _compute(args, model1, model2, meta1, meta2, dataset: str, dataset2: Optional[str], device, config) -> SimilarityMatrix:
    check_input_fits(meta1, dataset, "model 1")
    check_input_fits(meta2, dataset2 or dataset, "model 2")
    data = dict(device=device, download=args.download, val_size=args.val_size, config=config)
    loader1 = eval_loader(dataset, args.split, args.batch_size, args.samples, **data)
    loader2 = None
    n = loader1.num_samples
    if dataset2:
        loader2 = eval_loader(dataset2, args.split, args.batch_size, args.samples, **data)
        n = min(n, loader2.num_samples)  # both sides see the first n samples of their data set
    names = [display_name(meta1, args.model1), display_name(meta2, args.model2)]
    meta = {"dataset1": dataset, "dataset2": dataset2 or dataset, "split": args.split,
            "checkpoint1": str(args.model1), "checkpoint2": str(args.model2),
            "patterns1": args.layers1, "patterns2": args.layers2}
    return layer_similarity(model1, model2, loader1, loader2, layers1=args.layers1, layers2=args.layers2,
                            measure=args.measure, max_samples=n, permutations=args.permutations,
                            bootstrap=args.bootstrap, ci=args.ci, seed=args.seed, precision=args.precision,
                            names=names, meta=meta, progress=args.progress,
                            measure_options=None if getattr(args, "keep", None) is None else {"keep": args.keep})
