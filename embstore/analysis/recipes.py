"""The three seed papers' protocols as plans: which networks with which weights, layers,
preprocessing, concepts, groups, permutations and statistics (`embstore replicate SEED --dry-run`).

A plan is data: `replicate.run` carries it out, the report's scoreboard reads what it stored. The
sentence of each paper every choice follows is in the README ("Replicating the papers"), not here.
The networks come from the published values (analysis/published.py): a paper's network torchvision
lacks is a plan item that cannot run, named with the way out.

`--model` entries: a row's torchvision name or the paper's name (`resnet50`, `ResNet-50`) runs
only the rows named; `PAPER=MODEL` runs MODEL in that row's place (`ResNet-200=timm:resnet200`),
a difference the scoreboard marks. `weights` replaces every row's pinned weights (`none`: random
init; a file). Every difference from the paper is listed in `differences`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from embstore.analysis.published import published
from embstore.errors import UsageError

SEEDS = ("seed000", "seed003", "seed004")
PAPER_WEIGHTS = "IMAGENET1K_V1"  # torchvision's original recipe: resnet50's DEFAULT is the 2021 one
SEED003_CLASSES = ("knot", "baseball")
SEED004_PIXELS = "pixels~grid32x32"  # the "pixel level" point: the input in 32x32 cells (see README)
SRP_WIDTH = 4096
POOLINGS = ("gap", "srp")
SEED004_PERMUTATIONS = 10000  # the paper's p < 0.001: 1000 permutations floor p at 1/1001
_SEED004_FAMILIES = ("vgg", "resnet", "inception_v3")


@dataclass(frozen=True)
class ModelPlan:
    paper: str  # the paper's name of the network
    model: str  # what embstore runs (torchvision or timm name)
    weights: str
    layers: list[str]  # the layer request, resolved to layer names (a dry run lists them)
    preprocessing: dict[str, Any]


@dataclass(frozen=True)
class NotRun:
    item: str
    why: str
    way_out: str


@dataclass(frozen=True)
class Reading:
    question: str
    taken: str
    other: str


@dataclass
class Plan:
    seed: str
    paper: str
    inputs: dict[str, Any]
    needs: list[str]  # inputs a real run lacks (a dry run still plans)
    models: list[ModelPlan]
    settings: dict[str, Any]
    steps: list[str]
    not_run: list[NotRun] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def sha(self) -> str:
        """sha256 of the plan's JSON: a changed plan reruns its steps."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def model_for(self, paper: str) -> ModelPlan:
        return next(m for m in self.models if m.paper == paper)


def plan(
    seed: str,
    *,
    images: str | None = None,
    manifest: str | None = None,
    vectors: list[str] | None = None,
    models: list[str] | None = None,
    weights: str | None = None,
    pooling: str = "gap",
    permutations: int | None = None,
    n_boot: int = 1000,
) -> Plan:
    """The plan of `seed` (seed000, seed003, seed004) on these inputs; nothing runs.

    >>> plan("seed000").models[2].weights  # doctest: +SKIP
    'IMAGENET1K_V1'
    """
    seed = seed.lower().replace(" ", "")
    if seed.isdigit():
        seed = f"seed{int(seed):03d}"
    if seed not in SEEDS:
        raise UsageError(f"unknown seed '{seed}'; choose one of {', '.join(SEEDS)}")
    if pooling not in POOLINGS:
        raise UsageError(f"unknown pooling '{pooling}'; choose one of {', '.join(POOLINGS)}")
    if n_boot and n_boot < 100:
        raise UsageError(f"n_boot must be 0 (no intervals) or at least 100, not {n_boot}")
    rows = _paper_networks(seed[-3:])
    chosen, not_run, differences = _choose(seed, rows, models or [], weights)
    build = {"seed000": _seed000, "seed003": _seed003, "seed004": _seed004}[seed]
    out = build(images=images, manifest=manifest, vectors=list(vectors or []), pooling=pooling,
                permutations=permutations, n_boot=n_boot)  # fmt: skip
    out.not_run = not_run + out.not_run
    out.differences = differences + out.differences
    for paper, model, w in chosen:
        request = _layer_request(seed, model, pooling)
        out.models.append(ModelPlan(paper, model, w, _resolve(model, request), _preprocessing(model, w)))
    if not out.models:
        raise UsageError(f"{seed}: no network of the paper can run here; {not_run[0].way_out if not_run else ''}")
    return out


