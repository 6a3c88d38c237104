"""Ψ, the facial-expression learner (REFERENCE.md §3, supplementary A.2).

For each frame t the network reads the raw-audio window x_{t−3:t+4} (7 chunks of 40 ms, flattened to ``7·S`` samples) and
the 20-dimensional PCA code of the reference (closed-mouth) landmarks, and regresses the 20 PCA coefficients of frame t's
frontal, identity-removed 2-D landmarks (see :mod:`rhythmhead.data.pca` for the PCA and the identity offset).

Audio branch: ``len(conv_channels)`` Conv1d (kernel 21, stride 2, no padding) each with BN + LeakyReLU(0.3) + dropout,
flatten, FC → ``feature_dim`` + LeakyReLU(0.3). Reference branch: FC(n_components → feature_dim) + LeakyReLU(0.3) +
dropout. Head: FC(2·feature_dim → n_components). The flatten size follows from the audio rate: 512×16 = 8192 at 16 kHz
(4480 samples), 512×90 = 46080 at the paper's 50 kHz (14000 samples).

``frontend="mel"`` (the ``fast`` preset) puts a log-mel spectrogram in front of the same kind of conv stack, computed
*inside* the network from the same raw window (:class:`LogMel`: 25 ms Hann frames every 10 ms, ``n_mels`` triangular
bands, log power minus its mean over the window, so a gain only moves the mean and is removed), and the Conv1d stack
then runs over the spectrogram's frames with the bands as input channels (25 frames for 7·40 ms at 16 kHz). The input stays the
raw window, so the data pipeline and the callers (``net(window, ref_code)``) do not change. ``frontend="raw"`` is the
paper's network.
"""
from __future__ import annotations

from typing import Sequence

import math

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


def mel_filterbank(n_fft: int, rate: int, n_mels: int, f_min: float = 50.0, f_max: float | None = None) -> torch.Tensor:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters equally spaced on the HTK mel scale (2595·log10(1 + f/700)),
    each peaking at 1; ``f_max`` defaults to the Nyquist frequency (capped at 8 kHz)."""
    f_max = min(rate / 2, 8000.0) if f_max is None else f_max
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    edges_mel = torch.linspace(mel(f_min), mel(f_max), n_mels + 2, dtype=torch.float64)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    freqs = torch.linspace(0.0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo)
    down = (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


class LogMel(nn.Module):
    """Raw window ``(B, N)`` → log-mel spectrogram ``(B, n_mels, frames)`` (no padding: ``(N − n_fft) // hop + 1``
    frames, a 25 ms Hann window in an ``n_fft`` frame every ``hop`` = 10 ms), minus its mean over the whole window (gain
    invariance)."""

    def __init__(self, audio_rate: int, n_mels: int = 40):
        super().__init__()
        self.win, self.hop = round(0.025 * audio_rate), round(0.010 * audio_rate)
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.register_buffer("filters", mel_filterbank(self.n_fft, audio_rate, n_mels), persistent=False)

    def n_frames(self, n_samples: int) -> int:
        return (n_samples - self.n_fft) // self.hop + 1 if n_samples >= self.n_fft else 0  # stft frames span n_fft

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, self.n_fft, hop_length=self.hop, win_length=self.win, window=self.window,
                          center=False, return_complex=True)
        logmel = torch.log(self.filters @ spec.abs().pow(2) + 1e-8)
        return logmel - logmel.mean(dim=(1, 2), keepdim=True)


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
        frontend: ``"raw"`` (the paper: convs over the waveform) or ``"mel"`` (convs over :class:`LogMel` frames).
        n_mels: mel bands of the ``"mel"`` front end.
        residual: predict the code as ``ref_code`` + the head's output (for a reference code that is the speaker's mean
            expression, :meth:`~rhythmhead.data.pca.ExpressionPCA.reference_code` without identity).
    """

    def __init__(self, audio_rate: int = 16000, fps: int = 25,
                 conv_channels: Sequence[int] = (64, 64, 128, 128, 256, 256, 512), kernel_size: int = 21,
                 stride: int = 2, feature_dim: int = 256, n_components: int = 20, dropout: float = 0.2,
                 frontend: str = "raw", n_mels: int = 40, residual: bool = False):
        super().__init__()
        if audio_rate % fps:
            raise ValueError(f"audio_rate {audio_rate} is not a multiple of fps {fps}")
        self.window_samples = WINDOW_ROWS * (audio_rate // fps)
        self.n_components = n_components
        if frontend not in ("raw", "mel"):
            raise ValueError(f"frontend must be 'raw' or 'mel', got {frontend!r}")
        self.frontend = LogMel(audio_rate, n_mels) if frontend == "mel" else None
        in_len = self.window_samples if self.frontend is None else self.frontend.n_frames(self.window_samples)
        length = conv_output_length(in_len, len(conv_channels), kernel_size, stride)
        if length < 1:
            raise ValueError(f"a {self.window_samples}-sample window is too short for {len(conv_channels)} convs")
        layers: list[nn.Module] = []
        in_ch = 1 if self.frontend is None else n_mels
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
        self.residual = residual

    def forward(self, audio: torch.Tensor, ref_code: torch.Tensor) -> torch.Tensor:
        """Args:
            audio: ``(B, 7·S)`` raw audio window of each frame (chunks t−3..t+3 concatenated).
            ref_code: ``(B, n_components)`` PCA code of the reference (closed-mouth) landmarks.

        Returns:
            ``(B, n_components)`` predicted PCA code of the frame.
        """
        assert_shape(audio, [None, self.window_samples], "audio")
        assert_shape(ref_code, [audio.shape[0], self.n_components], "ref_code")
        a = audio.unsqueeze(1) if self.frontend is None else self.frontend(audio)
        a = self.audio_convs(a).flatten(1)
        features = torch.cat([self.audio_fc(a), self.reference_fc(ref_code)], dim=1)
        out = self.head(features)
        return out + ref_code if self.residual else out
