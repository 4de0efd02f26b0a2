"""The served network (backbone cut at its taps, tap pooling, every brand head) in PyTorch,
built from `bench.gpu_export`'s folder: the same weights through another runtime, for the GPU
check on a machine without TensorFlow. Not a serving path: production stays TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class ServedNet(nn.Module):
    """uint8 pixels (N, S, S, 3) → (float32 embeddings (N, D), float32 scores (N, brands)).

    The backbone computes in `dtype` (float32 or bfloat16) in channels-last layout: the NHWC
    input permuted to NCHW already has channels-last strides, so nothing is copied. Pooled taps
    and the heads are float32, as `detector.model.Backbone.features` and `Heads.score` are."""

    def __init__(self, net: dict[str, Any], arrays: dict[str, np.ndarray],
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.ops, self.taps, self.tf_scale = net["ops"], net["taps"], net["scale"] == "tf"
        self.dtype = dtype
        self.convs = nn.ModuleDict()
        for op in self.ops:
            if op["op"] != "conv":
                continue
            conv = nn.Conv2d(*op["channels"], op["size"], op["stride"], op["pad"], bias=True)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(arrays[f"{op['name']}.weight"].astype(np.float32)))
                conv.bias.copy_(torch.from_numpy(arrays[f"{op['name']}.bias"].astype(np.float32)))
            self.convs[op["name"]] = conv.to(dtype=dtype, memory_format=torch.channels_last)
        for name in ("mean", "scale", "kernel", "bias"):
            self.register_buffer(f"head_{name}", torch.from_numpy(arrays[f"head.{name}"]))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = pixels.permute(0, 3, 1, 2).float()
        x = (x / 127.5 - 1.0 if self.tf_scale else x).to(self.dtype)
        out: dict[str, torch.Tensor] = {"input": x}
        for op in self.ops:
            kind, ins = op["op"], [out[i] for i in op["inputs"]]
            if kind == "conv":
                y = self.convs[op["name"]](ins[0])
                y = torch.relu(y) if op["relu"] else y
            elif kind == "maxpool":
                y = nn.functional.max_pool2d(ins[0], op["size"], op["stride"], op["pad"])
            elif kind == "avgpool":
                y = nn.functional.avg_pool2d(ins[0], op["size"], op["stride"], op["pad"],
                                             count_include_pad=False)
            else:
                y = torch.cat(ins, dim=1)
            out[op["name"]] = y
        parts = [(out[t["op"]].amax(dim=(2, 3)) if t["pool"] == "max"
                  else out[t["op"]].mean(dim=(2, 3))).float() for t in self.taps]
        emb = torch.cat(parts, dim=1)
        z = (emb - self.head_mean) / self.head_scale
        return emb, torch.sigmoid(z @ self.head_kernel + self.head_bias)


def load(folder: Path, dtype: torch.dtype, device: torch.device) -> ServedNet:
    net = json.loads((folder / "net.json").read_text())
    with np.load(folder / "net.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return ServedNet(net, arrays, dtype).to(device).eval()
