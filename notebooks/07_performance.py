# ---
# jupyter:
#   emolib:
#     needs: []  # the chapters whose outputs this one reads
#     alone: true  # benchmarks: nothing else may compute beside them
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
# # Performance
#
# Four pieces of `emolib` replace something a user of the field would otherwise run: preparing
# the volume cache (against simply decompressing the files), training the CNN (against the
# original's plain DataLoader loop), occlusion (against Captum's `Occlusion`) and the RSA
# bootstrap (against rsatoolbox's `eval_bootstrap_pattern`). Each benchmark in `benchmarks/`
# times ours and the peer **in the same run, on the same job**, checks that both give the same
# numbers, and prints the ratio. This chapter runs them with the profile's job sizes; the
# numbers below were measured while this book was built, on the machine that built it.

# %% tags=["colab"]
# In Colab, install this project first (elsewhere this cell does nothing).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "emolib @ git+https://github.com/emolib/emolib"], check=True)

# %% tags=["parameters"]
from typing import Optional

profile: str = "demo"  # run profile
data_dir: Optional[str] = None  # data folder for the generated benchmark dataset
dataprep_args: list = ["--shape", "40", "40", "18", "--repeats", "1"]  # arguments of bench_dataprep.py; the real job is --shape 80 80 35
training_args: list = ["--n", "64", "--repeats", "1", "--shape", "40", "40", "18"]  # arguments of bench_training.py; full-size volumes by default
occlusion_args: list = ["--small", "--threads", "2", "--repeats", "1"]  # arguments of bench_occlusion.py; the job is the default (128 windows, 1 and 2 threads)
rsa_args: list = ["--n-patterns", "300", "--n-bootstrap", "50"]  # arguments of bench_rsa_bootstrap.py; the job is 500 and 100
seed: int = 0  # unused here; every chapter takes it
progress: bool = True  # unused here; every chapter takes it

# %% tags=["remove-cell"]
from emolib.book.params import check_parameters

check_parameters("07_performance")  # a name papermill injected that is not declared above is an error

# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from emolib.book.perf import paper_training_cost, ratio_table, run_benchmark
from emolib.paths import display_command

data_args = ["--data-dir", data_dir] if data_dir else []
jobs = [
    ("bench_dataprep.py", [*dataprep_args, *data_args]),
    ("bench_training.py", training_args),
    ("bench_occlusion.py", occlusion_args),
    ("bench_rsa_bootstrap.py", rsa_args),
]
results = []
for script, args in jobs:
    results.append(run_benchmark(script, args))
    print(f"{script}: {results[-1].ratios} in {results[-1].seconds:.0f} s", flush=True)
display(Markdown(f"Measured on {torch.get_num_threads()} CPU threads (torch {torch.__version__});"
                 f" {'a GPU was available' if torch.cuda.is_available() else 'no GPU'}."))

# %%
goals = {
    "dataprep time emolib / gzip floor": "<= 0.5 (time: lower is better)",
    "dataprep time emolib keep=all / gzip floor": "<= 0.8 (time: lower is better)",
    "training throughput emolib / plain": ">= 1",
    "evaluation throughput emolib / plain": ">= 1",
    "occlusion incremental / captum": ">= 20",
    "occlusion batched / captum": "about 1 (the same forward passes)",
    "bootstrap speed-up emolib / rsatoolbox eval_bootstrap_pattern": ">= 10",
    "bootstrap speed-up emolib / rsatoolbox subsample+compare": ">= 5",
}
table = ratio_table(results, goals, data_dir)
table

# %%
fig, ax = plt.subplots(figsize=(7, 1 + 0.45 * len(table)), layout="constrained")
speedups = table["value"].where(~table["ratio"].str.startswith("dataprep time"),
                                1 / table["value"])
table = table.assign(label=table["ratio"].str.replace(" / ", "\n/ ", n=1))
ax.barh(table["label"], speedups, color="#4c72b0")
ax.axvline(1, color="black", lw=1, ls="--")
ax.set_xscale("log")
ax.set_xlabel("speed-up of emolib over the peer (log scale; dataprep: floor time / ours)")
for y, v in enumerate(speedups):
    ax.text(v, y, f" {v:.2f}x", va="center")
plt.show()

# %% [markdown]
# ## What the paper profile would cost, on N workers
#
# The paper profile's run split is 8 folds of up to 50 epochs over 5,250 volumes of
# 80 x 80 x 35 (15 subjects x 5 classes x 70). Each fold is one task on a Dask cluster
# (chapter 02: a local one by default, or a lab's through `dask-jobqueue`), so N workers
# take ceil(8 / N) rounds of one fold. From the training throughput measured above (one
# process on this machine, at the benchmark's volume size, scaled to 80 x 80 x 35 by voxel
# count; every epoch costed as one training pass over all 5,250 volumes, an upper bound, and
# no early stopping):

# %%
training = next(r for r in results if r.script == "bench_training.py")
cost = paper_training_cost(training.measured["training volumes/s emolib"],
                           int(training.measured["training volume voxels"]))
display(Markdown(
    f"At {training.measured['training volumes/s emolib']:.1f} training volumes/s of "
    f"{int(training.measured['training volume voxels']):,} voxels here, one paper fold "
    f"costs about **{cost['fold_hours'].iloc[0]:.0f} h** on this CPU; on 8 workers like it "
    f"the run split takes **{cost['total_hours'].iloc[-1]:.0f} h**. The paper profile is "
    "meant for GPUs: the same arithmetic with a GPU's measured throughput gives its cost."))
cost.round(2)

# %% [markdown]
# How each was made fast: the volume cache inflates each gzip stream in one call (with ISA-L)
# and views the array in place, reading the next two runs on threads while the current one is
# z-scored;
# training keeps the volumes in one tensor, gathers batches with `index_select` and uses the
# channels-last 3D memory format; occlusion recomputes, for each window, only the part of
# each layer's activations that the window can reach (exact, agreeing with Captum to 1e-5);
# the bootstrap gathers each resampled RDM vector once and compares all layers with all ROIs
# in one matrix product. The full outputs of the runs follow.

# %%
for r in results:
    print(f"$ python benchmarks/{r.script} {display_command(r.args, data_dir)}   "
          f"({r.seconds:.0f} s)")
    print("\n".join(line for line in r.output.splitlines() if "it/s]" not in line)[-2500:])
    print()
