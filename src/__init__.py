"""Dr. Frankenstein toolkit: model stitching and representational similarity.

Subpackages, one concern each:

- ``src.data``        datasets held as tensors, batched augmentation, loaders
- ``src.models``      the model zoo (a registry of plain ``nn.Module``s) and checkpoints
- ``src.training``    training and evaluation loops
- ``src.features``    forward-hook feature extraction
- ``src.similarity``  similarity measures (CKA, CCA, ...) and layer x layer matrices
- ``src.stitching``   the Frankenstein (stitched) model, stitch layers, inits and masks

The top-level scripts (``train_model.py``, ``stitch_nets.py``, ...) only parse
arguments and call into these packages.
"""
