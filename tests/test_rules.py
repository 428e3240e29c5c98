"""Screening rules: the binomial test's arithmetic and size, how each chooser reads validation patients, old cards."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from malaria_lib.rules import (
    ABOUT,
    CHOOSERS,
    DEFAULT_CHOOSER,
    FALSE_ALARM_RATE,
    Rule,
    choose_binomial_rule,
    choose_default_rule,
    choose_healthy_quantile_rule,
    choose_rule,
)
from malaria_lib.screening import rule_from_card, screen_scores


def row(patient: str, cells: int, called: int, parasitized: int = 0, false_positive: int | None = None) -> dict:
    """A patient_table row: `parasitized` labelled cells; `false_positive` of the uninfected ones called."""
    return {"patient": patient, "cells": cells, "called_parasitized": called, "fraction": called / cells,
            "labelled_parasitized": parasitized, "labelled_fraction": parasitized / cells, "infected": parasitized > 0,
            "false_positive_cells": called if false_positive is None else false_positive}


def test_p_value_is_scipys_one_sided_binomial_test():
    rule = Rule("binomial", 0.05, 0.5, "test", 0.04)
    for called, cells in ((0, 70), (3, 70), (7, 71), (9, 67), (40, 700)):
        expected = stats.binomtest(called, cells, 0.04, alternative="greater").pvalue
        assert rule.p_healthy(called, cells) == pytest.approx(expected, rel=1e-9)
        assert rule.infected(called, cells) == (expected < 0.05)


def test_the_cell_count_is_evidence():
    """The same fraction is weak evidence from 70 cells and strong evidence from 700."""
    rule = Rule("binomial", 0.05, 0.5, "test", 0.05)
    assert not rule.infected(7, 70) and rule.infected(70, 700)
    fraction_rule = Rule("fraction", 0.09, 0.5, "test")
    assert fraction_rule.infected(7, 70) == fraction_rule.infected(70, 700)


def test_healthy_patients_are_flagged_at_most_at_the_false_alarm_rate():
    rng = np.random.default_rng(0)
    rule = Rule("binomial", FALSE_ALARM_RATE, 0.5, "test", 0.03)
    for cells in (50, 200, 600):
        called = rng.binomial(cells, 0.03, size=4000)
        flagged = np.mean([rule.infected(int(k), cells) for k in called])
        assert flagged <= FALSE_ALARM_RATE  # a discrete test is conservative
        assert flagged > 0.005  # but not blind
        # and fraction_needed is where the verdict turns
        needed = rule.fraction_needed(cells)
        k = round(needed * cells)
        assert rule.infected(k, cells) and not rule.infected(k - 1, cells)


def test_binomial_rule_measures_the_rate_on_healthy_patients_cells():
    rows = [row("C1", 100, 30, parasitized=40, false_positive=10), row("C2", 80, 2), row("C3", 120, 4)]
    rule = choose_binomial_rule(rows, 0.4)
    # Jeffreys' estimate over the healthy patients' 200 cells, 6 called: the infected patient's 10 do not count
    assert rule.statistic == "binomial" and rule.false_positive_rate == pytest.approx(6.5 / 201)
    assert rule.cutoff == FALSE_ALARM_RATE and rule.cell_threshold == 0.4
    assert "2 healthy, 200 cells" in rule.chosen_on
    upper = choose_binomial_rule(rows, 0.4, estimate="upper")
    assert upper.false_positive_rate == pytest.approx(stats.beta.ppf(0.95, 7, 194))
    assert upper.false_positive_rate > rule.false_positive_rate
    every = choose_binomial_rule(rows, 0.4, cells_from="uninfected")
    assert every.false_positive_rate == pytest.approx(16.5 / 261)  # 60 + 80 + 120 uninfected cells, 16 called
    # a clean sample still gives a rate above zero, so one false positive is not a verdict
    clean = choose_binomial_rule([row("C1", 100, 50, parasitized=50, false_positive=0), row("C2", 150, 0)], 0.5)
    assert 0 < clean.false_positive_rate < 0.01 and not clean.infected(1, 150)


def test_binomial_rule_without_healthy_patients_says_what_stood_in():
    rows = [row("C1", 100, 30, parasitized=40, false_positive=3), row("C2", 50, 20, parasitized=20, false_positive=0)]
    rule = choose_binomial_rule(rows, 0.5)
    assert rule.false_positive_rate == pytest.approx(3.5 / 91)
    assert "no healthy patient" in rule.chosen_on and "90 uninfected cells of infected ones" in rule.chosen_on


def test_healthy_quantile_cutoff_is_exceeded_by_few_healthy_patients():
    rows = [row("C1", 100, 30, parasitized=40, false_positive=5), row("C2", 100, 3), row("C3", 100, 5)]
    rule = choose_healthy_quantile_rule(rows, 0.5)
    rate = 8.5 / 201
    assert rule.statistic == "fraction"
    # a healthy patient of 100 cells (the median) is above the cutoff at most 5% of the time, and not much less
    above = stats.binom.sf(round(rule.cutoff * 100), 100, rate)
    assert above <= FALSE_ALARM_RATE < stats.binom.sf(round(rule.cutoff * 100) - 1, 100, rate)


def test_every_chooser_is_described_and_the_default_is_one_of_them():
    assert set(ABOUT) == set(CHOOSERS) and DEFAULT_CHOOSER in CHOOSERS
    rows = [row("C1", 100, 40, parasitized=45, false_positive=2), row("C2", 90, 3), row("C3", 80, 1)]
    for name, chooser in CHOOSERS.items():
        rule = chooser(rows, 0.5)
        assert rule.infected(40, 100), name  # an obvious patient
        assert not rule.infected(0, 90), name
    assert choose_default_rule(rows, 0.5) == CHOOSERS[DEFAULT_CHOOSER](rows, 0.5)


def test_the_default_rule_counts_every_uninfected_validation_cell():
    """About 500 cells per fold instead of the 140 of two healthy patients: infected patients' uninfected cells
    are uninfected cells too."""
    rows = [row("C1", 100, 30, parasitized=40, false_positive=10), row("C2", 80, 2), row("C3", 120, 4)]
    rule = choose_default_rule(rows, 0.4)
    assert rule.statistic == "binomial" and rule.false_positive_rate == pytest.approx(16.5 / 261)
    assert "all 260 uninfected cells, 16 called parasitized" in rule.chosen_on
    assert choose_default_rule(rows, 0.4, false_alarm_rate=0.01).cutoff == 0.01


def test_explanations_say_cells_fraction_and_evidence():
    rule = Rule("binomial", 0.05, 0.5, "test", 0.04)
    why = rule.explain(9, 67)
    assert why.startswith("9 of 67 cells called parasitized (13.4%)") and "about 2.7" in why and why.endswith("infected")
    assert rule.evidence(9, 67) == "p = 0.0014 (< 0.05)" and rule.evidence(2, 70).endswith("(>= 0.05)")
    assert rule.evidence(40, 70) == "p < 0.0001 (< 0.05)"
    assert "40 or more with p < 0.0001, below 0.05: infected" in rule.explain(40, 70)
    assert rule.explain(2, 70).endswith("p = 0.78, not below 0.05: healthy")
    old = Rule("fraction", 0.08, 0.5, "old card")
    assert old.explain(9, 67).endswith("13.4% > the cutoff 8.0%: infected") and old.evidence(2, 70) == "0.029 <= 0.080"


def test_old_cards_keep_working_and_broken_ones_are_refused():
    old = {"statistic": "fraction", "cutoff": 0.08, "cell_threshold": 0.5, "chosen_on": "validation patients"}
    rule = rule_from_card({"screening": old})
    assert rule == Rule("fraction", 0.08, 0.5, "validation patients") and rule.infected(9, 100)
    scores = np.array([0.9] * 9 + [0.1] * 91 + [0.1] * 50)
    result = screen_scores(scores, ["C1"] * 100 + ["C2"] * 50, rule, reps=10)
    assert [r["verdict"] for r in result.patients] == [True, False]
    assert "0.090 > 0.080" in result.table()
    assert rule_from_card({"screening": {**old, "statistic": "binomial"}}) is None  # no rate: cannot be applied
    assert rule_from_card({"screening": {**old, "statistic": "median"}}) is None
    assert rule_from_card({}) is None


def test_youden_rule_is_kept_for_fraction_and_count_only():
    from malaria_lib.errors import MalariaError

    with pytest.raises(MalariaError, match="'fraction' or 'count'"):
        choose_rule([row("C1", 10, 1)], 0.5, statistic="binomial")
