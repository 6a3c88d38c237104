"""Tests for ``rhythmhead evaluate unprojection`` on a synthetic store with a tiny trained export."""
from __future__ import annotations

import json

import pytest

from rhythmhead.data.synthetic import make_synthetic_store


@pytest.fixture(scope="module")
def run_and_store(tmp_path_factory):
    from rhythmhead.cli import main

    root = tmp_path_factory.mktemp("unproj_eval")
    store = make_synthetic_store(root / "store", n_clips=4, n_frames=20, seed=7)
    main(["train", "unprojection", "--data", str(store.root), "--out", str(root / "run"), "--max-steps", "2",
          "--set", "trainer.batch_size=2", "--set", "model.image_size=64", "--set", "model.base_channels=2",
          "--set", "trainer.val_every=0"])
    return root / "run", store


def test_report_has_network_and_baselines(run_and_store, tmp_path):
    from rhythmhead.cli import main

    run, store = run_and_store
    out = tmp_path / "u.json"
    main(["evaluate", "unprojection", "--data", str(store.root), "--models", str(run), "--out", str(out),
          "--stride", "10", "--no-mediapipe"])
    report = json.loads(out.read_text())
    methods = report["methods"]
    assert set(methods) == {"network", "mean_shape"}
    assert not set(report["settings"]["clips"]) & set(report["settings"]["train_clips"])
    # the fast preset's residual network starts at the training mean face: after 2 steps it is still near the
    # mean-shape baseline (same frames), and both are far from a random guess
    assert 0 < methods["mean_shape"]["nme68_pct"] < 30
    mean_shape = methods["mean_shape"]["nme68_pct"]
    assert 0.5 * mean_shape < methods["network"]["nme68_pct"] < 2 * mean_shape


def test_unproject_network_backend_and_bad_input(run_and_store):
    import numpy as np

    from rhythmhead.errors import InputError
    from rhythmhead.evaluation.unprojection import load_unprojection
    from rhythmhead.geometry.mesh import unproject

    run, store = run_and_store
    net = load_unprojection(run).net
    image = store.frames(store.ids()[0])[0]
    verts = unproject(image, "network", net)
    assert verts.shape == (468, 3) and verts.dtype == np.float32 and np.isfinite(verts).all()
    assert 0 <= verts[:, :2].min() and verts[:, :2].max() <= 256  # sigmoid output stays inside the crop
    with pytest.raises(InputError):
        unproject(image, "network", None)
    with pytest.raises(InputError):
        unproject(image, "prnet")
    with pytest.raises(InputError):
        load_unprojection(store.root / "nothing")
