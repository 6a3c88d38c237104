"""TalkingHeadPipeline end to end with tiny random networks: shapes, controls, once-per-reference work, streaming,
paste-back, intermediates, fine-tuning, and no partial output on failure."""
from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from rhythmhead.audio.windows import num_frames
from rhythmhead.errors import InputError
from rhythmhead.inference.inputs import load_driving_audio
from rhythmhead.media.io import probe, read_video

PHOTO = Path(str(resources.files("rhythmhead") / "assets" / "demo_photo.png"))


@pytest.fixture(scope="module")
def audio_1s(speech_1s):
    return load_driving_audio(speech_1s)


@pytest.fixture(scope="module")
def prepared_photo(tiny_pipe, photo_ref):
    return tiny_pipe.prepare(photo_ref)


def test_photo_result_shapes_and_saved_video(tiny_pipe, photo_ref, audio_1s, tmp_path):
    result = tiny_pipe(photo_ref, audio_1s)
    t = num_frames(len(audio_1s.wave), audio_1s.rate)
    assert result.poses.shape == (t, 6) and result.landmarks.shape == (t, 68, 2)
    assert result.codes.shape == (t, 20) and np.isfinite(result.landmarks).all()
    assert len(result.prepared.shots) == 1  # a photo is one reference
    assert result.plan.info["motion"] == "phi (default style)"
    out = result.save(tmp_path / "out.mp4")
    info = probe(out)
    assert tiny_pipe.bundle.generator.image_size == 64  # the tiny G's frames are upsampled to the 256² crop
    assert info.has_audio and info.n_frames == t and info.width == info.height == 256
    assert abs(info.duration_s - audio_1s.seconds) < 0.15
    frames = list(result.frames())  # re-iterable and identical to what was encoded (up to compression)
    assert len(frames) == t and frames[0].dtype == np.uint8
    decoded, _ = read_video(out)
    gray = lambda x: np.asarray(x, np.float64).mean(-1)  # noqa: E731  (chroma of random images suffers in 4:2:0)
    assert np.abs(gray(decoded) - gray(np.stack(frames))).mean() < 6
    assert {"render", "generator", "encode", "phi", "psi"} <= set(result.timer.seconds)


