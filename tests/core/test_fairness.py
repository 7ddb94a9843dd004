"""Fairness by group (core.fairness, core.report.fairness) against figures computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from deepapps.core.contract import Classification
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.fairness import MISSING, evaluation_fairness, group_fairness
from deepapps.core.report.fairness import fairness_plot, fairness_section
from deepapps.core.runtime.evaluation import ClassificationEvaluation

# 8 rows, 2 groups, threshold 0.5:
#   A: y 1 1 0 0, scores .9 .4 .6 .1 -> decided 1 0 1 0: base 1/2, selected 1/2, TPR 1/2, FPR 1/2, precision 1/2,
#      AUROC 3/4 (pairs: .9>.6, .9>.1, .4<.6, .4>.1), AUPRC (1 + 2/3) / 2
#   B: y 1 0 0 0, scores .8 .7 .6 .3 -> decided 1 1 1 0: base 1/4, selected 3/4, TPR 1, FPR 2/3, precision 1/3,
#      AUROC 1, AUPRC 1
# DP difference 3/4 - 1/2, ratio (1/2) / (3/4); EO difference max(|1/2 - 1|, |1/2 - 2/3|) = 1/2
Y = np.array([1, 1, 0, 0, 1, 0, 0, 0])
SCORES = np.array([0.9, 0.4, 0.6, 0.1, 0.8, 0.7, 0.6, 0.3])
SEX = ["A"] * 4 + ["B"] * 4


def test_group_figures_and_disparities_match_hand_computed_values():
    f = group_fairness(Y, SCORES, 0.5, {"sex": SEX})
    assert f["threshold"] == 0.5 and f["n"] == 8
    a, b = f["attributes"]["sex"]["groups"]["A"], f["attributes"]["sex"]["groups"]["B"]
    assert a == pytest.approx({"n": 4, "positives": 2, "base_rate": 0.5, "selection_rate": 0.5, "tpr": 0.5, "fpr": 0.5,
                               "precision": 0.5, "auroc": 0.75, "auprc": (1 + 2 / 3) / 2})
    assert b == pytest.approx({"n": 4, "positives": 1, "base_rate": 0.25, "selection_rate": 0.75, "tpr": 1.0,
                               "fpr": 2 / 3, "precision": 1 / 3, "auroc": 1.0, "auprc": 1.0})
    d = f["attributes"]["sex"]["disparity"]
    assert d == pytest.approx({"demographic_parity_difference": 0.25, "demographic_parity_ratio": 2 / 3,
                               "equalized_odds_difference": 0.5, "tpr_difference": 0.5, "fpr_difference": 1 / 6,
                               "base_rate_difference": 0.25})


def test_the_threshold_moves_the_decisions():
    d = group_fairness(Y, SCORES, 0.65, {"sex": SEX})["attributes"]["sex"]
    # A decides 1 0 0 0, B 1 1 0 0: selection 1/4 vs 1/2, TPR 1/2 vs 1, FPR 0 vs 1/3
    assert d["groups"]["A"]["selection_rate"] == 0.25 and d["groups"]["B"]["selection_rate"] == 0.5
    assert d["disparity"]["demographic_parity_ratio"] == pytest.approx(0.5)
    assert d["disparity"]["equalized_odds_difference"] == pytest.approx(0.5)


def test_undefined_figures_are_null_and_missing_values_are_a_group():
    f = group_fairness(Y, SCORES, 0.5, {"site": [None, "x", "x", "x", "x", "x", "x", float("nan")]})
    groups = f["attributes"]["site"]["groups"]
    assert set(groups) == {MISSING, "x"}
    missing = groups[MISSING]  # rows 0 (y 1, decided 1) and 7 (y 0, decided 0)
    assert missing["n"] == 2 and missing["tpr"] == 1.0 and missing["fpr"] == 0.0
    only_positive = group_fairness(Y, SCORES, 0.5, {"g": ["p"] + ["q"] * 7})["attributes"]["g"]["groups"]["p"]
    assert only_positive["fpr"] is None and only_positive["auroc"] is None and only_positive["auprc"] is None


def test_several_attributes_and_numbers_as_groups():
    f = group_fairness(Y, SCORES, 0.5, {"sex": SEX, "band": [1, 1, 2, 2, 1, 1, 2, 2]})
    assert list(f["attributes"]) == ["sex", "band"] and set(f["attributes"]["band"]["groups"]) == {"1", "2"}
    with pytest.raises(DataError, match="3 values for 8"):
        group_fairness(Y, SCORES, 0.5, {"sex": ["A", "B", "A"]})


def test_evaluation_fairness_uses_the_models_threshold_and_refuses_multiclass():
    probs = np.stack([1 - SCORES, SCORES], 1)
    evaluation = ClassificationEvaluation({}, Y, probs, ["normal", "fraud"], problem="binary")
    f = evaluation_fairness(evaluation, Classification(["normal", "fraud"], "binary", 0.65), {"sex": SEX})
    assert f["positive"] == "fraud" and f["threshold"] == 0.65
    assert f["attributes"]["sex"]["groups"]["A"]["selection_rate"] == 0.25
    default = evaluation_fairness(evaluation, Classification(["normal", "fraud"], "binary"), {"sex": SEX})
    assert default["threshold"] == 0.5
    multiclass = ClassificationEvaluation({}, np.zeros(8, np.int64), np.full((8, 3), 1 / 3), ["a", "b", "c"])
    with pytest.raises(ConfigError, match="binary"):
        evaluation_fairness(multiclass, Classification(["a", "b", "c"], "multiclass"), {"sex": SEX})


def test_card_section_states_the_figures_and_the_plot_is_written(tmp_path):
    f = group_fairness(Y, SCORES, 0.5, {"sex": SEX})
    heading, body = fairness_section({"test": f}, "label 'yes'", features=[])
    assert heading == "Fairness by group"
    assert "| A | 4 | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 | 0.750 |" in body
    assert "Demographic-parity difference 0.250 (ratio 0.667); equalized-odds difference 0.500" in body
    assert "reporting only" in body and "do not mean" in body
    _, as_feature = fairness_section({"test": f}, features=["sex"])
    assert "`sex` is also a model input" in as_feature
    out = fairness_plot(f, tmp_path / "fairness.png")
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"


def _scored(n: int, seed: int):
    """Group `a` has more positives and higher scores than `b`: one threshold gives `a` the higher TPR."""
    rng = np.random.default_rng(seed)
    g = rng.choice(["a", "b"], n)
    y = (rng.random(n) < np.where(g == "a", 0.3, 0.1)).astype(np.int64)
    return y, np.clip(0.3 * y + 0.7 * rng.random(n) + 0.1 * (g == "a"), 0, 1), g


def test_tpr_parity_thresholds_remove_most_of_the_tpr_gap_at_a_stated_cost():
    from deepapps.core.fairness import tpr_parity_thresholds

    out = tpr_parity_thresholds(_scored(3000, 0), _scored(3000, 1), 0.5)
    before, after = out["before"], out["after"]
    assert before["tpr_difference"] > 0.05 and after["tpr_difference"] < before["tpr_difference"] / 3
    assert set(out["thresholds"]) == {"a", "b"}
    assert all(0 < t["threshold"] < 1 and 0 < t["p"] <= 1 for rules in out["thresholds"].values() for t in rules)
    assert {"accuracy", "balanced_accuracy", "selection_rate", "equalized_odds_difference",
            "demographic_parity_difference"} <= set(after)
    assert out == tpr_parity_thresholds(_scored(3000, 0), _scored(3000, 1), 0.5)  # seeded


def test_tpr_parity_thresholds_skip_degenerate_or_unseen_groups():
    from deepapps.core.fairness import tpr_parity_thresholds

    y, s, g = _scored(200, 2)
    one_class = np.where(y == 1, "b", "a")  # group a holds negatives only
    assert "Degenerate" in tpr_parity_thresholds((y, s, one_class), _scored(200, 3), 0.5)["skipped"]
    assert "absent" in tpr_parity_thresholds((y, s, np.full(200, "c")), _scored(200, 3), 0.5)["skipped"]


def test_fit_fairness_gives_each_split_at_the_models_threshold_and_the_thresholds_from_val_to_test():
    """The hand-computed 8 rows above as `test`; `val` the same rows with group B relabelled: the
    positive class is the model's `positive_index` (here 0, `fraud` first)."""
    from deepapps.core.fairness import fit_fairness, tpr_parity_thresholds

    kind = Classification(["fraud", "normal"], "binary", 0.5, 1.0, 0)
    probs = np.stack([SCORES, 1 - SCORES], 1)  # column 0 = the positive class
    test = ClassificationEvaluation({}, 1 - Y, probs, kind.labels, problem="binary")  # target 0 = fraud
    val_y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    val = ClassificationEvaluation({}, 1 - val_y, probs, kind.labels, problem="binary")
    out = fit_fairness(kind, {"val": val, "test": test}, {"val": {"sex": SEX}, "test": {"sex": SEX}}, thresholds=True)
    assert out["fairness"]["test"]["positive"] == "fraud"
    a = out["fairness"]["test"]["attributes"]["sex"]["groups"]["A"]
    assert a["selection_rate"] == 0.5 and a["tpr"] == 0.5 and a["fpr"] == 0.5
    assert out["fairness"]["test"]["attributes"]["sex"]["disparity"]["demographic_parity_difference"] == 0.25
    b_val = out["fairness"]["val"]["attributes"]["sex"]["groups"]["B"]
    assert b_val["positives"] == 2 and b_val["tpr"] == 1.0 and b_val["fpr"] == 0.5  # .8 .7 | .6 .3 at 0.5
    assert out["fairness_thresholds"]["sex"] == tpr_parity_thresholds((val_y, SCORES, SEX), (Y, SCORES, SEX), 0.5)
    assert "fairness_thresholds" not in fit_fairness(kind, {"test": test}, {"test": {"sex": SEX}})


