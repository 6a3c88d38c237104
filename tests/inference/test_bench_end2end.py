"""The end-to-end benchmark (rhythmhead.bench.end2end) runs and reports every stage (toy networks, 1 s and 2 s)."""
from __future__ import annotations


def test_bench_reports_stages_and_memory_growth(photo_ref):
    from rhythmhead.bench.end2end import run

    out = run("tiny", short_s=1.0, long_s=2.0, device="cpu", reference=photo_ref)
    for stage in ("end2end", "end2end_512", "end2end_paste", "end2end_long", "phi", "psi", "render", "generator", "compose",
                  "encode"):
        assert out[stage]["fps"] > 0, stage
    assert out["end2end"]["frames"] == 25 and out["end2end_long"]["frames"] == 50
    assert out["end2end"]["random_init"] is True and out["end2end"]["peak_mb"] > 0
    growth = out["memory_growth"]
    assert growth["peak_mb_short"] > 0 and growth["long_s"] == 2.0 and growth["mb_per_min"] is not None
    assert out["end2end"]["output"] == [256, 256] and out["end2end_512"]["output"] == [512, 512]
    assert out["end2end_paste"]["output"] == list(photo_ref.source_size)  # pasted back into the photo itself
