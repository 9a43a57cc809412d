"""The Method descriptions: every fact the code asks about a training method comes from its entry."""

import dataclasses

import pytest

from studio import methods, models
from studio.config import METHOD_LABELS, METHODS, OBJECTIVES, RunConfig
from studio.errors import ConfigError


def test_config_choices_and_labels_come_from_the_methods():
    assert METHODS == ("auto", "qlora", "lora16", "lora32")  # the names config files already hold
    assert set(METHOD_LABELS) == set(METHODS)
    for name in ("auto", "qlora", "lora16", "lora32"):
        assert RunConfig(method=name).method == name


def test_resolve_picks_for_the_hardware_and_names_the_fix():
    bnb = {"bitsandbytes"}.__contains__
    assert methods.resolve("auto", cuda=False) is methods.LORA32
    assert methods.resolve("auto", cuda=True) is methods.LORA16
    assert methods.resolve("auto", cuda=True, installed=bnb) is methods.QLORA
    assert methods.resolve("lora32", cuda=True) is methods.LORA32
    with pytest.raises(ConfigError, match="LoRA 16-bit needs a CUDA GPU"):
        methods.resolve("lora16", cuda=False)
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        methods.resolve("qlora", cuda=True)
    with pytest.raises(ConfigError, match="choose one of: auto, qlora"):
        methods.get("dora")


def test_inference_never_merges_into_4_bit_and_uses_fp32_on_a_cpu():
    assert methods.for_inference("qlora", cuda=False) is methods.LORA32
    assert methods.for_inference("qlora", cuda=True) is methods.QLORA  # the 4-bit base it was trained against
    assert methods.for_inference("lora32", cuda=True) is methods.LORA16  # faster in 16-bit, same update
    assert methods.for_inference(None, cuda=True) is methods.LORA16
    assert methods.for_inference("from-a-newer-version", cuda=True) is methods.LORA16


def test_a_new_method_is_one_entry(monkeypatch):
    """Adding a method: an entry in METHODS. The estimate, the resolution and the config accept it without a
    KeyError anywhere (the old estimate looked bytes per parameter up in a dict of three names)."""
    lora8 = dataclasses.replace(methods.LORA16, name="lora8", short="LoRA 8-bit", label="LoRA 8-bit (GPU)",
                                weight_bits=8, bytes_per_param=1.1)
    monkeypatch.setitem(methods.METHODS, "lora8", lora8)
    assert lora8.quantized and lora8.half
    sizes = [models.estimate_memory_gb(7.6, name, 1024, 4) for name in ("qlora", "lora8", "lora16")]
    assert sizes == sorted(sizes)
    assert methods.resolve("lora8", cuda=True) is lora8
    assert methods.for_inference("lora8", cuda=True) is lora8


def test_estimate_takes_auto_as_this_machine_resolves_it():
    assert models.estimate_memory_gb(1.0, "auto", 512, 4) == models.estimate_memory_gb(1.0, "lora32", 512, 4)


def test_precision_facts():
    assert (methods.QLORA.residual_bytes, methods.QLORA.activation_bytes) == (4, 2)  # norms kept in fp32
    assert (methods.LORA16.residual_bytes, methods.LORA16.activation_bytes) == (2, 2)
    assert (methods.LORA32.residual_bytes, methods.LORA32.activation_bytes) == (4, 4)
    assert methods.QLORA.optimizer == "paged_adamw_8bit" and methods.LORA32.optimizer == "adamw_torch"
    assert all(m.saves == "adapter" and m.adapter == "lora" for m in methods.METHODS.values())


def test_automatic_objective_is_dpo_for_preference_pairs_and_supervised_otherwise():
    assert methods.resolve_objective("auto", is_preference_data=True) is methods.DPO
    assert methods.resolve_objective("auto", is_preference_data=False) is methods.SFT
    assert methods.resolve_objective("sft", is_preference_data=True) is methods.SFT  # trains on the chosen answers
    assert methods.resolve_objective("orpo", is_preference_data=True).trainer == "orpo"
    assert set(methods.OBJECTIVE_LABELS) == set(OBJECTIVES)  # one label per choice of the form


@pytest.mark.parametrize("name", ["dpo", "orpo"])
def test_a_preference_objective_on_plain_data_is_refused_with_the_fix(name):
    with pytest.raises(ConfigError, match="preference pairs.*Supervised") as caught:
        methods.resolve_objective(name, is_preference_data=False)
    assert "\n" not in str(caught.value)
