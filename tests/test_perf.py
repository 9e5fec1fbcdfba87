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


def test_paper_training_cost_is_the_arithmetic_of_rounds_of_folds():
    """One fold's epochs over every volume at the measured rate, scaled by voxels; N workers
    take ceil(8 / N) rounds."""
    import math

    from emolib.book.perf import PAPER_EPOCHS, PAPER_SAMPLES, PAPER_SHAPE, paper_training_cost

    one_hour = PAPER_EPOCHS * PAPER_SAMPLES / 3600  # volumes/s for one fold in one hour
    cost = paper_training_cost(one_hour, workers=(1, 2, 3, 8, 16)).set_index("workers")
    assert cost["fold_hours"].tolist() == pytest.approx([1.0] * 5)
    assert cost["rounds"].tolist() == [8, 4, 3, 1, 1]
    assert cost["total_hours"].tolist() == pytest.approx([8, 4, 3, 1, 1])
    eighth = paper_training_cost(one_hour, voxels=math.prod(PAPER_SHAPE) // 8)
    assert eighth["fold_hours"].tolist() == pytest.approx([8.0] * 4)
    with pytest.raises(ValueError, match="must be positive"):
        paper_training_cost(0.0)
