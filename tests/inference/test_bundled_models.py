"""The models shipped in the package (rhythmhead/models_bundled, see MODEL_CARD.md) load and make a talking head."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from rhythmhead.evaluation.metrics import ssim
from rhythmhead.inference.bundle import check_bundle, default_models_dir

PHOTO = Path(str(resources.files("rhythmhead") / "assets" / "demo_photo.png"))


@pytest.fixture(scope="module")
def bundled_pipe():
    from rhythmhead.inference.pipeline import TalkingHeadPipeline

    return TalkingHeadPipeline.load(None, preset="fast")


def test_bundle_is_complete_and_small():
    root = default_models_dir()
    check_bundle(root)
    total = sum(p.stat().st_size for p in root.iterdir())
    assert total <= 40 * 2**20
    assert (root / "motion_style.npz").is_file()


def test_bundled_models_animate_the_photo(bundled_pipe, photo_ref, speech_1s):
    result = bundled_pipe(photo_ref, speech_1s, seed=0)
    frames = np.stack(list(result.frames()))
    n = result.n_frames
    assert frames.shape == (n, 256, 256, 3) and n >= 25
    # the head moves (Φ with the default style) and the mouth opens and closes with the speech (Ψ)
    assert result.poses[:, :3].std(0).max() > 1e-3
    mouth = result.landmarks[:, 66, 1] - result.landmarks[:, 62, 1]
    assert mouth.max() - mouth.min() > 1.0
    # the frames change over time and still look like the reference person
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 0.5
    crop = photo_ref.frames[photo_ref.key_frame]
    assert np.mean([ssim(f, crop) for f in frames[::5]]) > 0.4


def _own_expression_result(pipe, ref, speech, **controls):
    """The reference's own pose and expression, no blinks: every frame should reproduce the reference crop."""
    return pipe(ref, speech, pose_from=np.repeat(ref.pose[ref.key_frame][None], 400, 0), expression_from=ref,
                blink=False, **controls)


@pytest.mark.parametrize("size", [256, 512])
def test_own_pose_and_expression_reproduce_the_reference_sharply(bundled_pipe, photo_ref, speech_1s, size):
    """Composition at the output size: with the reference's own pose and landmarks, the output equals the reference
    outside the mouth within a small tolerance, and keeps its face detail (the old pipeline, G's 128² frame
    upsampled, kept under a tenth of it)."""
    import cv2

    from rhythmhead.data.preprocess import reference_crops
    from rhythmhead.evaluation.metrics import region_masks, sharpness_ratio
    from rhythmhead.geometry.labelmap import mouth_mask

    result = _own_expression_result(bundled_pipe, photo_ref, speech_1s, size=size)
    frames = np.stack([f for _, f in zip(range(6), result.frames())])
    key = photo_ref.key_frame
    real = reference_crops(photo_ref, [key], size)[key]
    scale = size / 256
    lm = np.repeat(photo_ref.landmarks[key][None, :, :2] * scale, len(frames), 0)
    mouth = cv2.dilate(mouth_mask(lm[:1], size, 0.3)[0, 0].astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    face = region_masks(lm[:1], size, "face")[0]
    diff = np.abs(frames.astype(int) - real[None].astype(int)).mean(-1)
    assert diff[:, face & ~mouth].mean() < 6 and diff[:, ~mouth].mean() < 8
    sharp = sharpness_ratio(frames, lm, real[None].repeat(len(frames), 0), lm, "face")
    assert sharp > 0.7
    upsampled = TalkingHeadPipelineUpsampled(bundled_pipe)
    old = np.stack([f for _, f in zip(range(6), _own_expression_result(upsampled, photo_ref, speech_1s,
                                                                        size=size).frames())])
    assert sharp > 2 * sharpness_ratio(old, lm, real[None].repeat(len(old), 0), lm, "face")


def TalkingHeadPipelineUpsampled(pipe):
    from dataclasses import replace

    from rhythmhead.inference.pipeline import TalkingHeadPipeline

    return TalkingHeadPipeline(pipe.bundle, pipe.device, replace(pipe.settings, full_resolution=False))


def test_a_face_at_the_image_border_gives_no_padding(bundled_pipe, speech_1s, tmp_path):
    """The crop slides back inside the frame (the paper's square would reach 40 px past the left edge here): the
    reference crop is the source's own pixels, and every output frame's edges show what the crop's edges show."""
    from PIL import Image

    from rhythmhead.face.track import crop_frame
    from rhythmhead.inference.inputs import load_reference
    from rhythmhead.media.io import read_image

    edge = np.ascontiguousarray(read_image(PHOTO)[:, 100:])  # the face 65 px from the left edge
    path = tmp_path / "edge.png"
    Image.fromarray(edge).save(path)
    ref, _ = load_reference(path)
    x0, y0, side = ref.boxes[0]
    assert x0 >= 0 and y0 >= 0 and x0 + side <= edge.shape[1] and y0 + side <= edge.shape[0]
    crop = ref.frames[0]
    assert np.array_equal(crop, crop_frame(edge, ref.boxes[0]))
    frames = np.stack([f for _, f in zip(range(25), bundled_pipe(ref, speech_1s, seed=0).frames())])
    sides = (np.s_[:, :3], np.s_[:, -3:], np.s_[:, :, :3], np.s_[:, :, -3:])
    for cut in sides:
        got, want = frames[cut].astype(int), crop[None][cut].astype(int)
        assert np.abs(got - want).mean() < 20
