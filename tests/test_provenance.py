"""Provenance that cannot lie: a weights name is a choice or an error, a file's contents decide its tag."""

import hashlib

import pytest
import torch
import torchvision

import embstore
from embstore.ingest import models

from .conftest import run_embstore


@pytest.mark.parametrize(
    "model, weights",
    [("efficientnet_lite0", "defualt"), ("efficientnet_lite0", "IMAGENET1K_V1"), ("timm:resnet18", "pretrainedd")],
)
def test_an_unknown_weights_name_is_refused_for_every_source(tmp_path, model, weights):
    with pytest.raises(embstore.UsageError, match=f"'{weights}' is not a weights choice for {model}; choose one of"):
        models.describe(model, weights)
    store = embstore.open(tmp_path / "s", create=True)
    with pytest.raises(embstore.UsageError):
        store.ingest(embstore.sample_images(), model=model, weights=weights)
    assert store.sql("SELECT (SELECT count(*) FROM models) + (SELECT count(*) FROM runs)").fetchall() == [(0,)]


def test_torchvision_weights_choices_list_default_once():
    with pytest.raises(embstore.UsageError) as err:
        models.describe("resnet50", "IMAGENET1K_V9")
    message = str(err.value)
    assert "choose one of: DEFAULT, none, IMAGENET1K_V1, IMAGENET1K_V2, a .pth file" in message
    assert message.count("DEFAULT") == 1


def test_a_torch_module_refuses_a_weights_name(tmp_path):
    net = torchvision.models.resnet18(num_classes=4)
    pre = embstore.Preprocessing(72, 64, (0.5,) * 3, (0.5,) * 3, "bilinear")
    store = embstore.open(tmp_path / "s", create=True)
    with pytest.raises(embstore.UsageError, match="a torch module brings its own weights"):
        store.ingest(embstore.sample_images(), model=net, name="mine", preprocessing=pre, weights="none")


def test_a_cached_or_given_file_is_recorded_as_what_it_holds(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cache / "resnet18-f37072fd.pth")  # the name, not the file
    sha = hashlib.sha256((cache / "resnet18-f37072fd.pth").read_bytes()).hexdigest()
    spec = models.describe("resnet18", "DEFAULT")
    assert spec.weights == f"file-{sha[:12]}", "not IMAGENET1K_V1: the contents decide"
    assert "not the one its name claims" in models.provenance_note("resnet18", "DEFAULT", spec)
    store = embstore.open(tmp_path / "s", create=True)
    r = store.ingest(embstore.sample_images(), model="resnet18", layers="layer4", workers=0)
    assert r.model_key == f"resnet18@file-{sha[:12]}" and any("not the one its name claims" in n for n in r.notes)
    given = tmp_path / "densenet121-a639ec97.pth"  # torchvision's name for densenet121, other contents
    given.write_bytes((cache / "resnet18-f37072fd.pth").read_bytes())
    assert models.describe("densenet121", str(given)).weights == f"file-{sha[:12]}"
    mine = tmp_path / "mine.pth"
    mine.write_bytes(given.read_bytes())
    assert models.describe("resnet18", str(mine)).weights == f"file-{sha[:12]}"
    assert models.has_claimed_hash(mine) and not models.has_claimed_hash(given)


def test_a_file_for_another_architecture_is_a_short_line(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(torchvision.models.vgg11().state_dict(), path)
    with pytest.raises(embstore.WeightsUnavailableError) as err:
        models.load("resnet18", str(path))
    message = str(err.value)
    assert len(message) < 400 and "\n" not in message
    assert "missing keys (e.g. conv1.weight" in message and "unexpected keys (e.g. features.0.weight" in message


def test_the_cli_says_it_in_one_line_with_exit_code_2(tmp_path):
    done = run_embstore("--store", tmp_path / "s", "ingest", "--model", "efficientnet_lite0", "--weights", "defualt",
                        "--images", embstore.sample_images())  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "not a weights choice for efficientnet_lite0" in done.stderr
    assert not (tmp_path / "s").exists()


def test_the_bundled_weights_table_is_what_torchvision_says():
    """describe() answers from data/torchvision_weights.tsv without importing torch: every row must be
    torchvision's own enum (file, preprocessing, classes, accuracy, DEFAULT), and every enum a row."""
    from torchvision.models import get_model_weights, list_models

    names = sorted(list_models(module=torchvision.models))
    assert set(names) <= set(embstore.list_models())
    for name in names:
        enum = get_model_weights(name)
        rows = {w.name: w for w in models.weights_choices(name)}
        assert sorted(rows) == sorted(e.name for e in enum), name
        for e in enum:
            w, t = rows[e.name], e.transforms()
            assert (w.url, w.default, w.classes) == (e.url, e is enum.DEFAULT, len(e.meta["categories"] or ())), name
            p = w.preprocessing
            assert (p.resize, p.crop, p.interpolation) == (t.resize_size[0], t.crop_size[0], t.interpolation.value)
            assert p.mean == tuple(t.mean) and p.std == tuple(t.std), name
            top1 = e.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
            assert w.top1 == (None if top1 is None or top1 != top1 else top1), name  # NaN (none published): None


@pytest.mark.parametrize("env", [{}, {"TORCH_HOME": "/opt/th"}, {"XDG_CACHE_HOME": "/var/xdg"},
                                 {"TORCH_HOME": "~/th", "XDG_CACHE_HOME": "/var/xdg"}])  # fmt: skip
def test_the_hub_folder_without_torch_is_torchs_own(monkeypatch, env):
    for var in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert models._hub_dir_from_environment() == models.Path(torch.hub.get_dir())
