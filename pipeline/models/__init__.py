"""The networks (`architectures/`, one file each, registered by name in `registry`), their shared layers, backbone
weights and the model file. Empty on purpose: importing `pipeline.models.saved` must not import every network, so
that a stage's DVC deps hold the network it runs and no other.

Forward contract of every network: an ImageNet-normalised N×3×H×W float batch of any H, W → N×C×H×W logits, C the
dataset's class count. In training, a network with an auxiliary head returns {"out": logits, "aux": logits}.
"""
