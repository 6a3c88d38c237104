import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from rhythmhead.config import ConfigError, bounded, from_dict, load_config
from rhythmhead.errors import InputError
from rhythmhead.training.motion_task import MotionConfig


@dataclass(frozen=True)
class Optim:
    lr: float = 1.0
    steps: int = 1
    name: str = "adam"
    decay: float | None = None


@dataclass(frozen=True)
class Cfg:
    optim: Optim = field(default_factory=Optim)
    sizes: tuple[int, ...] = (1,)


def test_strings_become_numbers_where_the_field_is_numeric():
    cfg = from_dict(Cfg, {"optim": {"lr": "1e-3", "steps": "200", "name": "1e-3", "decay": "2e-5"}, "sizes": [2, 3]})
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.steps == 200 and isinstance(cfg.optim.steps, int)
    assert cfg.optim.name == "1e-3"
    assert cfg.optim.decay == pytest.approx(2e-5)
    assert cfg.sizes == (2, 3)


def test_bad_values_and_unknown_fields_are_input_errors():
    with pytest.raises(InputError, match="expected a float"):
        from_dict(Cfg, {"optim": {"lr": "fast"}})
    with pytest.raises(InputError, match="unknown config field"):
        from_dict(Cfg, {"optimiser": {}})


# ---- ranges, types and where a bad value came from


@dataclass(frozen=True)
class Ranged:
    count: int = bounded(1, ge=1)
    rate: float = bounded(0.1, gt=0)
    share: float = bounded(0.5, ge=0, le=1)
    betas: tuple[float, float] = bounded((0.9, 0.99), ge=0, lt=1)
    mode: Literal["a", "b"] = "a"
    free: float = 0.0


@dataclass(frozen=True)
class Outer:
    inner: Ranged = field(default_factory=Ranged)


@pytest.mark.parametrize("inner, message", [
    ({"count": 0}, "inner.count must be ≥ 1, got 0"),
    ({"count": "-4"}, "inner.count must be ≥ 1, got -4"),
    ({"rate": 0.0}, "inner.rate must be > 0, got 0.0"),
    ({"rate": "nan"}, "inner.rate must be finite, got nan"),
    ({"free": float("inf")}, "inner.free must be finite, got inf"),
    ({"share": 2}, "inner.share must be from 0 to 1, got 2"),
    ({"betas": [0.9, 1.0]}, "inner.betas must be ≥ 0 and < 1, got [0.9, 1.0]"),
    ({"betas": [0.9]}, "inner.betas: expected 2 values, got [0.9]"),
    ({"betas": 0.9}, "inner.betas: expected a list, got 0.9"),
    ({"count": 2.5}, "inner.count: expected an int, got 2.5"),
    ({"count": True}, "inner.count: expected an int, got True"),
    ({"count": "lots"}, "inner.count: expected an int, got 'lots'"),
    ({"mode": "c"}, "inner.mode must be one of a, b, got 'c'"),
])
def test_out_of_range_and_mistyped_values_name_the_dotted_key(inner, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, {"inner": inner})
    assert str(info.value) == message and info.value.key.startswith("inner.")


def test_values_in_range_pass_and_keep_their_type():
    cfg = from_dict(Outer, {"inner": {"count": "3", "rate": "1e-3", "share": 1, "betas": [0, 0.5], "mode": "b"}})
    assert cfg.inner == Ranged(count=3, rate=1e-3, share=1, betas=(0, 0.5), mode="b")
    assert isinstance(cfg.inner.count, int)
    assert from_dict(Outer, {"inner": {"count": 4.0}}).inner.count == 4


def test_a_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="inner must be a mapping"):
        from_dict(Outer, {"inner": 5})


def test_from_dict_names_where_the_data_came_from():
    with pytest.raises(InputError, match=r"^run\.yaml: inner\.count must be ≥ 1, got 0$"):
        from_dict(Outer, {"inner": {"count": 0}}, where="run.yaml")


def test_load_config_names_the_file_that_set_the_bad_value(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("trainer:\n  batch_size: -4\n  colour: red\n")
    with pytest.raises(InputError, match=r"c\.yaml: unknown config field\(s\) colour in trainer \(known: batch_size"):
        load_config(MotionConfig, "motion", "fast", bad)
    bad.write_text("trainer:\n  batch_size: -4\n")
    with pytest.raises(InputError, match=r"^.*c\.yaml: trainer\.batch_size must be ≥ 1, got -4$"):
        load_config(MotionConfig, "motion", "fast", bad)
    # a later dict layer (the command line's --set) that fixes it wins; one that breaks it is reported without a file
    assert load_config(MotionConfig, "motion", "fast", [bad, {"trainer": {"batch_size": 2}}]).trainer.batch_size == 2
    good = tmp_path / "good.yaml"
    good.write_text("optim:\n  lr: 1e-3\n")
    with pytest.raises(InputError, match=r"^optim\.lr must be > 0, got -1$"):
        load_config(MotionConfig, "motion", "fast", [good, {"optim": {"lr": -1}}])


@pytest.mark.parametrize("key, value", [
    ("trainer.batch_size", 0), ("trainer.max_steps", -1), ("trainer.log_every", 0), ("trainer.val_every", -1),
    ("trainer.checkpoint_every", -3), ("trainer.checkpoint_minutes", -1.0), ("trainer.keep_last", 0),
    ("trainer.num_workers", -1), ("optim.lr", float("nan")), ("optim.lr", 0), ("optim.betas", [0.9, 1.0]),
    ("optim.weight_decay", -1e-5), ("data.val_fraction", 1.5), ("adv_weight", -0.1),
])
def test_stage_configs_check_their_ranges(key, value):
    override: dict = {}
    node = override
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', r'[.]')} must be"):
        load_config(MotionConfig, "motion", "fast", override)


def test_documented_zeros_stay_allowed():
    cfg = load_config(MotionConfig, "motion", "fast", {"trainer": {"val_every": 0, "checkpoint_every": 0,
                                                                   "checkpoint_minutes": 0, "max_steps": 0}})
    assert (cfg.trainer.val_every, cfg.trainer.checkpoint_every, cfg.trainer.checkpoint_minutes) == (0, 0, 0)


def test_every_stage_bounds_its_trainer_optimiser_and_loss_numbers():
    from rhythmhead.training.cli import STAGES, load_task_class

    for stage in STAGES:
        cls = load_task_class(stage).config_class
        for preset in ("fast", "paper"):
            load_config(cls, stage, preset)  # the presets themselves are in range
        for section in ("trainer", "optim", "loss"):
            if section in cls.__dataclass_fields__:
                numbers = [f for f in dataclasses.fields(cls.__dataclass_fields__[section].default_factory)
                           if f.type in ("float", "tuple[float, float]") or f.name in ("batch_size", "lr_half_every")]
                assert all("bounds" in f.metadata for f in numbers), (stage, section)
