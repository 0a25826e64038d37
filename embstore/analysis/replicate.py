"""`embstore replicate SEED`: carry out a seed's plan (analysis/recipes.py) — ingest what is
missing, run its analyses — and set the store's numbers beside the paper's (the scoreboard).

Each finished analysis step is recorded in `replications` (migration 0017) with the plan's sha
and the state of the vectors it ran on; a replicate run again (after an interruption, or to add a
network) skips the steps recorded for the same plan and vectors, and every ingest resumes as any
ingest does. The scoreboard is read back from the store, so the report shows it too.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from embstore.analysis import scoreboards
from embstore.analysis.published import published
from embstore.analysis.recipes import ModelPlan, Plan
from embstore.analysis.scoreboards import Score
from embstore.errors import UsageError
from embstore.store.catalog import Catalog

if TYPE_CHECKING:
    from embstore.store.core import StoreCore

Progress = Callable[[str], None]


@dataclass
class Step:
    item: str  # the paper's network, or '' for a seed-wide step
    step: str
    model_key: str | None
    ran: bool  # False: already done for this plan and these vectors
    detail: dict = field(default_factory=dict)


@dataclass
class Replication:
    plan: Plan
    steps: list[Step]
    scoreboard: list[Score]


def replicate(store: StoreCore, plan: Plan, *, progress: Progress | None = None) -> Replication:
    """Carry out `plan` on `store` and return the steps and the scoreboard.

    >>> replicate(StoreCore.open(), plan("seed004", images="val/")).scoreboard[0].store  # doctest: +SKIP
    """
    if plan.needs:
        raise UsageError(f"{plan.seed} needs {'; '.join(plan.needs)} (see the plan: --dry-run)")
    say = progress or (lambda _m: None)
    with store.writer_lock():
        steps = {"seed000": _run_seed000, "seed003": _run_seed003, "seed004": _run_seed004}[plan.seed](store, plan, say)
    return Replication(plan, steps, scoreboard(store, plan.seed))


# -- the runs ---------------------------------------------------------------------------------
def _ingest(store: StoreCore, m, images: str, say: Progress) -> str:
    from embstore.ingest.run import ingest

    say(f"ingest {m.model} ({m.paper}) over {images}")
    return ingest(store, m.model, images, weights=m.weights, layers=",".join(m.layers)).model_key


def _run_seed000(store: StoreCore, plan: Plan, say: Progress) -> list[Step]:
    from embstore.analysis.matching import read_triplets, triplet_matching, write_image_manifest

    triplets = read_triplets(plan.inputs["manifest"])

    def match(key: str, _m: ModelPlan) -> dict:
        triplet_matching(store, triplets, model_keys=[key], layers=["hidden"], n_boot=plan.settings["n_boot"])
        return {"manifest_sha": triplets.sha, "n_triplets": len(triplets.paths)}

    steps = []
    with tempfile.TemporaryDirectory() as tmp:
        images = str(write_image_manifest(triplets, Path(tmp) / "images.csv"))
        for m in plan.models:
            key = _ingest(store, m, images, say)
            if plan.inputs.get("images"):
                _ingest(store, m, plan.inputs["images"], say)
            steps.append(_step(store, plan, m, "matching", key, match, say))
    return steps


def _run_seed003(store: StoreCore, plan: Plan, say: Progress) -> list[Step]:
    from embstore.analysis.toplists import agreement

    s = plan.settings

    def similar(key: str, _m: ModelPlan) -> dict:
        a = agreement(store, key, s["methods"], k=s["k"], p=s["rbo_p"], show=tuple(s["classes"]), n_boot=1000)
        return {"n_classes": a.n_classes, "jaccard": a.jaccard, "rbo": a.rbo, "wup": a.wup,
                "wup_ci": {m: list(v) for m, v in a.wup_ci.items()},
                "wup_difference": {d: [v, list(ci)] for d, (v, ci) in a.wup_difference.items()},
                "lists": a.lists}  # fmt: skip

    return [_step(store, plan, m, "similar", _ingest(store, m, plan.inputs["images"], say), similar, say)
            for m in plan.models]  # fmt: skip


def _run_seed004(store: StoreCore, plan: Plan, say: Progress) -> list[Step]:
    from embstore.analysis.rsatables import run_rsa

    s = plan.settings

    def encode(key: str, m: ModelPlan) -> dict:
        r = run_rsa(store, key, s["reference"], groups=s["groups"], n_permutations=s["permutations"],
                    seed=s["seed"], layers=m.layers, n_boot=s["n_boot"], scope_1v2=s["scope_1v2"],
                    label_set="imagenet1k", intersect=s["intersect"])  # fmt: skip
        return {"reference": r.reference, "concept_set": r.concepts_sha, "n_concepts": len(r.concepts),
                "warnings": r.warnings, "aliases": _paper_aliases(m.model)}  # fmt: skip

    return [_step(store, plan, m, "rsa", _ingest(store, m, plan.inputs["images"], say), encode, say)
            for m in plan.models]  # fmt: skip


def _paper_aliases(model: str) -> dict[str, str]:
    """{Keras name: node} of the layers seed 004's published values name, for this network."""
    from embstore.ingest.layersets import aliases
    from embstore.ingest.models import layers_of

    wanted = {n for v in published("004") for n in v.details.get("layer_keras", "").split(",") if n}
    try:
        return {k: v for k, v in aliases(layers_of(model), model).items() if k in wanted}
    except UsageError:  # a substitute of no Keras family
        return {}


