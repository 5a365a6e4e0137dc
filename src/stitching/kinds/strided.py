"""``strided_conv``: the end network's feature map is smaller by an integer factor k in H and W.

A k x k convolution with stride k (the downsampling stitch of Hernandez et al. 2022): every
end pixel is an affine function of the k x k patch of front pixels it covers, all channels.
W is ``(C_out, C_in * k * k)`` over the patch entries in ``F.unfold`` order (channel, row, column),
which is the row-major layout of a ``(C_out, C_in, k, k)`` conv weight. The least-squares samples
are the patches (space-to-depth): one row per end pixel of every sample.

W's inputs are patch entries, not channels: the identity, a permutation and the masks are not
defined on it (``channel_map = False``).
"""
from typing import Tuple

from torch.nn import functional as F

from src.stitching.kinds.base import StitchKind, pixel_rows
from src.stitching.kinds.maps import IntegerScale


class StridedConv(IntegerScale, StitchKind):
    name = "strided_conv"
    summary = "end smaller by an integer factor k in H and W: k x k convolution with stride k"
    channel_map = False
    front_larger = True

    def features(self) -> Tuple[int, int]:
        k = self.factor
        return self.front_shape[0] * k * k, self.end_shape[0]

    @property
    def weight_shape(self):
        k = self.factor
        return (self.out_features, self.front_shape[0], k, k)

    def forward(self, x, w, b):
        return F.conv2d(x, w.reshape(self.weight_shape), b, stride=self.factor)

    def design(self, front, end):
        k = self.factor
        patches = F.unfold(front, kernel_size=k, stride=k)  # N x (C k k) x L, L in row-major end order
        return patches.transpose(1, 2).reshape(-1, patches.shape[1]), pixel_rows(end)

    def describe(self) -> str:
        k = self.factor
        return f"{super().describe()} ({k}x{k} conv, stride {k})"
