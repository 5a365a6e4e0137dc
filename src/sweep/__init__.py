"""Running a stitch matrix at scale: across torchrun ranks (:mod:`.distributed`), as slices for job arrays
(:mod:`.shard`), resumable (:mod:`.runinfo`: the run's parameters in ``run.json``; :mod:`.finished`: which cells
are done) and assembled from cell files (:mod:`.collect`). The cells themselves are the cells of
:mod:`src.stitching.matrix`, run by the single-stitch steps of :mod:`src.stitching.run`.
"""
