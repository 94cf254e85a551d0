"""The claims ledger: each paper's headline claims, checked against the reproductions' JSON.

``tune-div reproduce claims [--from reproductions] [--out docs/claims.md] [--readme README.md]`` reads
every protocol result under ``--from``, takes for each (protocol, dataset) the run closest to the paper's
budget, and writes one row per :class:`Claim`: the paper's numbers, ours under the paper's attacks, ours under the audit
(white-box claims) or under the strongest transfer attack of the table (black-box claims: the lowest
measured accuracy over its attacks at that ε), the budget it ran, and a verdict:

- ``holds``: the claimed order holds under the paper's attacks and under the check, at the paper's epochs;
- ``holds at reduced budget``: the same, at fewer epochs than the paper's;
- ``does not hold``: it fails under the paper's attacks, or only under the check (the note says which);
- ``not run``: no result (a ``smoke`` budget's never counts) has every method the claim compares.

"Beats" compares the seed means; the table beside each number gives its interval, a margin inside it
is noted as such, and so is a run of one seed (a seed can flip such a comparison: docs/reproduction.md,
"Budget check"). A claim is about one dataset, one threat, a set of attack columns and of ε.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import data
from ..errors import UserError
from ..files import atomic_write_text

VERDICTS = ("holds", "holds at reduced budget", "does not hold", "not run")
README_START = "<!-- claims ledger: written by `tune-div reproduce claims --readme README.md`; do not edit -->"
README_END = "<!-- end of the claims ledger -->"


@dataclass(frozen=True)
class Claim:
    """``winner`` is more accurate than every one of ``losers`` under each attack column of ``columns``
    (``threat`` white_box or black_box) at each ε of ``eps`` on ``dataset``."""

    text: str
    dataset: str
    threat: str
    columns: tuple[str, ...]
    winner: str
    losers: tuple[str, ...]
    eps: tuple[float, ...]


def cells(doc: dict[str, Any]) -> dict[tuple[str, str, float, str], dict[str, Any]]:
    return {(r["threat"], r["column"], float(r["eps"]), r["method"]): r for r in doc["rows"]}


def margins(
    claim: Claim, value: Any, columns: Iterable[str]
) -> tuple[list[tuple[str, float, float, float]] | None, str]:
    """[(column, ε, winner, best loser)] from ``value(column, ε, method)`` (None: missing), or None and
    what is missing."""
    out = []
    for column in columns:
        for eps in claim.eps:
            vals = {m: value(column, eps, m) for m in (claim.winner, *claim.losers)}
            missing = [m for m, v in vals.items() if v is None]
            if missing:
                return None, f"no {column} at ε {eps} for {', '.join(missing)}"
            out.append((column, eps, vals[claim.winner], max(vals[m] for m in claim.losers)))
    return out, ""


def holds(found: list[tuple[str, float, float, float]]) -> bool:
    return all(w > best for _, _, w, best in found)


def shown(found: list[tuple[str, float, float, float]], columns: dict[str, str]) -> str:
    """``PGD 0.1: 93.8 vs 91.9`` per column and ε (the winner against the best of the others)."""
    return "; ".join(f"{columns.get(c, c)} {e:g}: {w:.1f} vs {b:.1f}" for c, e, w, b in found)


def budget(doc: dict[str, Any]) -> tuple[str, bool]:
    """The run's budget in words, and whether it is below the paper's (fewer epochs, or another architecture)."""
    from . import PROTOCOLS

    s = doc["settings"]
    paper = s.get("paper_epochs") or data.info(s["dataset"]).epochs
    arch = PROTOCOLS.get(doc["protocol"]).changed_arch(s)
    reduced = s["epochs"] < paper or bool(s.get("epochs_for")) or bool(arch) or bool(s.get("subset"))
    text = f"{s['epochs']} of {paper} epochs" + "".join(f", {m} {n}" for m, n in (s.get("epochs_for") or {}).items())
    text += f" on {s['subset']:,} training images" if s.get("subset") else ""
    text += f"; every model a {arch}" if arch else ""
    return f"{text}; {s['seeds']} seed(s); {s['n']} points", reduced


def judge(claim: Claim, doc: dict[str, Any] | None) -> dict[str, Any]:
    """One ledger row: the claim checked against ``doc`` (a protocol result), or ``not run`` without one."""
    row: dict[str, Any] = {"claim": claim.text, "dataset": claim.dataset, "threat": claim.threat}
    if doc is None:
        return {**row, "paper": "", "ours": "", "check": "", "budget": "", "verdict": "not run", "note": "no run"}
    by = cells(doc)
    labels = doc.get("columns", {})

    def measured(column, eps, m):
        r = by.get((claim.threat, column, eps, m))
        return None if r is None else r["measured"]

    def paper(column, eps, m):
        r = by.get((claim.threat, column, eps, m))
        return None if r is None else r["paper"]

    black = sorted({c for (t, c, _, _) in by if t == "black_box"})

    def strongest(column, eps, m):
        vals = [by[("black_box", c, eps, m)]["measured"] for c in black if ("black_box", c, eps, m) in by]
        return min(vals) if vals else None

    theirs, _ = margins(claim, paper, claim.columns)
    ours, missing = margins(claim, measured, claim.columns)
    text, reduced = budget(doc)
    row.update(paper=shown(theirs, labels) if theirs else "", budget=text)
    if ours is None:
        return {**row, "ours": "", "check": "", "verdict": "not run", "note": missing}
    check_name = "audit" if claim.threat == "white_box" else "strongest transfer"
    checked, _ = (
        margins(claim, measured, ["audit"]) if claim.threat == "white_box" else margins(claim, strongest, ["min"])
    )
    row["ours"] = shown(ours, labels)
    row["check"] = shown(checked, {"audit": "audit", "min": "strongest"}) if checked else f"no {check_name} in the run"
    notes = []
    if theirs is not None and not holds(theirs):
        notes.append("the paper's own numbers do not show it everywhere")
    if not holds(ours):
        verdict = "does not hold"
        notes.append("fails under the paper's attacks")
    elif checked is not None and not holds(checked):
        verdict = "does not hold"
        notes.append(f"holds under the paper's attacks, fails under the {check_name}")
    else:
        verdict = "holds at reduced budget" if reduced else "holds"
        if checked is None:
            notes.append(f"no {check_name} in the run: checked under the paper's attacks only")
    close = [(c, e) for c, e, w, b in ours if abs(w - b) < half_width(doc, w)]  # a margin inside one number's interval
    if close:
        notes.append("margin within the 95% interval at " + ", ".join(f"{labels.get(c, c)} {e:g}" for c, e in close))
    if int(doc["settings"]["seeds"]) < 2:  # SMD against naive flipped sign between two seeds (budget check)
        notes.append("one seed: not confirmed over seeds")
    return {**row, "verdict": verdict, "note": "; ".join(notes)}


def half_width(doc: dict[str, Any], percent: float) -> float:
    from ..eval.intervals import accuracy_interval

    return 100 * accuracy_interval(percent / 100, int(doc["settings"]["n"])).half_width


def pick(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run closest to the paper's budget: the most epochs (each method's, up to the paper's, as a
    share of the paper's, averaged over the methods), then the most seeds, then the most points, then
    the strongest audit (``standard`` over ``fast`` over none)."""

    def key(doc):
        s = doc["settings"]
        paper = s.get("paper_epochs") or data.info(s["dataset"]).epochs
        per = s.get("epochs_for") or {}
        methods = s.get("methods") or [None]
        share = sum(min(per.get(m, s["epochs"]), paper) / paper for m in methods) / len(methods)
        return (share, s["seeds"], s["n"], (None, "fast", "standard").index(s.get("audit")))

    return max(docs, key=key)


