# ---
# jupyter:
#   emolib:
#     needs: [01_dataprep, 02_training]  # the chapters whose outputs this one reads
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
# # The CNN against the brain
#
# Does the emotion network represent the volumes the way brain regions do? Representational
# similarity analysis (RSA) answers without asking the two to share units: each side is
# summarised by a representational dissimilarity matrix (RDM), the correlation distance
# ($1 - r$) between every pair of patterns, and two RDMs are compared by the Pearson
# correlation of their entries.
#
# Here, unlike in the BOLD5000 chapter, the network's input *is* the brain: it reads one BOLD
# volume and its layers transform it. So both RDMs come from the same held-out volumes, the
# brain RDM from the voxels of a region, the network RDM from a layer's activations to the
# whole volume. Every volume is passed through the network of its own test fold (the one
# trained without it, chapter 02), so nothing here was seen in training.
#
# The chapter first redoes the original analysis (5 x 5 class-mean RDMs of the volumes and of
# the 256-d pooled features, compared by Pearson r) and adds the Mantel permutation test it
# lacked. It then compares every layer (`conv1`, `block1` .. `block4`, `pool`) with every
# region of interest, per subject and jointly, with bootstrap intervals, noise ceilings and
# FDR-controlled tests. On generated data the ROIs are the planted emotion regions and a
# parcellation of the rest of the brain into control parcels, and the chapter asks whether the
# planted regions relate to the network more than arbitrary parcels do. On real data, give a
# labels image on the data grid as `atlas` (without one the brain mask is parcellated).

# %% tags=["colab"]
# In Colab, install this project first (elsewhere this cell does nothing).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "emolib @ git+https://github.com/emolib/emolib"], check=True)

# %% tags=["parameters"]
from typing import Optional

profile: str = "demo"  # run profile; reads 01_dataprep and 02_training, writes 04_rsa
data_dir: Optional[str] = None  # data folder; None means $EMOLIB_DATA, else data/ in the repository
split: str = "run"  # which split of chapter 02 to read; run is the leakage-free one
layers: list = ["conv1", "block1", "block2", "block3", "block4", "pool"]  # CNN layers to compare
patterns: str = "moment"  # moment averages per label and time bin; class averages per class
moment_s: float = 10.0  # width in seconds of the movie-time bins of moment patterns
group_s: Optional[float] = 60.0  # movie-time blocks resampled together by the bootstrap (None: single patterns)
within_fold: bool = True  # compare only pattern pairs of one test fold, seen by one network
dissimilarity: str = "correlation"  # RDM entries: correlation is 1 - Pearson r as in the original
center: bool = True  # centre each voxel and unit across the patterns of its fold before the RDMs
atlas: Optional[str] = None  # labels NIfTI on the data grid (real data); None uses planted regions
atlas_names: Optional[str] = None  # TSV with columns index and name naming the atlas labels
n_parcels: int = 8  # parcels of the brain mask: controls on generated data, ROIs without an atlas
reduce: Optional[int] = None  # pool each layer to at most this size per axis; None keeps all units
method: str = "corr"  # comparison of RDM vectors: Pearson r, as in the original
n_bootstrap: int = 1000  # bootstrap samples over patterns, for intervals and tests
test_type: str = "t-test"  # t-test or bootstrap, the two tests of rsatoolbox
alpha: float = 0.05  # false discovery rate of the tests (Benjamini-Hochberg)
device: str = "auto"  # auto runs the networks on a GPU when there is one, else the CPU
seed: int = 0  # seed of the parcellation and of the bootstrap
progress: bool = True  # common profile parameter; this chapter has no long loop to show

# %% tags=["remove-cell"]
from emolib.book.params import check_parameters

check_parameters("04_rsa")  # a name papermill injected that is not declared above is an error

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from nilearn.plotting import plot_roi
from rsatoolbox.vis import show_rdm

