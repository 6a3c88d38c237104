from dataclasses import dataclass, field

import pytest

from rhythmhead.config import from_dict
from rhythmhead.errors import InputError


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
