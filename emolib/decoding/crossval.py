"""Cross-validated decoding: the CNN and its baselines in the same leakage-free folds.

For every fold of a split (:mod:`emolib.forrest.splits`), an inner validation set is carved out of
the training samples for early stopping (a whole training run, guarded like the test set, for
the run and subject splits; a random tenth for the random split, as leaky as the original),
the CNN is trained (:func:`emolib.models.train_model`, checkpointed per fold), and the test
samples are predicted by the CNN, by an L2-regularised logistic regression on the voxels of the
mask (its strength chosen on the same inner validation set, fit on the training samples only)
and by chance (random scores, seeded: what a model that learned nothing gets through the same
pipeline). Everything goes
under one output folder::

    predictions.csv   one row per test sample and model: fold, sample, y, p_<class>...
    history.csv       the CNN's learning curves, per fold
    folds.csv         fold sizes and what each leakage guard removed
    fold-<name>/      checkpoint.pt, best.pt (the CNN of that fold), history.csv, done.json
    manifest.json

Each fold folder records what it was made from (``inputs.json``: the training
configuration, the fingerprint of the prepared data, the fold's samples and labels, the
leakage span, whether baselines ran; :func:`emolib.manifest.reuse_status`). A finished fold
made from the same inputs is reused, an interrupted one resumes from its last epoch (so a
killed run picks up where it stopped), and one made from anything else is deleted and
recomputed; :attr:`DecodingResult.reuse` and the progress lines say which happened.

Samples are single volumes, or windows of consecutive volumes (``window``, offsets
relative to each labelled volume; :mod:`emolib.forrest.windows`): the same folds, guards
(with the leakage span widened by the window), training and baselines (the linear model
reads all of a window's voxels), and the network of ``config.architecture``.
``sample_window`` keeps the samples of a wider window, so that models of different windows
are compared on the same samples in the same folds.

The folds are independent tasks (:func:`emolib.tasks.run_tasks`), each owning its folder:
one after another in this process by default, or on a Dask cluster (``workers`` for a local
one, ``scheduler`` for a running one), with the same numbers at the same thread count.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from emolib.decoding.baselines import inner_validation, linear_baseline
from emolib.decoding.evaluate import (
    block_jackknife,
    cluster_bootstrap,
    difference_jackknife,
    fold_metrics,
    macro_auc,
    time_blocks,
)
from emolib.decoding.nulls import permutation_test
from emolib.forrest.dataprep import PreparedData, load_prepared, prepare_dataset
from emolib.forrest.leaks import HRF_SPAN_S, assert_no_leak
from emolib.forrest.splits import make_splits, removal_table
from emolib.forrest.timing import RunTiming
from emolib.forrest.windows import as_offsets, gather_windows, window_samples
from emolib.manifest import (
    fingerprint,
    reuse_status,
    start_stage,
    write_inputs,
    write_json,
    write_manifest,
    write_text,
)
from emolib.models import torch_threads
from emolib.models.train import TrainConfig, evaluate_batches, to_tensor, train_model
from emolib.synthetic import generate_studyforrest
from emolib.tasks import run_tasks, threads_per_task, worker_index

__all__ = [
    "DecodingResult", "MODELS", "STAGE", "decoding_samples", "fold_arrays", "ground_truth_check",
    "load_decoding", "run_decoding", "split_inflation", "summarize_decoding",
]

STAGE = "02_training"
DONE = "done.json"  # a fold folder's last file: the fold is finished


MODELS = ("cnn", "linear", "chance")


@dataclass
class DecodingResult:
    """Outputs of :func:`run_decoding` (also on disk under ``folder``).

    ``reuse`` has one row per fold of this run: ``fold``, ``status`` (``"reuse"``,
    ``"resume"``, ``"new"`` or ``"stale"``, see :func:`emolib.manifest.reuse_status`) and
    ``reason`` (for stale folds, what changed).
    """

    folder: Path
    predictions: pd.DataFrame
    history: pd.DataFrame
    folds: pd.DataFrame
    classes: list[str]
    kind: str
    reuse: pd.DataFrame | None = None

    def probs(self, model: str = "cnn") -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """``(y, probs, rows)`` of one model's pooled test predictions."""
        rows = self.predictions[self.predictions["model"] == model]
        cols = [f"p_{c}" for c in self.classes]
        return rows["y"].to_numpy(), rows[cols].to_numpy(), rows

    def fold_model_path(self, fold: str) -> Path:
        """The ``best.pt`` of one fold's CNN."""
        return self.folder / f"fold-{fold.replace('/', '_')}" / "best.pt"


