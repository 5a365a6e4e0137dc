"""The Python API: stitching and similarity on any PyTorch networks and any data, in four calls.

    from src import stitch, stitch_matrix, layer_similarity, load_result

- :func:`stitch` trains and evaluates one stitch between two networks and returns the result dict that
  ``stitch_nets.py`` pickles (the script is a client of this function);
- :func:`stitch_matrix` stitches every front layer into every end layer and returns the tables that
  ``stitch_matrix.py`` writes (its files too, given ``out_dir``);
- :func:`layer_similarity` is the layer x layer similarity matrix of two models over a data loader
  (:mod:`src.similarity.api`); :func:`load_result` reads a result pickle back.

Networks are ``nn.Module`` objects (a torchvision or timm model, your own class), zoo checkpoint paths or
model specs (``torchvision:resnet18``, ``timm:vit_tiny_patch16_224?img_size=32,patch_size=4``,
``my_models:small_cnn``; their weights file as ``front_weights=`` / ``end_weights=``). Data are either a
data set's name (``dataset="fashion"``, ``dataset="imagefolder:DIR"``) or your own ``train=`` / ``test=``
(/ ``val=``): each a ``torch.utils.data.Dataset``, a ``DataLoader`` or a list of ``(inputs, labels)``
batches, read once into memory as given (your transforms and normalisation; nothing added).

Every other keyword is a command-line option of ``stitch_nets.py`` under its Python name (``epochs``,
``batch_size``, ``lr``, ``init``, ``preset``, ``objective``, ``max_samples``, ...; one definition:
:class:`src.stitching.job.StitchJob`, whose fields the scripts' options fill), with the same defaults.
"""
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from torch import nn

from src.data import DataSource, UserData
from src.errors import UserError
from src.matrix import MatrixJob, run_matrix
from src.models.networks import module_ref
from src.similarity import layer_similarity
from src.stitching.job import StitchJob
from src.stitching.results import load_result
from src.stitching.run import stitch_job

__all__ = ["stitch", "stitch_matrix", "layer_similarity", "load_result"]

Network = Union[nn.Module, str]
_JOB_OPTIONS = tuple(f.name for f in fields(StitchJob) if f.name not in ("front_model", "end_model", "front_layer",
                                                                          "end_layer"))


def _reference(network: Network, role: str) -> str:
    if isinstance(network, nn.Module):
        return module_ref(network)
    if isinstance(network, (str, Path)):
        return str(network)
    raise UserError(f"the {role} network must be an nn.Module, a checkpoint path or a model spec, "
                    f"not {type(network).__name__}")


def _job(front: Network, end: Network, options: Dict[str, Any], **layers) -> StitchJob:
    unknown = sorted(set(options) - set(_JOB_OPTIONS))
    if unknown:
        raise UserError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the options are "
                        f"stitch_nets.py's under their Python names: {', '.join(_JOB_OPTIONS)}")
    return StitchJob(front_model=_reference(front, "front"), end_model=_reference(end, "end"), **layers, **options)


def _data(train, test, val, options: Dict[str, Any]) -> Optional[DataSource]:
    """The user's own data, or None for the data set named by ``dataset=`` (or recorded in a checkpoint)."""
    if train is None and test is None:
        if val is not None:
            raise UserError("val= needs train= and test= too")
        return None
    if train is None or test is None:
        raise UserError("give both train= and test= (and optionally val=), or a data set's name as dataset=")
    if options.get("dataset") is not None:
        raise UserError("give either dataset= (a data set's name) or train= / test=, not both")
    return UserData(train, test, val, val_size=options.get("val_size"))


