# ---
# jupyter:
#   emolib:
#     needs: []  # the chapters whose outputs this one reads
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
# # ResNet-50 against BOLD5000
#
# Which stage of a deep network looks most like which stage of the visual cortex? The original
# study compared the representational dissimilarity matrices (RDMs) of five stages of ResNet-50
# (`conv1`, `layer1` .. `layer4`) with the RDMs of ten regions of interest (left and right
# EarlyVis, LOC, OPA, PPA and RSC) of the three BOLD5000 subjects CSI1-3 (CSI4 saw too few
# images and is left out). Patterns are images; an RDM holds the correlation distance
# ($1 - r$) of every pair of images; two RDMs are compared by the Pearson correlation of their
# vectors (rsatoolbox's `corr`, as in `eval_fixed`). The *joint* subject is the mean of the
# three subjects' RDM vectors.
#
# This chapter redraws every figure of the original (per-subject ROI x layer heatmaps, bars by
# visual system, the hierarchy alignment plot, radar charts, a 3D surface and the joint
# heatmap) and adds what it lacked: bootstrap confidence intervals over images, noise ceilings
# across subjects, tests against zero and between layers with false-discovery-rate control,
# and a check that the analysis finds a layer/ROI correspondence that is known to be there.
#
# **Where the RDMs come from.** As published, BOLD5000 Release 1.0 has no RDMs: it has voxel
# patterns, one row per trial, for each ROI of each subject (`ROIs/CSI1/h5/CSI1_ROIs_TR34.h5`,
# TR34 being the mean of the 3rd and 4th volume after the image, as far as we know), a list of
# the image shown in each trial (`ROIs/stim_lists/CSI01_stim_lists.txt`, where all showings but
# one of a repeated image carry a `rep_` prefix) and the images themselves. This chapter
# builds everything from those files: it strips `rep_`, averages the showings of each image
# (`repeats`), computes each subject's ROI RDMs from the averaged patterns, and computes the
# ResNet-50 layer RDMs from the stimulus images, exactly (every unit of every stage, streamed to
# a disk-backed store so that memory stays bounded at the real scale: `resnet_store/`). Images
# are matched across subjects and network by name, never by position; when the inputs cover
# different images, the intersection is used and reported.
#
# **The data in this build are generated.** The release cannot be downloaded on the machines
# that build this book, so with `source = "synthetic"` (the demo and smoke profiles) the
# notebook generates a release in exactly the published layout (ROI files in `.h5` and `.mat`,
# stimulus lists with `rep_` repeats, small generated images in the `COCO`, `ImageNet` and
# `Scene` folders), with fewer images and a *planted* hierarchy: each ROI's patterns mix the
# RDMs of the very network this chapter runs (EarlyVis mostly `conv1`, LOC `layer2`, OPA
# `layer3`, PPA and RSC `layer4`), plus structure that no layer explains, subject-specific
# noise and trial noise. On generated data the network has **random-init weights** (no weights
# can be downloaded here) and sees small images; the real study used ImageNet weights. The
# planted truth is written beside the release (`truth.json`), never inside it, and is read only
# at the end to grade the result. To run on the real data, see the README ("Running on the
# real data") and the **paper** profile: `source = "release"`, `release_dir` at the download,
# `weights` at a local ResNet-50 weights file. Precomputed RDM `.h5` files (the original
# study's own derivative) are read with `source = "files"`.

# %% tags=["colab"]
# In Colab, install this project first (elsewhere this cell does nothing).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "emolib @ git+https://github.com/emolib/emolib"], check=True)

# %% tags=["parameters"]
from typing import Optional

