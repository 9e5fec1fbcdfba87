# ---
# jupyter:
#   emolib:
#     needs: all  # the methods chapter reads every stage's manifests
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
# # Methods
#
# This section is not written by hand. It is assembled from the parameters each chapter ran
# with (recorded by the runner) and the manifests each stage wrote beside its outputs
# (parameters, input file hashes, package versions), so it describes exactly the runs whose
# results this book shows. The analyses themselves are explained in the chapters.

# %% tags=["colab"]
# In Colab, install this project first (elsewhere this cell does nothing).
import sys

if "google.colab" in sys.modules:
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "emolib @ git+https://github.com/emolib/emolib"], check=True)

# %% tags=["parameters"]
from typing import Optional

profile: str = "demo"  # run profile whose manifests are described
data_dir: Optional[str] = None  # data folder; None means $EMOLIB_DATA, else data/ in the repository
seed: int = 0  # unused here; every chapter takes it
progress: bool = True  # unused here; every chapter takes it

# %% tags=["remove-cell"]
from emolib.book.params import check_parameters

check_parameters("06_methods")  # a name papermill injected that is not declared above is an error

# %%
import pandas as pd
from IPython.display import Markdown, display

from emolib.book.methods import (
    collect_runs,
    describe_data,
    describe_training,
    describe_windows,
    parameter_table,
    version_table,
)

runs = collect_runs(profile, data_dir)
display(Markdown(f"Stages found for profile **{profile}**: "
                 f"{', '.join(runs) if runs else 'none (run the chapters first)'}."))

# %% [markdown]
# ## Data and labels

# %%
display(Markdown(describe_data(runs)))

# %% [markdown]
# ## Decoding

# %%
display(Markdown(describe_training(runs)))
display(Markdown(describe_windows(runs)))

# %% [markdown]
# ## Every parameter
#
# The notebook parameters of every chapter as this run used them (the defaults of each
# chapter's parameters cell, overridden by the profile).

# %%
pd.set_option("display.max_rows", 200)
parameter_table(runs)

# %% [markdown]
# ## Software
#
# Versions recorded by each stage when it ran.

# %%
version_table(runs)
