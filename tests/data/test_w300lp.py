"""Tests for the 300W-LP parser on tiny synthetic .mat files (the real dataset and BFM are user-supplied)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from rhythmhead.data.w300lp import W300LPFaces, list_samples, load_bfm, read_fit, reconstruct, rotation_3ddfa
from rhythmhead.errors import InputError

N = 80


def _bfm_file(path, as_struct=False):
    rng = np.random.default_rng(0)
    model = {
        "shapeMU": rng.normal(0, 50, (3 * N, 1)),
        "shapePC": rng.normal(0, 1, (3 * N, 199)),
        "expPC": rng.normal(0, 1, (3 * N, 29)),
        "tri": (np.stack([np.arange(N - 2), np.arange(1, N - 1), np.arange(2, N)]) + 1).astype(np.float64),  # 3×M
        "kpt_ind": (np.arange(68) + 1).astype(np.float64)[None],
    }
    savemat(path, {"model": model} if as_struct else model)
    return model


def _fit_file(path, pose, shape=None, exp=None):
    savemat(path, {"Pose_Para": np.asarray(pose, np.float64)[None],
                   "Shape_Para": shape if shape is not None else np.zeros((199, 1)),
                   "Exp_Para": exp if exp is not None else np.zeros((29, 1)), "pt2d": np.zeros((2, 68))})


@pytest.mark.parametrize("as_struct", [False, True])
def test_identity_pose_reconstructs_the_mean_with_image_axes(tmp_path, as_struct):
    model = _bfm_file(tmp_path / "BFM.mat", as_struct)
    bfm = load_bfm(tmp_path / "BFM.mat")
    assert bfm.n_vertices == N and bfm.triangles.shape == (N - 2, 3) and bfm.triangles.min() == 0
    assert bfm.kpt_ind.tolist() == list(range(68))
    _fit_file(tmp_path / "a.mat", [0, 0, 0, 10, 20, 5, 1.0])
    fit = read_fit(tmp_path / "a.mat")
    assert fit.pt2d.shape == (68, 2)
    verts = reconstruct(bfm, fit, image_height=100)
    mean = model["shapeMU"].reshape(-1, 3)
    np.testing.assert_allclose(verts[:, 0], mean[:, 0] + 10, atol=1e-3)
    np.testing.assert_allclose(verts[:, 1], 99 - (mean[:, 1] + 20), atol=1e-3)  # y flipped into image rows
    np.testing.assert_allclose(verts[:, 2], -(mean[:, 2] + 5), atol=1e-3)  # larger z = farther


def test_parameters_and_scale_act_linearly(tmp_path):
    _bfm_file(tmp_path / "BFM.mat")
    bfm = load_bfm(tmp_path / "BFM.mat")
    shape = np.zeros((199, 1))
    shape[3] = 2.0
    _fit_file(tmp_path / "b.mat", [0, 0, 0, 0, 0, 0, 0.5], shape=shape)
    verts = reconstruct(bfm, read_fit(tmp_path / "b.mat"), image_height=1)
    expect = 0.5 * (bfm.shape_mu + 2.0 * bfm.shape_pc[:, 3]).reshape(-1, 3)
    np.testing.assert_allclose(verts[:, 0], expect[:, 0], atol=1e-3)


def test_rotation_is_proper_and_yaw_turns_x_into_z():
    r = rotation_3ddfa(0.3, -0.7, 0.2)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert abs(np.linalg.det(r) - 1) < 1e-12
    yaw = rotation_3ddfa(0.0, np.pi / 2, 0.0)
    moved = np.array([1.0, 0.0, 0.0]) @ yaw.T
    assert abs(abs(moved[2]) - 1) < 1e-12 and abs(moved[0]) < 1e-12


def test_dataset_and_bad_files(tmp_path):
    _bfm_file(tmp_path / "BFM.mat")
    bfm = load_bfm(tmp_path / "BFM.mat")
    root = tmp_path / "300W_LP"
    (root / "AFW").mkdir(parents=True)
    (root / "landmarks" / "AFW").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "AFW" / "x_1.jpg")
    _fit_file(root / "AFW" / "x_1.mat", [0.1, 0.2, 0.0, 25, 20, 0, 0.1])
    savemat(root / "landmarks" / "AFW" / "x_1_pts.mat", {"pts_2d": np.zeros((68, 2))})
    assert len(list_samples(root)) == 1
    ds = W300LPFaces(root, bfm, correspondence=np.arange(468) % N)
    item = ds[0]
    assert item["image"].shape == (40, 50, 3) and item["vertices"].shape == (N, 3)
    assert item["landmarks"].shape == (68, 3) and item["mesh468"].shape == (468, 3)
    savemat(tmp_path / "bad.mat", {"Pose_Para": np.zeros((1, 7))})
    with pytest.raises(InputError, match="Shape_Para"):
        read_fit(tmp_path / "bad.mat")
    (tmp_path / "junk.mat").write_text("not a mat file")
    with pytest.raises(InputError, match="junk.mat"):
        read_fit(tmp_path / "junk.mat")
    with pytest.raises(InputError):
        list_samples(tmp_path / "nowhere")
    with pytest.raises(InputError):
        W300LPFaces(root, bfm, correspondence=np.arange(10))
