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
# # Where does the network look? Occlusion maps and the planted truth
#
# A classifier's AUC says *that* it can tell emotions apart, not *how*. The original project
# asked which voxels the 3D CNN relies on by occlusion: a small cube of the volume is blanked
# (set to 0, which after z-scoring is the volume's mean), the network is run again, and the
# drop of the probability it gives the true class is recorded. Sliding the cube over the
# volume gives a map; maps of confidently and correctly classified volumes are averaged per
# class. It then embedded the maps with UMAP.
#
# This chapter does the same with the networks of the previous chapter, with three changes.
# Each volume is occluded by *its own fold's* network, the one that never saw it during
# training, so a map shows what generalises rather than what was memorised. The class maps are
# saved as NIfTI images in the data's space, to open in any viewer. And on generated data,
# where we know which region each emotion drives, the maps are scored against that truth: the
# book checks that its explanation method finds what was planted.

# %% tags=["colab"]
# In Colab, install this project first (elsewhere this cell does nothing).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "emolib @ git+https://github.com/emolib/emolib"], check=True)

# %% tags=["parameters"]
from typing import Optional

profile: str = "demo"  # run profile; reads 01_dataprep and 02_training of it, writes 03_occlusion
data_dir: Optional[str] = None  # data folder; None means $EMOLIB_DATA, else data/ in the repository
split: str = "run"  # which run of 02_training to explain: run, subject or random
min_prob: float = 0.75  # smallest true-class probability of an occluded volume; the original used 0.75
n_per_class: int = 10  # volumes occluded per class, drawn at random; the original used 10
correct_only: bool = True  # occlude only correctly classified volumes, as the original
fill_up: bool = True  # fill classes short of such volumes with their most confident other held-out volumes, flagged
patch: list = [2, 2, 2]  # side of the occluded box in voxels
stride: list = [2, 2, 2]  # step between boxes in voxels; below patch the boxes overlap
fill: float = 0.0  # value written into the box; 0 is the mean of a z-scored volume
batch_size: int = 64  # occluded copies per forward pass
n_threads: Optional[int] = 1  # torch threads while occluding; None keeps the default
top_k: int = 50  # top voxels per class (views, embedding): 2.5 % of the demo brain, as the original's 500 are of the real one
umap_neighbors: int = 30  # UMAP n_neighbors, clipped to the number of points; the original used 30
umap_min_dist: float = 0.1  # UMAP min_dist; the original used 0.1
umap_seeds: list = [0, 1, 2]  # UMAP seeds; the first is shown, all enter the stability table
umap_epochs: Optional[int] = 200  # UMAP optimisation epochs; None is the UMAP default (the paper)
stability_k: int = 10  # neighbourhood size of the trustworthiness and neighbour measures
max_voxels: Optional[int] = 20000  # voxels in the per-voxel embedding at most; None takes all
seed: int = 0  # seed of the draw of volumes to occlude
device: str = "auto"  # auto uses a GPU when there is one, else the CPU
progress: bool = True  # show progress bars

# %% tags=["remove-cell"]
from emolib.book.params import check_parameters

check_parameters("03_occlusion")  # a name papermill injected that is not declared above is an error

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from emolib.decoding import load_decoding, macro_auc
from emolib.embedding import label_agreement, umap_stability
from emolib.forrest import load_prepared
from emolib.manifest import sha256_file, start_stage, write_manifest
from emolib.models import features_by_fold, resolve_device
from emolib.occlusion import (
    analysis_mask,
    class_map_images,
    class_mean_maps,
    label_voxels,
    localisation_matrix,
    localisation_scores,
    occlude_by_fold,
    save_class_maps,
    select_confident,
    top_voxels,
    voxel_drop_vectors,
)
from emolib.paths import display_path, get_derived_dir
from emolib.plots import (
    configure_plotly,
    plot_class_maps,
    plot_embedding,
    plot_embedding_seeds,
    plot_localisation,
    plot_top_voxels,
)
from emolib.synthetic import find_truth

