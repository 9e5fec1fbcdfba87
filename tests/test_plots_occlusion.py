"""The occlusion chapter's figures: each returns a Figure of the right kind with its parts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from emolib.occlusion import class_map_images, localisation_matrix, top_voxels  # noqa: E402
from emolib.plots import (  # noqa: E402
    plot_class_maps,
    plot_embedding,
    plot_embedding_seeds,
    plot_localisation,
    plot_top_voxels,
)
from emolib.synthetic.forrest import affine_for, brain_mask  # noqa: E402

CLASSES = ["ANGERRAGE", "FEAR", "LOVE"]
SHAPE = (12, 12, 8)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    brain = brain_mask(SHAPE)
    regions = {}
    for i, c in enumerate(CLASSES):
        r = np.zeros(SHAPE, bool)
        r[3 + 2 * i: 5 + 2 * i, 4:7, 3:5] = True
        regions[c] = r & brain
    cm = np.stack([regions[c] * 0.2 + 0.02 * rng.normal(size=SHAPE) for c in CLASSES])
    return {"maps": cm.astype(np.float32), "brain": brain, "regions": regions,
            "affine": affine_for(SHAPE)}


@pytest.mark.parametrize("kind", ["stat", "glass"])
def test_class_maps(maps, kind):
    images = class_map_images(maps["maps"], CLASSES, maps["affine"])
    fig = plot_class_maps(images, regions=maps["regions"] if kind == "stat" else None,
                          kind=kind, title="maps")
    assert isinstance(fig, Figure)
    titled = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert all(any(c in t for t in titled) for c in CLASSES)
    with pytest.raises(ValueError, match="kind"):
        plot_class_maps(images, kind="surface")


def test_top_voxels_view(maps):
    table = top_voxels(maps["maps"], CLASSES, 10, maps["brain"], maps["affine"])
    fig = plot_top_voxels(table, CLASSES, maps["brain"], maps["affine"], maps["regions"])
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names[0] == "brain outline"
    assert [n for n in names if n in CLASSES] == CLASSES
    assert sum(n.startswith("planted") for n in names) == 3
    assert sum(len(t.x) for t in fig.data if t.name in CLASSES) == 30


def test_localisation_heatmap(maps):
    matrix = localisation_matrix(maps["maps"], CLASSES, maps["regions"], maps["brain"])
    fig = plot_localisation(matrix)
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == CLASSES


def test_embedding_scatter_and_seed_panels():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(30, 2))
    labels = np.repeat(["FEAR", "LOVE", "ANGERRAGE"], 10)
    hover = pd.DataFrame({"subject": ["01"] * 30, "run": np.arange(30)})
    fig = plot_embedding(emb, labels, CLASSES, title="t", hover=hover)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == CLASSES and all(len(t.x) == 10 for t in fig.data)
    assert "run: 0" in fig.data[1].text[0] or "run: 10" in fig.data[1].text[0]
    with pytest.raises(ValueError, match="labels"):
        plot_embedding(emb, labels[:5])
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    fig = plot_embedding_seeds({0: emb, 1: 3 * emb @ rot, 2: emb[::-1]}, labels, CLASSES)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    # the rotated and scaled copy is drawn exactly on top of the reference after alignment
    a = fig.axes[0].collections[0].get_offsets()
    b = fig.axes[1].collections[0].get_offsets()
    np.testing.assert_allclose(a, b, atol=1e-9)


def test_temporal_profiles_are_scaled_to_their_peaks_and_marked():
    from emolib.plots import plot_temporal_profiles

    offsets = [-1, 0, 1, 2]
    fig = plot_temporal_profiles(offsets, {"net": np.array([0.1, 0.4, 0.2, 0.0])},
                                 planted=np.array([0.2, 0.5, 1.0, 0.5]))
    ax = fig.axes[0]
    curves = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == len(offsets)]
    assert [ln.get_label() for ln in curves] == ["planted response", "net"]
    np.testing.assert_allclose(curves[1].get_ydata(), [0.25, 1.0, 0.5, 0.0])
    peaks = [ln.get_xdata()[0] for ln in ax.get_lines() if len(ln.get_xdata()) == 1
             and ln.get_marker() == "v"]
    assert peaks == [1, 0]
    plt.close(fig)


def test_a_negative_peak_is_marked_where_the_curve_reaches_minus_one():
    from emolib.plots import plot_temporal_profiles

    fig = plot_temporal_profiles([0, 1, 2], {"a": np.array([0.2, -0.8, 0.4]),
                                             "flat": np.zeros(3)})
    marks = [(ln.get_xdata()[0], ln.get_ydata()[0], ln.get_marker())
             for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 1]
    assert marks == [(1, -1.0, "^")]  # nothing marked on a flat profile
    plt.close(fig)
