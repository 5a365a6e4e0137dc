"""The data set options the scripts share: ``--val-size``'s default and help, ``--image-size``, ``--mean`` and
``--std`` for ``imagefolder:DIR`` (set into the dataset name once parsed), and what results record of a folder."""
import argparse
from typing import Any, Callable, Dict, Optional, Sequence

from src.data.imagefolder import is_imagefolder_name, parse_floats, parse_size, with_image_options
from src.data.registry import describe_dataset
from src.errors import UserError

#: The help text of ``--val-size`` wherever its default is :func:`default_val_size`'s.
VAL_SIZE_HELP = ("training samples held out for validation; default 5000, for an imagefolder:DIR without DIR/val "
                 "5000 or a tenth of its training images, whichever is smaller (an image folder's DIR/val, when "
                 "it exists, is the validation split and --val-size is ignored)")
#: The default of ``--val-size`` for the built-in datasets (the reference's).
BUILTIN_VAL_SIZE = 5000
_IMAGE_OPTIONS = ("image_size", "mean", "std")


def default_val_size(dataset: str) -> int:
    """The 'val' hold-out of ``dataset`` when ``--val-size`` is not given.

    Built-in datasets: 5000. ``imagefolder:DIR`` without ``DIR/val``: 5000 or a tenth of the
    images of ``DIR/train`` (at least 1), whichever is smaller, so that a small folder keeps most of its
    images for training; with ``DIR/val`` (which is then the 'val' split, whatever the size): the
    number of images in ``DIR/val``. Deterministic for a folder, so every script that holds out the
    default 'val' holds out the same images.
    """
    if not is_imagefolder_name(dataset):
        return BUILTIN_VAL_SIZE
    described = describe_dataset(dataset)
    samples = described["samples"]
    if described["val_folder"]:
        return int(samples["val"])
    return min(BUILTIN_VAL_SIZE, max(1, int(samples["train"]) // 10))


def dataset_provenance(dataset: Optional[str]) -> Dict[str, Any]:
    """``{"dataset_description": ...}`` (:func:`src.data.describe_dataset`) for an image folder, else ``{}``.

    Merged into checkpoints' metadata and results: a folder's name alone does not say which images
    it held (the record has the absolute path, size, mean/std and a digest of the file list); the
    built-in datasets' records stay as they were.
    """
    return {"dataset_description": describe_dataset(dataset)} if is_imagefolder_name(dataset) else {}


def add_image_options(parser: argparse.ArgumentParser, *dataset_dests: str) -> argparse.ArgumentParser:
    """Add ``--image-size``, ``--mean`` and ``--std`` to ``parser``; after parsing they are set in its dataset name(s).

    ``dataset_dests`` are the attributes holding dataset names (e.g. ``'dataset'``, ``'dataset2'``).
    Once ``parser`` has parsed a command line, the options given are written into each of them that
    names an ``imagefolder:DIR`` (:func:`src.data.with_image_options`) and removed from the
    namespace, so the parsed arguments hold exactly the dataset names the run uses (and fit a job
    dataclass such as ``StitchJob(**vars(args))``). Given without any image folder (a built-in name, or
    no dataset at all) they are a UserError.
    """
    group = parser.add_argument_group("image folder options (with an imagefolder:DIR dataset; override the "
                                      "size=, mean= and std= of its name)")
    group.add_argument("--image-size", type=parse_size, default=None, metavar="N|HxW",
                       help="resize every image to N x N or H x W pixels; default the size of the first training image")
    group.add_argument("--mean", type=lambda text: parse_floats(text, "--mean"), default=None, metavar="M[,M,M]",
                       help="per-channel mean of the pixels in [0, 1] to normalise with (one value for all channels, "
                            "or one per channel); default computed from DIR/train")
    group.add_argument("--std", type=lambda text: parse_floats(text, "--std"), default=None, metavar="S[,S,S]",
                       help="per-channel standard deviation to normalise with; default computed from DIR/train")
    flags = {action.dest: "/".join(action.option_strings) or action.dest
             for action in parser._actions if action.dest in dataset_dests}
    _after_parsing(parser, lambda namespace: _set_image_options(namespace, dataset_dests, flags))
    return parser


def _set_image_options(namespace: argparse.Namespace, dests: Sequence[str], flags: Dict[str, str]) -> None:
    options = {key: vars(namespace).pop(key, None) for key in _IMAGE_OPTIONS}
    if all(value is None for value in options.values()):
        return
    folders = [dest for dest in dests if is_imagefolder_name(getattr(namespace, dest, None))]
    if not folders:
        named = [getattr(namespace, dest) for dest in dests if getattr(namespace, dest, None) is not None]
        if named:
            with_image_options(named[0], **options)  # raises: a built-in dataset has a fixed size and normalisation
        where = " or ".join(flags.get(dest, dest) for dest in dests)
        raise UserError(f"--image-size, --mean and --std set the options of an imagefolder:DIR dataset; "
                        f"give one with {where} (the checkpoint's dataset is used as recorded)")
    for dest in folders:
        setattr(namespace, dest, with_image_options(getattr(namespace, dest), **options))


def _after_parsing(parser: argparse.ArgumentParser, finish: Callable[[argparse.Namespace], None]) -> None:
    """Call ``finish(namespace)`` whenever ``parser`` has parsed a command line (argparse has no such hook).

    ``parse_args`` goes through ``parse_known_args``, which is wrapped on this parser object only.
    """
    parse_known_args = parser.parse_known_args

    def parse_then_finish(args=None, namespace=None):
        parsed, extras = parse_known_args(args, namespace)
        finish(parsed)
        return parsed, extras

    parser.parse_known_args = parse_then_finish