configure_plotly()
prepared = load_prepared(get_derived_dir("01_dataprep", profile, data_dir, create=False))
result = load_decoding(get_derived_dir("02_training", profile, data_dir, create=False) / split)
classes = result.classes
truth = find_truth(prepared.manifest["parameters"]["bids_dir"], prepared.volumes.shape[1:])
mask = analysis_mask(prepared.mask, prepared.mean_image(prepared.samples["subject"].iloc[0]))
run_device = str(resolve_device(device))
# unfinished until its manifest is written, last
out_dir = start_stage(get_derived_dir("03_occlusion", profile, data_dir) / split)
y, probs, rows = result.probs("cnn")
display(Markdown(
    f"**Inputs.** {len(prepared.samples)} volumes on a {prepared.volumes.shape[1:]} grid "
    f"({int(mask.sum())} brain voxels), the `{split}` split of 02_training with "
    f"{result.predictions['fold'].nunique()} trained folds (held-out macro AUC of the CNN "
    f"{macro_auc(y, probs, len(classes), rows['fold'].to_numpy()):.3f}), classes "
    f"{', '.join(classes)}. "
    + ("**Generated data**: the regions planted for each emotion are known and used below to "
       "score the maps." if truth is not None else
       "**Real data**: there is no ground truth; the maps are shown as they are.")
))

# %% [markdown]
# ## Which volumes are occluded
#
# As in the original: held-out volumes that the network classified correctly with a
# true-class probability of at least the threshold, a fixed number per class drawn at random
# (seeded). The table shows how many held-out volumes each class has, how many pass the rule,
# and how many were drawn. A network that is rarely confidently right leaves classes short;
# they are then filled up with their most confident other held-out volumes (`fill_up`), and
# the table says how many. Such maps explain a network that is unsure, and are weak evidence
# of anything; with `fill_up` off, a class without eligible volumes gets no map.

# %%
table = select_confident(result.predictions, classes, min_prob=min_prob,
                         n_per_class=n_per_class, seed=seed, correct_only=correct_only,
                         fill_up=fill_up)
selection = table[table["selected"]].reset_index(drop=True)
counts = table.groupby("label").agg(held_out=("y", "size"), eligible=("eligible", "sum"),
                                    mean_p_true=("p_true", "mean"))
counts = counts.join(pd.crosstab(table["label"], table["rule"]).drop(columns="", errors="ignore"))
display(counts.reindex(classes).fillna(0).round(3))
display(Markdown(
    f"**{int((selection['rule'] == 'original').sum())} of {len(selection)}** selected volumes "
    f"pass the original rule (correct{'' if correct_only else ' or not'}, true-class "
    f"probability at least {min_prob:g})"
    + ("." if (selection["rule"] == "original").all() else
       f"; {int((selection['rule'] == 'filled up').sum())} were filled up (mean true-class "
       f"probability {selection.loc[selection['rule'] == 'filled up', 'p_true'].mean():.2f}), "
       f"for {', '.join(selection.loc[selection['rule'] == 'filled up', 'label'].unique())}. "
       "Their maps explain volumes the network was not confidently right about: read them "
       "with care.")))

# %% [markdown]
# ## Occlusion
#
# Every selected volume is occluded with the network of the fold that held it out. The
# engine recomputes only the part of each layer that a box can reach (exact, checked against
# Captum's `Occlusion` in the tests). The probabilities on the unoccluded volumes must equal
# those saved by 02_training, which confirms that each volume met its own fold's network.

# %%
start = time.perf_counter()
occ = occlude_by_fold(selection, prepared.volumes, result.fold_model_path, patch=patch,
                      stride=stride, fill=fill, batch_size=batch_size, n_threads=n_threads,
                      device=run_device, progress=progress, store_dir=out_dir / "parts")