# -- the seeds ------------------------------------------------------------------------------
def _seed000(*, images, manifest, vectors, pooling, permutations, n_boot) -> Plan:
    needs = [] if manifest else ["--manifest TRIPLETS.csv (object,related,unrelated image paths: POPORO's 400)"]
    p = Plan(
        "seed000", "related/unrelated object matching of ImageNet-trained CNNs (POPORO; table 2)",
        {"manifest": manifest, "images": images}, needs, [],
        {"layer": "hidden", "similarity": "cosine", "n_boot": n_boot, "top1_images": bool(images)},
        ["ingest the triplets' images (and --images) per network", "matching: error and AUC with CIs",
         "top-1 error on the labelled --images", "the scoreboard against table 2"],
    )  # fmt: skip
    p.readings.append(Reading(
        "\"the features ... from the last layer of DNNs\"",
        "the classifier's input: the globally pooled last feature map (layer hidden)",
        "any stored layer: `embstore analyze matching MANIFEST --layer NAME` after ingesting it",
    ))  # fmt: skip
    if vectors:
        p.differences.append("--vectors are not used by seed000")
    if not images:
        p.differences.append("no --images: table 2's ImageNet top-1 error is not measured (pass labelled val images)")
    return p


def _seed003(*, images, manifest, vectors, pooling, permutations, n_boot) -> Plan:
    needs = [] if images else ["--images DIR (labelled ImageNet images: a folder per wnid or class name)"]
    p = Plan(
        "seed003", "similar labels from internal representations (ResNet34; figures 1-2)",
        {"images": images}, needs, [],
        {"classes": list(SEED003_CLASSES), "k": 9, "methods": ["prototype", "tstat", "hidden"],
         "prototype_layers": "all conv layers concatenated", "rbo_p": 0.9},
        ["ingest --images", "top-9 similar classes of knot and baseball per method",
         "agreement of the methods over all classes (Jaccard@9, rank-biased overlap) and their mean Wu-Palmer",
         "the scoreboard against the paper's claims"],
    )  # fmt: skip
    p.readings += [
        Reading("the Welch t-test of a class (§3.2)", "one-vs-rest: the class against all other images",
                "pairwise, class A against class B: `embstore analyze tstats --pair A,B --layer NAME`"),
        Reading("which convolutional layers (eq. 2)", "each conv's output after its activation (set conv: 33)",
                "each Conv2d's own output: ingest `--layers conv_raw` (36, shortcut convs included)"),
    ]  # fmt: skip
    if manifest or vectors:
        p.differences.append("--manifest and --vectors are not used by seed003")
    return p


def _seed004(*, images, manifest, vectors, pooling, permutations, n_boot) -> Plan:
    needs = [] if images else ["--images DIR (ImageNet images, >= 5 per class: the paper's 166 x 5)"]
    reference = vectors[0] if vectors else "glove"
    n_perm = SEED004_PERMUTATIONS if permutations is None else permutations
    p = Plan(
        "seed004", "semantics in CNN layers: the 2 vs 2 test against word vectors (figures 1-4)",
        {"images": images, "vectors": vectors}, needs, [],
        {"reference": reference, "intersect": ["glove", *vectors] if vectors else None, "groups": 5,
         "permutations": n_perm, "n_boot": n_boot, "scope_1v2": "within-group", "pooling": pooling,
         "pixels": SEED004_PIXELS, "seed": 0},
        ["ingest --images", "2 vs 2, RSA and 1 vs 2 per layer with permutation p and CIs",
         "the scoreboard against the peaks, counts and p-values"],
    )  # fmt: skip
    if not vectors:
        p.differences.append("GloVe 6B 50d (bundled) in place of SkipGram: pass the word2vec file with --vectors")
        p.not_run.append(NotRun("SkipGram (word2vec) vectors", "not bundled (a 3.6 GB download)",
                                "--vectors GoogleNews-vectors-negative300.bin"))  # fmt: skip
    if permutations is not None and permutations != SEED004_PERMUTATIONS:
        p.differences.append(f"{permutations} permutations in place of {SEED004_PERMUTATIONS}")
    p.readings += [
        Reading("how a layer's maps are compared (\"correlation matrices\" of a layer's embeddings)",
                "each channel globally averaged (GAP), as embstore stores every map" if pooling == "gap" else
                f"the whole flattened map by a seeded sparse random projection to {SRP_WIDTH} (NAME~srp{SRP_WIDTH}); "
                "its correlations approximate the maps' cosines",
                ("--pooling srp (whole maps, projected); exactly: store.whole_map_two_vs_two(report, layers)"
                 if pooling == "gap" else "--pooling gap")),
        Reading("\"correlation at the pixel level\"", f"the preprocessed input in 32x32 cells ({SEED004_PIXELS})",
                "the whole input: ingest `--layers pixels`, then `embstore analyze rsa --layer pixels`"),
        Reading("the 1 vs 2 test's correctly classified images", "those of the misclassified image's own group",
                "every group's: `embstore analyze rsa` without --within-group"),
        Reading("\"the final layer\" of VGG 16", "its logits (Keras predictions before the softmax)",
                "its penultimate layer fc2 (hidden), also in the curve"),
    ]  # fmt: skip
    if manifest:
        p.differences.append("--manifest is not used by seed004")
    return p


