"""The performance chapter's table: ratios parsed from the benchmarks' output, goals matched."""

from __future__ import annotations

import pytest

from emolib.book.perf import BenchmarkResult, ratio_table, run_benchmark


def test_a_goal_covers_every_ratio_its_name_starts_and_the_longest_key_wins():
    results = [BenchmarkResult("bench_x.py", ["--small"], {
        "occlusion incremental / captum, 1 thread(s)": 30.0,
        "occlusion incremental / captum, 2 thread(s)": 12.0,
        "dataprep time emolib / gzip floor": 0.4,
        "dataprep time emolib keep=all / gzip floor": 0.7,
        "something else": 1.0}, "", 3.0)]
    goals = {"occlusion incremental / captum": ">= 20",
             "dataprep time emolib": "<= 0.5", "dataprep time emolib keep=all": "<= 0.8"}
    table = ratio_table(results, goals).set_index("ratio")
    assert table.loc["occlusion incremental / captum, 1 thread(s)", "goal"] == ">= 20"
    assert table.loc["occlusion incremental / captum, 2 thread(s)", "goal"] == ">= 20"
    assert table.loc["dataprep time emolib / gzip floor", "goal"] == "<= 0.5"
    assert table.loc["dataprep time emolib keep=all / gzip floor", "goal"] == "<= 0.8"
    assert table.loc["something else", "goal"] == ""
    assert table["arguments"].eq("--small").all()


def test_a_benchmark_that_fails_or_prints_no_ratio_is_an_error_with_its_output():
    with pytest.raises(RuntimeError, match="bench_rsa_bootstrap.py --no-such-option failed"):
        run_benchmark("bench_rsa_bootstrap.py", ["--no-such-option"])