def test_check_group_columns_and_check_binary_are_one_line():
    from deepapps.core.fairness import check_binary, check_group_columns

    check_group_columns(["a", "sex"], ["sex"], "d.csv")
    with pytest.raises(DataError, match=r"^d.csv: group column\(s\) not found: race \(columns: a, sex\)$"):
        check_group_columns(["a", "sex"], ["sex", "race"], "d.csv")
    check_binary(["no", "yes"])
    with pytest.raises(ConfigError, match="binary classifier.*3 labels"):
        check_binary(["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"2 labels \(multi-label\)"):
        check_binary(["a", "b"], multilabel=True)


def test_equal_tpr_thresholds_give_each_group_the_overall_tpr():
    from deepapps.core.fairness import equal_tpr_thresholds, thresholds_for

    rng = np.random.default_rng(0)
    g = np.array(["a"] * 400 + ["b"] * 400 + ["c"] * 30)
    y = rng.random(len(g)) < 0.3
    y[800:] = [True] * 10 + [False] * 20  # c: 10 positives, too few to equalise
    s = np.clip(0.4 * y + rng.random(len(g)) * 0.6 + np.where(g == "b", 0.15, 0.0), 0, 1)
    rule = equal_tpr_thresholds(y, s, g, threshold=0.5)
    overall = (s[y] >= 0.5).mean()
    assert rule["target_tpr"] == pytest.approx(overall)
    for group in ("a", "b"):
        pos = s[y & (g == group)]
        tpr = (pos >= rule["thresholds"][group]).mean()
        assert overall <= tpr < overall + 1.5 / len(pos)  # the highest threshold reaching the target
    assert rule["thresholds"]["b"] > rule["thresholds"]["a"]  # b scores higher, so it gets the higher bar
    assert "c" in rule["kept"] and "c" not in rule["thresholds"]
    assert list(thresholds_for(["a", "c", None], rule)) == [rule["thresholds"]["a"], 0.5, 0.5]
