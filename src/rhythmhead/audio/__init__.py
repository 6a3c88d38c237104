"""Audio for the networks: per-video-frame windows, envelope and onsets (``windows``); pure functions, no file I/O."""
