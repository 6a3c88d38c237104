"""The models folder (rhythmhead.inference.bundle): loading, and one clear InputError per kind of broken bundle."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from rhythmhead.errors import InputError
from rhythmhead.inference.bundle import (MotionStyle, check_bundle, load_bundle, load_style, resolve_models_dir,
                                         save_style)


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "b")


def test_loads_every_network_once(tiny_bundle):
    b = load_bundle(tiny_bundle)
    assert b.motion.net.training is False and b.expression.net.training is False and b.generator.net.training is False
    assert b.generator.disc is None and b.generator.image_size == 64  # D is read when fine-tuning asks
    assert b.generator.discriminator() is not None and b.generator.disc is not None
    assert b.expression.pca.n_components == 20
    assert b.style is not None and b.style.weight.shape == (b.motion.net.encoder.feature_dim, 6)
    assert set(b.ablations) == {"no_warp"}
    metas = check_bundle(tiny_bundle)
    assert metas["generator_no_warp"]["generator_kwargs"]["warp"] is False


def test_missing_checkpoint(bundle_copy):
    (bundle_copy / "expression.safetensors").unlink()
    with pytest.raises(InputError, match="no expression checkpoint"):
        load_bundle(bundle_copy)


def test_corrupt_checkpoint(bundle_copy):
    path = bundle_copy / "generator.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="generator.safetensors: not a readable safetensors"):
        check_bundle(bundle_copy)


def test_wrong_stage_checkpoint(bundle_copy):
    shutil.copy(bundle_copy / "motion.safetensors", bundle_copy / "expression.safetensors")
    with pytest.raises(InputError, match="is a 'motion' checkpoint, expected 'expression'"):
        check_bundle(bundle_copy)


def test_weights_that_do_not_fit_their_config(bundle_copy):
    import json

    from safetensors.torch import load_file, save_file

    path = bundle_copy / "motion.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["rhythmhead"])
    meta["config"]["model"]["feature_dim"] = 16
    save_file(load_file(str(path)), str(path), metadata={"rhythmhead": json.dumps(meta)})
    with pytest.raises(InputError, match="do not match the exported config"):
        load_bundle(bundle_copy)


def test_style_file_round_trip_and_damage(tmp_path, bundle_copy):
    style = MotionStyle(np.ones((8, 6), np.float32), np.zeros(6, np.float32), np.arange(6, dtype=np.float32), "x")
    path = save_style(tmp_path / "s.npz", style, clips=3)
    back = load_style(path)
    np.testing.assert_array_equal(back.anchor_pose, style.anchor_pose)
    assert back.pose_std is None  # a style without an amplitude (older files) loads as such
    amplitude = np.linspace(0.01, 2.0, 6).astype(np.float32)
    back = load_style(save_style(tmp_path / "a.npz", dataclasses.replace(style, pose_std=amplitude,
                                                                        pose_speed=amplitude / 10)))
    np.testing.assert_array_equal(back.pose_std, amplitude)
    np.testing.assert_array_equal(back.pose_speed, amplitude / 10)
    with pytest.raises(InputError, match="pose_std"):
        load_style(save_style(tmp_path / "n.npz", dataclasses.replace(style, pose_std=-amplitude)))
    assert back.opening_quantiles is None
    q = np.linspace(0.0, 0.3, 11).astype(np.float32)
    np.testing.assert_array_equal(
        load_style(save_style(tmp_path / "q.npz", dataclasses.replace(style, opening_quantiles=q))).opening_quantiles, q)
    with pytest.raises(InputError, match="opening_quantiles"):
        load_style(save_style(tmp_path / "qn.npz", dataclasses.replace(style, opening_quantiles=q[::-1].copy())))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz: not a motion style"):
        load_style(tmp_path / "bad.npz")
    save_style(bundle_copy / "motion_style.npz",
               MotionStyle(np.ones((3, 6), np.float32), np.zeros(6, np.float32), np.zeros(6, np.float32)))
    with pytest.raises(InputError, match="features"):
        load_bundle(bundle_copy)


def test_models_folder_resolution(tmp_path, tiny_bundle):
    with pytest.raises(InputError, match="models folder not found"):
        resolve_models_dir(tmp_path / "nope")
    nested = tmp_path / "n"
    shutil.copytree(tiny_bundle, nested / "paper")
    assert resolve_models_dir(nested, "paper") == nested / "paper"
    assert resolve_models_dir(tiny_bundle, "paper") == tiny_bundle
