"""Screening rules: when a patient's cells called parasitized make the patient infected, and how a rule is chosen.

A rule is chosen on validation patients only and stored in the model card. Three kinds:

- `fraction`: infected when the fraction of cells called parasitized exceeds a cutoff;
- `count`: the same with the number of cells;
- `binomial` (the default since 0.3): infected when a patient without parasites, with as many cells, would show
  that many cells called parasitized, or more, with a probability below the stated false-alarm rate (a one-sided
  binomial test). The rate at which uninfected cells are wrongly called parasitized is measured on the validation
  cells, so the rule uses the cell count: 7 of 70 cells and 70 of 700 are not the same evidence.

`benchmarks/screening_rules.py` compares the choosers below out of fold on the dev patients (README: the default
found 41 of 45 infected patients and cleared 13 of 15 healthy ones, where the rule before it found 40 and cleared
13; chosen on those same 60 patients). Cards written before 0.3 hold a fraction rule (Youden's J) and keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .errors import MalariaError

STATISTICS = ("fraction", "count", "binomial")
FALSE_ALARM_RATE = 0.05  # the binomial and healthy-quantile rules' stated chance of calling a healthy patient infected
FALLBACK_FALSE_POSITIVE_RATE = 0.02  # when validation holds no uninfected cell to measure it on (said in chosen_on)


@dataclass
class Rule:
    """How a patient's cells called parasitized (at `cell_threshold`) become a verdict.

    fraction / count: infected when the statistic exceeds `cutoff`. binomial: `cutoff` is the false-alarm rate,
    and a patient is infected when P(a healthy patient has >= called of its cells called | false_positive_rate)
    is below it.
    """

    statistic: str
    cutoff: float
    cell_threshold: float
    chosen_on: str
    false_positive_rate: float | None = None  # binomial: P(a healthy patient's cell is called parasitized)

    def p_healthy(self, called: int, cells: int) -> float | None:
        """The chance that a healthy patient with `cells` cells has `called` or more of them called parasitized."""
        if self.false_positive_rate is None:
            return None
        return float(stats.binom.sf(called - 1, cells, self.false_positive_rate))

    def infected(self, called: int, cells: int) -> bool:
        if self.statistic == "binomial":
            return bool(self.p_healthy(called, cells) < self.cutoff)
        value = called / cells if self.statistic == "fraction" else called
        return bool(value > self.cutoff)

    def fraction_needed(self, cells: int) -> float:
        """The smallest fraction of called cells that makes a patient with `cells` cells infected (for plots)."""
        if self.statistic == "fraction":
            return self.cutoff
        if self.statistic == "count":
            return (np.floor(self.cutoff) + 1) / cells
        counts = np.arange(cells + 1)
        infected = stats.binom.sf(counts - 1, cells, self.false_positive_rate) < self.cutoff
        return float(counts[infected.argmax()] / cells) if infected.any() else 1.0

    def describe(self) -> str:
        called = f"P(Parasitized) >= {self.cell_threshold:.3f}"
        if self.statistic == "binomial":
            return (f"infected when a patient without parasites, its cells called parasitized at the rate r = "
                    f"{self.false_positive_rate:.4f}, would have as many of its cells with {called}, or more, with a "
                    f"probability below {self.cutoff:g} (one-sided binomial test; r from {self.chosen_on})")
        what = "fraction of its cells" if self.statistic == "fraction" else "number of its cells"
        cutoff = f"{self.cutoff:.3f}" if self.statistic == "fraction" else f"{self.cutoff:g}"
        return f"infected when the {what} with {called} exceeds {cutoff} (chosen on {self.chosen_on})"

    def explain(self, called: int, cells: int) -> str:
        """One line: the patient's evidence and why the rule called it what it did."""
        verdict = "infected" if self.infected(called, cells) else "healthy"
        seen = f"{called} of {cells} cells called parasitized ({called / cells:.1%})"
        if self.statistic == "binomial":
            p = self.p_healthy(called, cells)
            expected = self.false_positive_rate * cells
            if called == 0:
                return f"{seen}; a healthy patient shows about {expected:.1f}: {verdict}"
            below = "below" if p < self.cutoff else "not below"
            return (f"{seen}; a healthy patient shows about {expected:.1f}, and {called} or more with {_p(p)}, "
                    f"{below} {self.cutoff:g}: {verdict}")
        value, cutoff = ((f"{called / cells:.1%}", f"{self.cutoff:.1%}") if self.statistic == "fraction"
                         else (str(called), f"{self.cutoff:g}"))
        sign = ">" if verdict == "infected" else "<="
        return f"{seen}; {value} {sign} the cutoff {cutoff}: {verdict}"

    def evidence(self, called: int, cells: int) -> str:
        """The verdict's reason in a table cell: the p-value against healthy, or the statistic against the cutoff."""
        if self.statistic == "binomial":
            p = self.p_healthy(called, cells)
            return f"{_p(p)} ({'<' if p < self.cutoff else '>='} {self.cutoff:g})"
        value = called / cells if self.statistic == "fraction" else called
        shown = f"{value:.3f}" if self.statistic == "fraction" else str(called)
        cutoff = f"{self.cutoff:.3f}" if self.statistic == "fraction" else f"{self.cutoff:g}"
        return f"{shown} {'>' if value > self.cutoff else '<='} {cutoff}"

    def evidence_heading(self) -> str:
        return "why: p(as many from a healthy patient)" if self.statistic == "binomial" else f"why: {self.statistic} vs cutoff"

    @classmethod
    def from_dict(cls, d: dict) -> Rule:
        statistic = str(d["statistic"])
        if statistic not in STATISTICS:
            raise ValueError(f"unknown screening statistic {statistic!r}")
        rate = d.get("false_positive_rate")
        if statistic == "binomial" and rate is None:
            raise ValueError("a binomial rule needs its false_positive_rate")
        return cls(statistic, float(d["cutoff"]), float(d["cell_threshold"]), str(d["chosen_on"]),
                   None if rate is None else float(rate))


