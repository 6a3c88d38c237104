"""Tests for rhythmhead.data.layouts."""
from __future__ import annotations

from rhythmhead.data.layouts import assign_ids, clip_identity, safe_id


def test_known_layouts():
    assert clip_identity("/d/vox/dev/mp4/id00012/_raOc3-IRsw/00110.mp4") == ("id00012__raOc3-IRsw_00110", "id00012")
    assert clip_identity("lrs3/pretrain/0Fi83BHQsMA/00002.mp4") == ("0Fi83BHQsMA_00002", "0Fi83BHQsMA")
    cid, spk = clip_identity("lrw/ABOUT/train/ABOUT_00001.mp4")
    assert cid == spk == "ABOUT_00001_train"
    assert clip_identity("/x/my talk (1).mp4") == ("my_talk__1_", "my_talk__1_")
    assert clip_identity("/media/talking_video/pcavs_00010.mp4") == ("pcavs_00010", "pcavs_00010")


def test_not_fooled():
    # a 5-digit stem under a folder that is not an 11-character YouTube id is a plain file
    assert clip_identity("clips/speaker/00001.mp4") == ("00001", "00001")
    # train/ folder without the WORD_ prefix is not LRW
    assert clip_identity("data/train/clip.mp4") == ("clip", "clip")


def test_assign_ids_unique():
    out = assign_ids(["a/x.mp4", "b/x.mp4", "c/x_2.mp4", "d/x.mp4"])
    ids = [cid for _, cid, _ in out]
    assert len(set(ids)) == 4 and ids[0] == "x"
    assert safe_id("..hidden") == "hidden" and safe_id("") == "clip"
