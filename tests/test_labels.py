import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from emolib.forrest.labels import class_counts, consensus_labels, select_classes
from emolib.io.annotations import read_observers


def hand_example():
    """Three observers; the answer is worked out by hand in the tests below."""
    rows = [
        # observer A: FEAR on steps 0-1, then LOVE on 1-2 overwrites step 1; one empty row
        ("A", 0.0, 4.0, "FEAR"), ("A", 3.0, 6.0, ""), ("A", 2.0, 5.0, "LOVE"),
        # observer B: FEAR on 0-1; "LOVE HAPPINESS" on step 2 only (floor(4.5/2)=2, ceil(3)-1=2)
        ("B", 0.0, 3.0, "FEAR"), ("B", 4.5, 6.0, "LOVE HAPPINESS"),
        # observer C: FEAR on step 0 (1-2 s); LOVE on steps 1-3
        ("C", 1.0, 2.0, "FEAR"), ("C", 2.0, 8.0, "LOVE"),
    ]
    return pd.DataFrame(rows, columns=["observer", "start", "end", "emotion"])


def test_seed_rule_on_hand_example():
    out = consensus_labels(hand_example(), mode="seed")
    # grid: range(max ceil(end/2)) = range(4); threshold ceil(3/2) = 2
    assert out["tr"].tolist() == [0, 1, 2, 3]
    assert out["onset"].tolist() == [0.0, 2.0, 4.0, 6.0]
    # step 0: FEAR x3; step 1: A LOVE (overwrote FEAR), B FEAR, C LOVE -> LOVE 2;
    # step 2: A LOVE, B "LOVE HAPPINESS" (its own label), C LOVE -> LOVE 2; step 3: C only
    assert out["label"].tolist()[:3] == ["FEAR", "LOVE", "LOVE"]
    assert pd.isna(out["label"].iloc[3])
    assert out["n_agree"].tolist() == [3, 2, 2, 1]
    assert out["status"].tolist() == ["kept", "kept", "kept", "no majority"]


def test_category_rule_on_hand_example():
    out = consensus_labels(hand_example(), mode="category")
    # step 1: A endorses FEAR and LOVE (no overwrite), B FEAR, C LOVE -> 2-2 tie: ambiguous
    # step 2: A LOVE, B LOVE+HAPPINESS, C LOVE -> LOVE 3
    assert out["status"].tolist() == ["kept", "ambiguous", "kept", "no majority"]
    assert out["label"].iloc[0] == "FEAR"
    assert pd.isna(out["label"].iloc[1])
    assert out["label"].iloc[2] == "LOVE"
    assert out["n_agree"].tolist() == [3, 2, 3, 1]


def test_category_rule_drops_steps_where_a_second_category_has_a_majority():
    """FEAR 3 of 3, LOVE 2 of 3 (threshold 2): a majority saw LOVE too, so the step is not
    a LOVE negative labelled FEAR; it is ambiguous. LOVE 1 of 3 does not make it so."""
    rows = pd.DataFrame([("A", 0.0, 2.0, "FEAR LOVE"), ("B", 0.0, 2.0, "FEAR"),
                         ("C", 0.0, 2.0, "FEAR"), ("C", 0.0, 2.0, "LOVE"),
                         ("A", 2.0, 4.0, "FEAR LOVE"), ("B", 2.0, 4.0, "FEAR"),
                         ("C", 2.0, 4.0, "FEAR")],
                        columns=["observer", "start", "end", "emotion"])
    out = consensus_labels(rows, mode="category")
    assert out["status"].tolist() == ["ambiguous", "kept"]
    assert pd.isna(out["label"].iloc[0]) and out["label"].iloc[1] == "FEAR"


def test_min_observers_parameter():
    out = consensus_labels(hand_example(), mode="seed", min_observers=3)
    assert out["status"].tolist() == ["kept", "no majority", "no majority", "no majority"]


def test_unannotated_steps():
    df = pd.DataFrame([("A", 6.0, 8.0, "FEAR")], columns=["observer", "start", "end", "emotion"])
    out = consensus_labels(df)
    assert out["status"].tolist() == ["unannotated"] * 3 + ["kept"]


def original_rule(annotations: pd.DataFrame, tr: float = 2.0) -> dict[int, str]:
    """The original project's labelling, written as plainly as its description."""
    per_observer = {}
    for obs, grp in annotations.groupby("observer", sort=False):
        tr_label = {}
        for _, row in grp.iterrows():
            if not isinstance(row["emotion"], str) or row["emotion"].strip() == "":
                continue
            for k in range(math.floor(row["start"] / tr), math.ceil(row["end"] / tr)):
                tr_label[k] = row["emotion"]
        per_observer[obs] = tr_label
    n_max = max(math.ceil(e / tr) for e in annotations["end"])
    need = math.ceil(len(per_observer) / 2)
    kept = {}
    for k in range(n_max):
        votes = Counter(d[k] for d in per_observer.values() if k in d)
        if votes:
            label, n = votes.most_common(1)[0]
            if n >= need:
                kept[k] = label
    return kept


def test_seed_mode_reproduces_original_rule_on_real_files(real_annotations_dir):
    annotations = read_observers(real_annotations_dir)
    ours = consensus_labels(annotations, mode="seed")
    expected = original_rule(annotations)
    got = {int(k): lab for k, lab in zip(ours["tr"], ours["label"], strict=True) if pd.notna(lab)}
    assert got == expected
    assert len(ours) == max(math.ceil(e / 2) for e in annotations["end"])
    # the original used the classes with at least 70 kept steps: these five
    counts = class_counts(ours)
    assert sorted(counts.index[counts >= 70]) == [
        "ANGERRAGE", "FEAR", "HAPPINESS", "LOVE", "SADNESS"]


def test_category_mode_keeps_more_steps_on_real_files(real_annotations_dir):
    annotations = read_observers(real_annotations_dir)
    seed = consensus_labels(annotations, mode="seed")
    cat = consensus_labels(annotations, mode="category")
    assert cat["label"].notna().sum() > seed["label"].notna().sum()
    assert set(cat["label"].dropna()) <= set(seed["label"].dropna().str.split().explode())
    assert (cat["status"] == "ambiguous").any()


def test_select_classes_balances_and_is_seeded():
    labels = pd.DataFrame({"tr": np.arange(300),
                           "label": pd.array(["A"] * 100 + ["B"] * 80 + ["C"] * 20 + [pd.NA] * 100,
                                             dtype="string")})
    a = select_classes(labels, min_count=50, n_per_class=40, seed=3)
    b = select_classes(labels, min_count=50, n_per_class=40, seed=3)
    c = select_classes(labels, min_count=50, n_per_class=40, seed=4)
    assert a["label"].value_counts().to_dict() == {"A": 40, "B": 40}
    assert a["tr"].is_monotonic_increasing
    assert a.equals(b)
    assert not np.array_equal(a["tr"].to_numpy(), c["tr"].to_numpy())
    everything = select_classes(labels, min_count=50, n_per_class=None)
    assert len(everything) == 180
    with pytest.raises(ValueError, match="no class"):
        select_classes(labels, min_count=1000)
    with pytest.raises(ValueError, match="fewer than"):
        select_classes(labels, classes=["C"], n_per_class=40)
