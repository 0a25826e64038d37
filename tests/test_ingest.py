import json
import os
import subprocess
import sys

import duckdb
import numpy as np
import pytest
import torch
from PIL import Image

import embstore
from embstore.errors import (
    InputPathError,
    ManifestError,
    StoreBusyError,
    UnknownLayerError,
    UnknownModelError,
    WeightsUnavailableError,
)
from embstore.ingest.run import ingest
from embstore.store.table import ActivationTable

from .conftest import make_images, writer_lock_held_elsewhere

RESNET18_DEFAULT = [
    "layer1.0",
    "layer1.1",
    "layer2.0",
    "layer2.1",
    "layer3.0",
    "layer3.1",
    "layer4.0",
    "layer4.1",
    "hidden",
]


def _count(store, sql, params=None):
    with store.core.read() as con:
        return con.execute(sql, params or []).fetchall()[0][0]


def test_class_tree_ingest_stores_every_default_layer_once_with_labels(store, tmp_path):
    make_images(tmp_path / "imgs" / "n01440764", 3, seed=1)  # wnid folder: tench
    make_images(tmp_path / "imgs" / "knot", 2, seed=2)  # class-name folder
    r = ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", batch_size=4)
    assert (r.status, r.n_images, r.n_done, r.n_errors) == ("completed", 5, 5, 0)
    assert r.layers == RESNET18_DEFAULT and (r.label_set, r.new_labels) == ("imagenet1k", 0)
    with store.core.read() as con:
        labels = dict(con.execute("SELECT label_raw, any_value(label_name) FROM images GROUP BY 1").fetchall())
        assert labels == {"n01440764": "tench", "knot": "knot"}
        assert con.execute("SELECT DISTINCT label_set FROM images").fetchall() == [("imagenet1k",)]
        per_layer = con.execute(
            "SELECT layer, count(*), count(DISTINCT image_id), any_value(len(vec)) FROM activations GROUP BY layer"
        ).fetchall()
        chans = dict(con.execute("SELECT layer, channels FROM layers").fetchall())
        ranks = con.execute(
            "SELECT true_rank FROM predictions p JOIN images i USING (image_id) WHERE label_name = 'tench'"
        ).fetchall()
    assert {row[0] for row in per_layer} == set(RESNET18_DEFAULT)
    assert all(n == 5 and d == 5 and dim == chans[layer] for layer, n, d, dim in per_layer)
    assert all(1 <= rank[0] <= 1000 for rank in ranks) and len(ranks) == 3


def test_stored_vectors_equal_an_independent_torchvision_reference(store, tmp_path):
    """GAP of ReLU of block outputs, with the weights' own preprocessing, computed another way."""
    from torchvision.models import ResNet18_Weights, resnet18
    from torchvision.models.feature_extraction import create_feature_extractor

    paths = make_images(tmp_path / "imgs", 3, size=300, seed=4, fmt="jpg")
    ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer2.1,layer4.1")
    ids, stored = ActivationTable(store.core).read_layer("resnet18@none", "layer2.1")
    _, hidden = ActivationTable(store.core).read_layer("resnet18@none", "hidden")
    torch.manual_seed(0)
    ref_model = resnet18(weights=None).eval()
    fx = create_feature_extractor(ref_model, {"layer2.1": "l2", "flatten": "hidden"})
    prep = ResNet18_Weights.IMAGENET1K_V1.transforms()
    with store.core.read() as con:
        path_of = dict(con.execute("SELECT image_id, path FROM images").fetchall())
    x = torch.stack([prep(Image.open(path_of[i]).convert("RGB")) for i in ids])
    with torch.no_grad():
        out = fx(x)
    np.testing.assert_allclose(stored, torch.relu(out["l2"]).mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hidden, out["hidden"].numpy(), rtol=1e-4, atol=1e-5)
    assert sorted(str(p) for p in paths) == sorted(path_of.values())


