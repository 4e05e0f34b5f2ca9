"""PASCAL VOC 2012's class names, index = class id: the default `dataset.classes`. Pure data, so that params can
default to it without importing numpy or PIL."""

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
