"""Running the benchmarks of ``benchmarks/`` and reading their ratios.

Each benchmark script times our code and the peer it replaces in the same run and prints
lines ``RATIO <what> = <number>``; :func:`run_benchmark` runs a script in a fresh process and
collects those lines, so that the performance chapter shows measured numbers only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass

import pandas as pd

from emolib.paths import REPO_ROOT, display_command

__all__ = [
    "BENCHMARKS_DIR", "BenchmarkResult", "ratio_table", "run_benchmark",
]

BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
_RATIO = re.compile(r"^RATIO (?P<what>.+?) = (?P<value>[0-9.eE+-]+)\s*$", re.M)


@dataclass
class BenchmarkResult:
    """What one benchmark run printed."""

    script: str
    args: list[str]
    ratios: dict[str, float]
    output: str
    seconds: float


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
    return BenchmarkResult(script, args, ratios, output, seconds)


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