profile: str = "demo"  # run profile, names the folder <data_dir>/derived/<profile>/05_bold5000
data_dir: Optional[str] = None  # data folder; None means $EMOLIB_DATA, else data/ in the repository
source: str = "synthetic"  # synthetic generates a BOLD5000 release; release reads release_dir; files reads RDM files
release_dir: Optional[str] = None  # BOLD5000 Release 1.0 folder holding ROIs/ and BOLD5000_Stimuli/, for source release
bold5000_dir: Optional[str] = None  # folder of precomputed RDM .h5 files, for source files
subjects: list = ["CSI1", "CSI2", "CSI3"]  # subjects compared; CSI4 is excluded as in the study
tr: str = "TR34"  # which volume after the image: TR1 .. TR5, or TR34 (mean of TR3 and TR4)
repeats: str = "average"  # repeated images: average their showings, or keep the first
weights: Optional[str] = None  # ResNet-50 weights: a local .pth file or a torchvision name in the cache; None is random init
conv1_node: str = "conv1"  # first stage: conv1 (raw convolution), relu (after bn1 and ReLU) or maxpool
image_size: int = 64  # network input size; synthetic images are generated at this size (real stimuli: 224)
batch_size: int = 16  # images per forward pass
store_dtype: str = "float32"  # feature store on disk: float32, or float16 at half the disk
memory_limit_gb: float = 2.0  # memory for the blocked Gram matrices
device: Optional[str] = None  # torch device; None picks cuda when there is one
n_images: int = 300  # generated images, synthetic only; BOLD5000 has 4916
null: bool = False  # plant no layer to ROI correspondence at all, synthetic only
noise: float = 1.0  # trial noise of the generated ROI patterns, synthetic only
method: str = "corr"  # main comparison of RDM vectors: Pearson r, as rsatoolbox eval_fixed
other_methods: list = ["spearman"]  # further comparisons shown beside the main one
n_bootstrap: int = 1000  # bootstrap samples over images, for intervals and tests
test_type: str = "t-test"  # t-test or bootstrap, the two tests of rsatoolbox
alpha: float = 0.05  # false discovery rate of the tests (Benjamini-Hochberg)
seed: int = 0  # seed of the generated data and of the bootstrap
progress: bool = True  # show progress bars

# %% tags=["remove-cell"]
from emolib.book.params import check_parameters

check_parameters("05_bold5000")  # a name papermill injected that is not declared above is an error

# %%
from functools import partial

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from emolib import rsa
from emolib.bold5000 import (
    LAYERS,
    calc_resnet50_rdms,
    check_recovery,
    find_best_layers,
    roi_system,
    summarize_bold5000,
)
from emolib.datasets import obtain_bold5000, obtain_bold5000_release
from emolib.io import Bold5000RDMs, common_images, select_images
from emolib.manifest import sha256_file, start_stage, write_manifest
from emolib.paths import display_path, get_derived_dir
from emolib.plots import (
    configure_plotly,
    plot_hierarchy_alignment,
    plot_joint_heatmap,
    plot_radar,
    plot_roi_layer_heatmaps,
    plot_rsa_surface,
    plot_system_bars,
)

configure_plotly()
pd.set_option("display.max_columns", 20)
# unfinished until its manifest is written, last
out_dir = start_stage(get_derived_dir("05_bold5000", profile, data_dir))
if device is None:
    device = "cuda" if torch.cuda.is_available() else "cpu"


# the network's RDMs of any list of images: exact, streamed to a disk-backed store, resumable
layer_rdms = partial(
    calc_resnet50_rdms, weights=weights, conv1_node=conv1_node, image_size=image_size,
    batch_size=batch_size, device=device, seed=seed, store_dir=out_dir / "resnet_store",
    store_dtype=store_dtype, memory_limit_gb=memory_limit_gb, progress=progress,
)
overlap = None
if source == "files":
    src = obtain_bold5000(source, profile, data_dir=data_dir, bold5000_dir=bold5000_dir,
                          subjects=subjects)
    data, truth, input_files, folder = src.data, src.truth, src.input_files, src.folder
    generated = False
else:
    rel = obtain_bold5000_release(
        source, profile, layer_rdms=layer_rdms, data_dir=data_dir, release_dir=release_dir,
        subjects=subjects, tr=tr, repeats=repeats, n_images=n_images, seed=seed, null=null,
        noise=noise, image_size=image_size, progress=progress,
    )
    layers = layer_rdms(rel.images)
    # images matched by name: the intersection of every subject's images and the network's
    overlap = common_images(rel.rois, layers)
    data = Bold5000RDMs(select_images(layers, overlap.ids),
                        {s: select_images(r, overlap.ids) for s, r in rel.rois.items()},
                        {"layers": out_dir / "resnet_store", **rel.files})
    truth, input_files, folder, generated = rel.truth, rel.input_files, rel.root, rel.generated
