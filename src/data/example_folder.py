"""A small generated folder of images in torchvision's ImageFolder layout, to try ``imagefolder:DIR`` without data
of one's own (``example_data.py``): each class a base colour plus uniform noise, so networks learn it in a few
steps and stitches between trained networks mean something."""
from pathlib import Path

import numpy as np
from PIL import Image

from src.errors import UserError


def write_example_folder(root, classes: int = 3, train: int = 60, test: int = 20, size: int = 32,
                         seed: int = 0) -> Path:
    """``root/{train,test}/class_K/NNN.png``: ``train`` and ``test`` RGB images of ``size`` x ``size`` per class."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} is not empty; choose a new folder for the example images")
    if not 2 <= classes <= 10 or min(train, test, size) < 1:
        raise UserError("the example folder needs 2 to 10 classes and at least one image of at least 1 pixel")
    rng = np.random.default_rng(seed)
    hues = np.linspace(0, 1, classes, endpoint=False)
    for split, n in (("train", train), ("test", test)):
        for c, hue in enumerate(hues):
            colour = 127 + 90 * np.cos(2 * np.pi * (hue + np.array([0, 1 / 3, 2 / 3])))
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(colour + rng.integers(-50, 51, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"{i:03d}.png")
    return root
