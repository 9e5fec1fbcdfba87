# ---
# jupyter:
#   emolib:
#     needs: [01_dataprep]  # the chapters whose outputs this one reads
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Space and time: decoding from windows of volumes
#
# The original project's title speaks of occlusion on *4D* convolutional networks of fMRI,
# yet it fed single 3D volumes. A labelled moment of the movie is reflected over several
# volumes: the hemodynamic response rises for about 5 s and falls over the next 10 to 15.
# This chapter decodes the portrayed emotion from a short **window** of consecutive volumes
# of one run around each labelled moment, with two networks: the original one with the
# window's volumes as its input channels (the cheapest way to give it time), and a
# factorised (2+1)D network (`SpaceTimeCNN`: the original's first 3D convolution on every
# volume, then a 1D convolution over the window at every voxel; torch has no Conv4d).
# Both are trained, evaluated and tested exactly as the single-volume network of the
# decoding chapter, on the same samples in the same leakage-free folds. Occlusion in
# space-time then asks *when* in the window the networks look, and on generated data,
# where the response was planted through a known HRF, whether that is when the response is.

# %% tags=["colab"]
# In Colab, install this project first (elsewhere this cell does nothing).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "emolib @ git+https://github.com/emolib/emolib"], check=True)

# %% tags=["parameters"]
from typing import Optional

profile: str = "demo"  # run profile; reads 01_dataprep of this profile, writes 09_spacetime
data_dir: Optional[str] = None  # data folder; None means $EMOLIB_DATA, else data/ in the repository
window: list = [-1, 0, 1, 2]  # consecutive volume offsets of a window, relative to the labelled volume (T is their number)
split: str = "run"  # run holds out whole runs; subject holds out one subject on one run
folds: Optional[list] = [2]  # fold numbers to run, 0-based; None runs all (the paper)
epochs: int = 8  # maximum epochs (the decoding chapter's recipe)
batch_size: int = 16  # the original used 16
lr: float = 0.001  # AdamW learning rate
weight_decay: float = 0.0001  # AdamW weight decay
t_max: int = 8  # period of the cosine learning-rate schedule
patience: int = 5  # early stopping on validation accuracy
augment_noise: float = 1.0  # SD of Gaussian noise added to every training batch (standardised units); 0: none
temporal_kernel: Optional[int] = None  # length of SpaceTimeCNN's temporal convolution in volumes; None: the whole window
leak_span_s: float = 20.0  # seconds of stimulus history one volume reflects; a window's span adds its length
n_permutations: int = 1000  # permutations of the time-aware null
ci_block_s: float = 60.0  # seconds of movie time left out together by the jackknife
occlusion_windows: int = 60  # held-out windows of the first fold occluded in time (per network)
device: str = "auto"  # auto uses a GPU when there is one, else the CPU
restart: bool = False  # delete earlier outputs instead of resuming from them
seed: int = 0  # seed of initialisation, batch order and dropout
progress: bool = True  # show progress bars

# %% tags=["remove-cell"]
from emolib.book.params import check_parameters

check_parameters("09_spacetime")  # a name papermill injected that is not declared above is an error

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from emolib.decoding import (
    decoding_samples,
    difference_jackknife,
    permutation_test,
    run_decoding,
    summarize_decoding,
)
from emolib.forrest import (
    as_offsets,
    assert_no_leak,
    gather_windows,
    load_prepared,
    make_splits,
    prepare_variant,
    removal_table,
    window_cache_bytes,
)
from emolib.models import TrainConfig, build_model, count_parameters, load_trained, resolve_device
from emolib.occlusion import spacetime_occlusion, temporal_profile
from emolib.paths import display_path, get_derived_dir
from emolib.plots import configure_plotly, plot_leakage, plot_null, plot_temporal_profiles
from emolib.synthetic import find_truth, planted_profile

configure_plotly()
window = list(as_offsets(window))  # checked: whole, consecutive volume offsets
source = load_prepared(get_derived_dir("01_dataprep", profile, data_dir, create=False))
out_root = get_derived_dir("09_spacetime", profile, data_dir)
# the data-preparation chapter's inputs and parameters, with every volume a window needs
prepared = prepare_variant(source, out_root / "prep", window=window, progress=progress)
samples, ids, rows, span = decoding_samples(prepared, window, span_s=leak_span_s)
tr = prepared.tr  # the data's repetition time
shape = prepared.volumes.shape[1:]
n_classes = len(prepared.classes)
display(Markdown(
    f"**Data.** {len(samples)} labelled moments of {samples['subject'].nunique()} subjects "
    f"with a whole window of {len(window)} volumes (offsets {window[0]:+d} to {window[-1]:+d}, "
    f"{len(window) * tr:g} s; {int(prepared.samples['selected'].sum()) - len(samples)} at a run's "
    f"edge dropped), grid {shape}, classes {', '.join(prepared.classes)}; "
    f"{len(prepared.samples)} volumes cached in `{display_path(prepared.folder, data_dir)}` "
    f"({len(source.samples)} in the data-preparation chapter's cache). "
    f"Training on `{resolve_device(device)}`."
))