def _fold_dir(folder: Path, name: str) -> Path:
    return folder / f"fold-{name.replace('/', '_')}"


_STATUS_TEXT = {"reuse": "reused (same inputs)", "resume": "resuming (same inputs)",
                "new": "computing", "stale": "recomputing: made from other inputs"}


def _window(offsets) -> list[int] | None:
    return None if offsets is None else list(as_offsets(offsets))


def decoding_samples(prepared: PreparedData, window=None, sample_window=None,
                     span_s: float = HRF_SPAN_S) -> tuple[pd.DataFrame, np.ndarray, np.ndarray,
                                                          float]:
    """The samples of a decoding: ``(samples, ids, rows, span_s)``.

    ``samples`` are the selected rows of the prepared sample table (those with a whole
    window, ``movie_time`` moved to the window's end, when ``window`` or ``sample_window``
    is given: :func:`emolib.forrest.window_samples`), ``ids`` their rows in that table,
    ``rows`` the cache rows each reads (``(n,)`` volumes, or ``(n, T)`` windows when
    ``window`` is given) and ``span_s`` the leakage span of a sample.
    """
    if window is None and sample_window is None:
        sel = np.flatnonzero(prepared.samples["selected"].to_numpy())
        return prepared.samples.iloc[sel].reset_index(drop=True), sel, sel, float(span_s)
    ws = window_samples(prepared.samples, (0,) if window is None else window, tr=prepared.tr,
                        span_s=span_s, sample_window=sample_window)
    if ws.samples.empty:
        raise ValueError(f"{prepared.folder}: no selected volume has its whole window "
                         f"{_window(window)} (sample window {_window(sample_window)}) in the "
                         "cache; prepare it with window=... (emolib.forrest.prepare_dataset)")
    ids = ws.samples["sample"].to_numpy()
    samples = ws.samples.drop(columns="sample")
    return samples, ids, (ws.rows[:, 0] if window is None else ws.rows), ws.span_s


def _fold_inputs(data: str, samples: pd.DataFrame, split, kind: str,
                 config: TrainConfig, span_s: float, baselines: bool, window=None,
                 sample_window=None, threads: int | None = None) -> dict:
    """Everything one fold's outputs depend on (:func:`emolib.manifest.reuse_status`);
    ``data`` is the prepared data's :attr:`~emolib.forrest.PreparedData.fingerprint`;
    ``threads`` the fold's torch threads (they change the rounding; None: a running
    scheduler's workers' own, which this process cannot know)."""
    cols = ["subject", "run", "volume", "y"]

    def rows(idx) -> str:
        return fingerprint(samples.iloc[idx][cols].to_numpy().tolist())

    return {"kind": kind, "fold": split.name, "config": config.to_dict(),
            "data": data, "train": rows(split.train), "test": rows(split.test),
            "span_s": span_s, "baselines": baselines, "window": _window(window),
            "sample_window": _window(sample_window), "threads": threads}


