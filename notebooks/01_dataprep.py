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
# # Data preparation: labelled BOLD volumes
#
# This chapter turns the movie session of StudyForrest (OpenNeuro ds000113, `ses-movie`) and
# the portrayed-emotion annotations of Labs et al. (2015) into labelled, z-scored BOLD volumes
# that the later chapters train on and probe. It shows every decision on the way: how observers'
# annotations become one label per 2-second step of the movie, which steps are dropped and why,
# how movie time maps onto the eight overlapping runs, and what the inputs looked like.
#
# The parameters below are the defaults; the book runs this notebook with a profile's values
# (`profiles/*.yaml`), which appear in the cell after them.

# %% tags=["colab"]
# In Colab, install this project first (elsewhere this cell does nothing).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "emolib @ git+https://github.com/emolib/emolib"], check=True)

# %% tags=["parameters"]
from typing import Optional

profile: str = "demo"  # run profile, names the folder <data_dir>/derived/<profile>/01_dataprep
data_dir: Optional[str] = None  # data folder; None means $EMOLIB_DATA, else data/ in the repository
source: str = "synthetic"  # synthetic generates a ds000113-shaped dataset; bids reads bids_dir
bids_dir: Optional[str] = None  # root of the real ds000113 (or of the aligned derivative), for source bids
layout: str = "bids"  # bids: raw ds000113, each subject in native space; aligned: studyforrest-data-aligned
subjects: Optional[list] = None  # subjects to prepare, e.g. ["01", "02"]; None means all with the movie session
entities: Optional[dict] = None  # further BIDS entities the runs must carry, e.g. {"acq": "x"}; None means none
affine_tolerance: float = 1.0  # mm a run's grid may sit from its subject's first run before a warning
annotations_dir: Optional[str] = None  # None uses the real Labs et al. files when shared/ is beside the repo, else generated ones
annotation_pattern: str = "av1o*.csv"  # audio-visual observers; ao1o*.csv for the audio-only ones
n_subjects: int = 3  # generated subjects, synthetic only
grid: list = [24, 24, 12]  # generated voxel grid, synthetic only; the real one is 80 x 80 x 35
run_starts: Optional[list] = None  # movie time of each run's first volume; None means the real segment starts
volumes_per_run: Optional[list] = None  # None means the real run lengths, 451 441 438 488 462 439 542 338
effect_size: float = 0.02  # planted response as a fraction of baseline, synthetic only
null: bool = False  # plant no emotion signal (a null dataset), synthetic only
scene_size: float = 0.01  # stimulus-locked scene signal shared by all subjects, unrelated to emotion, synthetic only
label_mode: str = "seed"  # consensus rule used downstream: seed is the original, category is ours
min_observers: Optional[int] = None  # agreement threshold; None means half the observers, rounded up
hrf_lag: float = 4.0  # seconds between what is on screen and the volume that reflects it
min_count: int = 70  # classes with fewer kept steps are dropped; the original used 70
n_per_class: int = 70  # steps sampled per class; the original used 70
keep: str = "selected"  # volumes cached: selected, labelled or all
mask: Optional[str] = None  # None z-scores whole volumes as the original; epi or a mask NIfTI path
smoothing_fwhm: Optional[float] = 7.0  # Gaussian smoothing (mm FWHM, nilearn's smooth_img) before standardising; None: none (the original)
high_pass: Optional[float] = 0.0078125  # with standardize run: remove cosine drifts below this frequency (Hz; 1/128, SPM's and nilearn's usual high-pass); None: none
standardize: str = "run"  # run: each voxel detrended and z-scored within its run (nilearn's clean); volume: each volume by its own mean and std (the original)
seed: int = 0  # seed of the class balancing and of the generated data
progress: bool = True  # show progress bars

# %% tags=["remove-cell"]
from emolib.book.params import check_parameters

