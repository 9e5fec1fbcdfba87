"""The methods section, written from what the stages actually ran with.

Every stage leaves a ``manifest.json`` (parameters, input hashes, versions) and the runner a
``parameters.json`` (the notebook's parameters after the profile's). This module gathers them
for one profile and turns them into prose and tables, so that the methods chapter cannot
drift from the code and the runs it describes.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path

import pandas as pd

from emolib.paths import display_value, get_data_dir

__all__ = [
    "collect_runs", "describe_data", "describe_training", "describe_volumes", "describe_windows",
    "parameter_table", "version_table",
]


def collect_runs(profile: str, data_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    """Manifests and notebook parameters of every stage of ``profile``.

    Returns
    -------
    dict
        Stage name -> ``{"parameters": notebook parameters or {}, "manifests": {relative
        folder: manifest}}``, for every stage folder under ``<data>/derived/<profile>``.
    """
    root = get_data_dir(data_dir, create=False) / "derived" / profile
    out: dict[str, dict] = {}
    if not root.is_dir():
        return out
    for stage in sorted(p for p in root.iterdir() if p.is_dir()):
        params_file = stage / "parameters.json"
        manifests = {
            str(m.parent.relative_to(stage)): json.loads(m.read_text())
            for m in sorted(stage.rglob("manifest.json"))
            if "ground_truth" not in m.parts
        }
        out[stage.name] = {
            "parameters": json.loads(params_file.read_text()) if params_file.is_file() else {},
            "manifests": manifests,
        }
    return out


def _truth(bids_dir: str | None) -> dict | None:
    if not bids_dir:
        return None
    path = Path(bids_dir).parent / "truth" / "generation.json"
    return json.loads(path.read_text()) if path.is_file() else None


def describe_data(runs: dict) -> str:
    """Prose for the data and labels (stage ``01_dataprep``)."""
    stage = runs.get("01_dataprep")
    if not stage or "." not in stage["manifests"]:
        return "*The data-preparation stage has not run for this profile.*"
    m = stage["manifests"]["."]
    p, o = m["parameters"], m["outputs"]
    n_ann = sum(1 for f in m["inputs"]  # the annotation files among the inputs
                if fnmatch.fnmatch(Path(f).name, p.get("annotation_pattern", "*.csv")))
    timing = p["timing"]
    threshold = (f"at least {p['min_observers']} observers" if p.get("min_observers")
                 else "at least half of the observers (rounded up)")
    mode = {"seed": "the original project's rule (whole emotion strings, later rows of an "
                    "observer overwriting earlier ones)",
            "category": "agreement per emotion category, ties left unlabelled"}[p["label_mode"]]
    truth = _truth(p.get("bids_dir"))
    if truth:
        g = truth["parameters"]
        source = (f"The BOLD data were **generated** (`emolib.synthetic`) in the ds000113 layout "
                  f"for {g['n_subjects']} subjects on a {' x '.join(map(str, g['shape']))} grid "
                  f"of {' x '.join(f'{v:g}' for v in g['voxel_size'])} mm, with a TR of "
                  f"{timing['tr']:g} s. Each class drives a Glover-HRF-convolved response of "
                  f"{100 * g['effect_size']:g} % of the baseline in its own spherical region "
                  f"(radius {g['region_radius']:g} voxels), over a global signal, drift, "
                  f"physiological-like oscillations and AR(1) noise of "
                  f"{100 * g['noise']:g} %" + (" (null: nothing planted)" if g["null"] else "")
                  + f"; seed {g['seed']}.")
    else:
        source = (f"The BOLD data are the ds000113 movie session read from "
                  f"`{p['bids_dir']}` ({len(o['subjects'])} subjects).")
    runs_text = ", ".join(f"{s:g}" for s in timing["starts"])
    return "\n\n".join([
        source,
        f"**Labels.** The annotation files of {n_ann} observers (`{p['annotation_pattern']}`) "
        f"were combined on a 2-s grid of movie time with {mode}; a step was kept when "
        f"{threshold} agreed, which kept {o['kept_steps']} steps. Classes with at least "
        f"{p['min_count']} kept steps were used ({', '.join(o['classes'])}), each sampled "
        f"down to {p['n_per_class']} steps (seed {p['seed']}).",
        f"**Timing.** Volume $v$ of run $r$ was acquired at movie time "
        f"$\\text{{start}}_r + {timing['tr']:g}\\,v$, with run starts {runs_text} s and "
        f"{' '.join(map(str, timing['n_volumes']))} volumes per run; each volume was "
        f"labelled at its movie time minus a hemodynamic lag of {p['hrf_lag']:g} s. Volumes "
        f"seen in two runs' overlap were kept in both.",
        describe_volumes(o["n_samples"], p),
    ])


def describe_volumes(n_samples: int, p: dict) -> str:
    """Prose for how the cached volumes were smoothed and standardised (dataprep parameters
    ``p``)."""
    where = f" inside a brain mask (`{p['mask']}`)" if p.get("mask") else ""
    if p.get("standardize", "volume") == "run":
        drift = (f", the cosine drifts below {p['high_pass']:.4g} Hz removed"
                 if p.get("high_pass") else "")
        text = (f"**Volumes.** {n_samples} volumes were cached; every voxel's time series was "
                f"linearly detrended{drift} and z-scored over all volumes of its run{where} "
                "(as `nilearn.signal.clean` does per run).")
    else:
        text = (f"**Volumes.** {n_samples} volumes were z-scored by their own mean and "
                "standard deviation " + (f"{where.strip()}." if where else
                                         "over the whole volume (as the original)."))
    if p.get("smoothing_fwhm"):
        text += (f" Before that, each volume was smoothed with a Gaussian kernel of "
                 f"{p['smoothing_fwhm']:g} mm FWHM (`nilearn.image.smooth_img`).")
    return text


def describe_training(runs: dict) -> str:
    """Prose for the decoding stage (``02_training``)."""
    stage = runs.get("02_training")
    if not stage or not stage["manifests"]:
        return "*The decoding stage has not run for this profile.*"
    nb = stage["parameters"]
    texts = []
    for _, m in sorted(stage["manifests"].items()):
        p = m["parameters"]
        c = p["config"]
        folds = "all folds" if p["folds"] is None else f"folds {p['folds']}"
        kind = {"run": "leave-one-run-out", "subject": "leave-one-subject-out (one run each)",
                "random": "the original random 80/20 split of volumes"}[p["kind"]]
        texts.append(
            f"**{kind.capitalize()}** ({folds}, {m['outputs']['n_folds']} trained): the CNN "
            f"(`EmotionCNN`) was trained with AdamW (learning rate {c['lr']:g}, weight decay "
            f"{c['weight_decay']:g}), a cosine schedule (T_max {c['t_max']}), batch "
            f"{c['batch_size']}, dropout {c['dropout']:g}, up to {c['epochs']} epochs with early "
            f"stopping after {c['patience']} epochs without a gain in inner-validation "
            f"accuracy (seed {c['seed']}). " + (
                "No leakage guard: this split is shown only to measure the original's leak."
                if p["kind"] == "random" else
                f"Training samples within {p.get('span_s', 20.0) + 2:g} s of movie time of a "
                f"test sample (one TR plus the {p.get('span_s', 20.0):g}-s hemodynamic "
                f"response) were removed, and so were those that close to the inner "
                f"validation run; an independent checker verified every fold."))
    extra = []
    if nb:
        block = nb.get("ci_block_s", 60.0)
        unit = "single movie moments" if block is None else f"{block:g}-s stretches of movie time"
        if nb.get("ci_method", "jackknife") == "bootstrap":
            how = (f"percentile intervals from {nb.get('n_bootstrap', 'n/a')} bootstrap "
                   f"resamples of {unit} within folds")
        else:
            how = (f"delete-one-block jackknife t-intervals over {unit}, stratified by fold")
        extra.append(f"AUCs were computed within test folds and averaged; 95 % intervals: "
                     f"{how}; p-values from {nb.get('n_permutations', 'n/a')} cyclic shifts "
                     f"of the labels along movie time within folds (the exact set of shift "
                     f"combinations when it is small enough).")
    extra.append("Baselines in the same folds: L2-regularised multinomial logistic regression "
                 "on the standardised voxels of the mask (strength chosen among 1e-3, 1e-2, "
                 "1e-1 on the inner validation run), and random scores (chance).")
    return "\n\n".join(texts + extra)


def describe_windows(runs: dict) -> str:
    """Prose for the windows-of-volumes stage (``09_spacetime``), from its decodings'
    manifests."""
    stage = runs.get("09_spacetime")
    decodings = {k: m for k, m in (stage or {}).get("manifests", {}).items()
                 if "config" in m.get("parameters", {})}
    if not decodings:
        return "*The windows-of-volumes stage has not run for this profile.*"
    p = next(iter(decodings.values()))["parameters"]
    window = p.get("sample_window") or p.get("window") or []
    nets = []
    for m in decodings.values():
        q, c = m["parameters"], m["parameters"]["config"]
        if not q.get("window"):
            nets.append("the single-volume CNN on each window's labelled volume")
        elif c.get("architecture", "cnn") == "cnn":
            nets.append("the CNN with the window's volumes as its input channels")
        else:
            k = c.get("temporal_kernel") or len(q["window"])
            nets.append(f"the factorised (2+1)D `SpaceTimeCNN` (a {k}-volume temporal "
                        "convolution after the first spatial one)")
    span = p.get("span_s", 20.0)
    # the span the decoding's leakage guards used (its manifest's, so the TR is the data's)
    leak = next(iter(decodings.values())).get("outputs", {}).get("leak_span_s")
    widened = (f"{span:g} s + {leak - span:g} s" if leak is not None
               else f"{span:g} s plus the window's length")
    nets_text = "; ".join(nets)
    nets_text = nets_text[:1].upper() + nets_text[1:]
    offsets = f"offsets {window[0]:+d} to {window[-1]:+d}" if window else "single volumes"
    return (f"**Windows of volumes.** Samples were windows of {len(window)} consecutive volumes "
            f"of one run ({offsets} from each labelled volume; windows that would cross a "
            f"run's edge were dropped), from the data-preparation inputs and parameters with "
            f"those neighbours cached. {nets_text} were trained with the "
            f"decoding recipe above on the same samples in the same folds "
            f"({p['kind']} split), the leakage span widened to the window ({widened}); "
            f"same intervals and null. "
            f"Temporal importance: each volume of held-out windows blanked in turn "
            f"(space-time occlusion, equal to Captum's on 4-D input).")


def parameter_table(runs: dict) -> pd.DataFrame:
    """Every notebook parameter of every stage (one row each), as the runs used them."""
    rows = [{"stage": stage, "parameter": k, "value": json.dumps(display_value(
                 v, info["parameters"].get("data_dir")))}
            for stage, info in runs.items() for k, v in info["parameters"].items()]
    return pd.DataFrame(rows, columns=["stage", "parameter", "value"])


def version_table(runs: dict) -> pd.DataFrame:
    """Package versions recorded by each stage's manifests."""
    rows = {}
    for stage, info in runs.items():
        for folder, m in info["manifests"].items():
            key = stage if folder == "." else f"{stage}/{folder}"
            rows[key] = m.get("versions", {})
    return pd.DataFrame(rows).fillna("")