from emolib import rsa
from emolib.bold5000 import find_best_layers
from emolib.decoding import load_decoding
from emolib.forrest import (
    add_pattern_groups,
    average_over_blocks,
    calc_brain_rdms,
    calc_network_rdms,
    define_patterns,
    load_prepared,
    make_rois,
)
from emolib.manifest import sha256_file, start_stage, write_manifest
from emolib.models import load_trained, resolve_device
from emolib.paths import display_path, get_derived_dir
from emolib.plots import (
    configure_plotly,
    plot_hierarchy_alignment,
    plot_joint_heatmap,
    plot_roi_layer_heatmaps,
    plot_system_bars,
)
from emolib.plots.rsa import plot_group_contrast, plot_mantel
from emolib.synthetic import find_truth

configure_plotly()
pd.set_option("display.max_columns", 20)
prepared = load_prepared(get_derived_dir("01_dataprep", profile, data_dir, create=False))
result = load_decoding(get_derived_dir("02_training", profile, data_dir, create=False) / split)
truth = find_truth(prepared.manifest["parameters"]["bids_dir"])
run_on = resolve_device(device)
models = {fold: load_trained(result.fold_model_path(fold), str(run_on))
          for fold in pd.unique(result.predictions["fold"])}
held_out = result.predictions[result.predictions["model"] == "cnn"]
display(Markdown(
    f"**Inputs.** {len(held_out)} held-out volumes of {held_out['subject'].nunique()} subjects "
    f"in {len(models)} test folds (`{split}` split, `{display_path(result.folder, data_dir)}`), each with the network "
    f"of its fold; grid {prepared.volumes.shape[1:]}; classes {', '.join(result.classes)}. "
    + ("**Generated data**: the planted regions are known (`truth/` beside the dataset)."
       if truth else "**Real data**: no planted truth.")
    + f" Networks run on `{run_on}`."
))

# %% [markdown]
# ## The original analysis: class-mean RDMs and a Mantel test
#
# The original averaged the volumes of each class and the network's 256-d pooled features
# (the input of the read-out) of each class, built one 5 x 5 RDM from each, and correlated
# their 10 entries. It had one network; here every test fold has its own, whose units do not
# correspond to another fold's, so class means of features must never mix folds. Each fold's
# network gives the 5 x 5 RDM of its own held-out class means (all subjects together), the
# fMRI volumes likewise, and the RDMs, which are comparable across networks where units are
# not, are averaged over folds. With five classes, a Mantel test can be exact: the rows and columns of one RDM
# are permuted jointly in all 5! = 120 ways, and the p-value is the share of permutations
# that match at least as well (so it cannot be below 1/120 = 0.008). Ten entries are very
# few: even a perfect correspondence could only reach p = 1/120. In the RDM images the colour
# is the correlation distance $1 - r$ (rsatoolbox names the scale after the dissimilarity);
# the class means of whole volumes differ very little, because the same anatomy dominates
# every volume.

# %%
by_class = define_patterns(held_out, kind="class", within_fold=True, pool_subjects=True)
class_brain = average_over_blocks(
    calc_brain_rdms(prepared.volumes, by_class, {"brain": prepared.mask}, center=False,
                    within_blocks=False)[0], by="roi")
class_net = average_over_blocks(
    calc_network_rdms(prepared.volumes, by_class, models, list(dict.fromkeys([*layers, "pool"])),
                      center=False, within_blocks=False, reduce=reduce or "flatten")[0],
    by="layer")
pooled = class_net.subset("layer", "pool")
mantel = rsa.calc_mantel(pooled, class_brain, method)
shown = rsa.concat_rdms([class_brain, pooled])
shown.rdm_descriptors["name"] = ["fMRI volumes", "CNN pooled features"]
fig, _, _ = show_rdm(shown, pattern_descriptor="id", rdm_descriptor="name",
                     show_colorbar="panel", figsize=(8, 3.6))
plt.show()
fig = plot_mantel(mantel, title="Original analysis: CNN pool vs fMRI class-mean RDMs")
plt.show()
display(Markdown(
    f"**Original analysis.** Pearson r between the two class-mean RDMs: "
    f"**{mantel.statistic:.3f}**, exact Mantel p = **{mantel.p_value:.3g}** "
    f"({len(mantel.null_distribution)} permutations, one-sided)."
))

# %% [markdown]
# The same test for every layer (class means of each layer's activations, all units):

