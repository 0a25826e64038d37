"""The CLI's habits (issue 31 items 4, 6, 7, 8, 10): arguments checked before torch is imported, help that
shows every option a command takes, one spelling for "how many", output formats, CLI spellings in
messages, tables that fit, a catalog that tells a plain DuckDB user how to read it."""

import csv
import io
import json
import subprocess
import sys

import duckdb
import pytest

import embstore
from embstore import testing as synthetic
from embstore.store.sql import run_sql

from .conftest import EMBSTORE, make_images, run_embstore

NO_TORCH = (
    "import sys; from embstore_cli.app import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print('EXIT', e.code)\n"
    "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
)


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("habits") / "s"
    store = embstore.open(path, create=True)
    synthetic.populate(store, n_classes=4, per_class=3, predicted={0: 3, 5: 0})
    store.close()
    return path


def _no_torch(*args, cwd=None):
    done = subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    return done.stdout.strip().splitlines(), done.stderr


def test_every_argument_is_checked_before_torch_is_imported(tmp_path):
    imgs = tmp_path / "imgs"
    make_images(imgs, 1)
    s = ["--store", tmp_path / "s"]
    warm = run_embstore("layers", "resnet18")  # the cached description of resnet18's layers
    assert warm.returncode == 0 and "layer1.0.relu_1" in warm.stdout
    cases = {
        ("ingest", "--images", tmp_path / "missing"): "does not exist",
        ("ingest", "--images", imgs, "--device", "gpu"): "unknown device 'gpu'",
        ("ingest", "--images", imgs, "-m", "resnet18", "--weights", tmp_path / "w.pth"): "does not exist",
        ("ingest", "--images", imgs, "-m", "resnet18", "--weights", "defualt"): "not a weights choice",
        ("ingest", "--images", imgs, "-m", "resnet18", "--layers", "layer9"): "has no layer 'layer9'",
        ("ingest", "--images", imgs, "--amp", "fp8"): "unknown amp 'fp8'",
        ("layers", "resnt50"): "Did you mean: resnet50",
    }
    for args, text in cases.items():
        out, err = _no_torch(*s, *args)
        assert out[-2:] == ["EXIT 2", "NO-TORCH"] and text in err and err.count("\n") == 1, (args, out, err)
    for args, text in ((("models",), "resnet50"), (("layers", "resnet18"), "layer1.0.relu_1")):
        out, err = _no_torch(*args)
        assert out[-1] == "NO-TORCH" and any(text in line for line in out), (args, err[-300:])
    assert not (tmp_path / "s").exists(), "a refused ingest leaves no store behind"


def test_the_layer_cache_is_the_measured_description_and_survives_damage(tmp_path, monkeypatch):
    from embstore.ingest import layers as layers_mod

    monkeypatch.setenv("EMBSTORE_CACHE", str(tmp_path / "cache"))
    assert layers_mod.cached("resnet18", 224) is None
    fresh = embstore.model_layers("resnet18")  # measured, then cached
    again = layers_mod.cached("resnet18", 224)
    assert again == fresh and again.traced == fresh.traced and again.multi_call == fresh.multi_call
    (file,) = (tmp_path / "cache" / "layers").iterdir()
    file.write_text("{not json")
    assert layers_mod.cached("resnet18", 224) is None  # a damaged cache is measured again, never trusted
    assert embstore.model_layers("resnet18") == fresh


