"""What a simulation found: the server's notifications against the ground truth.

Per phone: truly exposed or not (simulator/groundtruth.py), notified or not (a ``/status`` answer with
``riskLevel`` 4 at any poll), hence a true/false positive/negative. In total: the four counts, precision
and recall. Shown as rich tables; optionally a timeline PNG (matplotlib) and a JSON file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulator.groundtruth import Exposure
from simulator.scenario import SECONDS_PER_DAY, Scenario

AT_RISK = 4  # riskLevel of a phone at risk (PROTOCOL.md 6)


@dataclass
class PhoneOutcome:
    """What one virtual phone saw from the server during the run."""

    name: str
    registered: bool = False
    country: str = ""  # the country whose server it registered with (scenarios with countries)
    polls: int = 0
    poll_errors: int = 0
    notified_at: int | None = None  # seconds after the start of the first riskLevel-4 answer
    diagnosed: bool = False
    reported: bool = False
    hellos_uploaded: int = 0
    dummies: int = 0  # dummy /report uploads sent
    errors: list[str] = field(default_factory=list)

    @property
    def notified(self) -> bool:
        return self.notified_at is not None


@dataclass
class Confusion:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, verdict: str) -> None:
        setattr(self, verdict.lower(), getattr(self, verdict.lower()) + 1)

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


@dataclass
class SimulationResult:
    scenario: Scenario
    truth: dict[str, Exposure]
    outcomes: dict[str, PhoneOutcome]
    start_unix: float  # simulated time of the scenario's day 0, 00:00 UTC
    wall_seconds: float = 0.0
    events: list[tuple[int, str, str]] = field(default_factory=list)  # (t, phone, what)
    # (HTTP status, answer bytes) of every /report: what a network observer could compare
    report_answers: dict[str, list[tuple[int, int]]] = field(
        default_factory=lambda: {"real": [], "dummy": []}
    )

    def verdict(self, phone: str) -> str:
        """``TP``, ``FP``, ``FN`` or ``TN`` for one phone."""
        exposed, notified = self.truth[phone].exposed, self.outcomes[phone].notified
        return ("T" if exposed == notified else "F") + ("P" if notified else "N")

    def confusion(self) -> Confusion:
        c = Confusion()
        for name in self.scenario.phones:
            c.add(self.verdict(name))
        return c

    def to_dict(self) -> dict[str, Any]:
        c = self.confusion()
        return {
            "scenario": self.scenario.name,
            "seed": self.scenario.seed,
            "start_unix": self.start_unix,
            "wall_seconds": round(self.wall_seconds, 2),
            "totals": {**asdict(c), "precision": c.precision, "recall": c.recall},
            "report_answers": {
                kind: sorted({f"{status} {size} B" for status, size in answers})
                for kind, answers in self.report_answers.items()
            },
            "phones": {
                name: {
                    "verdict": self.verdict(name),
                    "country": out.country,
                    "exposed": self.truth[name].exposed,
                    "close_minutes": round(self.truth[name].close_seconds / 60, 1),
                    "notified_at": out.notified_at,
                    "polls": out.polls,
                    "poll_errors": out.poll_errors,
                    "diagnosed": out.diagnosed,
                    "reported": out.reported,
                    "hellos_uploaded": out.hellos_uploaded,
                    "dummies": out.dummies,
                    "errors": out.errors,
                }
                for name, out in self.outcomes.items()
            },
        }


def _when(t: int | None) -> str:
    if t is None:
        return "-"
    day, rest = divmod(t, SECONDS_PER_DAY)
    return f"d{day} {rest // 3600:02d}:{rest % 3600 // 60:02d}"


_STYLE = {"TP": "green", "TN": "dim", "FP": "yellow", "FN": "red"}


def phone_table(result: SimulationResult) -> Table:
    table = Table(title=f"Phones of {result.scenario.name}")
    countries = bool(result.scenario.countries)
    for col in (
        "phone",
        *(("country",) if countries else ()),
        "close min",
        "exposed",
        "notified",
        "verdict",
        "polls",
        "errors",
        "reported",
    ):
        table.add_column(col, justify="left" if col == "phone" else "right")
    for name, out in result.outcomes.items():
        verdict = result.verdict(name)
        exp = result.truth[name]
        reported = (
            f"yes ({out.hellos_uploaded} HELLOs)" if out.reported else ("FAILED" if out.diagnosed else "")
        )
        country = (out.country,) if countries else ()
        table.add_row(
            name, *country, f"{exp.close_seconds / 60:.1f}", "yes" if exp.exposed else "no",
            _when(out.notified_at), f"[{_STYLE[verdict]}]{verdict}[/]", str(out.polls),
            str(out.poll_errors + len(out.errors)), reported,
        )  # fmt: skip
    return table


def summary_table(result: SimulationResult) -> Table:
    c = result.confusion()
    table = Table(
        title=f"Notifications vs ground truth ({result.scenario.name}, seed {result.scenario.seed})"
    )
    for col in ("phones", "TP", "FP", "FN", "TN", "precision", "recall", "polls", "reports", "wall time"):
        table.add_column(col, justify="right")
    outs = result.outcomes.values()

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.0f} %"

    table.add_row(
        str(len(result.outcomes)), f"[green]{c.tp}[/]", f"[yellow]{c.fp}[/]", f"[red]{c.fn}[/]", str(c.tn),
        pct(c.precision), pct(c.recall), str(sum(o.polls for o in outs)),
        f"{sum(o.reported for o in outs)}/{sum(o.diagnosed for o in outs)}", f"{result.wall_seconds:.0f} s",
    )  # fmt: skip
    return table


def print_report(result: SimulationResult, console: Console, *, per_phone: bool = True) -> None:
    if per_phone:
        console.print(phone_table(result))
    console.print(summary_table(result))
    dummies = result.report_answers["dummy"]
    if dummies:
        seen = {k: sorted({f"{st} {size} B" for st, size in a}) for k, a in result.report_answers.items()}
        console.print(
            f"dummy uploads: {len(dummies)}; answers to dummies {', '.join(seen['dummy'])}"
            f" / to real uploads {', '.join(seen['real']) or '-'}"
        )


def write_json(result: SimulationResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")


def progress_bar(console: Console | None = None, *, disable: bool = False) -> Progress:
    """The progress bar of a run: one task whose total is the simulated seconds."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, disable=disable,
    )  # fmt: skip


