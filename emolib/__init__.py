"""emolib: the helper package of the executable paper.

One subpackage per concern; data flow one way, from the bottom of this list to the top (an
import-linter contract in the test suite, ``.importlinter``, keeps it so):

==========================  ===================================================================
``emolib.book``             the runner (papermill, then Jupyter Book), methods text from
                            manifests, the performance table, a Sphinx extension
``emolib.plots``            figure helpers returning figures
``emolib.datasets``         where each study's inputs come from: real files or generated twins
``emolib.decoding``         the cross-validated CNN and baselines, metrics, intervals, nulls
``emolib.bold5000``         the ResNet-50 vs BOLD5000 study: layer RDMs of the stimuli, readings
``emolib.synthetic``        generators of the real on-disk layouts with a planted truth
``emolib.forrest``          the StudyForrest study: timing, labels, data preparation, splits,
                            ROIs, the RSA patterns of the decoding
``emolib.io``               the real on-disk formats in and out (BIDS, annotations, BOLD5000)
``emolib.occlusion``        exact occlusion engines and the maps made with them (generic)
``emolib.embedding``        UMAP embeddings and their stability (generic)
``emolib.rsa``              RSA on rsatoolbox objects (generic)
``emolib.models``           networks, training, features, the loop over folds (generic)
``emolib.paths``,           where data live, manifests of derived data, the input-data error
``emolib.manifest``,
``emolib.errors``
==========================  ===================================================================

The generic engines (``models``, ``rsa``, ``embedding``, ``occlusion``) know nothing of either
study; the two studies (``forrest`` with ``decoding``, and ``bold5000``) do not import each
other. Every subpackage lists its public names in ``__all__``.
"""

__version__ = "0.1.0"
