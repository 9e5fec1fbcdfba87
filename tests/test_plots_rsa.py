"""The RSA figures: each returns a Figure of the right kind with the expected axes/traces."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from emolib import rsa  # noqa: E402
from emolib.bold5000 import LAYERS, ROIS, roi_system  # noqa: E402
from emolib.plots import rsa as plots  # noqa: E402
from emolib.synthetic.bold5000 import simulate_bold5000_rdms  # noqa: E402


@pytest.fixture(scope="module")
def results():
    sim = simulate_bold5000_rdms(16, seed=0, subjects=("CSI1", "CSI2"))
    rois = list(sim.rois.values())
    boot = rsa.bootstrap_compare(sim.layers, rois, n_bootstrap=20, seed=0)
    joint = rsa.compare_table(sim.layers, rsa.calc_joint_rdms(rois))
    return {
        "table": boot.to_frame(),
        "systems": boot.aggregate(roi_system).to_frame(),
        "joint": joint,
        "nc": rsa.calc_noise_ceiling(rois),
        "truth": sim.truth["best_layer"],
    }


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_heatmaps_one_axes_per_subject_plus_colorbar(results):
    fig = plots.plot_roi_layer_heatmaps(results["table"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 + 1
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == list(ROIS)
    assert fig.axes[0].get_title() == "CSI1"


def test_joint_heatmap(results):
    fig = plots.plot_joint_heatmap(results["joint"], method="corr")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[0].get_title() == "joint"
    with pytest.raises(ValueError, match="joint"):
        plots.plot_joint_heatmap(results["table"])


def test_system_bars_with_ci_and_noise_ceiling(results):
    fig = plots.plot_system_bars(results["systems"], noise_ceiling=results["nc"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    ax = fig.axes[0]
    assert len(ax.patches) == 3 * len(LAYERS)  # systems x layers bars
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Early", "Mid", "High"]
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 3  # bands
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == len(LAYERS) and all(c.errorbar is not None for c in bars)
    plain = plots.plot_system_bars(results["joint"])  # ROI rows are averaged into systems
    assert len(plain.axes) == 1 and len(plain.axes[0].patches) == 3 * len(LAYERS)


@pytest.mark.parametrize("kind", ["peak", "profile"])
def test_hierarchy_alignment(results, kind):
    fig = plots.plot_hierarchy_alignment(results["table"], kind=kind, truth=results["truth"])
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    n_lines = len(fig.axes[0].lines)
    assert n_lines == (1 if kind == "peak" else 3)


def test_radar_one_polar_axes_per_subject(results):
    fig = plots.plot_radar(results["table"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert all(ax.name == "polar" for ax in fig.axes)
    assert len(fig.axes[0].lines) == 3  # one per system


def test_surface_is_one_plotly_surface(results):
    fig = plots.plot_rsa_surface(results["table"])
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 1 and fig.data[0].type == "surface"
    assert np.asarray(fig.data[0].z).shape == (3, len(LAYERS))
    by_roi = plots.plot_rsa_surface(results["table"], groups="roi", subject="CSI2")
    assert np.asarray(by_roi.data[0].z).shape == (len(ROIS), len(LAYERS))


def test_several_methods_need_a_choice(results):
    two = pd.concat([results["joint"], results["joint"].assign(method="spearman")])
    with pytest.raises(ValueError, match="several methods"):
        plots.plot_roi_layer_heatmaps(two)
    assert len(plots.plot_roi_layer_heatmaps(two, method="spearman").axes) == 2


def test_system_bars_and_profiles_take_any_roi_groups(results):
    groups = {"early": ("EarlyVis",), "scene": ("PPA", "RSC")}
    fig = plots.plot_system_bars(results["table"], systems=groups, xlabel="ROI group")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["early", "scene"]
    assert ax.get_xlabel() == "ROI group"
    prof = plots.plot_hierarchy_alignment(results["table"], kind="profile", systems=groups,
                                          title="by group")
    assert prof.axes[0].get_title() == "by group" and len(prof.axes[0].lines) == 2


def test_mantel_histogram_marks_the_observed_value():
    rng = np.random.default_rng(0)
    a = rsa.calc_rdms_from_patterns({"x": rng.standard_normal((5, 9))}, list("ABCDE"))
    b = rsa.calc_rdms_from_patterns({"y": rng.standard_normal((5, 9))}, list("EDCBA"))
    result = rsa.calc_mantel(a, b)
    fig = plots.plot_mantel(result)
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and "120 permutations" in ax.get_title()
    assert ax.lines[0].get_xdata()[0] == pytest.approx(result.statistic)
    assert f"{result.p_value:.3g}" in ax.get_legend().get_texts()[0].get_text()


def test_group_contrast_one_line_per_subject(results):
    sim = simulate_bold5000_rdms(12, seed=1, subjects=("CSI1", "CSI2"))
    boot = rsa.bootstrap_compare(sim.layers, list(sim.rois.values()), n_bootstrap=20, seed=0)
    table = rsa.calc_group_contrast(boot.aggregate(roi_system), "High", "Early")
    fig = plots.plot_group_contrast(table)
    ax = fig.axes[0]
    assert len(ax.containers) == 2  # one errorbar container per subject
    assert [t.get_text() for t in ax.get_xticklabels()] == list(LAYERS)
    assert "High" in ax.get_ylabel() and "Early" in ax.get_ylabel()