seconds = time.perf_counter() - start
class_maps = class_mean_maps(occ.maps, occ.targets, len(classes))
images = class_map_images(class_maps, classes, prepared.affine)
paths = save_class_maps(images, out_dir)
top = top_voxels(class_maps, classes, top_k, mask, prepared.affine)
n_windows = len(selection) * int(pd.Series(occ.grid_shape).prod())
mismatch = float((occ.base_prob - selection["p_true"]).abs().max())
display(Markdown(
    f"{len(selection)} volumes x {n_windows // max(len(selection), 1):,} boxes of "
    f"{'x'.join(map(str, occ.patch))} voxels (stride {'x'.join(map(str, occ.stride))}, fill "
    f"{occ.fill:g}) = {n_windows:,} forward passes, {occ.method} engine, **{seconds:.1f} s** on "
    f"`{run_device}`. Largest difference from the saved probabilities: {mismatch:.1e}. Maps "
    f"written to `{display_path(out_dir, data_dir)}`: "
    f"{', '.join(p.name for p in paths.values())}. "
    + (f"{n_reused} of {len(occ.reuse)} parts (up to 16 volumes each) were reused from an "
       "earlier run (made from the same weights, volumes, targets and boxes); "
       f"{len(occ.reuse) - n_reused} were computed now."
       if (n_reused := int((occ.reuse["status"] == "reuse").sum())) else
       f"All {len(occ.reuse)} parts computed now (saved as they finished, so an interrupted "
       "run resumes).")
    + ("" if mismatch < 1e-3 else
       "\n\n**Warning: the saved networks do not reproduce the saved predictions.** The "
       "outputs of 02_training are inconsistent (for instance written by two runs at once); "
       "rerun it with `restart` before reading these maps.")
))

# %% [markdown]
# ## The class maps
#
# Each row is one class's mean map: red voxels, when blanked, lower the probability of that
# class (the network uses them as evidence for it); blue ones raise it (evidence against).
# The cut goes through each map's peak. All maps share one colour scale, so a pale map is a
# class whose probability no single box moves much. On generated data the green contour is
# the region planted for that class.
#
# **Native space.** The volumes are each subject's own scanner space (chapter 01): voxel
# $(i, j, k)$ is a different piece of brain in each subject, and these class maps average the
# occluded volumes of all subjects voxel by voxel, as the original did. They are drawn over the
# first subject's mean image, in its space. On generated data the planted region shown (and
# graded below) is where it lies in *any* subject's grid; a map can only be as sharp as the
# subjects' head positions agree.

# %%
fig = plot_class_maps(images, bg_img=prepared.mean_image(prepared.samples["subject"].iloc[0]),
                      regions=truth["regions"] if truth is not None else None, kind="stat",
                      title="Class-mean occlusion maps (drop of the true-class probability)")
plt.show()

# %% [markdown]
# The glass-brain view projects each map through the head (largest absolute value along each
# line of sight), showing all of it at once. Its outline is the MNI template's: the generated
# data and the real ds000113 volumes are in their own scanner space, not MNI, so the outline is
# only a visual guide.

# %%
fig = plot_class_maps(images, kind="glass", title="Glass-brain projections (values below a "
                                                  "quarter of the largest drop hidden)")
plt.show()

# %% [markdown]
# ### Top voxels
#
# The voxels with the largest drops of each class, in millimetres (drag to rotate). Diamonds
# mark the centres of the planted regions on generated data. The original took the top 500
# voxels of an 80 x 80 x 35 grid; on the small demo grid a smaller number keeps the top set a
# similar share of the brain.

# %%
plot_top_voxels(top, classes, mask, prepared.affine,
                regions=truth["regions"] if truth is not None else None,
                title=f"Top {top_k} voxels per class")

# %% [markdown]
# ## Does occlusion find the truth?
#
# On generated data each class drives a known region. A map finds it when the region's voxels
# have larger drops than the rest of the brain: the ROC AUC of the map values as a score for
# "in the region", over the brain's voxels, is then near 1 (0.5 means no better than chance).
# The table also gives the share of the top voxels inside the region (against its share of the
# brain, the chance level), whether the single largest drop lies in it, and the share of the
# region's voxels whose largest class drop belongs to its own class. The matrix scores every map
# against every region: a specific map has a bright diagonal and pale off-diagonal cells.

# %%
scores = None
if truth is not None:
    scores = localisation_scores(class_maps, classes, truth["regions"], truth["brain_mask"],
                                 top_k=top_k)
    fig = plot_localisation(localisation_matrix(class_maps, classes, truth["regions"],
                                                truth["brain_mask"]))
    plt.show()
    display(scores.round(3))
    display(Markdown(
        f"Mean AUC over the {int(scores['auc'].notna().sum())} classes with a map: "
        f"**{scores['auc'].mean():.3f}**; peak inside the planted region for "
        f"{int(scores['peak_in_region'].eq(True).sum())} of them."))
