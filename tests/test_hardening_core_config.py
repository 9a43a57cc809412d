"""Issue 12: a setting that is not a finite number, or not a whole one where a whole one is needed, is refused with
a sentence naming the field and the fix; values already in users' files keep working."""

import math

import pytest

from studio.config import RunConfig
from studio.errors import ConfigError


@pytest.mark.parametrize("field,value", [
    ("learning_rate", float("nan")), ("learning_rate", "nan"), ("learning_rate", float("inf")),
    ("lora_dropout", float("nan")), ("epochs", "-inf"), ("warmup_ratio", float("nan")),
])
def test_nan_and_infinite_numbers_are_refused(field, value):
    with pytest.raises(ConfigError) as info:
        RunConfig(**{field: value})
    message = str(info.value)
    assert message.startswith(field) and "finite" in message and "set it" in message


@pytest.mark.parametrize("value", [8.5, "8.5", float("nan"), "1e400"])
def test_a_fractional_rank_is_refused_not_rounded(value):
    with pytest.raises(ConfigError) as info:
        RunConfig(lora_rank=value)
    assert str(info.value).startswith("lora_rank") and "whole number" in str(info.value)


@pytest.mark.parametrize("value", [8, 8.0, "8", " 8 ", "8.0"])
def test_whole_numbers_in_any_spelling_still_work(value):
    config = RunConfig(lora_rank=value)
    assert config.lora_rank == 8 and isinstance(config.lora_rank, int)


def test_a_fractional_rank_names_the_nearest_whole_numbers():
    with pytest.raises(ConfigError, match="use 8 or 9"):
        RunConfig(lora_rank=8.5)
    assert math.isfinite(RunConfig(learning_rate="0.001").learning_rate)
