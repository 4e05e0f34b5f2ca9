"""An exported ONNX file behind the models' forward contract (normalised N×3×H×W float in, N×C×H×W logits out),
run by ONNX Runtime, so that `predict`, `tools.predict` and the served model take it in place of the network."""

from __future__ import annotations

from pathlib import Path

import torch

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def providers(device: torch.device) -> list[str]:
    """ONNX Runtime's execution providers for `device`: CUDA's first on a GPU when this onnxruntime has it."""
    import onnxruntime

    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel(torch.nn.Module):
    """`path` in an ONNX Runtime session. No parameters: placing it on a device or in channels-last changes
    nothing, and autocast does not reach it (the session computes in the file's float32)."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        super().__init__()
        import onnxruntime

        self.path = Path(path)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about every provider it does not use
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=providers(torch.device(device)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feed = images.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: feed})
        return torch.from_numpy(logits).to(images.device)
