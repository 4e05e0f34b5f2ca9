"""The field's benchmarks as `dataset.preset`: the `dataset` keys each fills (layout, classes, colours, the label
mapping) and its name. Pure data, like `voc_classes.py`, so that params can apply a preset without importing
numpy or PIL.

Cityscapes: the 19 train ids of cityscapesScripts' `helpers/labels.py`, with its names and colours; the masks hold
label ids (`*_gtFine_labelIds.png`), mapped to train ids, every other label id ignored, as the benchmark does.
ADE20K (SceneParsing's ADEChallengeData2016): the 150 classes of `objectInfo150` (short names as mmsegmentation
gives them); 0 is "other objects", not a class: `reduce_zero_label`. Its colours here are VOC's colour map from
index 1 (distinct, so that colour masks and drawings never confuse two classes).
"""

from __future__ import annotations

from pipeline.core.voc_classes import CLASSES as VOC_CLASSES
from pipeline.core.voc_classes import colour as voc_colour

# (train id's name, label id, colour) in train id order.
CITYSCAPES = (
    ("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)), ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)), ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)), ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)), ("sky", 23, (70, 130, 180)), ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)), ("car", 26, (0, 0, 142)), ("truck", 27, (0, 0, 70)), ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)), ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32)),
)

ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)


# preset → the `dataset` keys it sets. `name` (the preset's own key, which ParamsFile.dataset_name relies on) is a
# default the params may change; the others are the preset.
PRESETS: dict[str, dict] = {
    "voc": {"name": "voc", "layout": "voc", "classes": list(VOC_CLASSES), "colors": None, "ignore_index": 255,
            "label_map": None, "reduce_zero_label": False},
    "cityscapes": {"name": "cityscapes", "layout": "cityscapes", "classes": [name for name, _, _ in CITYSCAPES],
                   "colors": [list(colour) for _, _, colour in CITYSCAPES], "ignore_index": 255,
                   "label_map": {str(label_id): train_id for train_id, (_, label_id, _) in enumerate(CITYSCAPES)},
                   "reduce_zero_label": False},
    "ade20k": {"name": "ade20k", "layout": "ade20k", "classes": list(ADE20K_CLASSES),
               "colors": [voc_colour(index + 1) for index in range(len(ADE20K_CLASSES))], "ignore_index": 255,
               "label_map": None, "reduce_zero_label": True},
}
