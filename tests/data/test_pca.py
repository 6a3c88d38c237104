"""Expression PCA (rhythmhead.data.pca) and `rhythmhead fit-pca`."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rhythmhead.data.pca import ExpressionPCA, closed_mouth_frame, open_rate
from rhythmhead.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from learner_store import make_store  # noqa: E402


def synthetic_clips(n_clips=6, n_frames=80, n_modes=6, seed=0):
    """Clips = identity (random face shape) + low-rank expression (n_modes directions) + a little noise."""
    rng = np.random.default_rng(seed)
    base = np.zeros((68, 3))
    a = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    base[:, 0], base[:, 1], base[:, 2] = 128 + 60 * np.cos(a), 128 + 70 * np.sin(a), 5 * np.sin(a)
    modes = rng.normal(0, 1, (n_modes, 68, 3))
    modes[..., 2] = 0
    scales = np.linspace(4, 0.5, n_modes)
    clips = []
    for _ in range(n_clips):
        identity = base + rng.normal(0, 3, (68, 3))
        w = rng.normal(0, 1, (n_frames, n_modes)) * scales
        frames = identity + np.einsum("tk,kpc->tpc", w, modes) + rng.normal(0, 0.05, (n_frames, 68, 3))
        open_amount = np.abs(rng.normal(3, 2, n_frames))
        open_amount[rng.integers(n_frames)] = 0.0  # one frame with a shut mouth
        frames[:, [65, 66, 67], 1] += open_amount[:, None]  # inner lower lip moves down with the opening
        clips.append(frames.astype(np.float32))
    return clips


def recon_error(pca, clips):
    errs = []
    for c in clips:
        off = pca.identity_offset(c)
        rec = pca.decode(pca.encode(c, off), off)
        errs.append(np.linalg.norm(rec[..., :2] - c[..., :2], axis=-1).mean())
    return float(np.mean(errs))


def test_reconstruction_error_falls_with_components():
    clips = synthetic_clips()
    errors = [recon_error(ExpressionPCA.fit(clips, n), clips) for n in (1, 3, 7, 20)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.2  # 6 modes + the mouth opening are inside 20 components


def test_encode_decode_round_trip_on_the_subspace():
    pca = ExpressionPCA.fit(synthetic_clips(), 10)
    codes = np.random.default_rng(1).normal(0, 3, (5, 10)).astype(np.float32)
    offset = np.random.default_rng(2).normal(0, 2, (68, 3)).astype(np.float32)
    landmarks = pca.decode(codes, offset)
    assert landmarks.shape == (5, 68, 3)
    np.testing.assert_allclose(pca.encode(landmarks, offset), codes, atol=1e-3)
    # z comes from the template plus the offset
    np.testing.assert_allclose(landmarks[0, :, 2], pca.template[:, 2] + offset[:, 2], atol=1e-5)
    # torch tensors in → tensors out, dtype kept
    t = pca.decode(torch.from_numpy(codes).double(), torch.from_numpy(offset).double())
    assert t.dtype == torch.float64 and t.shape == (5, 68, 3)
    np.testing.assert_allclose(pca.encode(t, torch.from_numpy(offset).double()).numpy(), codes, atol=1e-3)


def test_identity_is_removed():
    clips = synthetic_clips(n_clips=2)
    pca = ExpressionPCA.fit(clips, 8)
    shape = np.random.default_rng(3).normal(0, 4, (1, 68, 3)).astype(np.float32)
    shape[:, 60:68] = shape[:, 60:61]  # another face shape (inner lips moved rigidly, so the same frame is closed)
    shifted = clips[0] + shape
    a = pca.encode(clips[0], pca.identity_offset(clips[0]))
    b = pca.encode(shifted, pca.identity_offset(shifted))
    np.testing.assert_allclose(a, b, atol=1e-3)
    # with the identity kept the reference codes differ between faces; without, it is the clip's mean code relative
    # to its closed mouth: the same for the same motion on another face, the template's code for a single frame
    assert not np.allclose(pca.reference_code(shifted), pca.reference_code(clips[0]), atol=1e-2)
    ref = pca.reference_code(clips[0], keep_identity=False)
    np.testing.assert_allclose(ref, a.mean(0), atol=1e-4)
    np.testing.assert_allclose(ref, pca.reference_code(shifted, keep_identity=False), atol=1e-3)
    k = closed_mouth_frame(clips[1])
    single = pca.reference_code(clips[1][k:k + 1], keep_identity=False)
    np.testing.assert_allclose(single, pca.encode(pca.template, 0 * pca.template), atol=1e-3)
    np.testing.assert_allclose(single, pca.neutral_code, atol=1e-3)
    # the neutral code, decoded with a clip's identity offset, is that clip's closed mouth (within the subspace)
    closed = pca.decode(pca.neutral_code, pca.identity_offset(clips[1]))
    np.testing.assert_allclose(open_rate(closed), open_rate(clips[1][k]), atol=0.2)
    assert open_rate(closed) < np.percentile(open_rate(clips[1]), 25)


def test_closed_mouth_frame():
    clip = synthetic_clips(n_clips=1)[0]
    k = closed_mouth_frame(clip)
    assert open_rate(clip[k]) == pytest.approx(open_rate(clip).min())
    clip[5, [65, 66, 67], :] = clip[5, [63, 62, 61], :]  # shut completely
    assert closed_mouth_frame(clip) == 5


def test_save_load_round_trip_and_bad_files(tmp_path):
    pca = ExpressionPCA.fit(synthetic_clips(), 20)
    path = pca.save(tmp_path / "pca.safetensors")
    loaded = ExpressionPCA.load(path)
    for k, v in pca.arrays().items():
        np.testing.assert_array_equal(getattr(loaded, k), v)
    with pytest.raises(InputError, match="not found"):
        ExpressionPCA.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="bad.safetensors"):
        ExpressionPCA.load(bad)
    from safetensors.numpy import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"mean": np.zeros(10, np.float32)}, str(wrong))
    with pytest.raises(InputError, match="lacks"):
        ExpressionPCA.load(wrong)


def test_fit_pca_command(tmp_path):
    from rhythmhead.cli import main

    store = make_store(tmp_path / "store", n_clips=4, n_frames=40)
    out = tmp_path / "pca.safetensors"
    main(["fit-pca", str(store), "--out", str(out), "--components", "12"])
    assert ExpressionPCA.load(out).n_components == 12
    with pytest.raises(SystemExit) as exit_info:
        main(["fit-pca", str(tmp_path / "nostore"), "--out", str(out)])
    assert exit_info.value.code == 2
