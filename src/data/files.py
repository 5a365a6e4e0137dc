"""Small helpers shared by the dataset readers: cache keys for files and torchvision downloads."""
from pathlib import Path
from typing import Callable, Tuple

from src.errors import UserError

FileKey = Tuple[str, int, int]


def file_key(path: Path) -> FileKey:
    """``(path, size, mtime_ns)``: a cache key that changes when the file is replaced or rewritten."""
    stat = Path(path).stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def torchvision_class(dataset) -> Callable:
    """A ``torchvision.datasets`` class given by name (torchvision imported only now), or ``dataset`` itself."""
    if not isinstance(dataset, str):
        return dataset
    import torchvision.datasets

    return getattr(torchvision.datasets, dataset)


def torchvision_download(dataset_class: Callable, root: Path, display_name: str) -> None:
    """Fetch a dataset into ``root`` with torchvision's ``download=True``.

    One construction downloads every split of the torchvision datasets used here. Network and
    checksum failures become a :class:`UserError`.
    """
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        dataset_class(root=str(root), train=True, download=True)
    except (OSError, RuntimeError) as err:
        raise UserError(
            f"downloading {display_name} into {root} failed ({err}); check the network connection "
            f"or place the files there by hand"
        ) from None