# %%
per_layer = {layer: rsa.calc_mantel(class_net.subset("layer", layer), class_brain, method)
             for layer in class_net.rdm_descriptors["layer"]}
pd.DataFrame({"r": {k: m.statistic for k, m in per_layer.items()},
              "mantel_p": {k: m.p_value for k, m in per_layer.items()}}).round(4)

# %% [markdown]
# ## Regions of interest
#
# On generated data the ROIs are the planted regions (one per emotion, where that emotion
# drives the BOLD signal) and control parcels: the rest of the brain mask, planted voxels
# removed, split into spatially compact parcels by k-means on voxel coordinates. On real data
# they are the labels of `atlas`, or parcels of the data mask.

# %%
rois = make_rois(prepared.mask, prepared.affine, truth=truth, atlas=atlas,
                 atlas_names=atlas_names, n_parcels=n_parcels, seed=seed)
groups = rois.groups()
first_subject = sorted(held_out["subject"].unique())[0]
plot_roi(rois.to_image(prepared.affine), bg_img=prepared.mean_image(first_subject),
         display_mode="z", cut_coords=5, cmap="tab20", colorbar=False,
         title=f"ROIs on the mean EPI of sub-{first_subject}")
plt.show()
rois.table

# %% [markdown]
# ## Layer x ROI: patterns and RDMs
#
# Class means give 5 patterns and 10 pairs, far too few for bootstrap intervals or noise
# ceilings. The layer x ROI analysis therefore uses *movie moments*: for each subject, the
# held-out volumes are averaged per label and bin of movie time (`moment_s` seconds), so that
# the same moment has the same id in every subject and subjects are aligned by id. Two more
# choices matter:
#
# - **Centring.** Every voxel (and every unit) is centred across the subject's patterns of
#   the same fold. Without it, each ROI pattern is dominated by the subject's anatomy,
#   identical in every volume, and the correlation distance is blind to the planted
#   responses, which scale the baseline intensity of a region; likewise each network's mean
#   activation would dominate its layers' RDMs.
# - **Pairs within folds.** Each test fold has its own network, and unit 17 of one network
#   has nothing to do with unit 17 of another; a distance between patterns of two folds would
#   compare different networks. With `within_fold`, only pairs of the same fold enter the
#   RDMs (the others are blank, as rsatoolbox treats NaN entries), for the network and for the
#   brain alike.

# %%
moments = define_patterns(held_out, kind=patterns, moment_s=moment_s,
                              within_fold=within_fold, group_s=group_s)
brain = calc_brain_rdms(prepared.volumes, moments, rois.masks, center=center,
                            within_blocks=within_fold, method=dissimilarity)
network = calc_network_rdms(prepared.volumes, moments, models, layers, center=center,
                                within_blocks=within_fold, reduce=reduce or "flatten",
                                method=dissimilarity)
joint_brain = rsa.calc_joint_rdms(brain)
joint_network = rsa.calc_joint_rdms(network, by="layer")
if group_s is not None:  # the joint RDMs keep only the ids: give them the blocks again
    joint_network = add_pattern_groups(joint_network, moments)
pairs_used = int((~pd.isna(brain[0].dissimilarities[0])).sum())
moments.groupby("subject").agg(volumes=("sample", "size"), patterns=("id", "nunique"),
                               folds=("block", "nunique")).assign(pairs_compared=pairs_used)

# %% [markdown]
# Every subject's layer RDMs are compared with the same subject's ROI RDMs (the network saw
# that subject's volumes); the *joint* subject averages the subjects' RDM vectors (aligned by
# id) on both sides before comparing. Rows are ROIs (planted regions first), columns layers
# from shallow to deep.

# %%
table = pd.concat(
    [rsa.compare_table(net, br, method) for net, br in
     zip([*network, joint_network], [*brain, joint_brain], strict=True)],
    ignore_index=True,
)
fig = plot_roi_layer_heatmaps(table[table["subject"] != "joint"], rois=rois.names,
                              layers=layers, title=f"RDM similarity ({method}) per subject")
plt.show()
fig = plot_joint_heatmap(table, rois=rois.names, layers=layers,
                         title=f"Joint RSA ({method}): mean of the subjects' RDMs")
