"""Ψ, the facial-expression learner (REFERENCE.md §3, supplementary A.2).

For each frame t the network reads the raw-audio window x_{t−3:t+4} (7 chunks of 40 ms, flattened to ``7·S`` samples) and
the 20-dimensional PCA code of the reference (closed-mouth) landmarks, and regresses the 20 PCA coefficients of frame t's
frontal, identity-removed 2-D landmarks (see :mod:`rhythmhead.data.pca` for the PCA and the identity offset).

Audio branch: ``len(conv_channels)`` Conv1d (kernel 21, stride 2, no padding) each with BN + LeakyReLU(0.3) + dropout,
flatten, FC → ``feature_dim`` + LeakyReLU(0.3). Reference branch: FC(n_components → feature_dim) + LeakyReLU(0.3) +
dropout. Head: FC(2·feature_dim → n_components). The flatten size follows from the audio rate: 512×16 = 8192 at 16 kHz
(4480 samples), 512×90 = 46080 at the paper's 50 kHz (14000 samples).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .util import assert_shape

WINDOW_ROWS = 7


def conv_output_length(length: int, n_layers: int, kernel_size: int, stride: int) -> int:
    """Length after ``n_layers`` unpadded Conv1d of this kernel and stride (≤ 0 when the input is too short)."""
    for _ in range(n_layers):
        length = (length - kernel_size) // stride + 1
        if length <= 0:
            return 0
    return length


class ExpressionLearner(nn.Module):
    """Ψ: audio window + reference PCA code → PCA code of the frame's expression.

    Args:
        audio_rate: audio sample rate in Hz (16000 here; the paper resamples to 50000).
        fps: video frame rate; the window holds ``7 · audio_rate // fps`` samples.
        conv_channels: output channels of the audio Conv1d stack (paper: 64, 64, 128, 128, 256, 256, 512).
        kernel_size: kernel of every audio conv (paper 21).
        stride: stride of every audio conv (paper 2).
        feature_dim: width of each branch's embedding (paper 256).
        n_components: PCA coefficients in and out (paper 20).
        dropout: dropout after each audio conv and the reference FC (paper 0.2).
    """

    def __init__(self, audio_rate: int = 16000, fps: int = 25,
                 conv_channels: Sequence[int] = (64, 64, 128, 128, 256, 256, 512), kernel_size: int = 21,
                 stride: int = 2, feature_dim: int = 256, n_components: int = 20, dropout: float = 0.2):
        super().__init__()
        if audio_rate % fps:
            raise ValueError(f"audio_rate {audio_rate} is not a multiple of fps {fps}")
        self.window_samples = WINDOW_ROWS * (audio_rate // fps)
        self.n_components = n_components
        length = conv_output_length(self.window_samples, len(conv_channels), kernel_size, stride)
        if length < 1:
            raise ValueError(f"a {self.window_samples}-sample window is too short for {len(conv_channels)} convs")
        layers: list[nn.Module] = []
        in_ch = 1
        for ch in conv_channels:
            layers += [nn.Conv1d(in_ch, ch, kernel_size, stride=stride), nn.BatchNorm1d(ch),
                       nn.LeakyReLU(0.3, inplace=True), nn.Dropout(dropout)]
            in_ch = ch
        self.audio_convs = nn.Sequential(*layers)
        self.flat_dim = in_ch * length
        self.audio_fc = nn.Sequential(nn.Linear(self.flat_dim, feature_dim), nn.LeakyReLU(0.3, inplace=True))
        self.reference_fc = nn.Sequential(nn.Linear(n_components, feature_dim), nn.LeakyReLU(0.3, inplace=True),
                                          nn.Dropout(dropout))
        self.head = nn.Linear(2 * feature_dim, n_components)

    def forward(self, audio: torch.Tensor, ref_code: torch.Tensor) -> torch.Tensor:
        """Args:
            audio: ``(B, 7·S)`` raw audio window of each frame (chunks t−3..t+3 concatenated).
            ref_code: ``(B, n_components)`` PCA code of the reference (closed-mouth) landmarks.

        Returns:
            ``(B, n_components)`` predicted PCA code of the frame.
        """
        assert_shape(audio, [None, self.window_samples], "audio")
        assert_shape(ref_code, [audio.shape[0], self.n_components], "ref_code")
        a = self.audio_convs(audio.unsqueeze(1)).flatten(1)
        features = torch.cat([self.audio_fc(a), self.reference_fc(ref_code)], dim=1)
        return self.head(features)