check_parameters("01_dataprep")  # a name papermill injected that is not declared above is an error

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from emolib.datasets import obtain_dataset
from emolib.forrest import STUDYFORREST, RunTiming, prepare_dataset, summarize_inputs
from emolib.forrest import labels as lab
from emolib.io import read_observers
from emolib.paths import display_path, get_derived_dir
from emolib.plots import (
    configure_plotly,
    plot_class_counts,
    plot_label_status,
    plot_label_timeline,
    plot_labels_by_run,
    plot_mean_epis,
)

configure_plotly()
pd.set_option("display.max_columns", 20)
timing = RunTiming(
    tuple(run_starts or STUDYFORREST.starts),
    tuple(volumes_per_run or STUDYFORREST.n_volumes),
    STUDYFORREST.tr,
)
src = obtain_dataset(
    source, profile, data_dir=data_dir, bids_dir=bids_dir, annotations_dir=annotations_dir,
    annotation_pattern=annotation_pattern, timing=timing, layout=layout, progress=progress,
    n_subjects=n_subjects, shape=tuple(grid), effect_size=effect_size, null=null, seed=seed,
    scene_size=scene_size,
)
display(Markdown(
    f"**Inputs.** {'Aligned derivative' if layout == 'aligned' else 'BIDS tree'}: "
    f"`{display_path(src.bids_dir, data_dir)}` "
    f"({'generated, ' + ('null' if null else 'planted signal') if src.truth_dir else 'real data'}"
    + ({"reuse": ", reused from an earlier run with the same parameters", "new": ", now",
        "stale": f", again (changed since the earlier run: {(src.reuse or ('', ''))[1]})"}.get(
            (src.reuse or ("",))[0], "")) + "). "
    f"Annotations: `{display_path(src.annotations_dir, data_dir)}` "
    f"({'the real Labs et al. files' if src.annotations_real else 'generated in the same format'})."
    + (f" The generated BOLD carries, besides the {effect_size:.0%} emotion responses "
       f"(none when null), a stimulus-locked scene signal of {scene_size:.0%} shared by every "
       "subject and unrelated to the emotions, as real movie fMRI does: what a split that "
       "puts the same movie moment on both sides can recognise." if src.truth_dir else "")
))

# %% [markdown]
# ## The annotations
#
# Each observer marked episodes of portrayed emotion with a start and end in movie time, the
# character, arousal, valence, direction and zero or more of 22 emotion categories. The reader
# (`emolib.io.annotations.read_observers`) checks every row (columns, times, the vocabularies of
# every field) and names the file and line of anything malformed.

# %%
annotations = read_observers(src.annotations_dir, annotation_pattern)
per_obs = annotations.groupby("observer").agg(
    rows=("row", "size"),
    with_emotion=("emotion", lambda e: int((e != "").sum())),
    multi_label=("emotion", lambda e: int(e.str.contains(" ").sum())),
    first_s=("start", "min"),
    last_s=("end", "max"),
)
per_obs

# %% [markdown]
# ## From annotations to one label per 2-second step
#
# **Seed mode** is the original project's rule, kept exactly: on the 2-s grid an annotation
# covers steps $\lfloor \text{start}/2 \rfloor$ to $\lceil \text{end}/2 \rceil - 1$; rows
# without an emotion are dropped; a later row of the same observer overwrites an earlier one;
# the label is the whole emotion string (so "LOVE HAPPINESS" is a label of its own); a step is
# kept when at least $\lceil n_\text{observers}/2 \rceil$ observers give the same string.
#
# **Category mode** is ours: each observer endorses every category that any of their rows
# covering the step names (co-occurring episodes of different characters no longer erase each
# other, and "LOVE HAPPINESS" counts for both); the label is the category most observers
# endorse, kept at the same threshold; a tie at the top leaves the step *ambiguous* and
# unlabelled instead of breaking it arbitrarily.