def test_per_reference_work_runs_once(tiny_pipe, photo_ref, audio_1s, tmp_path, monkeypatch):
    import rhythmhead.geometry.mesh as mesh_mod

    gen = tiny_pipe.bundle.generator.frozen  # the folded copy that generation runs
    calls = {"embed": 0, "mesh": 0, "generate": 0}
    embed, build, generate = gen.embed_references, mesh_mod.build_textured_mesh, gen.generate

    def count(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(gen, "embed_references", count("embed", embed))
    monkeypatch.setattr(gen, "generate", count("generate", generate))
    monkeypatch.setattr(mesh_mod, "build_textured_mesh", count("mesh", build))
    result = tiny_pipe(photo_ref, audio_1s)
    result.save(tmp_path / "a.mp4")
    t = result.n_frames
    assert calls["embed"] == 1 and calls["mesh"] == 1
    batch = tiny_pipe.settings.batch
    assert tiny_pipe.settings.chunk == 10 and batch == 8  # the fixture's chunks, the fast preset's micro-batches
    assert calls["generate"] == sum(-(-min(10, t - s) // batch) for s in range(0, t, 10))


def test_frames_are_lazy(tiny_pipe, prepared_photo, audio_1s, monkeypatch):
    gen = prepared_photo.generator
    calls = []
    generate = gen.generate
    monkeypatch.setattr(gen, "generate", lambda *a, **k: calls.append(1) or generate(*a, **k))
    result = tiny_pipe(prepared_photo, audio_1s)
    assert calls == []  # nothing rendered before iteration
    it = result.frames()
    next(it)
    assert len(calls) == 2  # only the first chunk (10 frames, micro-batches of 8)


def test_still_and_motion_scale(tiny_pipe, prepared_photo, audio_1s):
    anchor = prepared_photo.anchor_pose
    still = tiny_pipe.plan(prepared_photo, audio_1s, still=True)
    np.testing.assert_allclose(still.poses, np.repeat(anchor[None], still.n_frames, 0), atol=1e-6)
    free = tiny_pipe.plan(prepared_photo, audio_1s)
    assert free.poses.std(0).max() > 1e-4  # the default style moves the head
    zero = tiny_pipe.plan(prepared_photo, audio_1s, motion_scale=0.0)
    np.testing.assert_allclose(zero.poses, still.poses, atol=1e-5)
    double = tiny_pipe.plan(prepared_photo, audio_1s, motion_scale=2.0)
    np.testing.assert_allclose(double.poses - anchor, 2 * (free.poses - anchor), rtol=1e-4, atol=1e-5)


def test_pose_from_npy_is_followed_and_ping_ponged(tiny_pipe, prepared_photo, audio_1s, tmp_path):
    track = np.zeros((5, 6), np.float32)
    track[:, 1] = np.linspace(-0.2, 0.2, 5)
    path = tmp_path / "poses.npy"
    np.save(path, track)
    plan = tiny_pipe.plan(prepared_photo, audio_1s, pose_from=str(path))
    assert plan.n_frames > 8
    np.testing.assert_allclose(plan.poses[:5], track)
    np.testing.assert_allclose(plan.poses[5:8, 1], track[[3, 2, 1], 1])  # mirrored back, no jump
    # the landmarks follow the poses: a yaw to one side moves the nose tip sideways
    nose = plan.landmarks[:, 30, 0]
    assert nose[0] != pytest.approx(nose[4], abs=1.0)


def test_expression_scale_and_blinks(tiny_pipe, prepared_photo, audio_1s):
    flat = tiny_pipe.plan(prepared_photo, audio_1s, expression_scale=0.0, blink=False, still=True)
    np.testing.assert_allclose(flat.frontal, np.repeat(flat.frontal[:1], flat.n_frames, 0), atol=1e-4)
    from rhythmhead.inference.controls import blink_curve

    seed = next(s for s in range(100) if blink_curve(flat.n_frames, np.random.default_rng(s)).max() > 0.9)
    a = tiny_pipe.plan(prepared_photo, audio_1s, seed=seed, still=True)
    b = tiny_pipe.plan(prepared_photo, audio_1s, seed=seed, still=True)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert a.closure.max() > 0.9
    none = tiny_pipe.plan(prepared_photo, audio_1s, seed=seed, still=True, blink=False)
    assert none.closure.max() == 0
    eye_gap = lambda plan: (plan.frontal[:, 41, 1] - plan.frontal[:, 37, 1]).min()  # noqa: E731
    assert eye_gap(a) < eye_gap(none)


def test_video_reference_uses_its_own_motion_and_several_shots(tiny_pipe, video_ref, prepared_photo, audio_1s):
    prepared = tiny_pipe.prepare(video_ref)
    assert prepared.motion_source == "reference"
    assert len(prepared.shots) == tiny_pipe.settings.shots == 4
    assert prepared.ref_images.shape[:2] == (1, 4)
    rot = video_ref.pose[prepared.shots, :3]
    assert np.abs(rot[:, None] - rot[None]).sum(-1).max() > 0.05  # spread over the clip's head poses
    assert not prepared.recenter
    # the generated motion has the reference clip's own amplitude (Φ gives the timing and direction)
    from rhythmhead.inference.controls import EASE_FRAMES, motion_amplitude

    want, speed = motion_amplitude(video_ref.pose, tiny_pipe.bundle.motion.smooth_taps)
    np.testing.assert_allclose(prepared.motion_std, want)
    np.testing.assert_allclose(prepared.motion_speed, speed)
    from rhythmhead.data.pca import open_rate

    openings = open_rate(np.asarray(video_ref.frontal, np.float64))
    assert 8 <= len(prepared.reference_openings) <= len(openings)  # the reference's speech frames
    assert set(np.round(prepared.reference_openings, 6)) <= set(np.round(openings, 6))
    from rhythmhead.inference.controls import mouth_width

    # a photo: a typical speaker's openings (the default style's) at the photo's mouth width
    np.testing.assert_allclose(prepared_photo.reference_openings, tiny_pipe.bundle.style.opening_quantiles
                               * mouth_width(prepared_photo.reference.frontal), rtol=1e-5)
    from rhythmhead.inference.reference import PHOTO_SHIFT

    style = tiny_pipe.bundle.style  # a photo: a typical speaker's turns, half the shifts
    np.testing.assert_allclose(prepared_photo.motion_std, style.pose_std * PHOTO_SHIFT)
    assert (prepared_photo.motion_std[3:] < style.pose_std[3:]).all()
    spread = lambda p: 1.4826 * np.median(np.abs(p - np.median(p, 0)), 0)  # noqa: E731
    shaped = tiny_pipe(prepared, audio_1s, blink=False).poses
    plain = tiny_pipe(dataclasses.replace(prepared, motion_std=None), audio_1s, blink=False).poses
    mid = slice(EASE_FRAMES, -EASE_FRAMES)  # the ends ease in and out
    assert (spread(shaped[mid]) > 2 * spread(plain[mid])).all()  # louder than Φ alone...
    assert (spread(shaped[mid]) <= 1.1 * want).all()  # ...up to the person's amplitude (a tiny Φ may hit the cap)
    assert np.abs(shaped[0] - np.median(shaped, 0)).max() < np.abs(shaped - np.median(shaped, 0)).max()
    assert (np.abs(shaped - np.median(shaped, 0)) <= 3 * want + 1e-6).all()  # never far beyond the person's range


def test_motion_style_and_expression_from_a_video(tiny_pipe, photo_ref, talking_video, audio_1s):
    result = tiny_pipe(photo_ref, audio_1s, motion_style=str(talking_video), expression_from=str(talking_video))
    assert result.plan.info["motion"].startswith("phi (style:")
    assert result.plan.info["expression"].startswith("expression_from:")
    assert result.plan.closure.max() == 0  # a driving video's own eyes are kept: no synthetic blinks
    # the style's poses are re-centred on the photo's pose
    np.testing.assert_allclose(result.poses.mean(0), result.prepared.anchor_pose, atol=1e-4)


def test_paste_back_gives_source_sized_frames(tiny_pipe, prepared_photo, audio_1s):
    result = tiny_pipe(prepared_photo, audio_1s, paste_back=True)
    frame = next(result.frames())
    from rhythmhead.media.io import read_image

    src = read_image(PHOTO)
    assert frame.shape == src.shape
    x0, y0, side = prepared_photo.reference.boxes[prepared_photo.reference.key_frame]
    assert (frame[:5, :5] == src[:5, :5]).all() or x0 <= 0  # outside the box: untouched


def test_intermediates_written(tiny_pipe, prepared_photo, audio_1s, tmp_path):
    from PIL import Image

    result = tiny_pipe(prepared_photo, audio_1s, save_intermediates=tmp_path / "inter")
    result.save(tmp_path / "o.mp4")
    d = tmp_path / "inter"
    t = result.n_frames
    assert np.load(d / "poses.npy").shape == (t, 6)
    assert np.load(d / "landmarks.npy").shape == (t, 68, 3)
    assert np.load(d / "codes.npy").shape == (t, 20)
    assert probe(d / "renders.mp4").n_frames == t
    for name in ("pose_curves.png", "mouth_vs_speech.png"):
        with Image.open(d / name) as im:
            assert im.size[0] > 400
    assert "timings" in (d / "info.json").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failure_leaves_no_partial_output(tiny_pipe, photo_ref, audio_1s, tmp_path, monkeypatch):
    prepared = tiny_pipe.prepare(photo_ref)
    gen = prepared.generator
    calls = []
    generate = gen.generate

    def failing(*a, **k):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("boom")
        return generate(*a, **k)

    monkeypatch.setattr(gen, "generate", failing)
    result = tiny_pipe(prepared, audio_1s, save_intermediates=tmp_path / "inter")
    with pytest.raises(RuntimeError, match="boom"):
        result.save(tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


def test_finetuning_changes_a_copy_only(tiny_pipe, photo_ref, audio_1s):
    before = {k: v.clone() for k, v in tiny_pipe.bundle.generator.net.state_dict().items()}
    result = tiny_pipe(photo_ref, audio_1s, finetune_steps=2)
    assert len(result.prepared.finetune_history) == 2
    assert result.prepared.generator is not tiny_pipe.bundle.generator.net
    after = tiny_pipe.bundle.generator.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    tuned = result.prepared.generator.state_dict()
    assert any(not torch.equal(before[k], tuned[k]) for k in before if k.startswith("conv_img"))
    assert next(result.frames()).shape[-1] == 3


def test_bad_controls(tiny_pipe, prepared_photo, audio_1s):
    with pytest.raises(InputError, match="exclude"):
        tiny_pipe(prepared_photo, audio_1s, still=True, pose_from=np.zeros((3, 6), np.float32))


def test_real_clip_reference(tiny_pipe, media_dir, audio_1s):
    """A real talking clip: its own speech drives Φ, the K shots differ in pose, the plan stays near its head."""
    clip = media_dir / "talking_video" / "pcavs_00086.mp4"
    prepared = tiny_pipe.prepare(str(clip))
    assert prepared.motion_source == "reference" and not prepared.is_image
    assert len(set(prepared.shots.tolist())) == 4
    plan = tiny_pipe.plan(prepared, audio_1s, still=True)
    # the held pose's landmarks lie on the reference's face in the 256² crop
    assert np.abs(plan.landmarks[0, :, :2].mean(0) - prepared.reference.landmarks[:, :, :2].mean((0, 1))).max() < 20


def test_pose_from_a_video_moves_its_motion_onto_the_reference(tiny_pipe, prepared_photo, audio_1s):
    from rhythmhead.inference.inputs import PoseTrack

    driving = np.zeros((40, 6), np.float32)
    driving[:, 1] = 0.5 + 0.1 * np.sin(np.linspace(0, 6, 40))  # another head, turned 0.5 rad, nodding about it
    driving[:, 3:] = (40.0, -30.0, 5.0)
    exact = tiny_pipe.plan(prepared_photo, audio_1s, pose_from=driving)
    np.testing.assert_allclose(exact.poses[:, 1].mean(), driving[: exact.n_frames, 1].mean(), atol=1e-5)
    moved = tiny_pipe.plan(prepared_photo, audio_1s, pose_from=PoseTrack(driving, relative=True))
    anchor = prepared_photo.anchor_pose
    n = moved.n_frames
    np.testing.assert_allclose(moved.poses - moved.poses.mean(0), exact.poses - exact.poses.mean(0), atol=1e-4)
    np.testing.assert_allclose(moved.poses[:, 3:].mean(0), anchor[3:] + driving[:n, 3:].mean(0) - driving[:, 3:].mean(0),
                               atol=1e-3)
    assert abs(moved.poses[:, 1].mean() - anchor[1]) < 0.05
