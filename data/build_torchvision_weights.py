"""Write data/torchvision_weights.tsv: every weights enum of every torchvision ImageNet classifier,
with its published ImageNet-1k top-1/top-5, whether it is DEFAULT, its recipe link, the file's URL,
its preprocessing (resize, crop, mean, std, interpolation) and how many classes it predicts, so
that describing a model (`embstore models`, checking an ingest's arguments) imports no torch.
tests/test_provenance.py checks every row against the installed torchvision.

    python data/build_torchvision_weights.py   # needs torchvision (the pinned 0.28.0)
"""

from pathlib import Path

import torchvision
from torchvision.models import get_model_weights, list_models

COLUMNS = "model, enum, acc@1, acc@5, default, recipe, url, resize, crop, mean, std, interpolation, classes"


def row(name: str, enum, w) -> list[str]:
    m = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
    t = w.transforms()
    return [
        name,
        w.name,
        str(m.get("acc@1", "")),
        str(m.get("acc@5", "")),
        "1" if w is enum.DEFAULT else "0",
        str(w.meta.get("recipe", "")),
        w.url,
        str(int(t.resize_size[0])),
        str(int(t.crop_size[0])),
        ",".join(repr(float(v)) for v in t.mean),
        ",".join(repr(float(v)) for v in t.std),
        t.interpolation.value,
        str(len(w.meta["categories"] or ())),  # VGG16 IMAGENET1K_FEATURES predicts none
    ]


if __name__ == "__main__":
    version = torchvision.__version__.split("+")[0]
    rows = [f"# torchvision {version} weights: {COLUMNS}"]
    for name in sorted(list_models(module=torchvision.models)):
        enum = get_model_weights(name)
        rows += ["\t".join(row(name, enum, w)) for w in enum]
    Path(__file__).with_name("torchvision_weights.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