@pytest.mark.parametrize("layout", ["nchw", "nchw_channels_last_memory", "nhwc"])
@pytest.mark.parametrize("channels", [7, 64])
def test_gap_of_relu_equals_a_float64_reference_at_either_size(layout, channels):
    """GAP of ReLU on CPU (small maps batch-wide, maps of PER_IMAGE_ELEMENTS or more image by image
    through a cached scratch map) against numpy in float64."""
    from embstore.ingest.extraction import PER_IMAGE_ELEMENTS, reduce
    from embstore.ingest.layers import LayerInfo

    t = torch.randn(5, channels, 48, 45, generator=torch.Generator().manual_seed(3))
    assert (t[0].numel() >= PER_IMAGE_ELEMENTS) == (channels == 64)
    if layout == "nchw_channels_last_memory":
        t = t.contiguous(memory_format=torch.channels_last)
    if layout == "nhwc":
        t = t.permute(0, 2, 3, 1).contiguous()
    dims = (1, 2) if layout == "nhwc" else (2, 3)
    layer = LayerInfo("x", 0, channels, "conv", "gap_relu", True, channels_last=layout == "nhwc")
    got = reduce(t, layer)
    assert got.shape == (5, channels)
    ref = np.maximum(t.numpy().astype(np.float64), 0).mean(axis=dims)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=1e-7)


def test_results_copied_back_in_one_block_are_cut_into_the_same_arrays():
    """The CUDA path's single copy back (every layer and the logits side by side, then cut apart)
    gives each layer's array, contiguous float32, as the per-layer path does."""
    from embstore.ingest.extraction import LOGITS, Pending

    g = torch.Generator().manual_seed(5)
    outputs = {"a": torch.randn(6, 7, generator=g), "b.0": torch.randn(6, 64, generator=g)}
    outputs[LOGITS] = torch.randn(6, 1000, generator=g)
    one = Pending(outputs, one_copy=True)
    assert (one.nbytes, one.host is not None) == (4 * 6 * 1071, True)
    (got, got_logits), (ref, ref_logits) = one.result(), Pending(outputs, one_copy=False).result()
    assert list(got) == list(ref) == ["a", "b.0"]
    for name in ref:
        assert got[name].dtype == np.float32 and got[name].flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(got[name], outputs[name].numpy())
    np.testing.assert_array_equal(got_logits, ref_logits)
    assert Pending({}).result() == ({}, None)