def _p(p: float) -> str:
    """'p = 0.036', or 'p < 0.0001' for what two significant digits would show as 0."""
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 0.0001"


def statistic_of(row: dict, statistic: str) -> float:
    """What orders patients for an ROC: the count for count rules, else the fraction."""
    return float(row["called_parasitized"]) if statistic == "count" else row["fraction"]


def _check_rows(rows: list[dict]) -> None:
    if any("infected" not in r for r in rows):
        raise MalariaError("Choosing a screening rule needs labelled validation cells (Parasitized/Uninfected folders).")


# ---------------------------------------------------------------- how often a healthy patient's cell is called


def healthy_false_positives(rows: list[dict], where: str) -> tuple[int, int, str]:
    """(cells called parasitized, cells, where from) over the healthy patients' cells, which are all uninfected.

    Counted over cells, not patients: with two or three healthy validation patients, their cells are the evidence.
    Without a healthy patient, the uninfected cells of infected patients stand in, and `where` says so.
    """
    healthy = [r for r in rows if not r["infected"]]
    if healthy:
        return (sum(r["false_positive_cells"] for r in healthy), sum(r["cells"] for r in healthy),
                f"{where}: {len(healthy)} healthy, {sum(r['cells'] for r in healthy)} cells")
    called = sum(r["false_positive_cells"] for r in rows)
    cells = sum(r["cells"] - r["labelled_parasitized"] for r in rows)
    return called, cells, f"{where}: no healthy patient, the {cells} uninfected cells of infected ones"


def _rate(called: int, cells: int, estimate: str) -> float:
    """The false-positive rate per cell: Jeffreys' estimate (never 0 from a clean sample) or its one-sided 95% upper
    limit (Clopper-Pearson), which allows for the estimate resting on a few hundred cells."""
    if cells == 0:
        return FALLBACK_FALSE_POSITIVE_RATE
    if estimate == "upper":
        return float(stats.beta.ppf(0.95, called + 1, cells - called)) if called < cells else 1.0
    return (called + 0.5) / (cells + 1)


# ---------------------------------------------------------------- the choosers


def choose_rule(rows: list[dict], cell_threshold: float, statistic: str = "fraction",
                where: str = "validation patients") -> Rule:
    """The cutoff that best separates infected from healthy validation patients (Youden's J over patients): the
    rule before 0.3, kept for comparison and for cards that hold it.

    Among cutoffs with the same J, the one in the widest gap between neighbouring patients wins
    (a margin for new patients), placed halfway across it (for fractions on the square-root scale). Without both kinds of patient the
    cutoff cannot be learned: then it is twice the share of the validation patients' uninfected
    cells called parasitized (what a healthy patient would show), at least 2%, and the rule says so.
    """
    if statistic not in ("fraction", "count"):
        raise MalariaError(f"Youden's J chooses a cutoff on 'fraction' or 'count', not {statistic!r}.")
    _check_rows(rows)
    infected = sum(r["infected"] for r in rows)
    healthy = len(rows) - infected
    if infected == 0 or healthy == 0:
        uninfected_cells = sum(r["cells"] - r["labelled_parasitized"] for r in rows)
        false_positive = sum(r["false_positive_cells"] for r in rows) / uninfected_cells if uninfected_cells else 0.0
        cutoff = max(2 * false_positive, 0.02)
        if statistic == "count":
            cutoff = float(np.floor(cutoff * np.median([r["cells"] for r in rows])))
        missing = "healthy" if healthy == 0 else "infected"
        return Rule(statistic, float(cutoff), float(cell_threshold),
                    f"{where} ({len(rows)}, none {missing}: heuristic, twice the uninfected cells' false-positive share)")
    values = np.array([statistic_of(r, statistic) for r in rows])
    truth = np.array([r["infected"] for r in rows], dtype=bool)
    distinct = np.unique(values)
    best: tuple[float, float, float] | None = None  # (J, gap, cutoff)
    for low, high in zip(distinct[:-1], distinct[1:], strict=True):
        # fractions: halfway on the square-root scale, which stabilises a binomial fraction's variance, so a
        # healthy patient near `low` and an infected one near `high` are equally many noise units away
        cutoff = float(((np.sqrt(low) + np.sqrt(high)) / 2) ** 2 if statistic == "fraction" else (low + high) / 2)
        called = values > cutoff
        j = called[truth].mean() + (~called[~truth]).mean() - 1
        candidate = (float(j), float(high - low), cutoff)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None or best[0] <= 0:  # every patient has the same value, or nothing separates them
        cutoff = float(distinct[-1]) if best is None else best[2]
    else:
        cutoff = best[2]
    return Rule(statistic, cutoff, float(cell_threshold), f"{where} ({infected} infected, {healthy} healthy), Youden's J")


