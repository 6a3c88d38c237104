"""tools/make_bundle.py: runs' exports → a bundle folder with the default motion style averaged over a clip store."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_bundle.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("make_bundle", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runs(tiny_bundle, root: Path) -> dict[str, Path]:
    """Training-run-like folders RUN/export/<stage>.* made from the tiny bundle's files."""
    runs = {}
    for stage in ("motion", "expression", "generator"):
        export = root / f"run_{stage}" / "export"
        export.mkdir(parents=True)
        for suffix in (".safetensors", ".json"):
            shutil.copy(tiny_bundle / f"{stage}{suffix}", export / f"{stage}{suffix}")
        runs[stage] = export.parent
    abl = root / "run_no_warp" / "export"
    abl.mkdir(parents=True)
    shutil.copy(tiny_bundle / "generator_no_warp.safetensors", abl / "generator.safetensors")
    runs["no_warp"] = abl.parent
    return runs


def test_make_bundle_with_style(tool, tiny_bundle, tmp_path):
    from rhythmhead.data.synthetic import make_synthetic_store
    from rhythmhead.inference.bundle import load_bundle, load_motion
    from rhythmhead.inference.reference import encode_motion

    store = make_synthetic_store(tmp_path / "store", n_clips=2, n_frames=30)
    runs = _runs(tiny_bundle, tmp_path)
    out = tool.make_bundle(tmp_path / "bundle", runs["motion"], runs["expression"], runs["generator"],
                           ablations={"no_warp": runs["no_warp"]}, style_store=store.root, echo=lambda m: None)
    bundle = load_bundle(out)
    assert set(bundle.ablations) == {"no_warp"} and (out / "motion.json").is_file()
    # the style is the mean of the per-clip layers
    phi = load_motion(out / "motion.safetensors")
    layers = []
    with torch.no_grad():
        for clip_id in store.ids():
            w, b = encode_motion(phi, store.track(clip_id)["pose"], store.audio(clip_id, phi.audio_rate), "cpu")
            layers.append(w[0].numpy())
    np.testing.assert_allclose(bundle.style.weight, np.mean(layers, 0), rtol=1e-5, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_make_bundle_refuses_a_wrong_stage_and_leaves_nothing(tool, tiny_bundle, tmp_path):
    from rhythmhead.errors import InputError

    runs = _runs(tiny_bundle, tmp_path)
    with pytest.raises(InputError, match="expected 'generator'"):
        tool.make_bundle(tmp_path / "bundle", runs["motion"], runs["expression"], runs["motion"] / "export" /
                         "motion.safetensors", echo=lambda m: None)
    assert not (tmp_path / "bundle").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]