plt.show()

# %% [markdown]
# ## Uncertainty: bootstrap, noise ceilings, tests
#
# Intervals come from a bootstrap over patterns (rsatoolbox's `eval_bootstrap_pattern`), the
# same draw for every layer, ROI and subject. The patterns are movie moments, and neighbouring
# moments are not independent: the consensus labels come in episodes (in the generated
# annotations a median of 26 s, 90 % of them at most 38 s; two moments 60 s apart share a
# label no more often than chance) and the BOLD signal and the networks' outputs drift slowly.
# Resampling single moments would treat them as independent and give intervals that are too
# narrow. So the bootstrap resamples *blocks* of `group_s` seconds of movie time within each
# fold (rsatoolbox's resampling by a pattern descriptor): a drawn block brings all its moments,
# for every subject, and the t-tests count the blocks, not the moments, as the independent
# units (n_blocks - 1 degrees of freedom). In simulation (`benchmarks/bench_rsa_coverage.py`:
# 1000 datasets of 120 moments whose patterns follow an AR(1) process, phi 0.7) the 95 %
# percentile intervals contained the true similarity in 89 % of datasets with single moments
# and 91-92 % with blocks; the t intervals of the tests in 90 % with single moments and 94 %
# with 24 blocks (97 % with 8). With stronger dependence (phi 0.8, 240 moments) single moments
# gave 85-86 %, blocks 90 % (percentile) and 92-95 % (t). So the intervals shown below are
# the **t intervals** of the tests (bootstrap mean plus or minus the corrected bootstrap
# standard error times Student's t on n_blocks - 1 degrees of freedom, rsatoolbox's default
# `Result.get_ci`), over blocks. Each ROI's noise
# ceiling says how similar the subjects' RDMs are to each other (upper bound: to the mean of
# all subjects; lower bound: to the mean of the others): what any model could reach given
# how much the subjects disagree. Every layer x ROI similarity is tested against zero
# (one-sided t-test on the bootstrap, FDR over each subject's comparisons).

# %%
boot_groups = "group" if group_s is not None else None
boot = rsa.concat_bootstraps([
    rsa.bootstrap_compare(net, br, method, n_bootstrap, seed=seed, pattern_groups=boot_groups)
    for net, br in zip([*network, joint_network], [*brain, joint_brain], strict=True)
])
zero = rsa.calc_zero_tests(boot, test_type=test_type, alpha=alpha, fdr_by="subject")
layer_pairs = rsa.calc_pair_tests(boot, test_type=test_type, alpha=alpha, fdr_by="subject")
ceiling = rsa.calc_noise_ceiling(brain, method)
results = rsa.collect_results(table, zero, ceiling)
display(Markdown(
    f"**Bootstrap.** {n_bootstrap} draws of "
    + (f"{boot.n_units} blocks of {group_s:g} s of movie time" if group_s is not None
       else f"{boot.n_units} single patterns")
    + f" ({boot.n_patterns} patterns); t-tests with {boot.n_units - 1} degrees of freedom."
))
ceiling.set_index("roi")[["lower", "upper"]].T.round(3)

# %% [markdown]
# The bars average the ROIs of each kind (planted regions, control parcels or atlas labels),
# one bar per layer with the 95 % t interval of the kind's mean (averaged inside every
# bootstrap sample), and the kind's mean noise ceiling as a grey band.

# %%
kinds = boot.aggregate(rois.kinds())
kind_frame = kinds.to_frame()
fig = plot_system_bars(kind_frame[kind_frame["subject"] != "joint"], noise_ceiling=ceiling,
                       systems=groups, layers=layers, xlabel="ROI kind")
plt.show()
results.groupby("subject", sort=False).agg(
    significant=("significant", "sum"), tests=("significant", "size"), largest_q=("q", "max"))

# %% [markdown]
# Which layer resembles each ROI most, in the joint analysis, and is it clearly better than
# the runner-up (FDR-corrected paired test of the two)?

# %%
best = find_best_layers(table[table["subject"] == "joint"], pair_tests=layer_pairs, alpha=alpha)
best.set_index("roi").drop(columns="subject").round(4)

