"""Checkpoints: the state_dict plus the metadata needed to rebuild the model from the file alone.

A checkpoint written by this project is a dict::

    {"format": "drfrank-checkpoint", "version": 1,
     "state_dict": {...},
     "meta": {"model": "tiny10", "dataset": "fashion", "n_channels": 1, "n_classes": 10,
              "input_size": [32, 32], "init_seed": 0, "gradient_seed": 0, "epoch": 10,
              "iteration": 4290, "val_acc": 0.91, "val_loss": 0.25, "provenance": {...}}}

It holds only tensors and plain Python values, so ``torch.load(path, weights_only=True)`` reads it.
A bare state_dict (as the reference repository published) loads too, when the model name and
dataset are given, because nothing in such a file says what it is.

Before loading, a zip checkpoint (what ``torch.save`` writes) is checked against the CRC-32 that
the archive stores for every record, and for bytes appended after the archive's end, so a damaged
file is refused rather than loaded as weights with random bytes in them; the reference's older
non-zip files carry no checksum and load as they are. Weights holding NaN or infinity are refused
too (:func:`check_finite_weights`), naming the tensor. :func:`checkpoint_digest` is the SHA-256 that stitching results record of each checkpoint.
"""
import hashlib
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from src.data import dataset_info
from src.errors import UserError
from src.models.registry import canonical_model_name, create_model
from src.results_io import atomic_write

FORMAT = "drfrank-checkpoint"
VERSION = 1


def save_checkpoint(path, model: nn.Module, meta: Dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``meta`` atomically (CPU tensors, so it loads anywhere)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "state_dict": state, "meta": dict(meta)}
    return atomic_write(path, lambda f: torch.save(payload, f))


def read_checkpoint(path) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]]]:
    """``(state_dict, meta)``; ``meta`` is ``None`` for a bare state_dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; check the path (train_model.py writes snapshots/<Model>/<Dataset>/in<i>-gn<g>/<iteration>.pt)")
    if _file_kind(path) == "zip":
        verify_archive(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError, KeyError,
            IndexError, TypeError, AttributeError, AssertionError) as err:  # torch on a damaged or foreign file
        raise UserError(_load_error(path, err)) from err
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state, meta = obj["state_dict"], obj["meta"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, meta = obj, None
    else:
        raise UserError(f"{path} holds neither a checkpoint of this project nor a state_dict")
    check_finite_weights(state, path)
    return state, meta


def check_finite_weights(state: Dict[str, Any], path) -> None:
    """Refuse weights holding NaN or infinity (a diverged run, a damaged file) in one line naming the tensor.

    Every script that loads a checkpoint (eval_net, stitch_nets, compare_nets, compare_layers, and the
    checkpoints eval_stitch / compare_frank_m2 rebuild a stitch from) goes through here, so all refuse
    such weights alike, with the words model specs' weights files are refused with.
    """
    for key, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and (tensor.is_floating_point() or tensor.is_complex()) \
                and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise UserError(f"the weights in {path} are not finite: tensor {key!r} holds {bad} NaN or infinite "
                            f"value(s) of {tensor.numel()}; the training diverged or the file is damaged, use "
                            f"an earlier snapshot")


ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = b"\x80"  # the first byte of the reference's older (non-zip) torch.save files


def _file_kind(path: Path) -> str:
    """``zip`` or ``legacy`` (pickle); a file that is neither (a CSV renamed .pt) is refused in one line."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head.startswith(PICKLE_PROTO):
        return "legacy"
    if not head:
        raise UserError(f"{path} is not a readable PyTorch checkpoint (the file is empty)")
    what = "text" if all(32 <= b < 127 or b in b"\t\r\n" for b in head) else "data"
    preview = head[:24].decode("ascii", "replace")
    raise UserError(f"{path} is not a readable PyTorch checkpoint: it is {what} beginning {preview!r}, neither the zip "
                    f"archive nor the pickle that torch.save writes; check the path")


