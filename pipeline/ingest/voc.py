"""PASCAL VOC 2012's archive layout, as the extract and prepare stages read it.

`VOCtrainval_11-May-2012.tar` holds everything under `VOCdevkit/VOC2012/`; semantic segmentation needs only the
split files `ImageSets/Segmentation/{train,val}.txt`, the palette PNGs `SegmentationClass/<id>.png` and the
`JPEGImages/<id>.jpg` of the ids they list.
"""

ARCHIVE_ROOT = "VOCdevkit/VOC2012"
SPLIT_DIR = "ImageSets/Segmentation"  # <split>.txt: one id a line
SPLITS = ("train", "val")  # the official split: every published VOC val number uses it, never re-split
LABEL_DIR, LABEL_SUFFIX = "SegmentationClass", ".png"
IMAGE_DIR, IMAGE_SUFFIX = "JPEGImages", ".jpg"
