"""What the two learner tasks (Φ motion, Ψ expression) share: the store check at startup and the per-split clip cache.

Both read every clip of a speaker-disjoint split once (audio + track, :func:`learner_data.load_clips`) and keep it in
memory; the store is small next to the networks' work.
"""
from __future__ import annotations

import torch

from ..data.store import ClipStore
from .learner_data import config_split, load_clips, require_clips
from .task import TrainTask


class LearnerTask(TrainTask):
    """A TrainTask whose config has ``data.val_fraction``, ``data.split_seed``, ``data.folds``, ``data.fold``,
    ``model.audio_rate`` and ``model.fps``."""

    def __init__(self, cfg, data_dir: str | None):
        super().__init__(cfg, data_dir)
        if data_dir is not None:
            ClipStore(data_dir)  # validate the store at startup
        self.device = torch.device("cpu")
        self._clips: dict[str, list] = {}

    def clips(self, split: str) -> list:
        """The loaded clips of ``split`` ("train" or "val"), read once. With ``data.folds`` = K the val side is the held-out
        fold ``data.fold`` (only logged in val.jsonl: no weights are chosen by it)."""
        if split not in self._clips:
            if self.data_dir is None:
                raise ValueError("this task has no data store")
            train, val = config_split(self.data_dir, self.cfg.data)
            clips = load_clips(self.data_dir, train if split == "train" else val, self.cfg.model.audio_rate,
                               self.cfg.model.fps)
            self._clips[split] = require_clips(clips, self.data_dir, split)
        return self._clips[split]