# the planted best layer the analysis can find: the layer whose RDM best matches the
# noise-free target (random-init ResNet-50 stages are strongly correlated with each other)
planted = ((truth or {}).get("best_layer_noise_free") or (truth or {}).get("best_layer")
           or {})
display(Markdown(
    f"**Inputs.** {'RDM files' if source == 'files' else 'BOLD5000 release'} in "
    f"`{folder.name}`: "
    + (f"generated ({'null: nothing planted' if truth['null'] else 'planted hierarchy'}, "
       f"{truth['n_images']} images, seed {truth['seed']}"
       f"{', written by this run' if generated else ', already on disk'})."
       if truth else "real data (no planted truth beside them).")
    + ("" if source == "files" else
       f" Network: ResNet-50, {'random-init (seed ' + str(seed) + ')' if weights is None else 'weights ' + str(weights)}, "
       f"first stage `{data.layers.rdm_descriptors['layer'][0]}`, {image_size} x {image_size} "
       f"input, {tr}, repeated images: {repeats}.")
))
if overlap is not None:
    display(Markdown(
        f"**Images.** {overlap.n_common} images are common to every subject and the network; "
        "the analysis uses that intersection. (The original study reported 2,985 images "
        "common to its inputs: exactly the `.jpg` images of the release, 2,000 COCO and 985 "
        "Scene, as if `.JPEG` and `.jpeg` files had been left out when listing them; the "
        "real CSI1-3 share all 4,916.)"
    ))
    display(overlap.table())

# %% [markdown]
# ## The files, and why images are matched by name
#
# Every file lists its images in its own order (the generator shuffles them on purpose, and
# nothing guarantees that real files agree). Comparing RDM vectors position by position would
# then pair unrelated image pairs and give near-zero similarities that look like a result.
# Every comparison below first puts the patterns in the same order *by image id*
# (`emolib.rsa.align_rdms`); different image sets are an error, never silently truncated.

# %%
summarize_bold5000(data)

# %% [markdown]
# ## Layer x ROI similarity, subject by subject
#
# One heatmap per subject: rows are the ten ROIs (left hemisphere first, each from early to
# high-level cortex), columns the five network stages from shallow to deep, colour the
# Pearson correlation of the two RDM vectors. If network depth tracks the visual hierarchy,
# the brightest cell moves to the right as one goes down from EarlyVis to PPA and RSC, a
# diagonal band in each hemisphere.

# %%
rois = list(data.rois.values())
joint = rsa.calc_joint_rdms(rois)
methods = [method, *other_methods]
table = rsa.compare_table(data.layers, [*rois, joint], methods)
main = table[table["method"] == method]
fig = plot_roi_layer_heatmaps(main[main["subject"] != "joint"],
                              title=f"RDM similarity ({method}) per subject")
plt.show()

# %% [markdown]
# The joint subject averages the three subjects' RDM vectors (after aligning them by image id)
# before the comparison. Averaging cancels part of each subject's noise, so the joint
# similarities are higher than the single subjects' and the diagonal band is cleaner.

# %%
fig = plot_joint_heatmap(main, title=f"Joint RSA ({method}): mean of the subjects' RDMs")
plt.show()

# %% [markdown]
# Rank correlation (Spearman) asks only whether the two RDMs order the image pairs alike,
# not whether the dissimilarities are linearly related. It should tell the same story.

# %%
for other in other_methods:
    fig = plot_roi_layer_heatmaps(table, method=other, title=f"RDM similarity ({other})")
    plt.show()

# %%
agree = pd.DataFrame({
    other: {
        f"correlation with {method} over all cells": table.pivot_table(
            index=["subject", "roi", "layer"], columns="method", values="value"
        )[[method, other]].corr().iloc[0, 1],
        "ROIs x subjects with the same best layer": int(
            (find_best_layers(table, method=method)["best_layer"]
             == find_best_layers(table, method=other)["best_layer"]).sum()
        ),
        "ROIs x subjects": int(table[["subject", "roi"]].drop_duplicates().shape[0]),
    }
    for other in other_methods
})
agree

