"""Clip id and speaker of a video from where it sits in a known dataset layout.

* VoxCeleb2: ``…/id00012/<youtube id>/00001.mp4`` → speaker ``id00012``, clip ``id00012_<youtube id>_00001``;
* LRS3: ``…/<11-character youtube id>/00001.mp4`` → speaker = the YouTube id (LRS3 has one speaker per video id),
  clip ``<youtube id>_00001``;
* LRW: ``…/WORD/{train,val,test}/WORD_00001.mp4`` → clip ``WORD_00001_<split>``; LRW carries no speaker labels, so
  each clip is its own speaker (a speaker-disjoint split then cannot separate identities; say so when reporting);
* anything else: speaker = clip = the file stem.

Ids are made file-system safe (letters, digits, ``_ - .``). :func:`assign_ids` makes them unique across a run.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from ..common import VIDEO_SUFFIXES

__all__ = ["clip_identity", "assign_ids", "safe_id", "VIDEO_SUFFIXES"]

_VOX_ID = re.compile(r"id\d{5}")
_YT_ID = re.compile(r"[A-Za-z0-9_-]{11}")
_LRW_SPLITS = {"train", "val", "test"}


def safe_id(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_`` (never empty, never starting with '.')."""
    out = re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip(".")
    return out or "clip"


def clip_identity(path: str | Path) -> tuple[str, str]:
    """``(clip_id, speaker)`` for a video path (see the module docstring for the rules)."""
    p = Path(path)
    stem, parent = p.stem, p.parent.name
    grand = p.parent.parent.name
    if _VOX_ID.fullmatch(grand) and parent:
        return safe_id(f"{grand}_{parent}_{stem}"), grand
    if parent in _LRW_SPLITS and grand and stem.startswith(grand + "_"):
        cid = safe_id(f"{stem}_{parent}")
        return cid, cid
    if stem.isdigit() and _YT_ID.fullmatch(parent):
        return safe_id(f"{parent}_{stem}"), parent
    return safe_id(stem), safe_id(stem)


def assign_ids(paths: Iterable[str | Path]) -> list[tuple[Path, str, str]]:
    """``(path, clip_id, speaker)`` for each path, with repeated ids made unique by ``_2``, ``_3``… (in input order)."""
    out, used = [], set()
    for path in paths:
        cid, speaker = clip_identity(path)
        unique, n = cid, 1
        while unique in used:
            n += 1
            unique = f"{cid}_{n}"
        used.add(unique)
        out.append((Path(path), unique, speaker))
    return out