def stitch(front: Network, end: Network, front_layer: str, end_layer: str, train=None, test=None, val=None, *,
           save: Optional[bool] = None, argv: Optional[Sequence[str]] = None, **options) -> Dict[str, Any]:
    """Train and evaluate one stitch: ``front`` up to ``front_layer``, a stitch layer, ``end`` after ``end_layer``.

    Returns the result dict ``stitch_nets.py`` pickles (accuracies under ``model_results``, the stitch weights
    under ``trans_m``, similarities, learning curve, parameters and provenance). It is written to
    ``<out_dir>/<run_name>/<front_layer>-<end_layer>.pkl`` (with a CSV) when ``out_dir`` is given or
    ``save=True``; ``load_result`` and ``eval_stitch.py`` read it back. Example (random-initialised networks
    on random data, so the accuracies mean nothing; with trained networks and real data they do)::

        import torch, torchvision
        from src import stitch
        x, y = torch.randn(96, 3, 32, 32), torch.randint(0, 10, (96,))
        batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]
        a, b = torchvision.models.resnet18(num_classes=10), torchvision.models.resnet18(num_classes=10)
        result = stitch(a, b, "layer2", "layer2", train=batches, test=batches, epochs=1, batch_size=16)
        print(result["model_results"]["trans"]["acc"], result["stitch"]["kind"])
    """
    data = _data(train, test, val, options)
    save = options.get("out_dir") is not None if save is None else save
    job = _job(front, end, options, front_layer=front_layer, end_layer=end_layer)
    return stitch_job(job, list(argv) if argv else None, data, save)[1]


def stitch_matrix(front: Network, end: Network, front_layers: Sequence[str], end_layers: Sequence[str], train=None,
                  test=None, val=None, *, out_dir: Optional[str] = None, controls: bool = False, control_seed: int = 0,
                  depth_axes: bool = False, resume: bool = False, shard: Optional[Tuple[int, int]] = None,
                  argv: Optional[Sequence[str]] = None, **options) -> Dict[str, Any]:
    """Stitch every front layer into every end layer: the stitch matrix beside the CKA matrix of the same layers.

    ``front_layers`` / ``end_layers``: layer names, globs, ``re:REGEX``, ``blocks`` or (end only) ``input``.
    Returns the summary ``stitch_matrix.py`` pickles as ``matrix.pkl``: ``tables`` (``matrix``: stitched test
    accuracy, rows front layers, columns end layers; ``relative``, ``ps_inv``, ``cka``, and the controls'),
    ``spearman``, ``triangle``, timing, parameters. Given ``out_dir`` the run folder
    ``<out_dir>/<run_name>`` gets every file of ``stitch_matrix.py`` (cells, CSVs, ``matrix.png``,
    ``matrix.pkl``; ``resume=True`` finishes an interrupted one); without it the cells go to a temporary
    folder that is removed. ``controls=True`` adds a random-weight front into the end and the front into a
    random-weight end: a module is re-initialised from ``control_seed`` (a deep copy, each layer's
    ``reset_parameters``), a spec or zoo checkpoint is built afresh. Example::

        import torch, torchvision
        from src import stitch_matrix
        x, y = torch.randn(96, 3, 32, 32), torch.randint(0, 10, (96,))
        batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]
        a, b = torchvision.models.resnet18(num_classes=10), torchvision.models.resnet18(num_classes=10)
        summary = stitch_matrix(a, b, ["layer1", "layer2"], ["layer2", "layer3"], train=batches, test=batches,
                                epochs=1, batch_size=16, measure_samples=64)
        print(summary["tables"]["matrix"])
    """
    data = _data(train, test, val, options)
    with tempfile.TemporaryDirectory(prefix="stitch-matrix-") as scratch:
        if out_dir is None:
            options = {**options, "run_name": options.get("run_name") or "matrix"}
        job = _job(front, end, {**options, "out_dir": str(out_dir if out_dir is not None else scratch)})
        mjob = MatrixJob(job=job, front_layers=list(front_layers), end_layers=list(end_layers), controls=controls,
                         depth_axes=depth_axes, control_seed=control_seed, resume=resume, shard=shard)
        _, summary = run_matrix(mjob, list(argv) if argv else None, data=data)
    return summary
