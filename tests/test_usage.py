"""The ways people use embstore, typed exactly as the project and the README write them."""

import json
import os
import re
import shlex
import subprocess

import duckdb
import numpy as np
import pytest

import embstore

from .conftest import EMBSTORE, ROOT, blob_picture, make_images

CLASSES = ("knot", "chain", "baseball", "golf_ball")


def _stand_in_weights(torch_home, *names):
    """Randomly initialised state dicts saved where torch hub keeps each model's DEFAULT weights.

    The pretrained files cannot be downloaded here; a file in the cache is what `--weights DEFAULT`
    reads, so the command lines run as written (their numbers are not pretrained ones).
    """
    import torch
    from torchvision.models import get_model, get_model_weights

    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        url = get_model_weights(name).DEFAULT.url
        torch.manual_seed(0)
        torch.save(get_model(name, weights=None).state_dict(), folder / url.rsplit("/", 1)[-1])


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """$EMBSTORE_HOME holding the demo's photos ingested with EfficientNet-Lite0, and a TORCH_HOME with stand-ins."""
    root = tmp_path_factory.mktemp("usage")
    store = embstore.open(root / "home", create=True)
    store.ingest(embstore.sample_images(), model="efficientnet_lite0", batch_size=8)
    store.close()
    _stand_in_weights(root / "torch", "densenet121", "resnet50")
    env = {**os.environ, "EMBSTORE_HOME": str(root / "home"), "TORCH_HOME": str(root / "torch"), "COLUMNS": "80"}
    return root, env


