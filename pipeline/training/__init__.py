"""Training: augmentation, the loss and optimiser, the one training loop, checkpoints and torchrun process
groups (the train stage)."""