else:
    display(Markdown("Real data: no planted regions to score against."))

# %% [markdown]
# Bright cells off the diagonal are not necessarily errors. A volume of one class is also a
# volume of *not* the others: their regions are quiet, below their mean after z-scoring, and
# blanking such a region sets it to the mean, which looks like the other class's response and
# lowers the probability of the true class. A network that uses "region B is quiet" as evidence
# for class A therefore gives A's map large drops in B's region as well. The diagonal asks the
# narrower question: is each class's own region among the voxels its map ranks highest?
#
# What the score can and cannot say. It checks the method where the answer is known, on data
# whose signal was made to sit in compact regions. The test suite runs the same pipeline on
# planted and on null data (nothing planted): the planted regions are found, and on null
# data the AUCs scatter around 0.5. On real data a map shows what this network, trained on
# these labels, relies on; it is not a map of where emotions live in the brain, and a
# network can lean on any voxel that happens to correlate with the labels (motion, global
# signal, scene content).
#
# The box matters. A box is 0 only in the z-scored sense: blanking a region that is normally
# above its mean *lowers* it, and one that is below its mean *raises* it, so a drop means
# "this box's deviation from the mean was evidence", not "this box was active". Boxes larger
# than the structures they cover smear the map (each voxel gets the mean drop of the boxes
# covering it); boxes that do not overlap (stride = patch) leave a blocky map.

# %% [markdown]
# ## UMAP embeddings
#
# Three embeddings, each with UMAP (n_neighbors clipped to the number of points, min_dist as
# in the original), fitted with several seeds:
#
# - **(a) top-voxel coordinates** (the original): the 3-D position of each class's top voxels.
#   UMAP can only redraw spatial groups here; colours that form separate islands mean the
#   classes rely on different places.
# - **(b) per-voxel drop vectors** (the original): for each brain voxel, its vector of the
#   class-mean drops, coloured by the class with the largest drop. Most voxels matter for no
#   class and fill the middle; voxels that matter for one class stretch out in arms.
# - **(c) the network's pooled features**: the 256-d vector before the read-out for every
#   held-out volume, computed by its own fold's network, coloured by the portrayed emotion.
#   Islands of one colour mean the network's representation separates that emotion in data it
#   never saw.

# %%
umap_kw = {"n_neighbors": umap_neighbors, "min_dist": umap_min_dist, "seeds": umap_seeds,
           "k": stability_k, "n_epochs": umap_epochs}
start = time.perf_counter()
emb_top = umap_stability(top[["x", "y", "z"]].to_numpy(), labels=top["class"], **umap_kw)
plot_embedding(emb_top.embeddings[umap_seeds[0]], top["class"], classes,
               title="(a) UMAP of the top voxels' coordinates",
               hover=top[["rank", "i", "j", "k"]].assign(drop=top["drop"].round(4)))

# %%
vectors, voxels = voxel_drop_vectors(class_maps, classes, mask, max_voxels=max_voxels,
                                     seed=seed)
if truth is not None:
    voxels = voxels.assign(planted=label_voxels(voxels, truth["regions"]))
emb_vox = umap_stability(vectors, labels=voxels["argmax"], **umap_kw)
plot_embedding(emb_vox.embeddings[umap_seeds[0]], voxels["argmax"], classes,
               title="(b) UMAP of the per-voxel class-drop vectors (colour: largest drop)",
               hover=voxels, legend_title="largest drop")

# %%
held_out = result.predictions[result.predictions["model"] == "cnn"].reset_index(drop=True)
features = features_by_fold(held_out, prepared.volumes, result.fold_model_path,
                            n_threads=n_threads, device=run_device)
emb_feat = umap_stability(features, labels=held_out["label"], **umap_kw)
umap_seconds = time.perf_counter() - start
plot_embedding(emb_feat.embeddings[umap_seeds[0]], held_out["label"], classes,
               title="(c) UMAP of the CNN's pooled features of held-out volumes",
               hover=held_out[["subject", "run", "volume", "fold"]])