def run(line: str, env, cwd=None) -> subprocess.CompletedProcess:
    words = shlex.split(line, comments=True)
    assert words[0] == "embstore"
    return subprocess.run([str(EMBSTORE), *words[1:]], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_the_three_ways_people_use_it(home):
    root, env = home
    # 1. add a model to the image set already in the store
    done = run("embstore ingest --model densenet121", env)
    assert done.returncode == 0, done.stderr
    # the stand-in is not torchvision's file, and the store says so: its contents decide its tag
    assert re.search(r"ingest densenet121@file-[0-9a-f]{12} — completed", done.stdout), done.stdout
    assert "not the one its name claims" in " ".join(done.stdout.split())
    n_photos = len(list(embstore.sample_images().iterdir()))
    assert re.search(rf"stored now\s+│\s+{n_photos}\b", done.stdout), done.stdout
    # 2. the nine classes nearest to knot: no labelled knots here, so the classifier weights, said so
    similar = run("embstore query similar knot --k 9", env)
    assert similar.returncode == 0, similar.stderr
    assert "method classifier: knot has no labelled images" in similar.stderr
    assert re.search(r"model densenet121@file-[0-9a-f]{12}: the most recently ingested of 2", similar.stderr)
    ranks = [line for line in similar.stdout.splitlines() if re.match(r"│\s+\d+ │", line)]
    assert len(ranks) == 9 and all(len(line) <= 80 for line in similar.stdout.splitlines())
    as_json = json.loads(run("embstore query similar knot --k 9 --json", env).stdout)
    assert as_json["method"] == "classifier" and len(as_json["results"]) == 9
    # 3. ad-hoc SQL in plain DuckDB, on the catalog file itself
    con = duckdb.connect(str(root / "home" / "catalog.duckdb"), read_only=True)
    con.execute(f"SET file_search_path = '{root / 'home'}'")  # the README's one step for plain DuckDB
    assert con.sql("SELECT imagenet_name(616)").fetchall() == [("knot",)]  # class names are in the catalog
    rows = con.sql(
        "SELECT model, layer, count(*) FROM activations WHERE layer = 'hidden' GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert rows == [("densenet121", "hidden", n_photos), ("efficientnet_lite0", "hidden", n_photos)]
    con.close()


def test_global_options_go_after_the_subcommand_and_failed_checks_create_nothing(home, tmp_path):
    root, env = home
    elsewhere = tmp_path / "new-store"
    bad = run(f"embstore ingest --model densenet_121 --store {elsewhere}", env)
    assert bad.returncode == 2 and "Did you mean: densenet121" in bad.stderr and len(bad.stderr.splitlines()) == 1
    assert not elsewhere.exists()
    empty = run(f"embstore ingest --model resnet18 --weights none --store {elsewhere}", env)
    assert empty.returncode == 2 and "holds no images yet" in empty.stderr and "--images" in empty.stderr
    assert not elsewhere.exists()
    err = run(f"embstore query similar knott --store {root / 'home'} --json", env)
    assert err.returncode == 2 and err.stdout == ""
    assert json.loads(err.stderr)["error"]["type"] == "UnknownClassError"
    runs = json.loads(run('embstore sql "SELECT config FROM runs" --json', env).stdout)
    assert runs["rows"][0]["config"]["model"] == "efficientnet_lite0"  # a JSON column is an object, not text
    status = json.loads(run("embstore status --json", env).stdout)
    assert status["images"] == len(list(embstore.sample_images().iterdir()))
    for line in ("embstore models --json", "embstore layers resnet18 --default --json", "embstore verify --json"):
        done = run(line, env)
        assert done.returncode == 0, (line, done.stderr)
        assert isinstance(json.loads(done.stdout), dict), line


def test_every_line_of_the_readme_using_it_section_runs(home, tmp_path):
    """Each line verbatim, with only the paths to data replaced by real data of the same kind."""
    root, env = home
    env = {**env, "EMBSTORE_HOME": str(tmp_path / "store")}
    photos = tmp_path / "photos"
    rng = np.random.default_rng(1)
    labelled = [blob_picture(photos / cls / f"{j}.png", rng) for cls in CLASSES for j in range(3)]
    make_images(photos, 2)  # unlabelled: at the tree's root, beside the class folders
    (photos / "cat.jpg").write_bytes((embstore.sample_images() / "chelsea.png").read_bytes())
    manifest = tmp_path / "triplets.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n" for p in labelled))
    block = re.search(r"## Using it\n\n```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    assert len(lines) >= 14
    for line in lines:
        line = line.replace("~/photos", str(photos)).replace("triplets.csv", str(manifest))
        if line.startswith("echo "):
            sql, command = re.match(r'echo "(.*)" \| (.*)', line).groups()
            done = subprocess.run(
                [str(EMBSTORE), *shlex.split(command, comments=True)[1:]],
                input=sql + "\n",
                capture_output=True,
                text=True,
                env=env,
            )
            assert re.search(r"│\s+\d+\s+│", done.stdout), done.stdout
        else:
            done = run(line, env, cwd=tmp_path)
        assert done.returncode == 0, (line, done.stdout[-1500:], done.stderr[-1500:])
        if "--json" in line:
            json.loads(done.stdout)


def test_a_catalog_opens_in_the_duckdb_1_4_cli(tmp_path):
    """DuckDB 2.0 writes catalogs in a storage format the 1.x clients (CLI, DBeaver, R) read."""
    duckdb_cli = EMBSTORE.parent / "duckdb"  # the duckdb-cli 1.4.4 dev dependency
    version = subprocess.run([str(duckdb_cli), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v1.4")
    store = embstore.open(tmp_path / "s", create=True)
    embstore.testing.populate(store, n_classes=3, per_class=2, layers={"conv": 4, "hidden": 3})
    store.class_tables("prototypes")
    store.close()
    sql = (
        f"SET file_search_path = '{store.path}';\n"
        "SELECT imagenet_name(label_index) AS class, count(*) AS n FROM images GROUP BY 1 ORDER BY 1;\n"
        "SELECT model_key, layer, count(*) AS n FROM activations GROUP BY ALL ORDER BY layer;\n"
        "SELECT layer, len(mean) AS c FROM class_prototypes WHERE label_index = 0 ORDER BY layer;\n"
        'SELECT typeof(vec) AS t, count(*) AS n FROM "vectors/synthetic_net@seed0/conv" GROUP BY 1;\n'
    )
    done = subprocess.run(
        [str(duckdb_cli), "-readonly", "-csv", str(store.core.catalog_path)], input=sql, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.splitlines() == [
        "class,n", "goldfish,2", "great white shark,2", "tench,2",
        "model_key,layer,n", "synthetic_net@seed0,conv,6", "synthetic_net@seed0,hidden,6",
        "layer,c", "conv,4", "hidden,3",
        "t,n", "FLOAT[4],6",
    ]  # fmt: skip


def test_a_catalog_in_duckdb_2_format_is_rewritten_once_for_older_clients(tmp_path):
    import shutil

    store = embstore.open(tmp_path / "s", create=True)
    embstore.testing.populate(store, n_classes=3, per_class=2, layers={"conv": 4, "hidden": 3})
    before = store.sql("SELECT image_id, layer, vec FROM activations ORDER BY ALL").fetchall()
    store.close()
    # what an earlier embstore left: the same catalog in DuckDB 2.0's own storage format
    catalog = store.core.catalog_path
    old = tmp_path / "old.duckdb"
    con = duckdb.connect()
    con.execute(f"SET file_search_path = '{store.path}'")
    con.execute(f"ATTACH '{catalog}' AS src")
    con.execute(f"ATTACH '{old}' AS dst")
    con.execute("COPY FROM DATABASE src TO dst")
    con.close()
    shutil.move(old, catalog)
    with duckdb.connect(str(catalog), read_only=True) as check:
        assert check.sql(
            "SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = 'catalog'"
        ).fetchall() == [("v2.0.0+",)]
    reopened = embstore.open(store.path)
    assert reopened.sql("SELECT image_id, layer, vec FROM activations ORDER BY ALL").fetchall() == before
    reopened.close()
    with duckdb.connect(str(catalog), read_only=True) as check:
        assert check.sql(
            "SELECT tags['storage_version'] FROM duckdb_databases() WHERE database_name = 'catalog'"
        ).fetchall() == [("v1.0.0+",)]
    assert not list(store.path.glob(".*.tmp")), "no conversion leftovers"
    done = subprocess.run([str(EMBSTORE.parent / "duckdb"), "-readonly", "-csv", str(catalog)],
                          input="SELECT count(*) AS n FROM images;", capture_output=True, text=True)  # fmt: skip
    assert done.stdout.split() == ["n", "6"], done.stderr
