"""`rhythmhead bench serve` on the tiny random bundle: every client ends with its video or a 429."""
from __future__ import annotations


def test_bench_serve_accounts_for_every_client(tiny_bundle):
    from rhythmhead.bench.serve import run

    out = run("fast", clients=3, seconds=1.0, models=str(tiny_bundle), queue=1)["serve"]
    assert out["accounted"] and out["failed"] == 0, out["errors"]
    assert out["done"] >= 1 and out["done"] + out["rejected_429"] == 3
    assert out["jobs_per_min"] > 0 and 0 < out["p50_s"] <= out["p95_s"] and out["peak_mb"] > 0
    assert out["frames_per_job"] == 25