def fold_arrays(volumes: np.ndarray, sel: np.ndarray, samples: pd.DataFrame, split,
                kind: str, seed: int, span_s: float = HRF_SPAN_S) -> tuple:
    """One fold's inner split and inputs: ``(train, val)`` positions into ``samples`` (the
    selected rows; :func:`emolib.decoding.inner_validation`) and the training, validation and
    test inputs. ``sel`` maps those rows to the prepared volumes: ``(n,)`` gives volumes
    ``(k, X, Y, Z)``, ``(n, T)`` windows ``(k, T, X, Y, Z)`` (:func:`decoding_samples`)."""
    tr_idx, val_idx = inner_validation(samples, split, kind, seed, span_s=span_s)
    sel = np.asarray(sel)

    def take(idx):
        if sel.ndim == 2:
            return gather_windows(volumes, sel, idx)
        return np.asarray(volumes[sel[idx]])

    return tr_idx, val_idx, take(tr_idx), take(val_idx), take(split.test)


def _train_fold(prepared: PreparedData | Path, split, i: int, kind: str, config: TrainConfig,
                span_s: float, baselines: bool, fdir: Path, inputs: dict,
                threads: int | None, progress: bool, window=None, sample_window=None) -> str:
    """One fold as a task (:func:`emolib.tasks.run_tasks`), owning its folder: when the task
    starts, a folder made from other inputs is emptied and a new or emptied one gets its
    ``inputs.json`` (a fold that never started keeps its state); then the CNN is trained
    (resuming from the fold's last checkpoint, so that a task rerun after its worker died
    carries on), the baselines fitted, and ``predictions.csv`` then ``done.json`` written,
    each atomically."""
    status, _ = reuse_status(fdir, inputs, done=DONE)  # afresh: a rerun task finds "resume"
    if status == "reuse":  # finished by an attempt whose worker died before it reported
        return split.name
    if status == "stale":
        shutil.rmtree(fdir)
    if status in ("stale", "new"):
        write_inputs(fdir, inputs)
    if not isinstance(prepared, PreparedData):
        prepared = load_prepared(prepared)
        if prepared.fingerprint != inputs["data"]:  # the folder changed since the driver read it
            raise ValueError(f"{prepared.folder}: the prepared data on disk are not those the "
                             "folds were planned from (prepared again meanwhile?)")
    k = worker_index()
    if config.device == "auto" and k is not None and torch.cuda.device_count() > 1:
        # one GPU per worker of a local cluster: "auto" (cuda) is then that GPU; the
        # configuration stays as it is, so that the fold resumes on any worker
        torch.cuda.set_device(k % torch.cuda.device_count())
    samples, ids, sel, span_s = decoding_samples(prepared, window, sample_window, span_s)
    y_all = samples["y"].to_numpy()
    n_classes = len(prepared.classes)
    # torch's threads and the BLAS pools' (the linear baseline): both change the rounding
    with torch_threads(threads), threadpool_limits(threads):
        n_threads = torch.get_num_threads()
        tr_idx, val_idx, x_tr, x_val, x_te = fold_arrays(prepared.volumes, sel, samples, split,
                                                          kind, config.seed, span_s)
        result = train_model(x_tr, y_all[tr_idx], x_val, y_all[val_idx], n_classes, config,
                             checkpoint_dir=fdir, progress=progress)
        xt = to_tensor(x_te, next(result.model.parameters()).device, config.channels_last)
        cnn_probs, _, _ = evaluate_batches(result.model, xt, None)
        per_model = {"cnn": cnn_probs}
        if baselines:
            def voxels(x):  # inside the mask; a window's volumes side by side
                return x[..., prepared.mask].reshape(len(x), -1)

            per_model["linear"] = linear_baseline(voxels(x_tr), y_all[tr_idx], voxels(x_val),
                                                  y_all[val_idx], voxels(x_te), n_classes,
                                                  seed=config.seed)
            rng = np.random.default_rng([config.seed, i])
            scores = rng.random((len(x_te), n_classes))
            per_model["chance"] = scores / scores.sum(axis=1, keepdims=True)
    meta = samples.iloc[split.test][["subject", "run", "volume", "movie_time",
                                      "label_tr", "label", "y"]].reset_index(drop=True)
    meta.insert(0, "sample", ids[split.test])  # row in the prepared sample table
    meta.insert(0, "fold", split.name)
    cols = [f"p_{c}" for c in prepared.classes]
    fold_preds = pd.concat(
        [meta.assign(model=m, **dict(zip(cols, p.T, strict=True)))
         for m, p in per_model.items()], ignore_index=True)
    write_text(fdir / "predictions.csv", fold_preds.to_csv(index=False))
    write_json(fdir / DONE, {
        "fold": split.name, "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy, "n_val": int(val_idx.size),
        "threads": n_threads})
    return split.name