# %% [markdown]
# ## Samples that are windows, and splits that know it
#
# A window never crosses a run boundary: a labelled volume whose window would is dropped.
# No window is stored: each is a row of indices into the volume cache, gathered batch by
# batch. A window reflects what was on screen from one response span before its first
# volume to the end of its last, so the leakage guards and the independent checker take each
# sample's movie time at the window's end and its span widened by the window's length. All
# three models below read the **same samples** in the **same folds**: the single-volume
# network reads the labelled volume of each window.

# %%
splits = make_splits(samples, split, span_s=span, seed=seed, folds=folds)
assert_no_leak(samples, splits, span_s=span)  # raises if any fold shares a moment
display(Markdown(f"Leakage span of a window: **{span:g} s** (a single volume's {leak_span_s:g} s "
                 f"plus {span - leak_span_s:g} s of window)."))
fold_table = removal_table(splits)  # what each network's decoding must report (checked below)
fold_table

# %% [markdown]
# ## Three networks, one recipe
#
# The single-volume network is the original `EmotionCNN`. With time as input channels only
# its first convolution grows (T input channels instead of one); the (2+1)D network adds a
# temporal convolution of 32 x 32 x k weights (k volumes long, the whole window by default)
# after the original's first convolution, which it applies to every volume of the window.

# %%
base = dict(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
            t_max=t_max, patience=patience, augment_noise=augment_noise, seed=seed,
            device=device)
networks = {
    "single volume": dict(config=TrainConfig(**base), window=None),
    "time as channels": dict(config=TrainConfig(**base), window=window),
    "space-time (2+1)D": dict(config=TrainConfig(**base, architecture="spacetime",
                                                 temporal_kernel=temporal_kernel),
                              window=window),
}
params = pd.DataFrame([{
    "network": name,
    "input": "(1, X, Y, Z)" if kw["window"] is None else f"({len(window)}, X, Y, Z)",
    "parameters": count_parameters(build_model(
        kw["config"].architecture, n_classes, shape,
        None if kw["window"] is None else len(window), kw["config"].temporal_kernel)),
} for name, kw in networks.items()]).set_index("network")
params

# %% [markdown]
# ## Training and held-out predictions
#
# Each network is cross-validated with the decoding chapter's training (inner validation run
# for early stopping, checkpoints every epoch, resumed when interrupted), and beside each the
# regularised linear model (on all of a window's voxels for the window models) and chance in
# the same folds.

# %%
results, seconds = {}, {}
for name, kw in networks.items():
    folder = out_root / name.split()[0].replace("-", "")
    t0 = time.perf_counter()
    results[name] = run_decoding(prepared, folder, split, kw["config"], folds=folds,
                                 span_s=leak_span_s, progress=progress, restart=restart,
                                 window=kw["window"], sample_window=window,
                                 baselines=name != "space-time (2+1)D")
    seconds[name] = time.perf_counter() - t0
reference = results["single volume"].predictions.query("model == 'cnn'")
for name, res in results.items():  # the same test samples, in the same folds, for every model
    got = res.predictions.query("model == 'cnn'")
    assert got[["fold", "sample", "y"]].reset_index(drop=True).equals(
        reference[["fold", "sample", "y"]].reset_index(drop=True)), name
    pd.testing.assert_frame_equal(res.folds, fold_table, check_dtype=False, obj=name)

# %% [markdown]
# ## Single volume against window
#
# Fold-averaged macro AUCs with 95 % delete-one-block jackknife intervals (blocks of
# `ci_block_s` seconds of movie time, calibrated in the honesty chapter). The linear model and
# chance are shown for the samples each network reads (the space-time network's are the
# window's, the same as time as channels').

# %%
tables = []
for name, res in results.items():
    table = summarize_decoding(res, seed=seed, block_s=ci_block_s).assign(samples=name)
    tables.append(table)
summary = pd.concat(tables, ignore_index=True)
bars = summary.assign(split=summary["samples"], estimate=summary["macro_auc"],
                      low=summary["auc_low"], high=summary["auc_high"])
fig = plot_leakage(bars[["split", "model", "estimate", "low", "high"]], original=None,
                   title=f"The same samples, one volume or {len(window)}")
plt.show()
summary[["samples", "model", "macro_auc", "auc_low", "auc_high", "balanced_accuracy"]].round(3)

# %% [markdown]
# **Is the window model better?** The two AUCs are measured on the same moments, so their
# difference is jackknifed jointly (each block of movie time left out of both).

# %%
single = results["single volume"].probs("cnn")
rows_diff = []
for name in ("time as channels", "space-time (2+1)D"):
    y, p, meta = results[name].probs("cnn")
    diff = difference_jackknife(
        (y, p, meta["movie_time"].to_numpy(), meta["fold"].to_numpy()),
        (single[0], single[1], single[2]["movie_time"].to_numpy(),
         single[2]["fold"].to_numpy()), n_classes, block_s=ci_block_s)
    rows_diff.append({"window model": name, "AUC minus single volume": diff["estimate"],
                      "low": diff["low"], "high": diff["high"], "dof": diff["dof"]})
