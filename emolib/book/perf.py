"""Running the benchmarks of ``benchmarks/`` and reading their ratios.

Each benchmark script times our code and the peer it replaces in the same run and prints
lines ``RATIO <what> = <number>`` (and ``MEASURED <what> = <number>`` for a figure of ours
alone, such as a throughput); :func:`run_benchmark` runs a script in a fresh process and
collects those lines, so that the performance chapter shows measured numbers only.
:func:`paper_training_cost` turns a measured training throughput into what the paper
profile's folds would cost on N workers.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pandas as pd

from emolib.paths import REPO_ROOT, display_command

__all__ = [
    "BENCHMARKS_DIR", "BenchmarkResult", "PAPER_EPOCHS", "PAPER_FOLDS", "PAPER_SAMPLES",
    "PAPER_SHAPE", "paper_training_cost", "ratio_table", "run_benchmark",
]

BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
_RATIO = re.compile(r"^RATIO (?P<what>.+?) = (?P<value>[0-9.eE+-]+)\s*$", re.M)
_MEASURED = re.compile(r"^MEASURED (?P<what>.+?) = (?P<value>[0-9.eE+-]+)\s*$", re.M)


@dataclass
class BenchmarkResult:
    """What one benchmark run printed."""

    script: str
    args: list[str]
    ratios: dict[str, float]
    output: str
    seconds: float
    measured: dict[str, float] = field(default_factory=dict)


def run_benchmark(script: str, args: list[str] | None = None, timeout: float = 1800
                  ) -> BenchmarkResult:
    """Run ``benchmarks/<script>`` with ``args`` and parse its ``RATIO`` lines.

    Raises
    ------
    RuntimeError
        If the script fails or prints no ratio (with the end of its output).
    """
    args = [str(a) for a in (args or [])]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(BENCHMARKS_DIR / script), *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    ratios = {m["what"]: float(m["value"]) for m in _RATIO.finditer(proc.stdout)}
    if proc.returncode != 0 or not ratios:
        raise RuntimeError(f"benchmark {script} {' '.join(args)} failed "
                           f"(exit {proc.returncode}):\n{output[-3000:]}")
    measured = {m["what"]: float(m["value"]) for m in _MEASURED.finditer(proc.stdout)}
    return BenchmarkResult(script, args, ratios, output, seconds, measured)


def ratio_table(results: list[BenchmarkResult], goals: dict[str, str] | None = None,
                data_dir=None) -> pd.DataFrame:
    """One row per ratio: the benchmark, its arguments (paths as the book shows them,
    :func:`emolib.paths.display_command`), the value and the stated goal.

    A goal applies to every ratio whose name starts with its key (the longest key wins), so
    that one goal covers, say, ``occlusion incremental / captum, 1 thread(s)`` and ``..., 2
    thread(s)``."""
    goals = goals or {}

    def goal(what: str) -> str:
        keys = [k for k in goals if what.startswith(k)]
        return goals[max(keys, key=len)] if keys else ""

    rows = [{"benchmark": r.script, "arguments": display_command(r.args, data_dir) or "(defaults)",
             "ratio": what, "value": value, "goal": goal(what),
             "seconds": round(r.seconds, 1)}
            for r in results for what, value in r.ratios.items()]
    return pd.DataFrame(rows)


#: The paper profile's run split: 8 folds of up to 50 epochs over the original selection
#: (15 subjects x 5 classes x 70 volumes; a fold trains on about 7 runs and validates on 1).
PAPER_FOLDS, PAPER_EPOCHS, PAPER_SAMPLES, PAPER_SHAPE = 8, 50, 15 * 5 * 70, (80, 80, 35)


def paper_training_cost(volumes_per_s: float, voxels: int = math.prod(PAPER_SHAPE),
                        workers: tuple[int, ...] = (1, 2, 4, 8)) -> pd.DataFrame:
    """Hours the paper profile's run-split training would take on N equal workers.

    ``volumes_per_s`` is a measured training throughput of one worker on volumes of
    ``voxels`` voxels; the cost of a volume is taken as proportional to its voxels (the
    network is convolutional; measured at the paper's 80 x 80 x 35 nothing is assumed).
    Every epoch is costed as one training pass over all 5,250 selected volumes, an upper
    bound: a fold trains on about 6 of the 8 runs, validates on one (forward only) and holds
    out one; every fold runs all 50 epochs (early stopping only shortens it); folds are
    spread in rounds of ``N``. One row per N:
    ``workers``, ``rounds``, ``fold_hours``, ``total_hours``.
    """
    if volumes_per_s <= 0:
        raise ValueError(f"volumes_per_s must be positive, not {volumes_per_s}")
    scale = math.prod(PAPER_SHAPE) / voxels
    fold_h = PAPER_EPOCHS * PAPER_SAMPLES * scale / volumes_per_s / 3600
    rows = [{"workers": n, "rounds": math.ceil(PAPER_FOLDS / n), "fold_hours": fold_h,
             "total_hours": math.ceil(PAPER_FOLDS / n) * fold_h} for n in workers]
    return pd.DataFrame(rows)
