"""Write data/torchvision_weights.tsv: every weights enum of every torchvision ImageNet classifier,
with its published ImageNet-1k top-1/top-5, whether it is DEFAULT, and its recipe link.

    python data/build_torchvision_weights.py   # needs torchvision (the pinned 0.28.0)
"""

from pathlib import Path

import torchvision
from torchvision.models import get_model_weights, list_models

version = torchvision.__version__.split("+")[0]
rows = [f"# torchvision {version} weights: model, enum, acc@1, acc@5, default, recipe"]
for name in sorted(list_models(module=torchvision.models)):
    enum = get_model_weights(name)
    for w in enum:
        m = w.meta.get("_metrics", {}).get("ImageNet-1K", {})
        rows.append(
            "\t".join(
                [
                    name,
                    w.name,
                    str(m.get("acc@1", "")),
                    str(m.get("acc@5", "")),
                    "1" if w is enum.DEFAULT else "0",
                    str(w.meta.get("recipe", "")),
                ]
            )
        )
Path(__file__).with_name("torchvision_weights.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
