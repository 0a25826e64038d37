import subprocess
import sys

import pytest
import typer

import embstore
from embstore_cli.app import app, main

from .conftest import make_images, run_embstore


def _all_commands(group, prefix=""):
    for name, cmd in group.commands.items():
        yield f"{prefix}{name}", cmd
        if hasattr(cmd, "commands"):
            yield from _all_commands(cmd, f"{prefix}{name} ")


def test_every_command_has_help_with_an_example():
    commands = list(_all_commands(typer.main.get_command(app)))
    assert {"ingest", "models", "layers", "verify", "status"} <= {n for n, _ in commands}
    for name, cmd in commands:
        if hasattr(cmd, "commands"):
            assert cmd.help, name
        else:
            assert cmd.help and "Example: embstore" in cmd.help, name


def test_help_and_status_do_not_import_torch_and_status_counts_a_real_store(tmp_path):

    store = embstore.open(tmp_path / "s", create=True)
    # 4 classes x 3 images, 3 layers; rows 0 and 5 predicted wrong (top-1), true class ranked 2 (top-5 right)
    embstore.testing.populate(store, n_classes=4, per_class=3, predicted={0: 3, 5: 0})
    store.close()
    code = (
        "import sys; from embstore_cli.app import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    outputs = {}
    for args in (["--help"], ["--store", str(tmp_path / "s"), "status"]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True).stdout
        assert out.strip().endswith("NO-TORCH"), (args, out[-300:])
        outputs[args[-1]] = out
    status = {}
    for line in outputs["status"].splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[1].isdigit():
            status[cells[0]] = int(cells[1])
    assert status == {"images": 12, "labelled": 12, "models": 1, "vectors": 36, "files": 3, "runs": 1, "errors": 0}
    model_row = next(line for line in outputs["status"].splitlines() if "synthetic_net@seed0" in line)
    assert [c.strip() for c in model_row.strip("│ ").split("│")] == ["synthetic_net@seed0", "3", "12", "0.167", "0.000"]


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["ingest", "-m", "resnet_18", "--images", "{imgs}"], 2, "unknown model 'resnet_18'. Did you mean: resnet18"),
        (
            ["ingest", "-m", "resnet18", "--weights", "none", "--layers", "layer9", "--images", "{imgs}"],
            2,
            "has no layer 'layer9'",
        ),
        (["ingest", "--images", "{tmp}/missing"], 2, "does not exist"),
        (["status"], 1, "no embstore store at"),
        (["ingest", "--images", "{imgs}", "--device", "tpu"], 2, "unknown device 'tpu'"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_code(tmp_path, capsys, args, code, text):
    imgs = tmp_path / "imgs"
    make_images(imgs, 1)
    store = tmp_path / ("fresh" if args == ["status"] else "s")
    argv = ["--store", str(store)] + [a.format(imgs=imgs, tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == code
    assert text in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_rust_panic_in_any_command_is_one_line(tmp_path, capsys, monkeypatch):
    """pyo3 raises a Rust extension's panic as a BaseException; the CLI still answers in one line."""

    class PanicException(BaseException):
        pass

    def panic(self, *args, **kwargs):
        raise PanicException("Failed to create a tokio runtime for IO.: Os { code: 24 }")

    embstore.open(tmp_path / "s", create=True).close()
    monkeypatch.setattr(embstore.Store, "status", panic)
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(tmp_path / "s"), "status"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert "tokio runtime" in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_cli_ingest_renders_summary_and_verify_says_ok(tmp_path):
    make_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    res = run_embstore(
        "--store",
        tmp_path / "s",
        "ingest",
        "-m",
        "resnet18",
        "--weights",
        "none",
        "--layers",
        "layer1.0",
        "--images",
        tmp_path / "imgs",
    )
    assert res.returncode == 0, res.stderr
    assert "completed" in res.stdout and "broken.jpg" in res.stdout and "images/s" in res.stdout
    ok = run_embstore("--store", tmp_path / "s", "verify")
    assert ok.returncode == 0 and "catalog and files agree" in ok.stdout
    layers = run_embstore("layers", "resnet18")
    assert layers.returncode == 0 and "layer4.1" in layers.stdout and "512" in layers.stdout


def test_analyze_and_sql_commands_render(tmp_path, capsys):

    from embstore import testing as synthetic

    store = embstore.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=8, per_class=5, layers={"conv_a": 6, "hidden": 4}, predicted={0: 3})
    base = ["--store", str(store.path)]
    for args, expect in (
        (["analyze", "prototypes"], "class_prototypes"),
        (["analyze", "tstats", "--layer", "conv_a"], "class_tstats"),
        (["analyze", "tstats", "--layer", "conv_a", "--pair", "tench,goldfish"], "tench vs goldfish"),
        (["analyze", "failures"], "close failures"),
        (["analyze", "rsa", "--permutations", "20", "--groups", "3"], "similarity encoding by layer"),
        (["sql", "SELECT count(*) AS n FROM rsa_results", "--json"], '"n": 2'),
    ):
        with pytest.raises(SystemExit) as e:
            main(base + args)
        out = capsys.readouterr()
        assert e.value.code == 0, (args, out.err)
        assert expect in out.out, (args, out.out[-400:])
    with pytest.raises(SystemExit) as e:  # an alpha 20 permutations cannot reach: one warning line, still run
        main(base + ["analyze", "rsa", "--permutations", "20", "--groups", "3", "--alpha", "0.01", "--n-boot", "100"])
    out = capsys.readouterr()
    assert e.value.code == 0 and "95% CIs: 100 bootstrap resamples of the concepts" in out.out
    assert out.err.count("embstore: warning: α = 0.01 is below the smallest p 20 permutations can give") == 1
    assert "--permutations 100 or more" in out.err and sum("warning" in line for line in out.err.splitlines()) == 1
    with pytest.raises(SystemExit) as e:
        main(base + ["sql", "SELECT label_index FROM class_prototypes WHERE layer = 'hidden' ORDER BY 1", "--csv"])
    lines = capsys.readouterr().out.split()
    assert lines[0] == "label_index" and [int(v) for v in lines[1:]] == list(range(8))


def test_demo_ingests_the_bundled_photos_with_real_weights_and_writes_a_report(tmp_path):
    from embstore.store.sql import run_sql

    done = run_embstore("--store", tmp_path / "demo", "demo")
    assert done.returncode == 0, done.stderr
    assert "espresso" in done.stdout and f"wrote {tmp_path / 'demo' / 'report.html'}" in done.stdout
    _, rows = run_sql(
        embstore.open(tmp_path / "demo").core,
        """SELECT imagenet_name(p.top5_index[1]) FROM predictions p
           JOIN images i USING (image_id) WHERE i.path LIKE '%coffee.png'""",
    )
    assert rows == [("espresso",)]
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "efficientnet_lite0@tf-lite0" in html
    # every analysis the bundled photos allow ran: labels, failures, matching, prototypes
    _, rows = run_sql(
        embstore.open(tmp_path / "demo").core,
        """SELECT (SELECT count(*) FROM images WHERE label_index IS NOT NULL),
                  (SELECT count(*) FROM matching_results WHERE layer = 'hidden'),
                  (SELECT count(*) FROM class_prototypes WHERE layer = 'hidden')""",
    )
    assert rows == [(3, 3, 3)]
    assert "chelsea.png" in done.stdout and "tiger cat" in done.stdout  # the close failure: tabby as tiger cat
    assert "No triplet matching yet" not in html  # the matching section is filled, not a hint
    # the bundled triplets carry no human ratings: the demo says so in the report, and warns about nothing
    assert "not drawn" not in done.stdout + done.stderr and "gives no human ratings" in html


def test_sql_is_confined_to_the_store(tmp_path):
    """`embstore sql` used to write files (COPY, EXPORT), read any file (read_text, glob) and try the network
    (INSTALL): now each is refused with one line and exit 2, while the store's own views still read, and
    --write with --allow DIR writes there and nowhere else."""
    import duckdb

    make_images(tmp_path / "imgs", 3)
    store = tmp_path / "s"
    res = run_embstore("--store", store, "ingest", "--images", tmp_path / "imgs", "--model", "resnet18",
                       "--weights", "none", "--layers", "layer1.0", "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    outside = tmp_path / "outside"
    outside.mkdir()
    refused = {
        f"COPY (SELECT 1) TO '{outside}/x.csv'": "COPY is refused",
        f"COPY images TO '{store}/activations/x.csv'": "COPY is refused",
        f"EXPORT DATABASE '{outside}/export'": "EXPORT is refused",
        f"SELECT * FROM read_text('{secret}')": "Permission Error",
        "SELECT * FROM read_csv('/etc/passwd')": "Permission Error",
        f"SELECT * FROM glob('{tmp_path}/*')": "Permission Error",
        f"SELECT * FROM read_text('{store}/activations/../../secret.txt')": "Permission Error",
        "INSTALL httpfs": "INSTALL is refused",
        "LOAD httpfs": "LOAD is refused",
        f"ATTACH '{outside}/other.duckdb'": "ATTACH is refused",
        "SET enable_external_access = true": "configuration has been locked",
        "SELECT 1; COPY (SELECT 1) TO 'x.csv'": "COPY is refused",
    }
    for query, message in refused.items():
        res = run_embstore("--store", store, "sql", query)
        assert res.returncode == 2 and message in res.stderr, (query, res.stderr)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert list(outside.iterdir()) == [] and not (store / "activations" / "x.csv").exists()
    res = run_embstore("--store", store, "--json", "sql", 'SELECT count(*) AS n FROM "vectors/resnet18@none/layer1.0"')
    assert res.returncode == 0 and '"n": 3' in res.stdout, res.stderr
    # --write alone still writes no file; --allow names the one folder it may write
    res = run_embstore("--store", store, "sql", "--write", f"COPY (SELECT 1 AS a) TO '{outside}/x.csv'")
    assert res.returncode == 2 and "--allow DIR" in res.stderr and not (outside / "x.csv").exists()
    res = run_embstore("--store", store, "sql", "--write", "--allow", outside,
                       f"COPY (SELECT image_id FROM images) TO '{outside}/ids.csv'")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert len((outside / "ids.csv").read_text().split()) == 1 + 3
    res = run_embstore("--store", store, "sql", "--write", "--allow", outside, f"SELECT * FROM read_text('{secret}')")
    assert res.returncode == 2 and "Permission Error" in res.stderr
    with duckdb.connect(str(store / "catalog.duckdb"), read_only=True) as con:  # plain DuckDB is not confined
        assert con.execute(f"SELECT content FROM read_text('{secret}')").fetchall() == [("secret",)]
