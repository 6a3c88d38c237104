"""Tests for ``rhythmhead evaluate render`` and the render benchmark on a synthetic store."""
from __future__ import annotations

import json

import pytest

from rhythmhead.data.synthetic import make_synthetic_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_synthetic_store(tmp_path_factory.mktemp("render") / "store", n_clips=2, n_frames=24, seed=5)


def test_render_beats_the_static_key_frame(store, tmp_path):
    from rhythmhead.evaluation.render import evaluate_render

    settings, methods = evaluate_render(store.root, stride=3, max_frames=6, examples=tmp_path / "png")
    assert set(methods) == {"render", "static", "render_face", "static_face"}
    assert settings["clips"] == store.ids()
    for render, static in (("render", "static"), ("render_face", "static_face")):
        assert methods[render]["psnr_db"] > methods[static]["psnr_db"] + 3
        assert methods[render]["ssim"] > methods[static]["ssim"]
        assert methods[render]["coverage"] == methods[static]["coverage"] > 0.05
    assert methods["render"]["coverage"] > methods["render_face"]["coverage"]
    assert len(list((tmp_path / "png").glob("*.png"))) >= 2


def test_cli_writes_report_and_rejects_missing_store(store, tmp_path):
    from rhythmhead.cli import main

    out = tmp_path / "render.json"
    main(["evaluate", "render", "--data", str(store.root), "--out", str(out), "--stride", "6", "--max-frames", "2",
          "--limit", "1"])
    report = json.loads(out.read_text())
    assert report["task"] == "render" and report["settings"]["clips"] == store.ids()[:1]
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "render", "--data", str(tmp_path / "missing"), "--out", str(out)])
    assert exc.value.code == 2


def test_bench_render_reports_fps():
    from rhythmhead.bench.render import run

    out = run("fast", n_frames=3)
    assert set(out) == {"render", "mesh_flow", "warp"}
    assert all(v["fps"] > 0 and v["peak_mb"] > 0 for v in out.values())