# %% [markdown]
# ## Do the planted regions relate to the network more than control parcels?
#
# The difference between the mean similarity of the planted regions and that of the control
# parcels, per layer, with its paired 95 % t interval and the two-sided t-test it belongs to
# (FDR over each subject's layers). A difference above zero means that the network's geometry follows the
# emotion regions more than it follows arbitrary brain tissue. Filled markers are significant.

# %%
has_planted = "planted" in groups and "parcel" in groups
contrast = (rsa.calc_group_contrast(kinds, "planted", "parcel", by="roi", test_type=test_type,
                                    alpha=alpha, fdr_by="subject")
            if has_planted else pd.DataFrame())
if has_planted:
    fig = plot_group_contrast(contrast, layers=layers)
    plt.show()
    fig = plot_hierarchy_alignment(table[table["subject"] != "joint"], kind="profile",
                                   systems=groups, layers=layers,
                                   title="Similarity along the layers, by ROI kind")
    plt.show()
joint_contrast = contrast[contrast["subject"] == "joint"] if has_planted else contrast
above = list(joint_contrast.loc[joint_contrast["significant"] & (joint_contrast["diff"] > 0),
                                "layer"]) if has_planted else []
below = list(joint_contrast.loc[joint_contrast["significant"] & (joint_contrast["diff"] < 0),
                                "layer"]) if has_planted else []
verdict = {
    (True, False): "So on these data the network's representational geometry follows the "
                   "planted emotion regions more than arbitrary brain parcels, in the layers "
                   "listed.",
    (False, False): "So on these data the planted regions do not stand out: no layer relates "
                    "to them more (or less) than to arbitrary parcels. The decoder may still "
                    "use them; RSA asks a different question, whether the whole geometry of "
                    "the patterns matches.",
    (False, True): "So on these data the control parcels, not the planted regions, relate "
                   "more to the network's geometry.",
    (True, True): "The answer depends on the layer.",
}[(bool(above), bool(below))]
display(Markdown(
    "**Planted regions against control parcels (joint analysis).** "
    + (f"The planted regions are significantly *more* similar to the network than the "
       f"parcels in {len(above)} of {len(layers)} layers ({', '.join(above) or 'none'}), "
       f"significantly *less* similar in {len(below)} ({', '.join(below) or 'none'}); the "
       f"difference ranges from {joint_contrast['diff'].min():+.3f} to "
       f"{joint_contrast['diff'].max():+.3f}. " + verdict
       if has_planted else
       "Not applicable: there are no planted regions and control parcels to compare (real "
       "data, or an atlas replaced the parcels), so there is no ground truth to check.")
))
contrast.round(4)

# %% [markdown]
# ### How much does this depend on the dissimilarity?
#
# Two properties of these data shape the answer, and an RSA of real data shares them in
# milder form. First, early layers keep nearly everything about the volume, so their RDMs
# follow whatever varies across the *whole* brain from moment to moment: in the generated
# data, fluctuations with one spatial pattern in every subject (like physiological noise) and
# the per-volume z-scoring, which spreads every region's response as a tiny change of scale
# to all voxels. Every parcel inherits that geometry reliably (note the parcels' high noise
# ceilings), and so do `conv1` and `block1`. Second, a planted response scales the baseline
# of its region almost uniformly. The correlation distance ignores a pattern's amplitude, so
# it sees such a response only through its faint spatial imprint, while a distance that
# keeps the amplitude (Euclidean) sees it fully. Below, the ROI RDMs are recomputed with the
# other distance (the network's RDMs are unchanged) and the contrast is repeated. Caveat:
# Euclidean distances between means of different numbers of volumes carry a noise bias that
# is the same in every subject, which inflates their noise ceilings (so they are not shown).

