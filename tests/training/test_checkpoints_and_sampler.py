"""Export files (models.checkpoint), training-state helpers, the infinite sampler and stats reduction."""
from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from rhythmhead.errors import InputError
from rhythmhead.models.checkpoint import load_export, save_export
from rhythmhead.training import checkpoint, stats
from rhythmhead.training.distributed import InfiniteSampler


def small_modules():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    tied = nn.Linear(2, 2)
    tied.bias = nn.Parameter(tied.weight[0].detach().clone())
    return {"net": net, "head": tied}


def test_export_round_trip(tmp_path):
    modules = small_modules()
    extra = {"pose_mean": torch.arange(6.0), "count": torch.tensor(7)}
    meta = {"stage": "motion", "config": {"model": {"hidden": [4, 8]}}, "step": 3}
    path = save_export(tmp_path / "export" / "motion", modules, extra, meta)
    assert path.name == "motion.safetensors"
    assert json.loads((tmp_path / "export" / "motion.json").read_text()) == meta
    for where in (path, tmp_path / "export" / "motion.json", tmp_path / "export" / "motion", tmp_path):
        loaded = load_export(where, stage="motion")
        assert loaded.meta == meta and loaded.stage == "motion" and loaded.config == meta["config"]
    assert set(loaded.state_dicts) == {"net", "head"}
    for name, module in modules.items():
        ref = module.state_dict()
        assert set(loaded.state_dicts[name]) == set(ref)
        assert all(torch.equal(loaded.state_dicts[name][k], ref[k]) for k in ref)
        fresh = small_modules()[name]
        fresh.load_state_dict(loaded.state_dicts[name])  # strict: every key present
    assert torch.equal(loaded.extra["pose_mean"], extra["pose_mean"]) and loaded.extra["count"].item() == 7
    assert not list((tmp_path / "export").glob(".*tmp*"))


def test_export_errors_are_one_line_input_errors(tmp_path):
    path = save_export(tmp_path / "motion", small_modules(), {}, {"stage": "motion"})
    with pytest.raises(InputError, match=r"motion\.safetensors: is a 'motion' checkpoint, expected 'generator'"):
        load_export(path, stage="generator")
    with pytest.raises(InputError, match="checkpoint not found"):
        load_export(tmp_path / "nothing.safetensors")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01garbage" * 50)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for bad in (truncated, garbage, empty):
        with pytest.raises(InputError, match="not a readable safetensors checkpoint") as info:
            load_export(bad)
        assert "\n" not in str(info.value) and str(bad) in str(info.value)
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(InputError, match="not a rhythmhead export"):
        load_export(foreign)
    with pytest.raises(ValueError, match="stage"):
        save_export(tmp_path / "x", small_modules(), {}, {})


def test_rng_state_round_trip_is_weights_only_loadable(tmp_path):
    checkpoint.seed_all(5)
    state = checkpoint.rng_state()
    path = checkpoint.save_state(tmp_path, 1, {"format": checkpoint.FORMAT, "rng": [state]})
    expected = (random.random(), np.random.rand(), torch.rand(1))
    loaded = checkpoint.load_state(path)  # weights_only=True inside
    checkpoint.set_rng_state(loaded["rng"][0])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])
    with checkpoint.preserved_rng():
        torch.rand(100), random.random(), np.random.rand(3)
    checkpoint.set_rng_state(loaded["rng"][0])
    again = (random.random(), np.random.rand(), torch.rand(1))
    assert again[:2] == expected[:2]


def test_check_same_names_the_differing_field():
    checkpoint.check_same({"model": {"a": [1, 2]}}, {"model": {"a": (1, 2)}}, "x.pt")
    with pytest.raises(InputError, match=r"model\.b: checkpoint 1 vs now 2"):
        checkpoint.check_same({"model": {"a": 1, "b": 1}}, {"model": {"a": 1, "b": 2}}, "x.pt")


@pytest.mark.parametrize("size,world", [(10, 1), (10, 3), (7, 2), (1, 2)])
def test_infinite_sampler_shards_and_resumes(size, world):
    samplers = [InfiniteSampler(size, r, world, seed=3) for r in range(world)]
    per_rank = samplers[0].per_rank
    epochs = [[list(itertools.islice(iter(s), 2 * per_rank))[e * per_rank:(e + 1) * per_rank] for s in samplers]
              for e in (0, 1)]
    for shards in epochs:
        assert sorted(set(itertools.chain(*shards))) == list(range(size))  # every item each epoch
        assert all(len(s) == per_rank for s in shards)
    assert epochs[0] != epochs[1] or size == 1  # reshuffled each epoch
    stream = list(itertools.islice(iter(InfiniteSampler(size, world - 1, world, seed=3)), 3 * per_rank + 8))
    for start in (0, 1, per_rank, per_rank + 1):
        resumed = list(itertools.islice(iter(InfiniteSampler(size, world - 1, world, seed=3, start=start)), 5))
        assert resumed == stream[start:start + 5]
    assert list(itertools.islice(iter(InfiniteSampler(size, 0, 1, shuffle=False)), size)) == list(range(size))


def test_stats_report_and_collect(tmp_path):
    stats.reset()
    stats.report("Loss/a", 1.0)
    stats.report("Loss/a", torch.tensor([2.0, 3.0]))
    stats.report("Loss/b", torch.tensor(5.0))
    assert stats.collect() == {"Loss/a": 2.0, "Loss/b": 5.0}
    assert stats.collect() == {}
    writer = stats.StatsWriter(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        writer.write(step, {"Loss/a": float(step)})
    with open(writer.path, "a") as f:
        f.write('{"step": 4, "Loss/a"')  # torn line from a killed run
    writer.truncate_after(2)
    assert [json.loads(ln)["step"] for ln in writer.path.read_text().splitlines()] == [1, 2]
