"""rhythmhead: talking-head generation with rhythmic head motion."""

__version__ = "0.1.0"
