import click
import pytest

from rhythmhead.cli import COMMANDS
from rhythmhead.evaluation.cli import EVALUATIONS
from rhythmhead.bench import BENCHES
from rhythmhead.lazy import load
from rhythmhead.training.cli import STAGES
from rhythmhead.training.task import TrainTask


@pytest.mark.parametrize("target", sorted(COMMANDS.values()) + sorted(EVALUATIONS.values()))
def test_every_command_in_the_tables_imports(target):
    assert isinstance(load(target), click.Command)


@pytest.mark.parametrize("target", sorted(STAGES.values()))
def test_every_training_stage_is_a_task(target):
    assert issubclass(load(target), TrainTask)


@pytest.mark.parametrize("target", sorted(BENCHES.values()))
def test_every_bench_is_callable(target):
    assert callable(load(target))