def timeline_png(result: SimulationResult, path: Path) -> None:
    """A timeline: one row per phone, its encounters, diagnosis, polls at risk and verdict."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("the timeline needs matplotlib (pip install 'robert-server[plot]')") from None
    sc = result.scenario
    names = list(sc.phones)
    row = {n: i for i, n in enumerate(names)}
    fig, ax = plt.subplots(figsize=(12, max(3.0, 0.35 * len(names) + 1.5)))
    close = sc.ground_truth.distance_m
    for enc in sc.encounters:
        color = "tab:orange" if enc.distance_m <= close else "tab:blue"
        for who in (enc.a, enc.b):
            ax.broken_barh(
                [(enc.start / SECONDS_PER_DAY, enc.duration / SECONDS_PER_DAY)], (row[who] - 0.3, 0.6),
                facecolors=color, alpha=0.5,
            )  # fmt: skip
    for d in sc.diagnoses:
        ax.plot(d.at / SECONDS_PER_DAY, row[d.who], marker="X", color="black", markersize=10)
    for name, out in result.outcomes.items():
        if out.notified_at is not None:
            color = "green" if result.truth[name].exposed else "gold"
            ax.plot(out.notified_at / SECONDS_PER_DAY, row[name], marker="^", color=color, markersize=9)
        ax.text(sc.days + 0.05, row[name], result.verdict(name), va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlim(0, sc.days + 0.4)
    ax.set_xlabel("day")
    ax.set_title(
        f"{sc.name}: encounters (orange: within {close} m, blue: farther), X diagnosis, ^ notified",
        fontsize=10,
    )
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
