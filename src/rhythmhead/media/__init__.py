"""Media files: video/audio/image reading and writing (PyAV, soundfile, Pillow) and atomic output files (``io``)."""