# %% [markdown]
# ## Uncertainty: bootstrap over images, noise ceilings, tests
#
# The original figures showed single numbers. Here every comparison gets a 95 % interval
# from resampling the *images* with replacement (the same draw for every layer, ROI and
# subject, so differences between layers are paired), as rsatoolbox's
# `eval_bootstrap_pattern` does; the interval is that of the tests (bootstrap mean plus or
# minus the corrected bootstrap standard error times Student's t on n_images - 1 degrees of
# freedom, rsatoolbox's default `Result.get_ci`). The **noise ceiling** of each ROI says how well any model
# could do given how much the subjects disagree: its upper bound is the mean correlation of
# each subject's RDM with the mean of all subjects, its lower bound with the mean of the
# *other* subjects (rsatoolbox's `boot_noise_ceiling`). A layer that reaches the lower bound
# explains as much as another subject's brain does.

# %%
boot = rsa.bootstrap_compare(data.layers, [*rois, joint], method, n_bootstrap, seed=seed)
zero = rsa.calc_zero_tests(boot, test_type=test_type, alpha=alpha, fdr_by="subject")
pairs = rsa.calc_pair_tests(boot, test_type=test_type, alpha=alpha, fdr_by="subject")
ceiling = rsa.calc_noise_ceiling(rois, method)
results = rsa.collect_results(table, zero, ceiling)
ceiling.set_index("roi")[["lower", "upper"]].T.round(3)

# %% [markdown]
# The grouped bars average the ROIs into three systems, as in the original (Early: EarlyVis;
# Mid: LOC and OPA; High: PPA and RSC), one panel per subject and one bar per layer, with the
# 95 % t interval of the system mean (the average is taken inside every bootstrap sample, so
# the interval is that of the mean) and the noise ceiling as a grey band. Expect
# the early system to prefer the shallow layers and the high system the deep ones. The gap
# between the best bar and the band is structure that the subjects share but no layer
# explains; the generator plants half of each ROI's signal that way, so a clear gap is
# expected here (on real data its size is a finding in itself).

# %%
systems = boot.aggregate(roi_system).to_frame()
fig = plot_system_bars(systems[systems["subject"] != "joint"], noise_ceiling=ceiling,
                       layers=list(LAYERS))
plt.show()

# %% [markdown]
# **Tests against zero.** Each layer/ROI similarity is tested against zero with rsatoolbox's
# one-sided t-test on the bootstrap distribution (images as the unit of generalisation),
# and the p-values are corrected for the 50 comparisons of each subject with the
# Benjamini-Hochberg procedure. The table counts the comparisons that survive, and the
# smallest similarity among them.

# %%
results.groupby("subject", sort=False).agg(
    significant=("significant", "sum"),
    tests=("significant", "size"),
    smallest_significant=(method, lambda v: v[results.loc[v.index, "significant"]].min()),
    largest_q=("q", "max"),
)

# %% [markdown]
# The joint subject's values with their intervals and FDR-corrected q-values; an asterisk marks
# a comparison that is significantly above zero.

# %%
joint_view = results[results["subject"] == "joint"].assign(
    cell=lambda d: d[method].map("{:.3f}".format) + " ["
    + d["ci_low"].map("{:.3f}".format) + ", " + d["ci_high"].map("{:.3f}".format) + "]"
    + d["significant"].map({True: " *", False: ""})
)
joint_view.pivot(index="roi", columns="layer", values="cell").reindex(
    index=list(dict.fromkeys(joint_view["roi"])), columns=list(LAYERS)
)

# %% [markdown]
# **Tests between layers.** For every ROI, each of the 10 pairs of layers is compared on the
# paired bootstrap (two-sided t-test of the difference, FDR over each subject's 100 pairs).
# This is what licenses a statement like "PPA prefers `layer4` over `layer3`".

# %%
pairs.groupby("subject", sort=False).agg(
    significant_pairs=("significant", "sum"), pairs=("significant", "size")
)

# %% [markdown]
# ## Does depth track the visual hierarchy?
#
# The hierarchy alignment plot puts the ROIs on the x-axis from early to high-level cortex and
# the layer that matches each ROI best on the y-axis (one dot per ROI, hemisphere and
# subject, jittered; the line is their mean). A rising line is the hierarchy the original
# reported. On generated data, black diamonds mark the planted best layer.

# %%
subject_rows = main[main["subject"] != "joint"]
fig = plot_hierarchy_alignment(subject_rows, kind="peak", layers=list(LAYERS),
                               truth=planted or None)
plt.show()

# %% [markdown]
# The same question from the other side: the similarity profile of each system along the
# network's depth (dots: subjects, both hemispheres averaged; line: their mean). The Early
# curve should peak first and the High curve last.

