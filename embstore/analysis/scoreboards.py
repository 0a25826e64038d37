"""Each seed's scoreboard: the published values (analysis/published.py) beside this store's, with
the store's 95 % intervals, the difference and marks naming what was computed differently (from the
plan `replicate` recorded). Read from the stored results; `replicate.scoreboard` calls these.

Readings: seed 000's top-1 error is the store's labelled images' (Clopper-Pearson interval), not
the 50 000 ImageNet validation images unless those were ingested; seed 003's "ball related
classes" counts the top-9 classes whose name holds "ball"; seed 004's peak is the best layer of
the curve (`pixels` left out), its interval the concept bootstrap of that layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from embstore.analysis.matchingtables import MatchingTables
from embstore.analysis.rsatables import RsaTables
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.analysis.published import Published

PAPER_TRIPLETS = 400
K = 9  # seed 003's top-k


@dataclass
class Score:
    seed: str
    item: str  # the paper's network ('' for the seed as a whole)
    measure: str
    paper: float | None  # the published number (None: a claim in words, `paper_text`)
    paper_text: str
    store: float | None  # this store's number (None: not run here)
    ci: tuple[float, float] | None = None
    difference: float | None = None  # store - paper, in the paper's unit
    unit: str = ""
    marks: list[str] = field(default_factory=list)  # what was computed differently from the paper
    note: str = ""  # the store's value in words, or the way out when it was not run


def seed000(con, done: dict[str, dict], values: list[Published]) -> list[Score]:
    from scipy.stats import binomtest

    rates = Catalog(con).error_rates()
    out = []
    way_out = _not_run(done)
    for v in (v for v in values if v.source == "Table 2"):  # the text repeats two of its numbers
        rec = done.get(v.model or "")
        s = Score("seed000", v.model or "", v.measure, v.value, v.quote, None, unit=v.unit)
        out.append(s)
        if rec is None:
            s.note = way_out.get(v.model or "", "not run: `embstore replicate seed000 --model '" + str(v.model) + "'`")
            continue
        key, detail = rec["model_key"], rec["detail"]
        s.marks = _marks(rec, v.model)
        if v.measure == "top1_error":
            r = rates.get(key)
            if not r or not r["labelled"]:
                s.note = "no labelled images: pass --images of labelled ImageNet validation images"
                continue
            n = int(r["labelled"])
            wrong = round(r["top1_error"] * n)
            ci = binomtest(wrong, n).proportion_ci(0.95, "exact")
            _fill(s, 100 * r["top1_error"], (100 * ci.low, 100 * ci.high))
            s.marks.append(f"on {n} labelled images of this store")
            continue
        row = next((r for r in MatchingTables(con).summary(detail["manifest_sha"])
                    if r["model_key"] == key and r["layer"] == "hidden"), None)  # fmt: skip
        if row is None:
            s.note = "its matching results were replaced or removed; run replicate again"
            continue
        if v.measure == "matching_error":
            _fill(s, 100 * row["error"], (100 * row["error_ci_low"], 100 * row["error_ci_high"]))
        else:
            _fill(s, row["auc"], (row["auc_ci_low"], row["auc_ci_high"]))
        if row["n_triplets"] != PAPER_TRIPLETS:
            s.marks.append(f"{row['n_triplets']} triplets (the paper: POPORO's {PAPER_TRIPLETS})")
    out += [_error_correlation(v, out) for v in values if v.measure == "error_correlation"]
    return out


def _error_correlation(v: Published, rows: list[Score]) -> Score:
    """Fig. 6's claim: Spearman's ρ of the networks' top-1 and matching errors, with a bootstrap CI."""
    from embstore.analysis import stats

    s = Score("seed000", "", v.measure, None, v.quote, None)
    a, b = v.details["between"].split(",")
    got = {(r.item, r.measure): r.store for r in rows}
    networks = dict.fromkeys(r.item for r in rows)
    pairs = [
        (got[(m, a)], got[(m, b)]) for m in networks if got.get((m, a)) is not None and got.get((m, b)) is not None
    ]
    if len(pairs) < 3:
        s.note = f"needs >= 3 networks with both errors here; {len(pairs)} have them"
        return s
    rho, ci = stats.spearman_with_interval([x for x, _ in pairs], [y for _, y in pairs])
    s.store, s.ci = rho, ci
    s.note = f"Spearman's ρ of {a} and {b} over {len(pairs)} networks (bootstrap over the networks)"
    return s


def seed003(con, done: dict[str, dict], values: list[Published]) -> list[Score]:
    out = []
    for v in values:
        rec = done.get(v.model or "")
        if v.measure == "top_k":
            continue
        s = Score("seed003", v.model or "", v.measure, v.value, v.quote, None, unit=v.unit)
        out.append(s)
        if rec is None:
            s.note = "not run: `embstore replicate seed003 --images DIR`"
            continue
        d = rec["detail"]
        s.marks = _marks(rec, v.model)
        if d["n_classes"] <= K + 1:
            s.marks.append(f"{d['n_classes']} classes: a top {K} of every other class")
        if v.measure in ("similar_classes_contain", "similar_classes_kind"):
            top = d["lists"].get(v.details["method"], {}).get(v.details["cls"])
            if top is None:
                s.note = f"class {v.details['cls']} has no usable images in this store"
                continue
            if v.measure == "similar_classes_contain":
                hit = [i for i, n in enumerate(top) if n == v.details["text"]]
                s.store = float(hit[0] + 1) if hit else None
                s.note = (f"rank {hit[0] + 1} of 9" if hit else "not in the top 9") + ": " + ", ".join(top)
            else:
                n = sum("ball" in name.lower() for name in top)
                s.store = float(n)
                s.note = f"{n} of {len(top)} with 'ball' in the name: " + ", ".join(top)
                s.marks.append("'ball related' read as a class name holding 'ball'")
        elif v.measure == "same_classes":
            pair = "/".join(v.details["methods"].split(","))
            s.store = d["jaccard"].get(pair)
            s.note = (f"Jaccard@9 {s.store:.3f}, rank-biased overlap {d['rbo'].get(pair, float('nan')):.3f} "
                      f"over {d['n_classes']} classes (1 = the same)")  # fmt: skip
        elif v.measure == "more_cognitive":
            a, b = v.details["methods"].split(",")
            diff = d["wup_difference"].get(f"{a}-{b}")
            if diff is not None:
                s.store, s.ci = diff[0], tuple(diff[1])
            s.note = (f"mean Wu-Palmer of the top 9: {a} {d['wup'][a]:.3f}, {b} {d['wup'][b]:.3f} "
                      f"(difference {a} - {b}, class bootstrap CI)")  # fmt: skip
    return out