# %%
other = "euclidean" if dissimilarity == "correlation" else "correlation"
if has_planted:
    brain_other = calc_brain_rdms(prepared.volumes, moments, rois.masks, center=center,
                                      within_blocks=within_fold, method=other)
    boot_other = rsa.concat_bootstraps([
        rsa.bootstrap_compare(net, br, method, n_bootstrap, seed=seed,
                              pattern_groups=boot_groups)
        for net, br in zip([*network, joint_network],
                           [*brain_other, rsa.calc_joint_rdms(brain_other)], strict=True)
    ])
    contrast_other = rsa.calc_group_contrast(
        boot_other.aggregate(rois.kinds()), "planted", "parcel", by="roi",
        test_type=test_type, alpha=alpha, fdr_by="subject")
    sensitivity = pd.concat(
        [contrast.assign(roi_dissimilarity=dissimilarity),
         contrast_other.assign(roi_dissimilarity=other)], ignore_index=True)
    joint_rows = sensitivity[sensitivity["subject"] == "joint"]
    fig = plot_group_contrast(joint_rows.assign(subject=joint_rows["roi_dissimilarity"]),
                              layers=layers,
                              title="Joint: planted minus parcels, by the ROIs' dissimilarity")
    plt.show()
    display(joint_rows.assign(
        cell=lambda d: d["diff"].map("{:+.3f}".format) + " ["
        + d["ci_low"].map("{:+.3f}".format) + ", " + d["ci_high"].map("{:+.3f}".format) + "]"
        + d["significant"].map({True: " *", False: ""})
    ).pivot(index="layer", columns="roi_dissimilarity", values="cell").reindex(layers))
else:
    sensitivity = pd.DataFrame()

# %% [markdown]
# Read the two lines together. Where both distances agree, the conclusion does not depend on
# a choice of method; where they disagree, the planted signal is there but only a distance
# that keeps amplitude finds it in the ROI patterns, and the honest statement is the
# conditional one.

# %% [markdown]
# ## Saved outputs
#
# The comparison table (every subject, ROI and layer: similarity, bootstrap mean, standard
# error and interval, test against zero, noise ceiling), the layer-pair tests, the
# planted-versus-parcel contrasts (both ROI dissimilarities), the original analysis, the ROI
# table and the patterns are written as CSV files beside a manifest.

# %%
out_dir = start_stage(get_derived_dir("04_rsa", profile, data_dir))  # manifest: last
original = pd.DataFrame([{"layer": "pool", "method": method, "r": mantel.statistic,
                          "mantel_p": mantel.p_value, "exact": mantel.exact,
                          "permutations": len(mantel.null_distribution)}])
results.to_csv(out_dir / "comparisons.csv", index=False)
layer_pairs.to_csv(out_dir / "layer_pairs.csv", index=False)
sensitivity.to_csv(out_dir / "planted_vs_parcels.csv", index=False)
original.to_csv(out_dir / "original_mantel.csv", index=False)
rois.table.to_csv(out_dir / "rois.csv", index=False)
moments.to_csv(out_dir / "patterns.csv", index=False)
manifest_path = write_manifest(
    out_dir, "04_rsa",
    parameters={"profile": profile, "split": split, "layers": layers, "patterns": patterns,
                "moment_s": moment_s, "group_s": group_s, "within_fold": within_fold,
                "dissimilarity": dissimilarity, "center": center,
                "atlas": atlas, "atlas_names": atlas_names, "n_parcels": n_parcels,
                "reduce": reduce, "method": method, "n_bootstrap": n_bootstrap,
                "test_type": test_type, "alpha": alpha, "seed": seed,
                "dataprep": str(prepared.folder), "training": str(result.folder)},
    inputs={str(p): sha256_file(p) for p in [
        prepared.folder / "manifest.json", result.folder / "predictions.csv",
        *(result.fold_model_path(fold) for fold in models)]},
    outputs={"files": ["comparisons.csv", "layer_pairs.csv", "planted_vs_parcels.csv",
                       "original_mantel.csv", "rois.csv", "patterns.csv"],
             "original_r": mantel.statistic, "original_mantel_p": mantel.p_value,
             "n_patterns": int(moments["id"].nunique()), "n_rois": len(rois.names),
             "n_significant": int(results["significant"].sum()),
             "planted_above_parcels": above, "planted_below_parcels": below},
)
pd.Series({"folder": display_path(out_dir, data_dir),
           "files": ", ".join(sorted(p.name for p in out_dir.iterdir()))}).to_frame("value")
