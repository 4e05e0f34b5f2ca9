"""Evaluation: predictions at full resolution, the confusion matrix and VOC's scores, the evaluate stage's tables,
and CI's comparison against a baseline."""
