"""Φ, the head-motion learner (REFERENCE.md §2.3, supplementary A.1).

Given the audio windows and the head poses of τ reference frames, an encoder ``f`` produces the weights ``W (256×6)`` and
bias ``b (6)`` of one linear layer (a per-reference "fast weight"); the Extrapolator applies that layer to the audio
features of any number of new frames, giving their poses. A moments discriminator (mean/std of the poses and of their
first differences) judges whether a pose sequence moves like real head motion.

Poses here are *normalised* ``(…,6)`` vectors (rotation vector + translation, each dimension standardised by the training
store's mean/std, which the training task exports beside the weights); the networks never see raw units.

Networks:
  * :class:`AudioEncoder` — per frame two Conv2d over the ``(7, S)`` raw-audio window, flatten, then temporal Conv1d
    layers over the frame sequence → ``(B, T, feature_dim)``.
  * :class:`MotionEncoder` — ``f``: pose MLP + audio features of the τ reference frames → two strided Conv1d → mean over
    time → ``(B, encoder_channels)`` → linear weight generator → ``W (B, feature_dim, 6)``, ``b (B, 6)``.
  * :class:`Extrapolator` — ``audio_features · W + b`` (a batched matmul), the "linear layer whose weights come from f".
  * :class:`HeadMotionLearner` — the three wired together; ``forward`` is the training path, ``encode_reference`` +
    ``extrapolate`` the inference path (the reference is encoded once, any number of frames extrapolated).
  * :class:`MotionDiscriminator` — 24 motion statistics → one logit (use BCE-with-logits).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .util import assert_shape

POSE_DIM = 6
WINDOW_ROWS = 7  # audio chunks per frame window: frames t-3 .. t+3


class AudioEncoder(nn.Module):
    """Raw-audio windows of T frames → per-frame audio features (the paper's "se" / SingleEmb encoder).

    Args:
        samples_per_frame: S, audio samples per 40 ms video frame (640 at 16 kHz, 2000 at 50 kHz).
        conv_channels: output channels of the two 3×3 Conv2d applied to each ``(1, 7, S)`` window (paper: (8, 16)).
        conv_strides: stride of each Conv2d along the sample axis (paper: (1, 1); the row axis always has stride 1).
        hidden_channels: channels of the first temporal Conv1d (paper 512).
        feature_dim: channels of the output features (paper 256); also the input size of the extrapolated linear layer.
        dropout: dropout after the first temporal layer (paper 0.1).
    """

    def __init__(self, samples_per_frame: int = 640, conv_channels: Sequence[int] = (8, 16),
                 conv_strides: Sequence[int] = (1, 1), hidden_channels: int = 512, feature_dim: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        c1, c2 = conv_channels
        s1, s2 = conv_strides
        self.samples_per_frame = samples_per_frame
        self.frame_convs = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, stride=(1, s1)), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, kernel_size=3, stride=(1, s2)), nn.ReLU(inplace=True),
        )
        width = (samples_per_frame - 3) // s1 + 1
        width = (width - 3) // s2 + 1
        if width < 1:
            raise ValueError(f"samples_per_frame={samples_per_frame} is too short for strides {tuple(conv_strides)}")
        self.flat_dim = c2 * (WINDOW_ROWS - 4) * width  # 16·3·636 = 30528 at the paper's sizes
        self.temporal = nn.Sequential(
            nn.Conv1d(self.flat_dim, hidden_channels, kernel_size=3, padding=1),
            nn.BatchNorm1d(hidden_channels), nn.LeakyReLU(0.3, inplace=True), nn.Dropout(dropout),
            nn.Conv1d(hidden_channels, feature_dim, kernel_size=3, padding=1),
            nn.BatchNorm1d(feature_dim), nn.LeakyReLU(0.3, inplace=True),
        )
        # frames of context on each side that one output frame depends on (two k3 temporal convs)
        self.context_frames = 2

    def forward(self, audio_windows: torch.Tensor) -> torch.Tensor:
        """Args:
            audio_windows: ``(B, T, 7, S)`` raw audio, frame t's window = chunks t−3..t+3.

        Returns:
            ``(B, T, feature_dim)`` audio features.
        """
        assert_shape(audio_windows, [None, None, WINDOW_ROWS, self.samples_per_frame], "audio_windows")
        b, t = audio_windows.shape[:2]
        x = self.frame_convs(audio_windows.reshape(b * t, 1, WINDOW_ROWS, self.samples_per_frame))
        x = x.reshape(b, t, self.flat_dim).transpose(1, 2)  # (B, flat, T)
        return self.temporal(x).transpose(1, 2)  # (B, T, feature_dim)


class MotionEncoder(nn.Module):
    """f: (reference poses, reference audio features) → the weights ``W`` and bias ``b`` of the extrapolating layer.

    Args:
        feature_dim: size of the audio features (and of the pose embedding), paper 256.
        pose_hidden: hidden width of the pose MLP (paper 128).
        encoder_channels: channels of the two strided temporal convs and of the pooled code (paper 512).
        dropout: dropout after each strided conv (paper 0.1).
    """

    def __init__(self, feature_dim: int = 256, pose_hidden: int = 128, encoder_channels: int = 512,
                 dropout: float = 0.1):
        super().__init__()
        self.feature_dim = feature_dim
        self.pose_mlp = nn.Sequential(
            nn.Linear(POSE_DIM, pose_hidden), nn.BatchNorm1d(pose_hidden), nn.LeakyReLU(0.3, inplace=True),
            nn.Linear(pose_hidden, feature_dim),
        )
        self.convs = nn.Sequential(
            nn.Conv1d(2 * feature_dim, encoder_channels, kernel_size=5, stride=2),
            nn.BatchNorm1d(encoder_channels), nn.LeakyReLU(0.3, inplace=True), nn.Dropout(dropout),
            nn.Conv1d(encoder_channels, encoder_channels, kernel_size=5, stride=2),
            nn.BatchNorm1d(encoder_channels), nn.LeakyReLU(0.3, inplace=True), nn.Dropout(dropout),
        )
        self.min_frames = 5 + 2 * 4  # receptive field of the two k5/s2 convs; shorter references are edge-padded
        self.weight_generator = nn.Linear(encoder_channels, feature_dim * POSE_DIM + POSE_DIM)

    def forward(self, audio_features: torch.Tensor, ref_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            audio_features: ``(B, τ, feature_dim)`` audio features of the reference frames.
            ref_pose: ``(B, τ, 6)`` normalised reference poses.

        Returns:
            ``W (B, feature_dim, 6)`` and ``b (B, 6)``.
        """
        b, tau = ref_pose.shape[:2]
        assert_shape(ref_pose, [None, None, POSE_DIM], "ref_pose")
        assert_shape(audio_features, [b, tau, self.feature_dim], "audio_features")
        pose_emb = self.pose_mlp(ref_pose.reshape(b * tau, POSE_DIM)).reshape(b, tau, self.feature_dim)
        x = torch.cat([pose_emb, audio_features], dim=2).transpose(1, 2)  # (B, 2·feature_dim, τ)
        if tau < self.min_frames:  # too short for the strided convs: repeat the edge frames symmetrically
            missing = self.min_frames - tau
            x = F.pad(x, (missing // 2, missing - missing // 2), mode="replicate")
        code = self.convs(x).mean(dim=2)  # (B, encoder_channels)
        params = self.weight_generator(code)
        weight = params[:, : self.feature_dim * POSE_DIM].reshape(b, self.feature_dim, POSE_DIM)
        return weight, params[:, self.feature_dim * POSE_DIM:]


class Extrapolator(nn.Module):
    """The linear layer whose weights come from f: ``pose_t = feature_t · W + b`` for every new frame t."""

    def forward(self, audio_features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Args:
            audio_features: ``(B, N, feature_dim)``; weight: ``(B, feature_dim, 6)``; bias: ``(B, 6)``.

        Returns:
            ``(B, N, 6)`` normalised poses.
        """
        return torch.baddbmm(bias.unsqueeze(1), audio_features, weight)


class HeadMotionLearner(nn.Module):
    """Φ: reference (audio, poses) of τ frames + audio of new frames → poses of the new frames.

    Args (each the same-named argument of the sub-networks above):
        audio_rate: audio sample rate in Hz (16000 here, 50000 in the supplementary text).
        fps: video frame rate; ``samples_per_frame = audio_rate // fps``.
        conv_channels, conv_strides, hidden_channels, feature_dim: :class:`AudioEncoder`.
        pose_hidden, encoder_channels: :class:`MotionEncoder`.
        dropout: dropout everywhere (paper 0.1).
    """

    def __init__(self, audio_rate: int = 16000, fps: int = 25, conv_channels: Sequence[int] = (8, 16),
                 conv_strides: Sequence[int] = (1, 1), hidden_channels: int = 512, feature_dim: int = 256,
                 pose_hidden: int = 128, encoder_channels: int = 512, dropout: float = 0.1):
        super().__init__()
        if audio_rate % fps:
            raise ValueError(f"audio_rate {audio_rate} is not a multiple of fps {fps}")
        self.samples_per_frame = audio_rate // fps
        self.audio_encoder = AudioEncoder(self.samples_per_frame, conv_channels, conv_strides, hidden_channels,
                                          feature_dim, dropout)
        self.encoder = MotionEncoder(feature_dim, pose_hidden, encoder_channels, dropout)
        self.extrapolator = Extrapolator()

    def encode_reference(self, ref_audio: torch.Tensor, ref_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a reference once.

        Args:
            ref_audio: ``(B, τ, 7, S)`` audio windows of the reference frames.
            ref_pose: ``(B, τ, 6)`` their normalised poses.

        Returns:
            ``W (B, feature_dim, 6)``, ``b (B, 6)`` — reuse them for every new audio of this reference.
        """
        assert_shape(ref_audio, [ref_pose.shape[0], ref_pose.shape[1], WINDOW_ROWS, self.samples_per_frame], "ref_audio")
        return self.encoder(self.audio_encoder(ref_audio), ref_pose)

    def extrapolate(self, audio: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                    chunk_frames: int | None = None) -> torch.Tensor:
        """Poses for new audio, from a reference encoded by :meth:`encode_reference`.

        Args:
            audio: ``(B, N, 7, S)`` audio windows of the new frames (any N ≥ 1).
            weight, bias: from :meth:`encode_reference`.
            chunk_frames: process the audio in chunks of this many frames (with enough overlap that the result equals
                the unchunked one), bounding memory for long audio; None = all at once.

        Returns:
            ``(B, N, 6)`` normalised poses.
        """
        n = audio.shape[1]
        if chunk_frames is None or n <= chunk_frames:
            return self.extrapolator(self.audio_encoder(audio), weight, bias)
        ctx = self.audio_encoder.context_frames
        outs = []
        for start in range(0, n, chunk_frames):
            stop = min(start + chunk_frames, n)
            lo, hi = max(0, start - ctx), min(n, stop + ctx)
            feats = self.audio_encoder(audio[:, lo:hi])[:, start - lo: start - lo + stop - start]
            outs.append(self.extrapolator(feats, weight, bias))
        return torch.cat(outs, dim=1)

    def forward(self, audio_windows: torch.Tensor, ref_pose: torch.Tensor) -> torch.Tensor:
        """Training path: the first τ frames are the reference, the rest are predicted.

        Args:
            audio_windows: ``(B, T, 7, S)`` audio windows of all T frames.
            ref_pose: ``(B, τ, 6)`` normalised poses of the first τ frames (1 ≤ τ < T).

        Returns:
            ``(B, T − τ, 6)`` normalised predicted poses of frames τ+1..T.
        """
        tau = ref_pose.shape[1]
        assert_shape(audio_windows, [ref_pose.shape[0], None, WINDOW_ROWS, self.samples_per_frame], "audio_windows")
        if not 1 <= tau < audio_windows.shape[1]:
            raise ValueError(f"need 1 <= tau < T, got tau={tau}, T={audio_windows.shape[1]}")
        # The reference and the new frames are encoded separately, exactly as at inference (where the new audio is a
        # different recording), so no feature straddles the boundary.
        weight, bias = self.encode_reference(audio_windows[:, :tau], ref_pose)
        return self.extrapolate(audio_windows[:, tau:], weight, bias)


def motion_statistics(pose: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The discriminator's 24 statistics of a pose sequence.

    Args:
        pose: ``(B, L, 6)``, L ≥ 2.

    Returns:
        ``(B, 24)``: mean and std over time of the poses, and mean and std of their first differences (velocity).
    """
    vel = pose[:, 1:] - pose[:, :-1]

    def mean_std(x):
        mean = x.mean(dim=1)
        std = (x.var(dim=1, unbiased=False) + eps).sqrt()  # eps keeps the gradient finite for a constant sequence
        return mean, std

    return torch.cat([*mean_std(pose), *mean_std(vel)], dim=1)


class MotionDiscriminator(nn.Module):
    """The moments discriminator: Linear(24 → 1) on :func:`motion_statistics` (a logit; train with BCE-with-logits)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4 * POSE_DIM, 1)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        """Args:
            pose: ``(B, L, 6)`` normalised poses, L ≥ 2.

        Returns:
            ``(B,)`` real/fake logits.
        """
        assert_shape(pose, [None, None, POSE_DIM], "pose")
        if pose.shape[1] < 2:
            raise ValueError(f"the discriminator needs at least 2 frames, got {pose.shape[1]}")
        return self.linear(motion_statistics(pose)).squeeze(1)
