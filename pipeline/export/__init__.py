"""Models in other runtimes than PyTorch: the ONNX export, checked against PyTorch, and the model that runs it."""