# %% [markdown]
# The features of different folds come from different networks, so they do not share one
# space: an embedding could group volumes by fold instead of by emotion. The share of each
# volume's nearest neighbours (in the 256-d features) that share its emotion, and that share
# its fold, tells which dominates.

# %%
fold_agreement = label_agreement(features, held_out["fold"], stability_k)
fold_chance = float((held_out["fold"].value_counts(normalize=True) ** 2).sum())
display(Markdown(
    f"Nearest {emb_feat.k} neighbours in feature space: same emotion "
    f"**{emb_feat.input_label_agreement:.2f}** (chance {emb_feat.chance_label_agreement:.2f}), "
    f"same fold **{fold_agreement:.2f}** (chance {fold_chance:.2f})."))

# %% [markdown]
# ### How far to trust the pictures
#
# UMAP is stochastic and its pictures can suggest structure that is not there. For each
# embedding and seed: **trustworthiness** (1 = no point has embedding neighbours that are far
# apart in the input), the share of input neighbourhoods kept (**knn_preserved**), and the share
# of embedding neighbours with the same colour (**label_agreement**, against the same in the
# input space and at chance). Across seeds: the **Procrustes disparity** of two seeds'
# pictures after the best rotation, reflection and scaling (0 = the same picture) and the share
# of nearest neighbours they agree on. The panels below show the features' embedding for each
# seed, aligned onto the first.

# %%
stability = pd.DataFrame([emb_top.summary("(a) top-voxel coordinates"),
                          emb_vox.summary("(b) per-voxel drop vectors"),
                          emb_feat.summary("(c) CNN pooled features")])
stability.round(3)

# %%
fig = plot_embedding_seeds(emb_feat.embeddings, held_out["label"], classes,
                           title="(c) CNN features: the same UMAP with each seed")
plt.show()
display(Markdown(f"All embeddings and their seeds: {umap_seconds:.0f} s."))

# %% [markdown]
# Reading the table: a trustworthiness near 1 with label agreement close to its input-space
# value means the picture's colour islands are real neighbourhoods of the data, not UMAP
# artefacts; a label agreement near chance means the colours are mixed, whatever shapes the
# picture draws. Large Procrustes disparities with high neighbour agreement mean the seeds
# place the same groups differently on the page: trust the groups, not their positions or
# the distances between them. On the **demo** profile the data are generated, the network is
# small and briefly trained, and a handful of volumes enter each map, so the numbers show that
# the pipeline works and finds a planted truth, not what portrayed emotions look like in the
# brain; on the **paper** profile they come from the real StudyForrest data.

# %%
selection.to_csv(out_dir / "selection.csv", index=False)
top.to_csv(out_dir / "top_voxels.csv", index=False)
stability.to_csv(out_dir / "umap_stability.csv", index=False)
if scores is not None:
    scores.to_csv(out_dir / "localisation.csv", index=False)
write_manifest(out_dir, "03_occlusion", {
    "split": split, "min_prob": min_prob, "n_per_class": n_per_class,
    "correct_only": correct_only, "fill_up": fill_up, "patch": list(occ.patch), "stride": list(occ.stride),
    "fill": fill, "top_k": top_k, "umap_neighbors": umap_neighbors,
    "umap_min_dist": umap_min_dist, "umap_seeds": umap_seeds, "umap_epochs": umap_epochs,
    "stability_k": stability_k, "max_voxels": max_voxels, "seed": seed,
    "dataprep": str(prepared.folder), "training": str(result.folder),
}, inputs={str(result.fold_model_path(f)): sha256_file(result.fold_model_path(f))
           for f in selection["fold"].unique()},
   outputs={"maps": {c: p.name for c, p in paths.items()}, "n_occluded": len(selection),
            "method": occ.method, "seconds": round(seconds, 1),
            "max_probability_mismatch": mismatch,
            "mean_auc": None if scores is None else scores["auc"].mean()})
pd.Series({"folder": display_path(out_dir, data_dir),
           "files": ", ".join(sorted(p.name for p in out_dir.iterdir()))}).to_frame("saved")
