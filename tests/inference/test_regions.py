"""A video's own mouths and blinks (rhythmhead.inference.regions) and the photo's synthesised mouths."""
from __future__ import annotations

import numpy as np
import torch

from rhythmhead.face.landmarks import canonical_68
from rhythmhead.inference.regions import MouthSynthesis, RegionTransfer, region_bank, spread_frames


def _bank_clip(n=12):
    lm = np.repeat(canonical_68()[None].astype(np.float32), n, 0)
    lm[::3, [65, 66, 67], 1] += 10  # every third frame opens its mouth
    lm[::3, 55:60, 1] += 10
    lm[5, [37, 38, 43, 44], 1] = lm[5, [41, 40, 47, 46], 1]  # frame 5 blinks
    return lm


def test_spread_frames_covers_the_shapes():
    feats = np.concatenate([np.zeros((10, 2)), np.ones((3, 2)) * 5, np.full((1, 2), -4.0)])
    idx = spread_frames(feats, 3)
    assert len(idx) == 3 and 13 in idx and any(i in idx for i in (10, 11, 12))


def test_region_transfer_takes_the_mouth_of_the_nearest_frame_and_blinks_from_a_blink():
    lm = _bank_clip()
    bank = region_bank(lm, lm, candidates=6)
    assert 5 in bank.blink_frames and any(i % 3 == 0 for i in bank.mouth_frames)
    # each bank frame: the same grey with stripes of its own period, so the lent mouth can be told by its texture
    xs = np.arange(256)
    stripes = {i: (30 * np.sign(np.sin(2 * np.pi * xs / (4 + i)))).astype(int) for i in bank.frames.tolist()}
    crops = {i: np.broadcast_to((120 + st)[None, :, None], (256, 256, 3)).astype(np.uint8) for i, st in stripes.items()}
    transfer = RegionTransfer(bank, crops, 256)
    base = np.full((256, 256, 3), 120, np.uint8)
    out = transfer(base, lm[3], lm[3])  # an open mouth: one of the open-mouthed frames lends it
    src = transfer.mouth_source(lm[3])
    assert src % 3 == 0
    c = lm[3, 48:68, :2].mean(0).astype(int)
    row = out[c[1], c[0] - 8:c[0] + 8, 0].astype(int) - 120
    assert np.corrcoef(row, stripes[src][c[0] - 8:c[0] + 8])[0, 1] > 0.9  # the lent mouth's own texture
    np.testing.assert_array_equal(out[:60], base[:60])  # forehead: untouched
    eye = lm[3, 36:42, :2].mean(0).astype(int)
    np.testing.assert_array_equal(out[eye[1] - 3:eye[1] + 3], base[eye[1] - 3:eye[1] + 3])  # open eyes: the frame's
    blink = transfer(base, lm[5], lm[5], closure=1.0)
    assert np.abs(blink[eye[1], eye[0] - 4:eye[0] + 4].astype(int) - 120).max() > 20  # blinking: the bank's blink


def test_photo_mouths_come_from_the_network():
    from rhythmhead.models.mouth import MouthNet

    net = MouthNet(image_size=64, ngf=4, n_down=2).eval()
    with torch.no_grad():
        net.out.bias.fill_(2.0)  # a network that paints the mouth white (a residual over the reference, clamped)
    lm = canonical_68().astype(np.float32)
    synth = MouthSynthesis(net, np.full((256, 256, 3), 90, np.uint8), lm, 512)
    frames = np.full((2, 512, 512, 3), 90, np.uint8)
    out = synth(frames, np.stack([lm, lm]))
    c = (lm[48:68, :2].mean(0) * 2).astype(int)
    assert out.shape == frames.shape and out[0, c[1], c[0]].min() > 240
    np.testing.assert_array_equal(out[:, :100], frames[:, :100])


def test_photo_mouths_in_fast_precision_match_float32(monkeypatch):
    """The mouth network runs under models.util.fast_precision (bfloat16 where the CPU has it): the pasted mouths stay
    within 3 levels of the float32 ones."""
    import rhythmhead.models.util as util
    from rhythmhead.models.mouth import MouthNet

    torch.manual_seed(0)
    net = MouthNet(image_size=64, ngf=8, n_down=2).eval()
    with torch.no_grad():
        for p in net.out.parameters():
            p.normal_(0, 0.05)
    lm = canonical_68().astype(np.float32)
    ref = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    frames = np.full((2, 256, 256, 3), 90, np.uint8)
    fast = MouthSynthesis(net, ref, lm, 256)(frames, np.stack([lm, lm]))
    monkeypatch.setattr(util, "fast_precision", lambda device: torch.autocast("cpu", enabled=False))
    exact = MouthSynthesis(net, ref, lm, 256)(frames, np.stack([lm, lm]))
    assert np.abs(fast.astype(int) - exact.astype(int)).max() <= 3
    assert (exact != frames).any()  # the mouth was pasted