def seed004(con, done: dict[str, dict], values: list[Published]) -> list[Score]:
    from embstore.ingest.layersets import PIXELS

    out = []
    rows_of = {}
    for item, rec in done.items():
        d = rec["detail"]
        rows_of[item] = [r for r in RsaTables(con).results([rec["model_key"]])
                         if r["reference"] == d["reference"] and r["concepts_sha"] == d["concept_set"]]  # fmt: skip
    for v in values:
        item = v.model or next(iter(done), "")
        rec = done.get(item) or {}
        s = Score("seed004", v.model or "", v.measure, v.value, v.quote, None, unit=v.unit)
        out.append(s)
        rows = rows_of.get(item) or []
        if not rec or not rows:
            s.note = "not run: `embstore replicate seed004 --images DIR`"
            continue
        s.marks = _marks(rec, v.model)
        curve = [r for r in rows if not r["layer"].startswith(PIXELS)]
        if v.measure == "peak_2v2":
            best = max(curve, key=lambda r: r["acc_2v2"])
            want = _paper_layer(v, rec, curve)
            _fill(s, best["acc_2v2"], _ci(best))
            at = next((r for r in curve if r["layer"] == want), None)
            s.note = f"at {best['layer']}" + (f"; at the paper's layer {want}: {at['acc_2v2']:.3f}" if at else "")
            if want and best["layer"] != want:
                s.marks.append(f"peak at {best['layer']}, the paper's at {v.layer} ({want})")
        elif v.measure in ("n_concepts", "n_groups", "n_images"):
            r = curve[0]
            got = {"n_concepts": r["n_concepts"], "n_groups": r["n_groups"],
                   "n_images": r["n_concepts"] * r["n_groups"]}[v.measure]  # fmt: skip
            _fill(s, float(got), None)
            s.note = f"{rec['model_key']}, reference {rec['detail']['reference']}"
        elif v.measure == "first_layer_p_2v2":
            first = curve[0]
            _fill(s, first["p_value"], None)
            s.note = f"{first['layer']}: 2 vs 2 {first['acc_2v2']:.3f}; the paper: p < {v.value}"
            s.difference = None
        elif v.measure == "n_1v2":
            _fill(s, float(curve[0]["n_1v2"]), None)
        elif v.measure == "p_1v2":
            known = rec["detail"].get("aliases", {})
            nodes = {known[n] for n in v.details.get("layer_keras", "").split(",") if n in known}
            got = [r for r in curve if r["layer"] in nodes]
            if not nodes:
                s.note = f"{v.layer} have no counterpart in {rec['model_key']}"
            if got:
                _fill(s, min(r["p_1v2"] for r in got if r["p_1v2"] is not None) if any(
                    r["p_1v2"] is not None for r in got) else None, None)  # fmt: skip
                s.note = ", ".join(f"{r['layer']}: 1 vs 2 {r['acc_1v2']}, p {r['p_1v2']}" for r in got)
    return out


# -- helpers ---------------------------------------------------------------------------------
def _fill(s: Score, value: float | None, ci: tuple[float, float] | None) -> None:
    s.store, s.ci = value, ci
    if value is not None and s.paper is not None:
        s.difference = value - s.paper


def _ci(row: dict) -> tuple[float, float] | None:
    lo, hi = row.get("acc_ci_low"), row.get("acc_ci_high")
    return (lo, hi) if lo is not None and hi is not None else None


def _marks(rec: dict, item: str | None) -> list[str]:
    """The plan's differences that concern `item` (those naming another network left out)."""
    papers = {m["paper"] for m in rec["plan"]["models"]}
    out = []
    for d in rec["plan"]["differences"]:
        head = d.split(":", 1)[0]
        if head in papers and head != item:
            continue
        out.append(d.split(": ", 1)[1] if head == item else d)
    return out


def _not_run(done: dict[str, dict]) -> dict[str, str]:
    latest = max(done.values(), key=lambda r: r["plan"]["seed"], default=None)
    return {n["item"]: f"{n['why']}: {n['way_out']}" for n in (latest["plan"]["not_run"] if latest else [])}


def _paper_layer(v: Published, rec: dict, curve: list[dict]) -> str | None:
    """The node of the layer the paper names: a Keras alias, or the curve's last layer before `hidden`."""
    if "layer_keras" in v.details:
        return rec["detail"].get("aliases", {}).get(v.details["layer_keras"])
    tail = [r["layer"] for r in curve if r["layer"] != "hidden"]
    return tail[-1] if tail else None
