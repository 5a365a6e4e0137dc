"""What ``compare_layers.py`` does: the layer x layer matrix of two checkpoints, written to a folder."""
from pathlib import Path
from typing import Dict, Optional, Tuple

from src.compare.common import check_input_fits, checkpoint_label, display_name, eval_loader, load_models
from src.config import get_config, resolve_device, resolve_path
from src.errors import UserError
from src.provenance import provenance
from src.similarity import SimilarityMatrix, layer_similarity


def default_out_dir(args, results_dir: Path, dataset: str, dataset2: Optional[str]) -> Path:
    """``RESULTS_DIR/compare/<label1>_vs_<label2>_<measure>_<dataset>[_vs_<dataset2>]``."""
    data = dataset if not dataset2 or dataset2 == dataset else f"{dataset}_vs_{dataset2}"
    name = f"{checkpoint_label(args.model1)}_vs_{checkpoint_label(args.model2)}_{args.measure}_{data}"
    return results_dir / "compare" / name


def _refuse_existing(out_dir: Path, overwrite: bool) -> None:
    """Fail before any work when the folder already holds a result (rather than after the computation)."""
    names = ["matrix.csv", "matrix.npz", "matrix.pkl", "heatmap.png"]
    existing = [n for n in names if (out_dir / n).exists()]
    if existing and not overwrite:
        raise UserError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite to replace them "
                        f"or choose another output folder (-o)")


def compare_layers(args, argv=None) -> Tuple[SimilarityMatrix, Dict[str, Path]]:
    """Compute the matrix described by the parsed ``compare_layers.py`` arguments and write its files."""
    config = get_config()
    device = resolve_device(args.device or config.device)
    (model1, meta1), (model2, meta2) = load_models(args.model1, args.model2, args.arch1, args.arch2, args.dataset,
                                                   device)
    dataset = args.dataset or meta1["dataset"]
    dataset2 = args.dataset2
    out_dir = resolve_path(args.out_dir) if args.out_dir else default_out_dir(args, config.results_dir, dataset, dataset2)
    _refuse_existing(out_dir, args.overwrite)
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
    sim = layer_similarity(model1, model2, loader1, loader2, layers1=args.layers1, layers2=args.layers2,
                           measure=args.measure, max_samples=n, permutations=args.permutations,
                           bootstrap=args.bootstrap, ci=args.ci, seed=args.seed, precision=args.precision,
                           names=names, meta=meta, progress=args.progress)
    paths = sim.save(out_dir, overwrite=args.overwrite, provenance=provenance(args, argv))
    return sim, paths
