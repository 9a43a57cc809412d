import json

import pytest

from studio.config import PRESETS, RunConfig, apply_preset, field_help
from studio.errors import ConfigError


def test_defaults_validate_and_round_trip(tmp_path):
    config = RunConfig(data_path="x.jsonl", lora_rank=16)
    path = tmp_path / "c.json"
    config.save(path)
    loaded = RunConfig.load(path)
    assert loaded == config
    assert json.loads(path.read_text())["lora_rank"] == 16


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_parses_and_validates(preset):
    config = apply_preset(RunConfig(), preset)
    for key, value in PRESETS[preset].items():
        assert getattr(config, key) == value
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("field,value,words", [
    ("learning_rate", 0.5, ["learning_rate", "at most"]),
    ("lora_rank", 0, ["lora_rank", "at least"]),
    ("batch_size", "four", ["batch_size", "whole number"]),
    ("method", "magic", ["method", "qlora"]),
    ("packing", "yes", ["packing", "true or false"]),
])
def test_bad_values_name_the_field_and_the_fix(field, value, words):
    with pytest.raises(ConfigError) as info:
        RunConfig(**{field: value})
    for word in words:
        assert word in str(info.value)


def test_unknown_keys_and_bad_json_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="Unknown setting.*lerning_rate"):
        RunConfig.from_dict({"lerning_rate": 1e-4})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "missing.json")


def test_numbers_from_forms_are_coerced():
    config = RunConfig(batch_size=4.0, learning_rate="0.001", epochs=2)
    assert config.batch_size == 4 and isinstance(config.batch_size, int)
    assert config.learning_rate == 0.001 and isinstance(config.epochs, float)


def test_every_field_is_documented_in_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, _, _, help_text in field_help():
        assert f"`{name}`" in readme, f"README does not document {name}"
        assert help_text


def test_terms_have_plain_words_beside_them():
    """A domain expert, not an ML engineer, reads these: each term keeps its name (it is what tutorials use) and
    gets plain words next to it."""
    from studio.config import METHOD_LABELS

    helps = {name: text for name, _, _, text in field_help()}
    assert "L2 penalty, a small pull of the adapter's weights towards 0" in helps["weight_decay"]
    assert "optimizer steps (updates of the model" in helps["max_steps"]
    assert "the size of the adapter" in helps["lora_rank"]
    assert "how strongly the adapter's change is applied" in helps["lora_alpha"]
    assert "trains a small add-on (an adapter) instead of the whole model" in helps["method"]
    assert "word pieces" in helps["max_seq_length"] and "over-fitting (learning" in helps["lora_dropout"]
    for name, label in METHOD_LABELS.items():
        assert "GPU" in label and (name == "auto" or "precision" in label or "bits" in label), label