def test_forward_batches_go_on_while_a_commit_runs(tmp_path, monkeypatch):
    """A commit slower than a forward batch (a GPU's case) does not hold up the network: batches
    queue behind it (up to commit_bytes), and the store is the one a plain run makes."""
    import threading

    from embstore.ingest.extraction import Extractor

    make_images(tmp_path / "imgs", 24, size=40, seed=4)
    reference = embstore.open(tmp_path / "ref", create=True)
    ingest(reference.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer3.1", batch_size=4)
    started, enough = [], threading.Event()
    real_start, real_commit = Extractor.start, ActivationTable.commit

    def start(self, batch):
        started.append(threading.current_thread().name)
        if len(started) >= 4:
            enough.set()
        return real_start(self, batch)

    overlapped = []

    def commit(self, *args, **kwargs):
        if not overlapped:  # the first commit waits until later batches have run, or 20 s
            overlapped.append(enough.wait(20))
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(Extractor, "start", start)
    monkeypatch.setattr(ActivationTable, "commit", commit)
    s = embstore.open(tmp_path / "store", create=True)
    r = ingest(s.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer3.1", batch_size=4,
               workers=1, commit_seconds=0)  # fmt: skip
    assert overlapped == [True], "the forward loop waited for the first commit"
    assert (r.status, r.n_done, r.n_duplicates, len(started)) == ("completed", 24, 0, 6)
    ids, v = ActivationTable(s.core).read_layer("resnet18@none", "layer3.1")
    ids0, v0 = ActivationTable(reference.core).read_layer("resnet18@none", "layer3.1")
    assert sorted(ids) == sorted(ids0) and len(set(ids)) == 24
    order, order0 = np.argsort(ids), np.argsort(ids0)
    np.testing.assert_allclose(v[order], v0[order0], rtol=1e-6, atol=1e-7)
    assert s.verify().ok


def test_rerun_skips_and_new_layers_are_added_without_duplicates(store, tmp_path):
    make_images(tmp_path / "imgs", 5, seed=5)
    first = ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", batch_size=2)
    again = ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", batch_size=2)
    assert (first.n_done, again.n_done, again.n_skipped) == (5, 0, 5)
    more = ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer1.0,conv1")
    assert more.n_done == 5
    assert _count(store, "SELECT count(*) FROM activations WHERE layer = 'conv1'") == 5
    assert _count(store, "SELECT count(*) FROM activations WHERE layer = 'layer1.0'") == 5
    assert _count(store, "SELECT count(*) FROM predictions") == 5
    copy = tmp_path / "imgs" / "same_content.png"
    copy.write_bytes((tmp_path / "imgs" / "img_5_0000.png").read_bytes())
    dup = ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none")
    assert (dup.n_done, dup.n_duplicates) == (0, 1)
    assert _count(store, "SELECT count(*) FROM activations WHERE layer = 'hidden'") == 5
    assert store.verify().ok


def _bad_inputs(folder):
    """Real bad or unusual files: name -> expected outcome (None = stored, str = error reason part)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(9)
    rgb = (rng.random((64, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "good.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not a picture\n")
    (folder / "random.jpg").write_bytes(rng.bytes(3000))
    full = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257).save(folder / "sixteen.png")
    pal = Image.fromarray(rgb).convert("P")
    pal.info["transparency"] = 0
    pal.save(folder / "palette.png", transparency=0)
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(folder / "alpha.png")
    Image.fromarray(np.zeros((3000, 3000, 3), np.uint8)).save(folder / "huge.png")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return {
        "good.jpg": None,
        "gray.png": None,
        "cmyk.jpg": None,
        "sixteen.png": None,
        "palette.png": None,
        "alpha.png": None,
        "empty.jpg": "empty file",
        "text.png": "not an image",
        "random.jpg": "not an image",
        "truncated.jpg": "truncated",
        "huge.png": "above the 5 MP limit",
    }


def test_bad_and_unusual_images_are_converted_or_recorded_and_the_run_goes_on(store, tmp_path):
    expected = _bad_inputs(tmp_path / "bad")
    r = ingest(store.core, "resnet18", str(tmp_path / "bad"), weights="none", layers="layer1.0", max_pixels=5_000_000)
    stored_names = {n for n, e in expected.items() if e is None}
    assert r.status == "completed"
    assert (r.n_done, r.n_errors, r.n_ignored) == (len(stored_names), len(expected) - len(stored_names), 1)
    with store.core.read() as con:
        errors = dict(con.execute("SELECT regexp_extract(path, '[^/]+$'), reason FROM ingest_errors").fetchall())
        modes = dict(con.execute("SELECT regexp_extract(path, '[^/]+$'), mode FROM images").fetchall())
    for name, reason in expected.items():
        if reason is None:
            assert name in modes
        else:
            assert reason in errors[name], (name, errors.get(name))
    assert modes["gray.png"] == "L" and modes["cmyk.jpg"] == "CMYK" and modes["palette.png"] == "P"
    assert modes["sixteen.png"].startswith("I")


def test_sixteen_bit_and_exif_rotation_are_converted_faithfully(tmp_path):
    from embstore.ingest.images import read_rgb

    rng = np.random.default_rng(3)
    gray8 = (rng.random((30, 20)) * 255).astype(np.uint8)
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    _, rgb, _ = read_rgb(str(tmp_path / "g16.png"))
    assert np.array_equal(np.asarray(rgb)[:, :, 0], gray8)
    img = Image.fromarray((rng.random((30, 20, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "rot.png", exif=exif)
    _, shown, info = read_rgb(str(tmp_path / "rot.png"))
    assert shown.size == (30, 20) and (info["width"], info["height"]) == (20, 30)
    assert np.array_equal(np.asarray(shown), np.asarray(img.transpose(Image.Transpose.ROTATE_270)))


def test_manifest_keeps_labels_and_extra_columns(store, tmp_path):
    paths = make_images(tmp_path / "imgs", 3, seed=6)
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,rating,role\n"
        f"imgs/{paths[0].name},n03627232,4.5,object\n"
        f"{paths[1]},baseball,2,related\n"
        f"imgs/{paths[2].name},,1,unrelated\n"
    )
    r = ingest(store.core, "resnet18", str(manifest), weights="none", layers="layer4.1")
    assert r.n_done == 3
    with store.core.read() as con:
        rows = con.execute("SELECT label_name, extra FROM images ORDER BY path").fetchall()
    got = sorted(((name or ""), json.loads(extra)["role"]) for name, extra in rows)
    assert got == [("", "unrelated"), ("baseball", "related"), ("knot", "object")]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": [str(p) for p in paths]}), tmp_path / "m.parquet")
    assert ingest(store.core, "resnet18", str(tmp_path / "m.parquet"), weights="none", layers="layer4.1").n_skipped == 3


@pytest.mark.parametrize(
    "content, match",
    [
        ("file,label\na.png,x\n", "no 'path' column"),
        ("path,label\n", "lists no images"),
        ('path,label\n"a.png,x\n', "cannot be read"),
    ],
)
def test_malformed_manifests_fail_with_one_clear_error(store, tmp_path, content, match):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(content)
    with pytest.raises(ManifestError, match=match):
        ingest(store.core, "resnet18", str(manifest), weights="none")
    assert _count(store, "SELECT count(*) FROM runs") == 0


def test_unknown_model_layer_and_path_name_the_choices(store, tmp_path):
    make_images(tmp_path / "imgs", 1)
    with pytest.raises(UnknownModelError, match="Did you mean: densenet121"):
        ingest(store.core, "densenet12", str(tmp_path / "imgs"))
    with pytest.raises(UnknownLayerError, match=r"Did you mean: .*layer1\.0,.*embstore layers resnet18"):
        ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer1.O")
    with pytest.raises(InputPathError, match="does not exist"):
        ingest(store.core, "resnet18", str(tmp_path / "nowhere"), weights="none")


def test_missing_pretrained_weights_name_the_file_and_where_to_put_it(store, tmp_path, offline_torch_home):
    make_images(tmp_path / "imgs", 1)
    with pytest.raises(WeightsUnavailableError) as info:
        ingest(store.core, "resnet18", str(tmp_path / "imgs"))
    msg = str(info.value)
    assert "resnet18-f37072fd.pth" in msg and str(offline_torch_home / "hub" / "checkpoints") in msg


def test_weights_file_is_loaded_and_identified_by_its_hash(store, tmp_path):
    from torchvision.models import resnet18

    make_images(tmp_path / "imgs", 2)
    torch.manual_seed(123)
    net = resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    r = ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights=str(tmp_path / "w.pth"), layers="layer1.0")
    assert r.model_key.startswith("resnet18@file-")
    from embstore.ingest.models import state_sha256

    with store.core.read() as con:
        assert con.execute("SELECT weights_sha256 FROM models").fetchall()[0][0] == state_sha256(net)
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights=str(tmp_path / "wrong.pth"))
    (tmp_path / "pickle.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsUnavailableError, match="cannot read weights file"):
        ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights=str(tmp_path / "pickle.pth"))


def test_second_concurrent_ingest_is_refused(store, tmp_path):
    """Another writer (here another thread; the fault tests use processes) refuses ingest and repair."""
    make_images(tmp_path / "imgs", 1)
    with writer_lock_held_elsewhere(store):
        with pytest.raises(StoreBusyError, match=rf"another embstore writer \(pid {os.getpid()}, `.+`, since 20"):
            ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none")
        # a repair deletes what looks uncommitted: never while a writer is committing; a check is fine
        with pytest.raises(StoreBusyError, match=rf"pid {os.getpid()}"):
            store.verify(repair=True)
        assert store.verify().ok
        with pytest.raises(StoreBusyError), store.core.writer_lock():  # the other thread's lock is not this one's
            pass
    assert store.verify(repair=True).ok  # and once the writer is gone, repair runs
    with store.core.writer_lock(), store.core.writer_lock():  # re-entrant within one thread (analyze that ingests)
        assert store.verify(repair=True).ok


def test_a_copied_store_works_in_embstore_at_once_and_in_plain_duckdb_after_one_step(store, tmp_path, monkeypatch):
    import shutil

    make_images(tmp_path / "imgs", 2)
    ingest(store.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer1.0")
    expected = [
        ("resnet18@none", "resnet18", "none", "hidden", 2),
        ("resnet18@none", "resnet18", "none", "layer1.0", 2),
    ]
    query = "SELECT model_key, model, weights, layer, count(*) FROM activations GROUP BY ALL ORDER BY layer"
    shutil.copytree(store.path, tmp_path / "copy")
    shutil.rmtree(store.path)  # the original is gone: nothing may still point at it
    copy = tmp_path / "copy"
    before = (copy / "catalog.duckdb").read_bytes()
    with embstore.open(copy) as moved:
        assert moved.sql(query).fetchall() == expected
    assert (copy / "catalog.duckdb").read_bytes() == before, "using a moved store rewrites nothing (so read-only works)"
    monkeypatch.chdir(tmp_path.parent)  # a plain DuckDB session started elsewhere
    con = duckdb.connect(str(copy / "catalog.duckdb"), read_only=True)
    with pytest.raises(duckdb.IOException, match="No files found"):  # never another folder's files
        con.execute(query).fetchall()
    con.execute(f"SET file_search_path = '{copy}'")  # the documented step
    assert con.execute(query).fetchall() == expected
    con.close()


@pytest.mark.slow
def test_real_efficientnet_lite0_recognises_the_bundled_photos(store):
    from embstore.labels.imagenet import classes
    from embstore.resources import sample_images_dir

    r = ingest(store.core, "efficientnet_lite0", str(sample_images_dir()), batch_size=4)
    assert r.n_done == 4 and r.model_key == "efficientnet_lite0@tf-lite0"
    with store.core.read() as con:
        top = dict(
            con.execute(
                "SELECT regexp_extract(path, '[^/]+$'), top5_index FROM predictions JOIN images USING (image_id)"
            ).fetchall()
        )
        pre = con.execute("SELECT resize, crop, mean, std, interpolation FROM models").fetchall()[0]
    names = {k: [classes()[i].name for i in v] for k, v in top.items()}
    assert names["coffee.png"][0] == "espresso"
    assert {"tiger cat", "tabby", "Egyptian cat"} & set(names["chelsea.png"][:3])
    assert pre == (256, 224, (0.5,) * 3, (0.5,) * 3, "bicubic")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX special files")
def test_special_and_oversized_files_are_recorded_not_read(tmp_path):
    """A FIFO named like an image blocked a plain read forever, and a link to /dev/zero grew memory
    without end: only regular files up to MAX_FILE_BYTES are read, the rest recorded like bad input."""
    from embstore.ingest.images import MAX_FILE_BYTES

    from .conftest import run_embstore

    folder = tmp_path / "imgs"
    make_images(folder, 3)
    os.mkfifo(folder / "pipe.jpg")
    os.symlink("/dev/zero", folder / "zero.png")
    with open(folder / "huge.png", "wb") as f:  # sparse: costs no disk
        f.truncate(MAX_FILE_BYTES + 1)
    res = run_embstore("--store", tmp_path / "s", "ingest", "--images", folder, "--model", "resnet18",
                       "--weights", "none", "--layers", "layer1.0", timeout=180)  # fmt: skip
    assert res.returncode == 0, res.stderr
    with duckdb.connect(str(tmp_path / "s" / "catalog.duckdb"), read_only=True) as con:
        errors = dict(con.execute("SELECT regexp_extract(path, '[^/]+$'), reason FROM ingest_errors").fetchall())
        stored = con.execute("SELECT count(*) FROM images").fetchall()[0][0]
    assert stored == 3
    assert "not a regular file (a FIFO)" in errors["pipe.jpg"]
    assert "not a regular file (a device)" in errors["zero.png"]
    assert "larger than the 512 MiB" in errors["huge.png"]


def _peak_rss_mib(*args) -> tuple[int, float]:
    """(exit code, peak RSS in MiB) of `embstore *args` in a child process (RUSAGE_CHILDREN of a wrapper)."""
    from .conftest import EMBSTORE

    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, str(EMBSTORE), *map(str, args)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    code, kib = out.stdout.split()
    return int(code), int(kib) / 1024


def test_memory_is_bounded_by_the_model_not_by_the_images(tmp_path):
    """A 161-byte 1×20000 PNG took 6 GiB (its shorter side resized to 256) and a 9000×9000 deflate bomb
    1.2 GiB: now the sliver is refused with its aspect ratio, and a huge image is shrunk while it is
    decoded, so an ingest of three bombs and a sliver peaks at most one full-size decode buffer above
    an ingest of the normal images alone."""
    from PIL import Image

    normal = tmp_path / "normal"
    make_images(normal, 6, size=64)
    bad = tmp_path / "bad"
    make_images(bad, 6, size=64)
    Image.new("RGB", (1, 20000), (200, 10, 10)).save(bad / "sliver.png")
    for i in range(3):
        Image.new("RGB", (9000, 9000), (i, 0, 0)).save(bad / f"bomb{i}.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(bad / "photo.jpg", quality=85)
    assert (bad / "sliver.png").stat().st_size < 1000 and (bad / "bomb0.png").stat().st_size < 1 << 20
    common = ("ingest", "--model", "resnet18", "--weights", "none", "--layers", "layer1.0", "--quiet")
    code, base = _peak_rss_mib("--store", tmp_path / "s1", *common, "--images", normal)
    assert code == 0
    code, peak = _peak_rss_mib("--store", tmp_path / "s2", *common, "--images", bad)
    assert code == 0
    one_buffer = 9000 * 9000 * 4 / 2**20  # PIL keeps RGB in 4 bytes a pixel
    assert peak <= base + 1.25 * one_buffer, (base, peak)
    with duckdb.connect(str(tmp_path / "s2" / "catalog.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT count(*) FROM images").fetchall()[0][0]
        errors = dict(con.execute("SELECT regexp_extract(path, '[^/]+$'), reason FROM ingest_errors").fetchall())
    assert stored == 6 + 3 + 1
    assert list(errors) == ["sliver.png"] and "aspect ratio above 50:1" in errors["sliver.png"]


def test_shrinking_while_decoding_keeps_ordinary_images_exact(tmp_path):
    """Only images whose shorter side is ≥ 2 × REDUCING_GAP × the model's resize are shrunk while
    decoded; everything smaller decodes bit for bit as before, and a shrunk photo stays close."""
    from PIL import Image

    from embstore.ingest.images import REDUCING_GAP, Preprocess, read_rgb
    from embstore.spec import Preprocessing

    pre = Preprocess(Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear"))
    yy, xx = np.mgrid[0:3000, 0:4000]
    smooth = np.stack([(xx / 16) % 256, (yy / 12) % 256, ((xx + yy) / 28) % 256], -1).astype(np.uint8)
    for name, arr in (("small.png", smooth[:2047, :2047]), ("big.jpg", smooth), ("big.png", smooth)):
        Image.fromarray(arr).save(tmp_path / name)
    _, full, _ = read_rgb(str(tmp_path / "small.png"))
    _, shrunk, _ = read_rgb(str(tmp_path / "small.png"), min_side=256)
    assert shrunk.size == full.size and np.array_equal(np.asarray(full), np.asarray(shrunk))
    for name in ("big.jpg", "big.png"):
        _, full, _ = read_rgb(str(tmp_path / name))
        _, shrunk, _ = read_rgb(str(tmp_path / name), min_side=256)
        assert full.size == (4000, 3000) and REDUCING_GAP * 256 <= min(shrunk.size) < 2 * REDUCING_GAP * 256
        diff = (pre(full) - pre(shrunk)).abs()
        assert float(diff.mean()) < 0.01, (name, float(diff.mean()), float(diff.max()))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_crop_equals_torchvision_pixel_for_pixel_without_importing_torch(interpolation, tmp_path):
    """The torch-free resize + centre crop equals torchvision's (values, shape and strides) for
    upscaled, downscaled, already-sized, square and padded cases; a Ray read task decoding with it
    in a fresh interpreter never imports torch."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    from embstore.ingest.images import Preprocess
    from embstore.spec import Preprocessing

    rng = np.random.default_rng(11)
    sizes = [(224, 224), (256, 256), (256, 300), (300, 256), (1, 399), (399, 1), (5, 7), (641, 479)]
    sizes += [tuple(int(v) for v in rng.integers(1, 420, 2)) for _ in range(12)]
    for resize, crop in ((256, 224), (232, 224), (224, 224), (200, 224), (7, 9)):
        pre = Preprocess(Preprocessing(resize, crop, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), interpolation))
        for w, h in sizes:
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            mode = InterpolationMode(interpolation)
            ref = F.pil_to_tensor(F.center_crop(F.resize(img, resize, interpolation=mode), [crop, crop]))
            got = pre.crop(img)
            assert ref.shape == got.shape and ref.stride() == got.stride(), (resize, crop, w, h)
            assert torch.equal(ref, got), (resize, crop, w, h)
            assert np.array_equal(pre.crop_array(img), ref.numpy())

    make_images(tmp_path / "imgs", 2, size=90, seed=1, fmt="jpg")
    code = (
        "import sys, numpy as np; from embstore.ingest.distributed import decode_batch;"
        "from embstore.spec import Preprocessing;"
        f"paths = sorted(str(p) for p in __import__('pathlib').Path({str(tmp_path / 'imgs')!r}).iterdir());"
        "out = decode_batch({'i': np.arange(2), 'path': np.array(paths, object)},"
        " Preprocessing(256, 224, (0.5,) * 3, (0.2,) * 3, 'bilinear'), 10**8);"
        "print(out['x'].shape, list(out['error']), 'torch' in sys.modules, 'torchvision' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[0] == "(2, 3, 224, 224) ['', ''] False False", done.stderr[-2000:]


def test_a_changed_label_is_reported_and_with_relabel_updated_with_history(tmp_path):
    """A manifest giving a stored image another label was silently ignored (first label won): now the
    run reports it, and with relabel=True updates it, keeps the old one, and re-ranks predictions."""

    paths = make_images(tmp_path / "imgs", 6, size=40)
    first = tmp_path / "first.csv"
    first.write_text("path,label\n" + "".join(f"{p},knot\n" for p in paths))
    store = embstore.open(tmp_path / "s", create=True)
    store.ingest(first, model="resnet18", weights="none", layers=["layer1.0"])
    with store.core.read() as con:
        top5 = dict(con.execute("SELECT image_id, top5_index FROM predictions").fetchall())
        ids = dict(con.execute("SELECT path, image_id FROM images").fetchall())
    # relabel two images: one to its predicted top-2 class, one to a class outside its top-5
    inside = ids[str(paths[0])]
    outside = ids[str(paths[1])]
    new_in = top5[inside][1]
    new_out = next(c for c in range(1000) if c not in top5[outside])
    second = tmp_path / "second.csv"
    labels = {str(paths[0]): str(new_in), str(paths[1]): str(new_out)}
    second.write_text("path,label\n" + "".join(f"{p},{labels.get(str(p), 'knot')}\n" for p in paths))
    kept = store.ingest(second, model="resnet18", weights="none", layers=["layer1.0"])
    assert kept.n_label_conflicts == 2 and kept.n_relabelled == 0
    assert any("another label in the input" in n and "--relabel" in n for n in kept.notes), kept.notes
    with store.core.read() as con:
        assert con.execute("SELECT count(*) FROM images WHERE label_name = 'knot'").fetchall() == [(6,)]
    done = store.ingest(second, model="resnet18", weights="none", layers=["layer1.0"], relabel=True)
    assert done.n_relabelled == 2 and done.n_done == 0
    with store.core.read() as con:
        labels_now = dict(con.execute("SELECT image_id, label_index FROM images").fetchall())
        history = con.execute(
            "SELECT image_id, old_label_raw, new_label_raw, run_id FROM label_history ORDER BY new_label_raw"
        ).fetchall()
        ranks = dict(con.execute("SELECT image_id, (true_rank, true_prob) FROM predictions").fetchall())
        probs = dict(con.execute("SELECT image_id, top5_prob FROM predictions").fetchall())
        correct = dict(
            con.execute("SELECT image_id, (top1_correct, top5_correct) FROM labelled_predictions").fetchall()
        )
    assert labels_now[inside] == new_in and labels_now[outside] == new_out
    assert sorted(history) == sorted(
        [(inside, "knot", str(new_in), done.run_id), (outside, "knot", str(new_out), done.run_id)]
    )
    assert ranks[inside][0] == 2 and ranks[inside][1] == pytest.approx(probs[inside][1])
    assert tuple(ranks[outside]) == (None, None)  # above 5: not known from the stored top-5
    assert tuple(correct[inside]) == (False, True) and tuple(correct[outside]) == (False, False)
    again = store.ingest(second, model="resnet18", weights="none", layers=["layer1.0"])
    assert again.n_label_conflicts == 0 and again.n_relabelled == 0  # nothing differs any more


def test_decode_worker_processes_store_what_decoding_in_turns_stores(tmp_path):
    """Decoding in DataLoader processes (the CPU default where torch leaves cores free, the CUDA
    default): the same images, errors and vectors as decoding in the forward loop's turns, the
    workers used recorded and no process left behind."""
    import multiprocessing

    from embstore.ingest import tuning

    make_images(tmp_path / "imgs", 7, size=64, seed=11, fmt="jpg")
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    stores, intervals, before = {}, set(), sys.getswitchinterval()
    for workers in (0, 2, 8):
        s = embstore.open(tmp_path / f"store{workers}", create=True)
        r = ingest(s.core, "resnet18", str(tmp_path / "imgs"), weights="none", layers="layer3.1", batch_size=3,
                   workers=workers, progress=lambda *_: intervals.add(sys.getswitchinterval()))  # fmt: skip
        assert (r.status, r.n_done, r.n_errors, r.workers) == ("completed", 7, 1, min(workers, 3))
        stores[workers] = s
        assert not multiprocessing.active_children(), "decode processes outlived the run"
    ids0, v0 = ActivationTable(stores[0].core).read_layer("resnet18@none", "layer3.1")
    for workers, s in stores.items():
        ids, v = ActivationTable(s.core).read_layer("resnet18@none", "layer3.1")
        assert list(ids) == list(ids0)
        np.testing.assert_allclose(v, v0, rtol=1e-6, atol=1e-7)
        used = s.run_sql("SELECT config->>'workers' FROM runs")[1]
        assert used == [(str(min(workers, 3)),)], "a process per batch at most (3 batches)"
        assert s.run_sql("SELECT reason FROM ingest_errors")[1][0][0].startswith("corrupt")
    # forward passes run with a short switch interval (tuning.prompt_handoff), restored after
    assert intervals == {min(before, tuning.FORWARD_SWITCH_INTERVAL)} and sys.getswitchinterval() == before


def test_cpu_decodes_in_one_process_per_core_that_torch_leaves_free():
    from embstore.ingest.devices import MAX_AUTO_WORKERS, auto_workers, place, spare_cores

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    try:
        for n in sorted({1, usable}):
            torch.set_num_threads(n)
            assert spare_cores() == usable - n
            assert auto_workers("cpu") == place("cpu").workers == min(MAX_AUTO_WORKERS, usable - n)
        assert place("cpu", workers=0).workers == 0, "asked for: kept"
    finally:
        torch.set_num_threads(threads)
    assert auto_workers("cuda") >= 1
