"""Class weights for imbalanced data (`class_weights: auto` of the cross-entropy loss): ENet's inverse log frequency
(Paszke et al. 2016, "ENet: A Deep Neural Network Architecture for Real-Time Semantic Segmentation", §5.2),
w_c = 1 / ln(k + p_c), p_c the share of labelled pixels in class c and k = 1.02, which bounds the weights to
[1 / ln(2.02), 1 / ln(1.02)] ≈ [1.42, 50.5]: a class with no pixels at all gets the largest, never infinity."""

from __future__ import annotations

import math
from collections.abc import Sequence

K = 1.02


def class_weights(class_pixels: Sequence[int]) -> list[float]:
    """One weight per class from its labelled pixels in the training split."""
    total = sum(class_pixels)
    if total <= 0:
        raise ValueError("no labelled pixel in the training split: class weights are undefined")
    return [1.0 / math.log(K + pixels / total) for pixels in class_pixels]
