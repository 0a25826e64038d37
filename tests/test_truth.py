"""Exit status and summaries tell the truth; the CLI's habits (--version, -h)."""

import shutil

import embstore

from .conftest import run_embstore


def test_a_run_in_which_every_image_failed_says_so_and_exits_1(tmp_path):
    for folder in ("a", "b"):  # two files of one name: the table must tell them apart
        (tmp_path / "imgs" / folder).mkdir(parents=True)
        (tmp_path / "imgs" / folder / "x.jpg").write_bytes(b"not a jpeg")
    done = run_embstore("--store", tmp_path / "s", "ingest", "-m", "resnet18", "--weights", "none", "--images",
                        tmp_path / "imgs", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.endswith("\nembstore: error: all 2 image(s) failed to load; nothing was stored\n")
    assert "— failed" in done.stdout
    assert "a/x.jpg" in done.stdout and "b/x.jpg" in done.stdout, "paths, not basenames"
    assert "skipped under /" in " ".join(done.stdout.split()), "the folder they share is named once, in the title"
    store = embstore.open(tmp_path / "s")
    assert store.sql("SELECT status, message LIKE 'all 2 image(s) failed%' FROM runs").fetchall() == [("failed", True)]
    as_json = run_embstore("--store", tmp_path / "s2", "--json", "ingest", "-m", "resnet18", "--weights", "none",
                           "--images", tmp_path / "imgs")  # fmt: skip
    assert as_json.returncode == 1 and '"exit_code": 1' in as_json.stderr
    assert str(tmp_path / "imgs" / "a" / "x.jpg") in as_json.stdout, "--json gives the full path"


def test_a_run_with_some_good_images_still_completes(tmp_path):
    (tmp_path / "imgs").mkdir()
    shutil.copy(embstore.sample_images() / "coffee.png", tmp_path / "imgs" / "coffee.png")
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"not a jpeg")
    r = embstore.open(tmp_path / "s", create=True).ingest(tmp_path / "imgs", model="resnet18", weights="none")
    assert (r.status, r.n_done, r.n_errors) == ("completed", 1, 1)


def test_version_and_short_help():
    for flag in ("--version", "-V"):
        done = run_embstore(flag)
        assert done.returncode == 0 and done.stdout == f"embstore {embstore.__version__}\n"
    for args in (["-h"], ["status", "-h"], ["query", "similar", "-h"]):
        done = run_embstore(*args)
        assert done.returncode == 0 and done.stdout.startswith("Usage: embstore"), args


def test_labels_belong_to_images_whichever_way_they_are_named(tmp_path):
    """Labelled by a manifest, then run through another model from a plain folder: the true class's
    rank is known for both models."""
    store = embstore.open(tmp_path / "s", create=True)
    store.ingest(embstore.sample_data() / "demo" / "photos.csv", model="resnet18", weights="none", layers="layer4")
    store.ingest(embstore.sample_images(), model="resnet34", weights="none", layers="layer4")
    counts = dict(store.sql("SELECT model_key, count(true_rank) FROM predictions GROUP BY ALL").fetchall())
    labelled = store.sql("SELECT count(*) FROM images WHERE label_index IS NOT NULL").fetchall()[0][0]
    assert labelled == 3 and counts == {"resnet18@none": 3, "resnet34@none": 3}


def test_failures_with_a_null_rank_render_as_a_dash(tmp_path):
    """A relabelled image whose new class is beyond the stored top-5 has a NULL rank: every renderer shows "–"."""
    manifest = tmp_path / "m.csv"
    chelsea = embstore.sample_images() / "chelsea.png"
    manifest.write_text(f"path,label\n{chelsea},tabby\n{embstore.sample_images() / 'coffee.png'},espresso\n")
    store = embstore.open(tmp_path / "s", create=True)
    store.ingest(manifest, model="resnet18", weights="none", layers="layer4")
    manifest.write_text(f"path,label\n{chelsea},knot\n")
    store.ingest(manifest, model="resnet18", weights="none", layers="layer4", relabel=True)
    store.close()
    ranks = embstore.open(tmp_path / "s").sql("SELECT true_rank FROM labelled_predictions ORDER BY path").fetchall()
    assert (None,) in ranks, "the test needs a NULL rank"
    for args in (["analyze", "failures"], ["plot", "failures", "--out", tmp_path / "f.png"], ["report"]):
        done = run_embstore("--store", tmp_path / "s", *args, cwd=tmp_path)  # the report is written in cwd
        assert done.returncode == 0, (args, done.stderr[-800:])
    assert (tmp_path / "report.html").stat().st_size > 10_000
    table = run_embstore("--store", tmp_path / "s", "analyze", "failures").stdout
    assert "–" in table