def run_decoding(
    prepared: PreparedData,
    out_dir: str | os.PathLike,
    kind: str = "run",
    config: TrainConfig = TrainConfig(),
    folds: list[int] | None = None,
    span_s: float = HRF_SPAN_S,
    baselines: bool = True,
    progress: bool = True,
    restart: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
    window=None,
    sample_window=None,
) -> DecodingResult:
    """Cross-validate the CNN (and baselines) on the selected samples of a prepared dataset.

    Parameters
    ----------
    prepared : PreparedData
        Output of :func:`emolib.forrest.prepare_dataset`; only ``selected`` samples are used.
    out_dir : str or path-like
        Output folder (see the module docstring).
    kind : {"run", "subject", "random"}, default="run"
        Split kind.
    config : TrainConfig
        CNN training parameters.
    folds : list of int, optional
        Run only these folds (0-based), e.g. to fit a small machine.
    span_s : float, default=HRF_SPAN_S
        Seconds of stimulus history one volume reflects (the hemodynamic response's
        length, 20 s): the leakage guards drop training samples within ``span_s + tr`` of
        movie time of a test sample (:mod:`emolib.forrest.splits`), and the independent
        checker (:func:`emolib.forrest.assert_no_leak`) verifies every fold before training.
    baselines : bool, default=True
        Also fit the linear and chance baselines in every fold.
    progress : bool, default=True
        Progress bars.
    restart : bool, default=False
        Delete earlier outputs in ``out_dir`` instead of resuming from them.
    workers : int, optional
        Train the folds as tasks on a local Dask cluster of this many worker processes
        (:func:`emolib.tasks.run_tasks`); None trains them one after another here.
    scheduler : str, optional
        Address of a running Dask scheduler (a lab's Slurm cluster through
        ``dask-jobqueue``, say; :func:`emolib.tasks.slurm_job_script`) to train the folds on
        instead; its workers must see ``out_dir`` and the prepared data at the same paths.
    threads : int, optional
        Torch threads of each fold's training; default the process's setting when serial,
        the cores shared among the workers on a local cluster
        (:func:`emolib.tasks.threads_per_task`), the workers' own on a running scheduler. A
        fold's numbers depend on its thread count (sums split across threads round
        differently) and on nothing else of where it ran: serial and cluster runs with the
        same ``threads`` give identical results, and a fold is reused only by a run with its
        thread count (part of its inputs; give ``threads`` with ``scheduler`` for that).
    window : sequence of int, optional
        Decode windows of the volumes at these consecutive offsets from each labelled volume
        (``(N, T, X, Y, Z)`` inputs for the network of ``config.architecture``); the cache must
        hold them (``window`` of :func:`emolib.forrest.prepare_dataset`). None: single
        volumes.
    sample_window : sequence of int, optional
        Use only the samples whose volumes at these offsets are all cached, with the leakage
        span of that window (:func:`emolib.forrest.window_samples`): the widest window of a
        comparison, so that a single volume and windows are tested on the same samples.
    """
    folder = Path(out_dir)
    if restart and folder.exists():
        shutil.rmtree(folder)
    start_stage(folder)  # unfinished until the manifest is written, last
    samples, _, _, leak_span = decoding_samples(prepared, window, sample_window, span_s)
    classes = prepared.classes
    splits = make_splits(samples, kind, span_s=leak_span, seed=config.seed, folds=folds)
    if kind != "random":  # the random split leaks by design (chapter 02 counts it)
        assert_no_leak(samples, splits, span_s=leak_span)
    preds, histories, reuse_rows = [], [], []
    data_fingerprint = prepared.fingerprint  # hashed once, not once per fold
    serial = workers is None and scheduler is None
    if threads is None:  # what each fold will compute with, part of its inputs
        threads = torch.get_num_threads() if serial else threads_per_task(workers)
    todo = []
    for i, split in enumerate(splits, start=1):
        fdir = _fold_dir(folder, split.name)
        inputs = _fold_inputs(data_fingerprint, samples, split, kind, config, span_s, baselines,
                              window, sample_window, threads)
        status, reason = reuse_status(fdir, inputs, done=DONE)
        reuse_rows.append({"fold": split.name, "status": status, "reason": reason})
        if progress:
            print(f"fold {i}/{len(splits)} ({split.name}): {split.train.size} train, "
                  f"{split.test.size} test; {_STATUS_TEXT[status]}"
                  + (f" ({reason})" if status == "stale" else ""), flush=True)
        if status != "reuse":
            todo.append((i, split, fdir, inputs))
    # a worker opens the prepared data itself (memory-mapped): a pickled memory map is a copy
    source = prepared if serial else prepared.folder.resolve()
    run_tasks(_train_fold,
              [(source, split, i, kind, config, span_s, baselines, fdir.resolve(), inputs,
                threads, progress and serial, window, sample_window)
               for i, split, fdir, inputs in todo],
              names=[f"fold {split.name}" for _, split, *_ in todo], workers=workers,
              scheduler=scheduler, progress=progress, desc=f"{kind} folds")
    for split in splits:
        fdir = _fold_dir(folder, split.name)
        preds.append(pd.read_csv(fdir / "predictions.csv", dtype={"subject": str}))
        histories.append(pd.read_csv(fdir / "history.csv").assign(fold=split.name))
    predictions = pd.concat(preds, ignore_index=True)
    history = pd.concat(histories, ignore_index=True)
    fold_table = removal_table(splits)
    for frame, name in ((predictions, "predictions.csv"), (history, "history.csv"),
                        (fold_table, "folds.csv")):
        write_text(folder / name, frame.to_csv(index=False))
    write_manifest(folder, STAGE, {"kind": kind, "config": config.to_dict(), "folds": folds,
                                   "span_s": span_s, "baselines": baselines,
                                   "window": _window(window),
                                   "sample_window": _window(sample_window),
                                   "dataprep": str(prepared.folder)},
                   outputs={"classes": classes, "n_folds": len(splits),
                            # the span the leakage guards used: span_s + a window's length
                            "leak_span_s": float(leak_span),
                            "n_predictions": int((predictions["model"] == "cnn").sum()),
                            "folds": reuse_rows})
    return DecodingResult(folder, predictions, history, fold_table, classes, kind,
                          pd.DataFrame(reuse_rows))


