"""The run's parameters in ``<run>/run.json``: written once when a matrix run starts, compared on every rejoin.

``--resume``, every ``--shard`` of a job array and ``--collect`` read it: a run folder whose parameters
differ from this command's is refused (one line naming the first differing parameter), and ``--collect``
rebuilds the matrix job from it. The file is published with a hard link from a complete temporary
file, so concurrent shards agree on one version and nobody ever reads a half-written one.
"""
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict

from src.errors import UserError
from src.models.networks import network_path
from src.provenance import jsonable
from src.results_io import atomic_write

RUN_INFO = "run.json"
FORMAT = "drfrank-stitch-matrix-run"
VERSION = 1
#: StitchJob fields that say where or how a process runs, not what it computes (never compared).
LOCAL_FIELDS = ("device", "overwrite", "out_dir", "run_name", "front_model", "end_model", "front_layer", "end_layer",
                "download", "front_weights", "end_weights")
MATRIX_FIELDS = ("front_layers", "end_layers", "controls", "control_seed", "depth_axes")


def today_name(text: Any) -> Any:
    """A name written before the matrix called its networks front / end (sender / receiver) in today's words:
    ``sender_layers`` -> ``front_layers``, ``random_receiver`` -> ``random_end``, ``senders`` -> ``front``; other
    values as they are. Reads run.json and matrix.pkl files of earlier releases."""
    if not isinstance(text, str):
        return text
    for old, new in (("senders", "front"), ("receivers", "end"), ("sender", "front"), ("receiver", "end")):
        text = text.replace(old, new)
    return text


def publish_once(path: Path, write: Callable[[Path], Any]) -> bool:
    """Create ``path`` with ``write(tmp_path)`` unless it exists; True when this call created it.

    The content is written completely to a temporary name first and then hard-linked into place, which
    fails if ``path`` exists: of several processes racing, exactly one publishes, none overwrites.
    """
    path = Path(path)
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.publish{path.suffix}")
    try:
        write(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def run_parameters(mjob, base, digests: Dict[str, str], front_layers, end_layers) -> Dict[str, Any]:
    """What a run computes: the stitch options, the two checkpoints (absolute path and SHA-256) and the layers."""
    job = {k: v for k, v in jsonable(vars(base)).items() if k not in LOCAL_FIELDS}
    return {"front": network_path(base.front_model), "end": network_path(base.end_model),
            "front_sha256": digests.get("front"), "end_sha256": digests.get("end"),
            **{f"{role}_weights": str(Path(w).resolve()) for role, w in (("front", base.front_weights),
                                                                        ("end", base.end_weights)) if w},
            **{name: jsonable(getattr(mjob, name)) for name in MATRIX_FIELDS},
            "front_layer_names": list(front_layers), "end_layer_names": list(end_layers), "job": job}


def _write_json(content: Dict[str, Any]) -> Callable[[Path], Any]:
    text = json.dumps(content, indent=2, sort_keys=True) + "\n"
    return lambda tmp: atomic_write(tmp, lambda f: f.write(text), mode="w")


def read_run_info(folder: Path) -> Dict[str, Any]:
    path = Path(folder) / RUN_INFO
    if not path.is_file():
        raise UserError(f"{folder} holds no {RUN_INFO}: it is not a stitch_matrix.py run folder (or predates resumable "
                        f"runs); pass the folder a stitch_matrix.py run wrote")
    try:
        info = json.loads(path.read_text())
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise ValueError(f"format {info.get('format') if isinstance(info, dict) else None!r}")
        if not isinstance(info.get("parameters"), dict) or not isinstance(info["parameters"].get("job"), dict):
            raise ValueError("it holds no run parameters")
        info["parameters"] = {today_name(k): v for k, v in info["parameters"].items()}
        missing = [k for k in ("front", "end", *MATRIX_FIELDS) if k not in info["parameters"]]
        if missing:
            raise ValueError(f"its parameters lack {', '.join(missing)}")
        return info
    except (ValueError, OSError) as err:
        raise UserError(f"{path} is not a readable run description ({err}); remove the run folder and start again") from err


def first_difference(stored: Dict[str, Any], current: Dict[str, Any], prefix: str = ""):
    """``(name, stored value, current value)`` of the first parameter that differs, or None."""
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}", a, b
    return None


def publish_or_check(folder: Path, parameters: Dict[str, Any], argv=None) -> bool:
    """Write ``run.json`` if the folder has none (True), else refuse when its parameters differ from ``parameters``."""
    created = publish_once(Path(folder) / RUN_INFO,
                           _write_json({"format": FORMAT, "version": VERSION, "parameters": parameters,
                                        "argv": list(argv or [])}))
    if not created:
        check_same_run(folder, parameters)
    return created


def check_same_run(folder: Path, parameters: Dict[str, Any]) -> None:
    stored = read_run_info(folder)["parameters"]
    found = first_difference(stored, parameters)
    if found:
        name, was, now = found
        name = name[len("job."):] if name.startswith("job.") else name
        raise UserError(f"{folder} was run with different parameters ({name}: {was!r} there, {now!r} now); "
                        f"repeat that run's options to resume it, or choose another --run-name")
