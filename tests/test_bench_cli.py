"""`rhythmhead bench` with fake stage benchmarks, and bench.common.measure."""
from __future__ import annotations

import json
import sys
import time
import types

import numpy as np
import pytest

from rhythmhead import bench as bench_mod
from rhythmhead import cli as root_cli
from rhythmhead.bench.common import measure
from rhythmhead.errors import InputError


def test_measure_times_and_sees_native_memory():
    small = measure(lambda: time.sleep(0.05), n_items=5)
    assert small["seconds"] >= 0.05 and small["fps"] == pytest.approx(5 / small["seconds"], rel=1e-2)
    # the peak is measured from the RSS at the call (VmHWM reset): compare with an empty call made just before, not
    # with a peak seen earlier (other tests' threads may have freed memory since)
    base = measure(lambda: None, n_items=1)
    big = measure(lambda: np.ones(600 * 2**20 // 8).sum(), n_items=1)  # a 600 MiB array inside the call
    if big["peak_source"].startswith("VmHWM"):
        assert big["peak_mb"] > base["peak_mb"] + 450, (base, big)
    assert big["peak_mb"] > 500


@pytest.fixture
def fake_benches(monkeypatch):
    mod = types.ModuleType("fake_bench_mod")
    mod.run = lambda preset: {f"train_toy_{preset}": {"fps": 12.5, "peak_mb": 300.0, "note": "text"}}

    def broken(preset):
        raise InputError("no media to measure on", "/nowhere")

    mod.broken = broken
    monkeypatch.setitem(sys.modules, "fake_bench_mod", mod)
    monkeypatch.setattr(bench_mod, "BENCHES", {**bench_mod.BENCHES, "train": "fake_bench_mod:run",
                                               "render": "fake_bench_mod:broken"})


def test_bench_merges_prints_and_writes_json(fake_benches, tmp_path, capsys):
    out = tmp_path / "b" / "bench.json"
    root_cli.main(["bench", "train", "render", "--preset", "paper", "--json", str(out)])
    captured = capsys.readouterr()
    assert "train_toy_paper" in captured.out and "12.50" in captured.out
    data = json.loads(out.read_text())
    assert data["preset"] == "paper" and data["stages"]["train_toy_paper"]["fps"] == 12.5
    assert data["machine"]["cpu_count"] >= 1 and "torch" in data["machine"]
    assert "no media" in data["skipped"]["render"]
    assert "skipped render" in captured.err


def test_bench_rejects_unknown_stage(capsys):
    with pytest.raises(SystemExit) as info:
        root_cli.main(["bench", "nonsense"])
    assert info.value.code == 2


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_measure_on_cuda():
    import torch

    x = torch.randn(1024, 1024, device="cuda")
    out = measure(lambda: (x @ x).sum(), n_items=1, warmup=1, device="cuda")
    assert out["peak_gpu_mb"] >= 4 and out["seconds"] > 0