def choose_binomial_rule(rows: list[dict], cell_threshold: float, where: str = "validation patients",
                         false_alarm_rate: float = FALSE_ALARM_RATE, estimate: str = "jeffreys",
                         cells_from: str = "healthy") -> Rule:
    """A one-sided binomial test per patient against the false-positive rate of healthy validation patients' cells.

    `estimate`: "jeffreys" (the rate itself) or "upper" (its 95% upper limit); `cells_from`: "healthy" (the cells
    of healthy patients) or "uninfected" (every uninfected cell of the validation patients, healthy or not).
    """
    _check_rows(rows)
    if cells_from == "healthy":
        called, cells, source = healthy_false_positives(rows, where)
    else:
        called = sum(r["false_positive_cells"] for r in rows)
        cells = sum(r["cells"] - r["labelled_parasitized"] for r in rows)
        source = f"{where}: all {cells} uninfected cells"
    rate = _rate(called, cells, estimate)
    how = "; the 95% upper limit of their rate" if estimate == "upper" else ""
    return Rule("binomial", float(false_alarm_rate), float(cell_threshold),
                f"{source}, {called} called parasitized{how}", rate)


def choose_healthy_quantile_rule(rows: list[dict], cell_threshold: float, where: str = "validation patients",
                                 false_alarm_rate: float = FALSE_ALARM_RATE) -> Rule:
    """A fraction cutoff that a healthy patient of typical size (the validation patients' median cell count)
    exceeds with probability at most `false_alarm_rate`, by the binomial law of its false positives."""
    _check_rows(rows)
    called, cells, source = healthy_false_positives(rows, where)
    rate = _rate(called, cells, "jeffreys")
    typical = int(np.median([r["cells"] for r in rows]))
    # the smallest count a healthy patient exceeds with probability <= alpha (scipy's isf of the survival function)
    count = int(stats.binom.isf(false_alarm_rate, typical, rate))
    return Rule("fraction", count / typical, float(cell_threshold),
                f"{source}, {called} called parasitized; at most {false_alarm_rate:g} of healthy patients of "
                f"{typical} cells above it")


def choose_default_rule(rows: list[dict], cell_threshold: float, false_alarm_rate: float = FALSE_ALARM_RATE) -> Rule:
    """The rule `malaria train` stores in a model card: the binomial test against the false-positive rate of all
    uninfected validation cells (about 500 cells per fold of the dev subset, where the healthy patients alone give
    about 140). Out of fold on the dev patients it found more infected patients than the rule before it and cleared
    as many healthy ones (README)."""
    return choose_binomial_rule(rows, cell_threshold, false_alarm_rate=false_alarm_rate, cells_from="uninfected")


RuleChooser = Callable[[list[dict], float], Rule]
CHOOSERS: dict[str, RuleChooser] = {
    "youden": choose_rule,
    "healthy_quantile": choose_healthy_quantile_rule,
    "binomial": choose_binomial_rule,
    "binomial_upper": lambda rows, t: choose_binomial_rule(rows, t, estimate="upper"),
    "binomial_uninfected": choose_default_rule,
}
ABOUT = {
    "youden": "a fraction cutoff that best separates the validation patients (Youden's J): the rule before 0.3",
    "healthy_quantile": f"a fraction cutoff that a healthy patient of typical size exceeds with probability "
                        f"{FALSE_ALARM_RATE:g} (binomial law, rate from healthy validation patients' cells)",
    "binomial": f"a one-sided binomial test per patient at {FALSE_ALARM_RATE:g} against the false-positive rate of "
                "healthy validation patients' cells",
    "binomial_upper": "the same test against the 95% upper limit of that rate",
    "binomial_uninfected": "the same test against the false-positive rate of all uninfected validation cells, "
                           "healthy patients' or not: the default",
}
DEFAULT_CHOOSER = "binomial_uninfected"