# %%
tables = {
    mode: lab.consensus_labels(annotations, tr=lab.LABEL_STEP_S, min_observers=min_observers, mode=mode)
    for mode in ("seed", "category")
}
labels = tables[label_mode]
selected = lab.select_classes(labels, min_count=min_count, n_per_class=n_per_class, seed=seed)
classes = sorted(selected["label"].unique())
summary = pd.DataFrame({
    mode: {
        "grid steps": len(t),
        "kept steps": int(t["label"].notna().sum()),
        "distinct labels": int(t["label"].nunique()),
        f"classes with >= {min_count} steps": int((lab.class_counts(t) >= min_count).sum()),
    }
    for mode, t in tables.items()
})
summary

# %%
plot_label_timeline(labels, classes, timing,
                    title=f"Consensus labels over the movie ({label_mode} mode); runs shaded")

# %%
plot_class_counts(tables, min_count=min_count)

# %% [markdown]
# What was dropped, and why: a step is *unannotated* when no observer marked an emotion there,
# *no majority* when fewer than the threshold agree, and (category mode only) *ambiguous* when
# two categories tie at the top.

# %%
fig = plot_label_status(tables)
plt.show()

# %%
counts = pd.DataFrame({m: lab.class_counts(t) for m, t in tables.items()}).fillna(0).astype(int)
counts = counts.sort_values(list(tables), ascending=False)
display(Markdown(
    f"Classes used downstream ({label_mode} mode, at least {min_count} kept steps, each sampled "
    f"down to {n_per_class}): **{', '.join(classes)}**."
))
counts.head(12)

# %% [markdown]
# ## Movie time, runs and the hemodynamic lag
#
# The movie was shown in eight segments, one per run, each starting about 16 s before the
# previous one ended. Volume $v$ of run $r$ was acquired at movie time
# $\text{start}_r + 2v$; it reflects what was on screen `hrf_lag` seconds earlier, so its label
# is read at that *stimulus time*. A moment inside an overlap was seen in two runs: both volumes
# are kept, and the sample table records the other run (`overlap_run`) so that the training
# splits can keep such twins on the same side.
#
# **Smoothing and standardisation.** The original z-scored each volume by its own mean and
# standard deviation over voxels (`standardize="volume"`). That keeps each run's mean image, its slow
# drift and its gain in the input, all far larger than a 1-2 % emotion response, and all
# different between runs: a run split must then generalise across them. The default here,
# `standardize="run"`, removes from every voxel's time series, within its run, its mean, a
# linear trend and the cosine drifts slower than `high_pass` (1/128 Hz), then z-scores it, as
# `nilearn.signal.clean` does per run and as decoding studies usually do; it uses no label and
# no other run, so it cannot leak across a run split. Before that, each volume is smoothed
# with a Gaussian kernel of `smoothing_fwhm` mm (7 by default, within the 4-8 mm decoding
# studies use; the original did not smooth), which averages the voxel noise over the extent
# of a response. In exploratory runs on the demo's generated data at 2 % (3 subjects, run
# split, each measured once, before the high-pass was added) the linear baseline's macro AUC
# rose from 0.53 with the original's preprocessing (4 folds) to 0.69 with run-wise
# z-scores and 0.78 with smoothing too (one fold); the CNN's, in that fold, from 0.49 to 0.64
# with both, and 0.77 with the input noise of chapter 02 on top. The high-pass came after:
# without it, the time-aware null of chapter 02 was liberal on run-wise z-scores (a size of
# 0.080 at alpha 0.05 and 0.030 at 0.01 over 200 generated null datasets), with it 0.040 and
# 0.025 (`benchmarks/bench_calibration.py`; chapter 08 measures it again).

# %%
overlaps = pd.DataFrame(timing.overlaps(), columns=["run", "next run", "overlap (s)"])
overlaps.style.hide(axis="index").format({"overlap (s)": "{:.2f}"})

