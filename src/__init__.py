"""Dr. Frankenstein toolkit: model stitching and representational similarity.

The Python API (:mod:`src.api`), on any networks and data::

    from src import stitch, stitch_matrix, layer_similarity, load_result

Subpackages, one concern each, each importing only from those above it in this list's reverse:

- ``src.data``        datasets held as tensors, batched augmentation, loaders, the user's own data
- ``src.features``    forward-hook feature extraction
- ``src.models``      the model zoo (a registry of plain ``nn.Module``s), checkpoints, model specs
- ``src.similarity``  similarity measures (CKA, CCA, ...) and layer x layer matrices
- ``src.training``    training and evaluation loops
- ``src.compare``     what compare_nets.py and compare_layers.py do
- ``src.stitching``   one stitch: the Frankenstein (stitched) model, stitch kinds, inits, training, results
- ``src.matrix``      stitch matrices: every front layer into every end layer, at scale

Below them: errors, config, seeding, results_io, safe_pickle, provenance, validation, distributed,
allocator and cli. The top-level scripts (``train_model.py``, ``stitch_nets.py``, ...) only parse
arguments and call into these packages.
"""
from src.api import layer_similarity, load_result, stitch, stitch_matrix

__all__ = ["stitch", "stitch_matrix", "layer_similarity", "load_result"]
