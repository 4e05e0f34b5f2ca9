"""PASCAL VOC 2012's class names, index = class id: the default `dataset.classes`, and its colour map. Pure data,
so that params can default to it without importing numpy or PIL."""

CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def colour(index: int) -> list[int]:
    """VOC's colour of class `index`: the index's bits interleaved into red, green and blue, high bit first."""
    red = green = blue = 0
    for bit in range(8):
        red |= ((index >> (3 * bit)) & 1) << (7 - bit)
        green |= ((index >> (3 * bit + 1)) & 1) << (7 - bit)
        blue |= ((index >> (3 * bit + 2)) & 1) << (7 - bit)
    return [red, green, blue]
