"""The prepared directory's layout, shared by its writer (`pipeline.ingest.prepare`) and its reader
(`pipeline.prepared.dataset`).

Per split (`train`, `val`):
  images.npy  one flat uint8 array: every image as 3×H×W (RGB), concatenated in split order
  labels.npy  one flat uint8 array: every label as H×W (class index, 255 = void), same order
  index.json  ids, heights, widths, each sample's offset into both arrays, and the labelled pixels of each class
              (`class_pixels`: what `class_weights: auto` of the loss is computed from)
and beside the splits:
  labels.json the dataset's label set: its name, class names and colours (`pipeline.core.labels.LabelSet`)
Two big files instead of thousands of small ones: training reads them through the page cache with no JPEG or PNG
decoding, and DataLoader workers share the mapping instead of each holding a copy.
"""

SPLITS = ("train", "val")
IMAGES = "images.npy"
LABELS = "labels.npy"
INDEX = "index.json"
LABEL_SET = "labels.json"
