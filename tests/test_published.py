"""The published values (embstore/analysis/published.py): complete, consistent with their own
quotes, and — where the seed texts are on this machine — quoted verbatim from them."""

import os
import re
from pathlib import Path

import pytest

from embstore.analysis.published import published

TABLE2_NOT_IN_TORCHVISION = {"ResNet-200", "DenseNet-264 (k=32)", "DenseNet-232 (k=48)",
                             "DenseNet-cosine-264 (k=32)", "DenseNet-cosine-264 (k=48)"}  # fmt: skip


def _seeds() -> Path | None:
    here = os.environ.get("EMBSTORE_SEEDS") or Path(__file__).resolve().parents[1].parent / "shared" / "seeds"
    return Path(here) if Path(here).is_dir() else None


def test_seed_000_table_2_has_its_14_networks_with_three_measures_each():
    rows = [v for v in published("000") if v.source == "Table 2"]
    models = list(dict.fromkeys(v.model for v in rows))
    assert len(models) == 14 and len(rows) == 42
    for m in models:
        assert sorted(v.measure for v in rows if v.model == m) == ["auc", "matching_error", "top1_error"]
    assert {m for m in models if next(v for v in rows if v.model == m).torchvision is None} == TABLE2_NOT_IN_TORCHVISION
    import torchvision

    known = set(torchvision.models.list_models())
    assert all(v.torchvision in known for v in published() if v.torchvision)
    best = min((v for v in rows if v.measure == "matching_error"), key=lambda v: v.value)
    assert (best.model, best.value) == ("ResNet-200", 38.75)  # as the text says of table 2
    assert max((v for v in rows if v.measure == "auc"), key=lambda v: v.value).model == "ResNet-200"


def test_every_value_is_printed_in_its_own_quote():
    for v in published():
        if v.value is None:
            assert v.details["text"] in v.quote, v
            continue
        numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", v.quote)]
        assert any(abs(n - v.value) < 1e-9 for n in numbers), v
    assert [(v.model, v.value, v.layer) for v in published("004", "peak_2v2")] == [
        ("Inception V3", 0.90, "Mixed9"), ("ResNet 50", 0.93, "last"), ("VGG 16", 0.94, "final")]  # fmt: skip


def test_every_quote_is_verbatim_in_its_seed_text():
    seeds = _seeds()
    if seeds is None:
        pytest.skip("the seed texts are not on this machine (set EMBSTORE_SEEDS to their folder)")
    flat = lambda s: re.sub(r"\s+", " ", s).strip()  # noqa: E731
    texts = {p.name[:3]: flat(p.read_text(encoding="utf-8")) for p in seeds.glob("*.txt")}
    for v in published():
        assert flat(v.quote) in texts[v.seed], v


def test_the_layers_a_value_names_resolve_in_the_papers_networks():
    """The Keras layer names the papers use resolve, through embstore's aliases, to these nodes."""
    from torchvision.models import inception_v3, vgg16

    from embstore.ingest.layers import discover
    from embstore.ingest.layersets import select

    nets = {
        "vgg16": (vgg16(weights=None), 224),
        "inception_v3": (inception_v3(weights=None, aux_logits=False, init_weights=False), 299),
    }
    want = {"vgg16": ["features.18", "features.25"], "inception_v3": ["Mixed_7b"]}
    for v in published("004"):
        if "layer_keras" in v.details:
            net, size = nets[v.torchvision]
            found = select(discover(net, v.torchvision, size), v.details["layer_keras"], v.torchvision)
            assert [l.name for l in found if l.name != "hidden"] == want[v.torchvision], v
