"""inference/draw.py: overlays land where they should and never modify the input."""
from __future__ import annotations

import numpy as np
import pytest

from rhythmhead.inference import draw


def _canvas():
    return np.zeros((200, 200, 3), np.uint8)


def test_draw_landmarks_marks_the_points():
    img = _canvas()
    pts = np.stack([np.linspace(20, 180, 68), np.linspace(30, 170, 68), np.zeros(68)], axis=1)
    out = draw.draw_landmarks(img, pts, color=(0, 255, 0))
    assert img.sum() == 0  # input untouched
    for x, y, _ in pts.round().astype(int):
        assert out[y, x, 1] > 100
    assert out[5, 190].sum() == 0  # far from any point
    with pytest.raises(ValueError):
        draw.draw_landmarks(img, pts[:10])


def _tip(out: np.ndarray, channel: int, others: tuple[int, int]):
    """Mean position of the pixels dominated by one colour channel."""
    c = out[..., channel].astype(int)
    mask = (c > 150) & (out[..., others[0]] < 100) & (out[..., others[1]] < 100)
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def test_pose_axes_frontal_and_turned():
    origin = (100, 100)
    out = draw.draw_pose_axes(_canvas(), np.zeros(6), origin, length=60)
    xr, yr = _tip(out, 0, (1, 2))  # red: canonical x → image right
    xg, yg = _tip(out, 1, (0, 2))  # green: canonical y → image down
    assert xr > 120 and abs(yr - 100) < 3
    assert yg > 120 and abs(xg - 100) < 3
    # a head turned about the vertical axis: the facing direction (blue) now has a horizontal component
    turned = draw.draw_pose_axes(_canvas(), np.array([0.0, 0.6, 0, 0, 0, 0]), origin, length=60)
    blue = (turned[..., 2] > 150) & (turned[..., 0] < 100)
    xs = np.nonzero(blue)[1]
    assert xs.size > 10 and abs(xs.mean() - 100) > 8


def test_level_bar_fills_with_level():
    low = draw.draw_level_bar(_canvas(), 0.1, color=(255, 200, 0))
    high = draw.draw_level_bar(_canvas(), 0.9, color=(255, 200, 0))
    count = lambda im: int(((im[..., 0] == 255) & (im[..., 1] == 200)).sum())  # noqa: E731
    assert count(high) > 5 * count(low) > 0