# %%
out_dir = get_derived_dir("01_dataprep", profile, data_dir)
prepared = prepare_dataset(
    src.bids_dir, src.annotations_dir, out_dir, annotation_pattern=annotation_pattern,
    subjects=subjects, timing=timing, label_mode=label_mode, min_observers=min_observers,
    hrf_lag=hrf_lag, min_count=min_count, n_per_class=n_per_class, keep=keep, mask=mask,
    standardize=standardize, smoothing_fwhm=smoothing_fwhm,
    high_pass=high_pass if standardize == "run" else None, layout=layout, entities=entities,
    affine_tolerance=affine_tolerance, seed=seed, progress=progress,
)
samples = prepared.samples
status, reason = prepared.reuse
display(Markdown(
    f"Prepared **{len(samples)}** volumes of {samples['subject'].nunique()} subjects, grid "
    f"{prepared.volumes.shape[1:]}, into `{display_path(prepared.folder, data_dir)}`; "
    f"{int((samples['overlap_run'] > 0).sum())} of them fall in a run overlap. "
    + ("The folder of an earlier run was reused: it was made from the same parameters and "
       "the same input contents (SHA-256 of every file)." if status == "reuse" else
       f"An interrupted run was resumed ({reason}), the rest computed now." if status ==
       "resume" else "Computed by this run" + ("." if status == "new" else
                                               f" (the earlier folder was stale: {reason}).")))
)
samples.head()

# %%
fig = plot_labels_by_run(samples)
plt.show()

# %%
pd.crosstab(samples["subject"], samples["label"], margins=True)

# %% [markdown]
# ## The inputs
#
# Every BOLD file was checked before any heavy work: readable gzip, a 4D image, a TR of 2 s
# (read as BIDS says, from the top-level `task-movie_bold.json` that every run inherits, and
# checked against the header), one grid (shape and voxel size) for every run of every
# subject, the run length the timing expects, and finite values. Their SHA-256 hashes go into
# the stage's manifest.
#
# **The network sees unaligned native space, as the original's did.** Each subject of
# ds000113 lies in its own scanner space: the same grid, but the head at another place and
# angle, so the affines differ between subjects and voxel $(i, j, k)$ is a different piece of
# brain in each of them. Nothing here resamples; z-scoring masks (when `mask` is set) are per
# subject. The table gives each subject's distance from the first subject's grid (the largest
# displacement of a grid corner, in mm). The aligned derivative (`layout = "aligned"`) aligns
# the runs of each subject to that subject's own template, still not subjects to each other.

# %%
inputs = summarize_inputs(prepared)
out = prepared.manifest["outputs"]
display(Markdown(
    f"{len(inputs)} BOLD runs of {inputs['subject'].nunique()} subjects passed every check, "
    f"plus {len(prepared.manifest['inputs']) - len(inputs)} annotation files. Space: "
    f"{out['space']}."
    + "".join(f"\n- {note}" for note in out["notes"])
))
inputs.pivot_table(index="subject", columns="run", values="volumes").assign(
    grid=inputs.groupby("subject")["grid"].first(),
    voxel_mm=inputs.groupby("subject")["voxel_mm"].first(),
    tr_s=inputs.groupby("subject")["tr_s"].first(),
    tr_from=inputs.groupby("subject")["tr_from"].first(),
    dtype=inputs.groupby("subject")["dtype"].first(),
    mm_from_first_subject=pd.Series(out["subject_shift_mm"]).round(2),
)

# %%
subs = sorted(samples["subject"].unique())
fig = plot_mean_epis({s: prepared.mean_image(s) for s in subs[:3]})
plt.show()

# %% [markdown]
# ## Manifest
#
# Later stages read only what this stage wrote; the manifest records how it was made.

# %%
manifest = prepared.manifest
pd.Series({
    "stage": manifest["stage"],
    "samples": manifest["outputs"]["n_samples"],
    "classes": ", ".join(manifest["outputs"]["classes"]),
    "kept steps": manifest["outputs"]["kept_steps"],
    "input files": len(manifest["inputs"]),
    "numpy": manifest["versions"]["numpy"],
    "nibabel": manifest["versions"]["nibabel"],
}).to_frame("value")
