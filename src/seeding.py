"""Seeds that make runs repeatable."""
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) and ask cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def generator(seed: int, device: str = "cpu") -> torch.Generator:
    """A private random generator, so that one source of randomness does not shift another."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