pd.DataFrame(rows_diff).round(3)

# %% [markdown]
# ## The null, at chance
#
# The time-aware permutation null of the decoding chapter (labels shifted cyclically along
# movie time within each test fold), for each network's held-out predictions.

# %%
nulls = {}
for name, res in results.items():
    y, p, meta = res.probs("cnn")
    nulls[name] = permutation_test(y, p, meta["movie_time"].to_numpy(), meta["fold"].to_numpy(),
                                   n_classes, n_permutations=n_permutations, seed=seed)
    fig = plot_null(nulls[name].null, nulls[name].observed, nulls[name].p_value,
                    title=f"{name}: time-aware permutation null")
    plt.show()
pd.DataFrame([{"network": n, "observed": r.observed, "null mean": r.null.mean(),
               "null sd": r.null.std(), "p": r.p_value} for n, r in nulls.items()]).round(4)

# %% [markdown]
# ## When does the network look? Occlusion in space-time
#
# Each volume of a held-out window is blanked in turn (set to 0, the mean after z-scoring)
# and the drop of the true class's probability is recorded: per class, a temporal importance
# profile over the window's offsets. (Whole volumes: smaller space-time boxes give maps per
# offset too, at a cost of one forward pass per box; the occlusion module does both, equal to
# Captum's `Occlusion` on 4-D input.) On generated data the planted response of each class is
# known at every volume (the generator convolves the labelled moments with the Glover HRF),
# and so is the contrast a window of that class holds at each offset: its own class's
# response minus the other classes'. The networks should look where that contrast peaks,
# within the resolution of one TR (a test checks this on windows with a sharper planted
# response, `tests/test_window_decoding.py`).

# %%
fold0 = str(results["single volume"].folds["fold"].iloc[0])
test = reference[reference["fold"] == fold0].head(occlusion_windows)
position = pd.Series(np.arange(len(ids)), index=ids)
test_rows = rows[position.loc[test["sample"].to_numpy()].to_numpy()]
x = gather_windows(prepared.volumes, test_rows)
targets = test["y"].to_numpy()
profiles, occlusion_s = {}, {}
for name in ("time as channels", "space-time (2+1)D"):
    model = load_trained(results[name].fold_model_path(fold0))
    t0 = time.perf_counter()
    maps = spacetime_occlusion(model, x, targets, patch=(1, *shape), progress=progress)
    occlusion_s[name] = time.perf_counter() - t0
    profiles[name] = np.nanmean(temporal_profile(maps, targets, n_classes), axis=0)
truth = find_truth(prepared.manifest["parameters"]["bids_dir"], shape)
planted = None
if truth is not None:
    planted = np.nanmean(planted_profile(truth, prepared.samples, test_rows, targets,
                                         prepared.classes), axis=0)
fig = plot_temporal_profiles(window, profiles, planted, tr=tr,
                             title=f"When the networks look ({len(test)} held-out windows)")
plt.show()
peaks = {name: window[int(np.nanargmax(prof))] for name, prof in profiles.items()}
display(Markdown(
    "Peak of the temporal importance: "
    + ", ".join(f"{n} at offset **{o:+d}**" for n, o in peaks.items())
    + (f"; planted contrast peaks at offset **{window[int(np.nanargmax(planted))]:+d}** "
       f"(the labelled volume is {prepared.manifest['parameters']['hrf_lag']:g} s after "
       "its moment; the Glover response to a 2-s step peaks 6-7 s after it)."
       if planted is not None else "; real data: no planted response to compare with.")))

# %% [markdown]
# ## What it costs
#
# Training time per network on this machine (all folds run here; a reused decoding costs
# almost nothing), occlusion time for the windows above, and the disk a window costs. A
# window's volumes are the labelled volume's neighbours: preparation caches each of them
# once (neighbouring windows share volumes). At the real size (80 x 80 x 35 float32, 15
# subjects) the cost scales with the volumes cached per subject, estimated from this cache
# (the same movie moments are selected in every subject).

# %%
status = {name: ", ".join(sorted(set(res.reuse["status"]))) if res.reuse is not None else ""
          for name, res in results.items()}
cost = params.assign(**{
    "training s": pd.Series(seconds), "folds": pd.Series(status),
    "occlusion s": pd.Series(occlusion_s)}).round(1)
display(cost)
per_subject = len(prepared.samples) / prepared.samples["subject"].nunique()
single_per_subject = len(source.samples) / source.samples["subject"].nunique()
real = pd.DataFrame([
    {"cache": "single volumes (this data)", "volumes per subject": single_per_subject},
    {"cache": f"windows of {len(window)} (this data)", "volumes per subject": per_subject},
    {"cache": "every volume (keep='all')", "volumes per subject": 3599},
]).assign(**{"GB at 15 real subjects": lambda t: [
    window_cache_bytes(int(round(v * 15))) / 1e9 for v in t["volumes per subject"]]})
real.round(2)