# -- networks, layers and preprocessing ------------------------------------------------------
def _paper_networks(seed: str) -> list[tuple[str, str | None]]:
    """(paper name, torchvision name or None) of the seed's networks, in the paper's order."""
    seen: dict[str, str | None] = {}
    for v in published(seed):
        if v.model is not None:
            seen.setdefault(v.model, v.torchvision)
    return list(seen.items())


def _choose(
    seed: str, rows: list[tuple[str, str | None]], entries: list[str], weights: str | None
) -> tuple[list[tuple[str, str, str]], list[NotRun], list[str]]:
    """([(paper, model, weights)] to run, what cannot, the differences) from the --model entries."""

    def key(s: str) -> str:
        return "".join(ch for ch in s.lower() if ch.isalnum())

    by_key = {key(p): p for p, _ in rows} | {key(tv): p for p, tv in rows if tv}
    named: dict[str, str | None] = {}  # paper -> substitute model (None: its own)
    for entry in entries:
        paper, eq, other = entry.partition("=")
        row = by_key.get(key(paper))
        if row is None:
            choices = ", ".join(f"{p} ({tv})" if tv else p for p, tv in rows)
            hint = f"; to run it in a network's place: --model '{rows[0][0]}={entry}'" if not eq else ""
            raise UsageError(f"'{paper.strip()}' is none of {seed}'s networks: {choices}{hint}")
        named[row] = (other.strip() or None) if eq else None
    chosen: list[tuple[str, str, str]] = []
    not_run: list[NotRun] = []
    differences: list[str] = []
    for paper, tv in rows:
        model: str | None = named.get(paper) or tv
        if named and paper not in named and model is not None:
            continue
        if model is None:
            not_run.append(NotRun(
                paper, "not in torchvision",
                f"bring it: --model '{paper}={_timm_name(paper)}' --weights FILE (a converted checkpoint)",
            ))  # fmt: skip
            continue
        w = weights or (PAPER_WEIGHTS if model == tv else "DEFAULT")
        if model != tv:
            differences.append(f"{paper}: {model} in its place")
        if weights and weights != PAPER_WEIGHTS:
            differences.append(f"{paper}: weights {weights} in place of {PAPER_WEIGHTS}")
        chosen.append((paper, model, w))
    return chosen, not_run, differences


def _timm_name(paper: str) -> str:
    name = paper.lower().split(" (")[0].replace("-", "")
    return f"timm:{name}" if not name.startswith("densenetcosine") else "timm:densenet264d"


def _layer_request(seed: str, model: str, pooling: str) -> str:
    if seed == "seed000":
        return "hidden"
    if seed == "seed003":
        return "seed003"
    if not model.startswith(_SEED004_FAMILIES):
        return f"{SEED004_PIXELS},blocks"  # a substitute: seed 004 chose layers for its three families
    final = ",predictions" if model.startswith("vgg") else ""
    return f"{SEED004_PIXELS},seed004{final}" if pooling == "gap" else f"{SEED004_PIXELS},seed004~srp{SRP_WIDTH}{final}"


def _resolve(model: str, request: str) -> list[str]:
    """The layer names `request` gives for `model` (random init; the discovery is cached)."""
    from embstore.ingest.layers import HIDDEN
    from embstore.ingest.layersets import REDUCED, select
    from embstore.ingest.models import layers_of

    if request == HIDDEN:  # every network has it: no need to measure its graph
        return [HIDDEN]
    layers = layers_of(model)
    size = _spec(model, "none").preprocessing.size
    if REDUCED + "srp" in request:  # only spatial maps project: the dense layers of a set stay as they are
        base, _, how = request.split(",")[1].partition(REDUCED)
        names = []
        for l in select(layers, base, model):
            names.append(f"{l.name}{REDUCED}{how}" if l.kind == "conv" and len(l.size) == 2 else l.name)
        request = ",".join([request.split(",")[0], *names, *request.split(",")[2:]])
    return [l.name for l in select(layers, request, model, size)]


def _spec(model: str, weights: str):
    from embstore.ingest.models import describe

    return describe(model, weights)


def _preprocessing(model: str, weights: str) -> dict[str, Any]:
    try:
        prep = _spec(model, weights).preprocessing
    except UsageError:  # a weights file: the model's own preprocessing
        prep = _spec(model, "none").preprocessing
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(prep).items()}