def covering(claim: Claim, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that trained every method ``claim`` compares (a run that does not list its methods counts),
    or all of ``docs`` when none did: a run nearer the paper's budget that left a method out does not
    hide one that has them all."""
    needed = {claim.winner, *claim.losers}
    full = [d for d in docs if d["settings"].get("methods") is None or needed <= set(d["settings"]["methods"])]
    return full or docs


def results(folder: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every protocol result (``*.json`` with a ``protocol`` and ``rows``) under ``folder``, by protocol
    and dataset."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted(folder.rglob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and "protocol" in doc and "rows" in doc and "settings" in doc:
            doc["_path"] = str(path)
            found.setdefault((doc["protocol"], doc["settings"]["dataset"]), []).append(doc)
    return found


def ledger(folder: Path) -> list[dict[str, Any]]:
    """Every registered protocol's claims, each judged on the run of it under ``folder`` nearest the paper's
    budget among those that trained the claim's methods."""
    from . import PROTOCOLS

    found = results(folder)
    rows = []
    for name in PROTOCOLS.names():
        for claim in getattr(PROTOCOLS.get(name), "claims", ()):
            docs = [d for d in found.get((name, claim.dataset), []) if d["settings"].get("budget") != "smoke"]
            doc = pick(covering(claim, docs)) if docs else None
            row = judge(claim, doc)
            row["protocol"] = name
            row["source"] = Path(doc["_path"]).relative_to(folder).as_posix() if doc else ""  # folders share names
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], folder: str) -> str:
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    lines = [
        "# Claims ledger",
        "",
        f"Generated by `tune-div reproduce claims --from {folder}` from the committed reproduction results; "
        "do not edit by hand. Each row checks one headline claim of a paper: its own numbers, ours under its "
        "attacks, ours under the audit (white-box) or the strongest transfer attack of its table (black-box), "
        "the budget we ran, and a verdict (tune_div/reproduce/claims.py says how it is decided). Numbers are "
        "accuracies in %: the claimed winner against the best of the others.",
        "",
        "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".",
        "",
    ]
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        lines += [
            f"## {protocol}",
            "",
            "| claim | paper | ours (paper's attacks) | ours (check) | budget | verdict | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["protocol"] == protocol):
            lines.append(
                f"| {r['claim']} | {r['paper'] or '—'} | {r['ours'] or '—'} | {r['check'] or '—'} | "
                f"{r['budget'] or '—'} | **{r['verdict']}** | {r['note']}"
                + (f" (`{r['source']}`)" if r["source"] else "")
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def readme_block(rows: list[dict[str, Any]], ledger_link: str) -> str:
    """The ledger's short form for the README, between its markers: one line per claim, its verdict and
    budget; the numbers stay in the ledger."""
    lines = [
        README_START,
        "",
        "| paper's table | claim | verdict | budget we ran |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| `{r['protocol']}` | {r['claim']} | **{r['verdict']}** | {r['budget'] or '—'} |")
    lines += ["", f"Numbers, intervals and notes: [{ledger_link}]({ledger_link}).", "", README_END]
    return "\n".join(lines)


def readme_span(readme: Path) -> tuple[int, int]:
    """Where the ledger's block is in ``readme`` (start of its first marker, end of its last), or a
    UserError saying which markers to add."""
    if not readme.is_file():
        raise UserError(f"--readme {readme} is not a file; name the README that holds the ledger's markers")
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise UserError(
            f"{readme} has no claims-ledger markers; put the lines {README_START!r} and {README_END!r} "
            "where the ledger should go"
        )
    return start, end + len(README_END)


def update_readme(readme: Path, rows: list[dict[str, Any]], ledger_link: str) -> None:
    """Replace the block between the README's ledger markers; the rest of the file is left as it was."""
    start, end = readme_span(readme)
    text = readme.read_text()
    atomic_write_text(readme, text[:start] + readme_block(rows, ledger_link) + text[end:])


def write(folder: Path, out: Path) -> list[dict[str, Any]]:
    """``out`` (Markdown) and ``out`` with ``.json`` (the rows); returns the rows."""
    rows = ledger(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, markdown(rows, str(folder)))
    atomic_write_text(out.with_suffix(".json"), json.dumps(rows, indent=2))
    return rows