def verify_archive(path) -> None:
    """Refuse a zip checkpoint whose records do not match their stored CRC-32s (damaged after it was written).

    Records written without a CRC (``torch.serialization.set_crc32_options(False)``) store 0 and are skipped.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as err:
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({_first_line(err)})") from err
    try:
        with archive:
            trailing = _bytes_after_archive(archive.fp)
            if trailing:
                raise zipfile.BadZipFile(f"{trailing} byte{'s' if trailing != 1 else ''} follow the end of its zip "
                                         f"archive" if trailing > 0 else "its zip archive is cut short")
            for info in archive.infolist():
                if info.CRC == 0:
                    continue
                with archive.open(info) as record:  # reading to the end checks the CRC-32
                    while record.read(1 << 20):
                        pass
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        raise UserError(f"{path} is damaged ({_first_line(err)}): it changed after it was written; "
                        f"restore it from a copy or retrain the model") from err


_END_OF_ARCHIVE = b"PK\x05\x06"  # the end-of-central-directory record: 22 bytes and a comment, last in the file
_END_RECORD_SIZE = 22


def _bytes_after_archive(handle) -> int:
    """How many bytes follow the zip archive's last record (negative: its comment runs past the end of the file).

    zipfile finds that record by searching the file's last 64 KiB, as here, and ignores what comes after it;
    torch.save never writes anything there, so bytes after it mean the file was changed (appended to).
    """
    handle.seek(0, 2)
    size = handle.tell()
    handle.seek(max(0, size - _END_RECORD_SIZE - 0xFFFF - 1024))
    tail = handle.read()
    start = tail.rfind(_END_OF_ARCHIVE)
    if start < 0 or len(tail) - start < _END_RECORD_SIZE:
        return 0  # zipfile found its end record elsewhere (or failed already): nothing to add
    (comment_size,) = struct.unpack("<H", tail[start + 20:start + 22])
    return len(tail) - (start + _END_RECORD_SIZE + comment_size)


def _first_line(err: Exception) -> str:
    message = str(err).strip()
    return message.splitlines()[0] if message else type(err).__name__


def _load_error(path: Path, err: Exception) -> str:
    """The one line for a file torch.load refused, never repeating torch's advice to drop ``weights_only``."""
    message = str(err).strip()
    if isinstance(err, pickle.UnpicklingError) and "weights only" in message.lower():
        name = re.search(r"GLOBAL ([\w.]+)", message)
        if name:
            return (f"refusing to load {path}: it references {name.group(1)}, which no checkpoint of this project "
                    f"or state_dict contains; only open checkpoints from trusted sources")
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\s*\n|$)", message, re.S)
        return (f"{path} is not a readable PyTorch checkpoint: it is damaged or holds more than tensors and plain "
                f"values ({' '.join(detail.group(1).split()) if detail else 'weights-only unpickling failed'})")
    first_line = _first_line(err)
    if "weights_only" in first_line:
        first_line = type(err).__name__
    return f"{path} is not a readable PyTorch checkpoint ({first_line})"


def checkpoint_digest(path) -> str:
    """The SHA-256 of a checkpoint file, as hex (recorded in stitching results to detect a changed file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_unchanged(path, recorded: Optional[str], role: str, allow_changed: bool = False) -> None:
    """Refuse the ``role`` checkpoint at ``path`` when its SHA-256 is not the ``recorded`` one (a result's).

    Nothing is checked when no digest was recorded (older results) or ``allow_changed`` is set
    (``--allow-changed-models``).
    """
    if not recorded or allow_changed:
        return
    actual = checkpoint_digest(path)
    if actual != recorded:
        raise UserError(f"the {role} checkpoint {path} is not the file the stitch was trained with (SHA-256 "
                        f"{actual[:12]}..., the result recorded {recorded[:12]}...); give the original with "
                        f"--{role}-model PATH, or pass --allow-changed-models to use this one anyway")


def _meta_for_plain(model_name: Optional[str], dataset: Optional[str], path: Path) -> Dict[str, Any]:
    if not model_name or not dataset:
        raise UserError(f"{path} is a bare state_dict without metadata; give the model name and dataset "
                        f"(e.g. --model tiny10 --dataset cifar10) to load it")
    info = dataset_info(dataset)
    return {"model": canonical_model_name(model_name), "dataset": info.name, "n_channels": info.n_channels,
            "n_classes": info.n_classes, "input_size": list(info.input_size), "source": "bare state_dict"}


def load_checkpoint(path, model_name: Optional[str] = None, dataset: Optional[str] = None,
                    device="cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the model of a checkpoint, load its weights strictly and return ``(model, meta)``.

    The model is returned in ``eval()`` mode on ``device``. For a bare state_dict ``model_name``
    and ``dataset`` (the one it was trained on) are required; for a project checkpoint they are
    optional (a ``model_name`` that disagrees with the metadata is an error, ``dataset`` is ignored).
    No dataset is touched: channels, classes and input size come from the metadata.
    """
    path = Path(path)
    state, meta = read_checkpoint(path)
    if meta is None:
        meta = _meta_for_plain(model_name, dataset, path)
    elif model_name and canonical_model_name(model_name) != meta["model"]:
        raise UserError(f"{path} holds a {meta['model']} model, not {model_name}")
    model = create_model(meta["model"], n_classes=meta["n_classes"], n_channels=meta["n_channels"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise UserError(f"the weights in {path} do not fit a {meta['model']} for {meta['dataset']} "
                        f"({meta['n_channels']} channels, {meta['n_classes']} classes): {detail}") from err
    model.to(device).eval()
    return model, meta


def load_model(path, model_name: Optional[str] = None, dataset: Optional[str] = None, device="cpu") -> nn.Module:
    """:func:`load_checkpoint` without the metadata (the model's ``meta`` attribute holds it)."""
    model, meta = load_checkpoint(path, model_name, dataset, device)
    model.meta = meta
    return model
