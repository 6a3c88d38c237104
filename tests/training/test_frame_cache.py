"""The generator data's on-disk frame cache: written atomically once, memory-mapped afterwards, same frames."""
from __future__ import annotations

import numpy as np

from rhythmhead.data.synthetic import make_synthetic_store
from rhythmhead.training.generator_data import _FrameSource


def test_frame_cache_is_written_once_and_read_back(tmp_path):
    store = make_synthetic_store(tmp_path / "store", n_clips=1, n_frames=12, with_audio=False)
    clip = store.ids()[0]
    cache = tmp_path / "cache"
    first = _FrameSource(str(cache), capacity=1).get(store, 0, clip)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].endswith(f"_{clip}.npy")  # no temporary file left beside it
    again = _FrameSource(str(cache), capacity=1).get(store, 0, clip)
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(np.asarray(again), store.frames(clip))
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
