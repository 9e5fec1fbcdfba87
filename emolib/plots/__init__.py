"""Figure helpers. Each returns a matplotlib or plotly Figure and never calls ``show``.

- :mod:`emolib.plots.labels`  labels over the movie, class counts, data-prep views
- :mod:`emolib.plots.decoding` learning curves, ROC per fold, confusion, null, leakage
- :mod:`emolib.plots.rsa`     layer x ROI heatmaps, system bars, hierarchy, radar, 3D surface
- :func:`configure_plotly`    plotly output that renders offline in the book and in notebooks
"""

from __future__ import annotations

import sys

import plotly.io as pio
from plotly.io._base_renderers import MimetypeRenderer

RENDERER = "emolib"


class OfflineHtmlRenderer(MimetypeRenderer):
    """Plotly renderer for the book: a ``text/html`` div without plotly.js or MathJax.

    The book loads ``plotly.min.js`` once from ``_static`` (see ``_config.yml``) on the pages
    that draw a figure (:mod:`emolib.book.sphinx_dedupe`), so no page asks a CDN for anything.
    The bundle also carries the plotly JSON mime type, which JupyterLab and VS Code render
    natively; Jupyter Book keeps the ``text/html`` part.
    """

    def to_mimebundle(self, fig_dict):
        import json

        from plotly.io import to_html, to_json

        html = to_html(
            fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
            default_width="100%", default_height=480, validate=False,
        )
        return {
            "application/vnd.plotly.v1+json": json.loads(to_json(fig_dict, validate=False)),
            "text/html": html,
        }


def configure_plotly() -> str:
    """Make plotly figures render offline wherever the notebook runs.

    In Colab the ``colab`` renderer is used (it loads plotly.js there); everywhere else the
    :class:`OfflineHtmlRenderer`. Returns the name of the renderer set as default.
    """
    if "google.colab" in sys.modules:
        pio.renderers.default = "colab"
    else:
        pio.renderers[RENDERER] = OfflineHtmlRenderer()
        pio.renderers.default = RENDERER
    return pio.renderers.default


from emolib.plots.decoding import (  # noqa: E402
    plot_calibration,
    plot_confusion,
    plot_leakage,
    plot_learning_curves,
    plot_null,
    plot_roc_by_fold,
)
from emolib.plots.labels import (  # noqa: E402
    class_palette,
    plot_class_counts,
    plot_label_status,
    plot_label_timeline,
    plot_labels_by_run,
    plot_mean_epis,
)
from emolib.plots.occlusion import (  # noqa: E402
    plot_class_maps,
    plot_embedding,
    plot_embedding_seeds,
    plot_localisation,
    plot_temporal_profiles,
    plot_top_voxels,
)
from emolib.plots.rsa import (  # noqa: E402
    plot_group_contrast,
    plot_hierarchy_alignment,
    plot_joint_heatmap,
    plot_mantel,
    plot_radar,
    plot_roi_layer_heatmaps,
    plot_rsa_surface,
    plot_system_bars,
)

__all__ = [
    "plot_group_contrast", "plot_mantel",
    "OfflineHtmlRenderer", "class_palette", "configure_plotly", "plot_class_counts",
    "plot_calibration", "plot_confusion", "plot_leakage", "plot_learning_curves", "plot_null",
    "plot_roc_by_fold",
    "plot_hierarchy_alignment", "plot_joint_heatmap", "plot_label_status",
    "plot_label_timeline", "plot_labels_by_run", "plot_mean_epis", "plot_radar",
    "plot_roi_layer_heatmaps", "plot_rsa_surface", "plot_system_bars",
    "plot_class_maps", "plot_embedding", "plot_embedding_seeds", "plot_localisation",
    "plot_temporal_profiles", "plot_top_voxels",
]
