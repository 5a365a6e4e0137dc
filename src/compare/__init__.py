"""What ``compare_nets.py`` and ``compare_layers.py`` do, callable from Python.

- :func:`src.compare.nets.compare_nets`: every asked-for measure between one layer of each of
  two checkpoints (a table of measure -> value).
- :func:`src.compare.layerwise.compare_layers`: the layer x layer matrix of two checkpoints on one
  or two datasets, written as CSV, NPZ, pickle and heatmap PNG.

For models and loaders already in memory use :func:`src.similarity.layer_similarity`.
"""