# %%
fig = plot_hierarchy_alignment(subject_rows, kind="profile", layers=list(LAYERS))
plt.show()

# %% [markdown]
# The radar charts of the original show the same profiles on a circle, one chart per subject
# (and the joint subject), one coloured polygon per system; a system leans towards the
# layers it resembles.

# %%
fig = plot_radar(main, layers=list(LAYERS))
plt.show()

# %% [markdown]
# The 3D surface (drag to rotate, hover for values) is the similarity over system x layer,
# averaged over the three subjects: the ridge runs from (Early, shallow) to (High, deep).

# %%
plot_rsa_surface(subject_rows, groups="system", layers=list(LAYERS))

# %% [markdown]
# ## Is the planted correspondence recovered?
#
# For every ROI and subject, the best layer is the one with the highest similarity; the
# runner-up and the FDR-corrected q-value of the best-versus-runner-up test show how clear the
# choice is. The recovery table sets the planted best layer (from `truth.json`) beside the
# recovered one of each subject and of the joint subject; `matches` counts the columns that
# agree.

# %%
best = find_best_layers(main, pair_tests=pairs, alpha=alpha)
recovery = check_recovery(best, planted)
recovery

# %%
n_roi = len(recovery)
joint_hits = int((recovery["joint"] == recovery["planted"]).sum())
subject_hits = int(recovery[subjects].eq(recovery["planted"], axis=0).sum().sum())
clear = best[best["subject"] == "joint"]["clear"]
has_truth = any(v is not None for v in planted.values())
display(Markdown(
    f"**Recovery.** The joint analysis finds the planted best layer in **{joint_hits} of "
    f"{n_roi}** ROIs; the single subjects in {subject_hits} of {n_roi * len(subjects)} "
    f"ROI x subject cases. In {int(clear.sum())} of {n_roi} ROIs the joint best layer is "
    f"significantly better than the runner-up (q < {alpha})."
    + ("" if clear.all() else " Where it is not, the planted weights of the two layers are "
       "close or the images too few to separate them.")
    if has_truth else
    "**Recovery.** These are null data: nothing was planted, so there is nothing to recover; "
    f"{int(results['significant'].sum())} of {len(results)} comparisons are significantly "
    "above zero (expected: about none), and the best layers above are arbitrary."
    if truth else
    "**Best layers.** These are real data, with no truth to grade against: the best layers "
    "above, and how clearly each beats its runner-up, are the result."
))
best[best["subject"] == "joint"].set_index("roi").drop(columns="subject").round(4)

# %% [markdown]
# ## Saved outputs
#
# The full comparison table (every subject, ROI and layer: each method's similarity, the
# bootstrap mean, standard error and interval, the test against zero, the noise ceiling), the
# layer-pair tests and the recovery table are written as CSV files beside a manifest that
# records the parameters and the SHA-256 of every input file.

# %%
results.to_csv(out_dir / "comparisons.csv", index=False)
pairs.to_csv(out_dir / "layer_pairs.csv", index=False)
recovery.to_csv(out_dir / "recovery.csv")
manifest_path = write_manifest(
    out_dir, "05_bold5000",
    parameters={"profile": profile, "source": source, "bold5000_dir": bold5000_dir,
                "release_dir": release_dir, "tr": tr, "repeats": repeats, "weights": weights,
                "conv1_node": conv1_node, "image_size": image_size,
                "subjects": subjects, "n_images": n_images, "null": null, "noise": noise,
                "method": method, "other_methods": other_methods, "n_bootstrap": n_bootstrap,
                "test_type": test_type, "alpha": alpha, "seed": seed},
    inputs={str(p): sha256_file(p) for p in input_files},
    outputs={"files": ["comparisons.csv", "layer_pairs.csv", "recovery.csv"],
             "n_images": int(data.layers.n_cond), "n_comparisons": len(results),
             "n_significant": int(results["significant"].sum()),
             "joint_recovered": joint_hits if has_truth else None},
)
pd.Series({
    "folder": display_path(out_dir, data_dir),
    "files": ", ".join(sorted(p.name for p in out_dir.iterdir())),
    "images": data.layers.n_cond,
    "input files hashed": len(input_files),
}).to_frame("value")
