"""emolib: the helper package of the executable paper.

One module per concern; data flows one way (see DESIGN.md):

- :mod:`emolib.paths`        where data lives
- :mod:`emolib.errors`       the exception raised on bad input
- :mod:`emolib.annotations`  Labs et al. (2015) emotion annotation files
- :mod:`emolib.timing`       movie time <-> (run, volume) of ds000113 ``ses-movie``
- :mod:`emolib.labels`       consensus labels, class selection and balancing
- :mod:`emolib.bids`         reading and validating the BIDS tree
- :mod:`emolib.synthetic`    generated data in the real formats, with a planted truth
- :mod:`emolib.dataprep`     sample table, volume cache and manifest
- :mod:`emolib.manifest`     manifests of derived data
- :mod:`emolib.runner`       papermill execution of the book's notebooks
"""

__version__ = "0.1.0"