def _step(store: StoreCore, plan: Plan, m: ModelPlan, step: str, key: str, work, say: Progress) -> Step:
    """`work(key, m)` unless this plan already ran it on these vectors; recorded when it finishes."""
    with store.read() as con:
        state = Catalog(con).layer_fingerprint(key, "hidden")
        done = ReplicationTables(con).done(plan.seed, m.paper, step)
    if done and done["plan_sha"] == plan.sha and done["state"] == state and done["model_key"] == key:
        say(f"{step} {key} ({m.paper}): done before, kept")
        return Step(m.paper, step, key, False, done["detail"])
    say(f"{step} {key} ({m.paper})")
    detail = work(key, m)
    with store.transaction() as con:
        ReplicationTables(con).record(plan, m.paper, step, key, state, detail)
    return Step(m.paper, step, key, True, detail)


class ReplicationTables:
    """The `replications` table (migration 0017), on one open catalog connection."""

    def __init__(self, con) -> None:
        self.con = con

    def done(self, seed: str, item: str, step: str) -> dict | None:
        got = self.con.execute(
            """SELECT model_key, plan_sha, state, plan, detail FROM replications
               WHERE seed = ? AND item = ? AND step = ?""",
            [seed, item, step],
        ).fetchall()
        if not got:
            return None
        key, sha, state, plan, detail = got[0]
        return {"model_key": key, "plan_sha": sha, "state": state, "plan": json.loads(plan),
                "detail": json.loads(detail)}  # fmt: skip

    def record(self, plan: Plan, item: str, step: str, key: str, state: str, detail: dict) -> None:
        self.con.execute("DELETE FROM replications WHERE seed = ? AND item = ? AND step = ?", [plan.seed, item, step])
        self.con.execute(
            """INSERT INTO replications (seed, item, step, model_key, plan_sha, state, plan, detail)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [plan.seed, item, step, key, plan.sha, state, json.dumps(plan.to_dict()), json.dumps(detail)],
        )

    def of_seed(self, seed: str) -> dict[str, dict]:
        """{item: its latest step's record} of `seed`."""
        rows = self.con.execute(
            """SELECT item, model_key, plan_sha, state, plan, detail FROM replications WHERE seed = ?
               QUALIFY row_number() OVER (PARTITION BY item ORDER BY done_at DESC, step) = 1 ORDER BY item""",
            [seed],
        ).fetchall()
        return {item: {"model_key": key, "plan_sha": sha, "state": state, "plan": json.loads(plan),
                       "detail": json.loads(detail)} for item, key, sha, state, plan, detail in rows}  # fmt: skip

    def seeds(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT DISTINCT seed FROM replications ORDER BY 1").fetchall()]


# -- the scoreboard -----------------------------------------------------------------------------
def scoreboard(store: StoreCore, seed: str) -> list[Score]:
    """The paper's numbers beside this store's, from what `replicate` stored (empty: never run)."""
    with store.read() as con:
        done = ReplicationTables(con).of_seed(seed)
        if not done:
            return []
        return {"seed000": scoreboards.seed000, "seed003": scoreboards.seed003, "seed004": scoreboards.seed004}[seed](
            con, done, [v for v in published(seed[-3:])]
        )


def replicated_seeds(store: StoreCore) -> list[str]:
    with store.read() as con:
        return ReplicationTables(con).seeds()