def test_a_mistyped_class_folder_is_one_line_with_the_nearest_names_and_a_label_set_takes_them_all(tmp_path):
    """A tree mixing ImageNet classes with a name that is none (a typo, or another vocabulary) stores
    nothing and says which folder, with the nearest class names; `--labels NAME` files every folder
    under a label set of its own instead."""
    for folder, n in (("kont", 2), ("knot", 1)):
        make_images(tmp_path / "imgs" / folder, n, seed=len(folder) + n)
    args = ["--store", tmp_path / "s", "ingest", "-m", "resnet18", "--weights", "none", "--layers", "layer4",
            "--images", tmp_path / "imgs"]  # fmt: skip
    done = run_embstore(*args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "'kont' (2 images). Did you mean: knot" in done.stderr and "--labels NAME" in done.stderr
    assert not (tmp_path / "s" / "catalog.duckdb").exists() or run_sql(
        embstore.open(tmp_path / "s").core, "SELECT count(*) FROM images"
    )[1] == [(0,)]
    r = embstore.open(tmp_path / "t", create=True).ingest(tmp_path / "imgs", model="resnet18", weights="none",
                                                          layers="layer4", label_set="mine")  # fmt: skip
    assert (r.label_set, r.new_labels, r.n_done) == ("mine", 2, 3)
    _, rows = run_sql(embstore.open(tmp_path / "t").core, """SELECT i.label_raw, i.label_index, l.name, p.true_rank
        FROM images i JOIN labels l USING (label_set, label_index) JOIN predictions p USING (image_id)
        WHERE i.label_set = 'mine' ORDER BY 1""")  # fmt: skip
    assert rows == [("knot", 0, "knot", None), ("kont", 1, "kont", None), ("kont", 1, "kont", None)]


def test_help_lists_global_options_suggests_them_and_never_cuts_summaries():
    done = run_embstore("status", "--help")
    assert done.returncode == 0
    assert "Global options" in done.stdout and "--store PATH" in done.stdout and "--json" in done.stdout
    typo = run_embstore("status", "--jsno")
    assert typo.returncode == 2 and "Did you mean '--json'?" in typo.stderr
    top = run_embstore("--help")
    assert "…" not in top.stdout and "..." not in top.stdout.split("Commands:")[1]
    assert "store each chosen layer's pooled activations." in " ".join(top.stdout.split())


def test_how_many_is_k_everywhere_with_the_old_spellings_hidden(synthetic_store, tmp_path):
    for cmd in (["analyze", "failures"], ["plot", "failures"], ["plot", "cases"], ["plot", "predictions"],
                ["query", "similar", "x"], ["query", "images", "x"], ["plot", "similar", "x"], ["report"]):  # fmt: skip
        help_text = run_embstore(*cmd, "--help").stdout
        assert "-k, --k INTEGER" in help_text, cmd
        assert "--n " not in help_text and "--limit" not in help_text, cmd
    s = ["--store", synthetic_store, "--json"]
    new = json.loads(run_embstore(*s, "analyze", "failures", "--k", "1").stdout)
    old = json.loads(run_embstore(*s, "analyze", "failures", "--limit", "1").stdout)
    assert new == old and len(new["failures"]) == 1
    drawn = run_embstore(*s, "plot", "predictions", "-k", "2", "--out", tmp_path / "p", "--format", "png")
    assert drawn.returncode == 0, drawn.stderr


def test_sql_reads_stdin_and_prints_one_format_of_each_kind(synthetic_store):
    s = ["--store", synthetic_store]
    query = "SELECT label_index AS class, count(*) AS n FROM images GROUP BY ALL ORDER BY class"
    piped = subprocess.run([str(EMBSTORE), *map(str, s), "sql", "-", "--csv"], input=query, capture_output=True,
                           text=True)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    rows = list(csv.reader(io.StringIO(piped.stdout)))
    assert rows[0] == ["class", "n"] and len(rows) == 5 and all(r[1] == "3" for r in rows[1:])
    tsv = run_embstore(*s, "sql", query, "--tsv").stdout.splitlines()
    assert [line.split("\t") for line in tsv] == rows
    nl = [json.loads(line) for line in run_embstore(*s, "sql", query, "--nl").stdout.splitlines()]
    assert nl == [{"class": int(r[0]), "n": 3} for r in rows[1:]]
    answer = run_embstore(*s, "query", "similar", "knot", "-k", "2", "--nl")
    similar = [json.loads(line) for line in answer.stdout.splitlines()]
    assert len(similar) == 2 and {"rank", "name", "score"} <= set(similar[0])
    for flags in (["--json", "--csv"], ["--csv", "--tsv"], ["--nl", "--json"]):
        both = run_embstore(*s, "sql", "SELECT 1", *flags)
        assert both.returncode == 2 and "choose one output format" in both.stderr, flags


def test_tables_elide_vectors_never_wrap_ids_and_render_values_as_text(synthetic_store):
    s = ["--store", synthetic_store]
    done = run_embstore(*s, "sql", "SELECT image_id, layer, vec FROM activations ORDER BY image_id, layer LIMIT 2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 6, done.stdout  # header, two rows: one line each
    first_id = embstore.open(synthetic_store).sql("SELECT min(image_id) FROM activations").fetchall()[0][0]
    assert first_id in done.stdout and "… 16 values]" in done.stdout
    wide = run_embstore(*s, "sql", "SELECT * FROM activations LIMIT 2")
    assert wide.returncode == 0 and len(wide.stdout.splitlines()) < 12
    assert "not shown" in wide.stderr or "… " in wide.stdout
    markup = run_embstore(*s, "sql", "SELECT '[/x] and [draft]' AS v")
    assert markup.returncode == 0 and "[/x] and [draft]" in markup.stdout


def test_messages_use_the_cli_spelling(synthetic_store, tmp_path):
    from embstore_cli.render import cli_message

    assert cli_message("pass `weights=FILE`, or `weights='none'`; `write=True`; (`amp=`)") == (
        "pass `--weights FILE`, or `--weights none`; `--write`; (`--amp`)"
    )
    s = ["--store", synthetic_store]
    write = run_embstore(*s, "sql", "CREATE TABLE t AS SELECT 1")
    assert write.returncode == 2 and "`--write`" in write.stderr and "write=True" not in write.stderr
    empty = embstore.open(tmp_path / "e", create=True)
    empty.sql("SELECT 1")
    none = run_embstore("--store", tmp_path / "e", "ingest", "-m", "resnet18", "--weights", "none")
    assert none.returncode == 2 and "`--images DIR`" in none.stderr and "images=" not in none.stderr
    missing = run_embstore("--store", tmp_path / "nowhere", "status")
    assert "`embstore ingest --images DIR`" in missing.stderr and "create=True" not in missing.stderr
    with pytest.raises(embstore.StoreError, match=r"embstore.open\(path, create=True\)"):
        embstore.open(tmp_path / "nowhere")  # the library names its own parameter
    wrong = run_embstore(*s, "query", "similar", "knot", "--model", "densenet")
    assert wrong.returncode == 2 and "ingest --model densenet " not in wrong.stderr
    assert "unknown model 'densenet'" in wrong.stderr and "densenet121" in wrong.stderr
    pair = run_embstore(*s, "analyze", "tstats", "--pair", "knot,chain", "--layer", "conv_a")
    assert pair.returncode == 1 and "knot (n03627232) has 0" in pair.stderr and "class 616" not in pair.stderr


def test_the_catalog_says_how_plain_duckdb_reads_it(synthetic_store):
    snapshot = synthetic_store / "snapshot.duckdb"
    con = duckdb.connect(str(snapshot), read_only=True)
    readme = dict(con.execute("SELECT topic, text FROM readme").fetchall())
    setting = f"SET file_search_path = '{synthetic_store}';"
    assert readme["1 first"].startswith(setting)
    comment = con.execute("SELECT comment FROM duckdb_views() WHERE view_name = 'activations'").fetchall()[0][0]
    assert setting in comment
    with pytest.raises(duckdb.Error, match="No files found"):
        con.execute("SELECT count(*) FROM activations").fetchall()
    con.execute(setting)  # exactly the line the readme gives
    assert con.execute("SELECT count(*) FROM activations").fetchall()[0][0] == 12 * 3
    con.close()


def test_a_busy_store_is_refused_before_torch_is_imported(tmp_path):
    from .conftest import writer_lock_held_elsewhere

    make_images(tmp_path / "imgs", 1)
    store = embstore.open(tmp_path / "s", create=True)
    store.sql("SELECT 1")
    with writer_lock_held_elsewhere(store):
        out, err = _no_torch("--store", tmp_path / "s", "ingest", "-m", "resnet18", "--images", tmp_path / "imgs")
    assert out[-2:] == ["EXIT 3", "NO-TORCH"] and "another embstore writer" in err, (out, err)