def summarize_decoding(result: DecodingResult, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95, block_s: float | None = 60.0,
                       interval: str = "jackknife") -> pd.DataFrame:
    """One row per model: fold-averaged macro AUC and balanced accuracy with block intervals,
    and per-class AUCs (within folds, averaged).

    The unit of the intervals is a stretch of ``block_s`` seconds of movie time within a
    fold (:func:`emolib.decoding.evaluate.time_blocks`), every subject's volumes of it
    together: labels come in episodes and outputs drift, so single moments are not
    independent (``block_s=None`` treats them as if they were). ``interval="jackknife"``
    (default) gives delete-one-block jackknife t-intervals
    (:func:`~emolib.decoding.evaluate.block_jackknife`), ``"bootstrap"`` percentile intervals
    from ``n_boot`` block-bootstrap draws (:func:`~emolib.decoding.evaluate.cluster_bootstrap`,
    too narrow: ``benchmarks/bench_interval_coverage.py`` measures the coverage of both).
    """
    if interval not in ("jackknife", "bootstrap"):
        raise ValueError(f"interval must be 'jackknife' or 'bootstrap', got {interval!r}")
    rows = []
    for model in [m for m in MODELS if m in set(result.predictions["model"])]:
        y, p, meta = result.probs(model)
        folds = meta["fold"].to_numpy()
        times = meta["movie_time"].to_numpy()
        clusters = times if block_s is None else time_blocks(times, block_s)
        if interval == "jackknife":
            ci = block_jackknife(y, p, clusters, len(result.classes), folds=folds,
                                 level=level)
        else:
            ci = cluster_bootstrap(y, p, clusters, len(result.classes),
                                   n_boot=n_boot, seed=seed, level=level, folds=folds)
        ci = ci.set_index("metric")
        per_fold = fold_metrics(y, p, folds, result.classes)
        w = per_fold["n_test"].to_numpy()
        row = {"split": result.kind, "model": model,
               "macro_auc": ci.loc["macro_auc", "estimate"],
               "auc_low": ci.loc["macro_auc", "low"], "auc_high": ci.loc["macro_auc", "high"],
               "balanced_accuracy": ci.loc["balanced_accuracy", "estimate"],
               "bacc_low": ci.loc["balanced_accuracy", "low"],
               "bacc_high": ci.loc["balanced_accuracy", "high"]}
        for c in result.classes:
            vals = per_fold[f"auc {c}"].to_numpy()
            ok = np.isfinite(vals)
            row[f"auc {c}"] = float(np.average(vals[ok], weights=w[ok])) if ok.any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def ground_truth_check(
    out_dir: str | os.PathLike,
    config: TrainConfig = TrainConfig(epochs=8, t_max=8, patience=10, augment_noise=1.0),
    n_subjects: int = 3,
    shape: tuple[int, int, int] = (12, 12, 10),
    effect_size: float = 0.05,
    n_permutations: int = 199,
    seed: int = 4,
    random_split: bool = False,
    standardize: str = "run",
    smoothing_fwhm: float | None = 7.0,
    high_pass: float | None = 1 / 128,
    progress: bool = False,
    scheduler: str | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Decode a small generated dataset with a planted signal and its null twin.

    Both datasets share everything (3 overlapping 5-minute runs, generated annotations, the
    stimulus-locked scene signal, seed) except that the null one plants no emotion. With the
    run split, the CNN and the linear baseline should stay within the spread of their
    permutation null on the null data, and be clearly above it on the planted data. (One
    realisation cannot show calibration: see ``benchmarks/bench_calibration.py``.) With
    ``random_split``, the null twin is also decoded with the original's random split of
    volumes (``<out_dir>/null/random``), which can recognise the scenes: compare the two with
    :func:`split_inflation`. ``standardize``, ``smoothing_fwhm`` and ``high_pass`` are those of
    :func:`emolib.forrest.prepare_dataset` (pass the main analysis' own; the defaults are the
    book's). The default response, 5 % of baseline on 300 samples, is what the CNN finds
    here with the book's preprocessing and input noise (macro AUC 0.63-0.65, permutation p
    at its floor, measured once; at 2 % only the linear baseline did, 0.66 against 0.48).
    ``scheduler``, ``threads``: train the folds on that Dask scheduler, with that many torch
    threads each (:func:`run_decoding`).

    Returns
    -------
    pandas.DataFrame
        One row per dataset and model: ``data``, ``model``, ``macro_auc`` (fold-averaged),
        ``p_value`` (time-aware permutation test, :func:`emolib.decoding.permutation_test`),
        ``null_mean`` and ``null_sd`` (of its reference distribution), ``exact`` (whether the
        reference set is every shift combination), ``collapsed_folds`` (folds whose outputs
        are constant), ``n_samples``.
    """

    timing = RunTiming(starts=(0.0, 292.0, 584.0), n_volumes=(150, 150, 150), tr=2.0)
    root = Path(out_dir)
    rows = []
    for null in (False, True):
        name = "null" if null else "planted"
        ds = generate_studyforrest(root / name / "dataset", n_subjects=n_subjects, shape=shape,
                                   timing=timing, effect_size=effect_size, null=null,
                                   seed=seed, progress=False, overwrite="changed")
        prep = prepare_dataset(ds / "ds000113", ds / "annotations", root / name / "prep",
                               timing=timing, min_count=20, n_per_class=20, seed=seed,
                               standardize=standardize, smoothing_fwhm=smoothing_fwhm,
                               high_pass=high_pass if standardize == "run" else None,
                               progress=False)
        result = run_decoding(prep, root / name / "decoding", "run", config, progress=progress,
                              restart=True, scheduler=scheduler, threads=threads)
        for model in ("cnn", "linear"):
            y, p, meta = result.probs(model)
            folds = meta["fold"].to_numpy()
            test = permutation_test(y, p, meta["movie_time"].to_numpy(), folds,
                                    len(result.classes), n_permutations=n_permutations,
                                    seed=seed)
            rows.append({"data": name, "model": model,
                         "macro_auc": macro_auc(y, p, len(result.classes), folds),
                         "p_value": test.p_value, "null_mean": float(test.null.mean()),
                         "null_sd": float(test.null.std()), "exact": test.exact,
                         "collapsed_folds": len(test.collapsed_folds), "n_samples": len(y)})
        if null and random_split:
            run_decoding(prep, root / name / "random", "random", config, progress=progress,
                         restart=True, scheduler=scheduler, threads=threads)
    return pd.DataFrame(rows)


def split_inflation(leaky: DecodingResult, honest: DecodingResult, block_s: float = 60.0,
                    level: float = 0.95) -> pd.DataFrame:
    """How much a leaky split (e.g. random) scores above an honest one (run), per model.

    Both decodings must be of the same volumes; the difference of their fold-averaged macro
    AUCs gets a joint delete-one-block jackknife interval
    (:func:`emolib.decoding.evaluate.difference_jackknife`).

    Returns
    -------
    pandas.DataFrame
        One row per model both ran: ``model``, ``leaky`` and ``honest`` (their split kinds),
        ``auc_leaky``, ``auc_honest``, ``inflation``, ``low``, ``high``, ``dof``.
    """
    rows = []
    for model in [m for m in MODELS if m in set(leaky.predictions["model"])
                  and m in set(honest.predictions["model"])]:
        parts = []
        for res in (leaky, honest):
            y, p, meta = res.probs(model)
            parts.append((y, p, meta["movie_time"].to_numpy(), meta["fold"].to_numpy()))
        d = difference_jackknife(parts[0], parts[1], len(leaky.classes), block_s, level)
        rows.append({"model": model, "leaky": leaky.kind, "honest": honest.kind,
                     "auc_leaky": macro_auc(parts[0][0], parts[0][1], len(leaky.classes),
                                            parts[0][3]),
                     "auc_honest": macro_auc(parts[1][0], parts[1][1], len(leaky.classes),
                                             parts[1][3]),
                     "inflation": d["estimate"], "low": d["low"], "high": d["high"],
                     "dof": d["dof"]})
    return pd.DataFrame(rows)


def load_decoding(folder: str | os.PathLike) -> DecodingResult:
    """Open the outputs of a finished :func:`run_decoding` (its manifest is written last;
    a folder without one is refused, naming it)."""
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        raise FileNotFoundError(f"{folder} holds no finished decoding (no manifest.json): run "
                                "run_decoding there first, or again if it was interrupted")
    manifest = json.loads((folder / "manifest.json").read_text())
    return DecodingResult(
        folder, pd.read_csv(folder / "predictions.csv", dtype={"subject": str}),
        pd.read_csv(folder / "history.csv"), pd.read_csv(folder / "folds.csv"),
        list(manifest["outputs"]["classes"]), manifest["parameters"]["kind"],
        pd.DataFrame(manifest["outputs"]["folds"]) if "folds" in manifest["outputs"] else None)
