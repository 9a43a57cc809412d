"""Model choice: offline errors are quick and clear; methods; memory estimates; the run estimate."""

import time

import pytest

from studio import models
from studio.config import BUNDLED_MODEL, TINY_TEST_MODEL, RunConfig
from studio.errors import ConfigError, ModelError


@pytest.mark.parametrize("name,words", [
    ("nobody/surely-not-a-model-xyz", ["hub"]),
    ("not a model id", ["neither a local folder nor a hub id"]),
    ("/no/such/folder", ["does not exist"]),
])
def test_bad_model_ids_fail_fast_and_clearly(name, words):
    from transformers import AutoConfig, AutoTokenizer  # noqa: F401 - imports are not what we time

    started = time.time()
    with pytest.raises(ModelError) as info:
        models.load_tokenizer(name)
    assert time.time() - started < 10
    for word in words:
        assert word in str(info.value)


def test_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="no .safetensors"):
        models.resolve_model_source(str(tmp_path))


def test_local_folder_loads(tmp_path):
    folder = models.tiny_test_model_dir()
    assert models.resolve_model_source(str(folder)) == str(folder)
    assert models.has_chat_template(models.load_tokenizer(str(folder)))


def test_method_resolution_on_cpu():
    assert models.resolve_method(RunConfig(method="auto")) == "lora32"
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        models.resolve_method(RunConfig(method="qlora"))


def test_qlora_config_is_nf4_double_quant():
    config = models.bnb_config("qlora")
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert models.bnb_config("lora32") is None
    lora = models.lora_config(RunConfig(lora_rank=4, lora_alpha=8, target_modules="q_proj, v_proj"))
    assert lora.r == 4 and set(lora.target_modules) == {"q_proj", "v_proj"}


def test_memory_estimate_orders_methods_and_badges():
    q = models.estimate_memory_gb(7.6, "qlora", 1024, 4)
    h = models.estimate_memory_gb(7.6, "lora16", 1024, 4)
    f = models.estimate_memory_gb(7.6, "lora32", 1024, 4)
    assert q < h < f
    assert 4 < q < 16  # published QLoRA figures for 7B: about 6-10 GB
    assert models.fit_badge(q, 24) == "fits" and models.fit_badge(h, 12) == "too big"


def test_run_estimate_counts_steps_and_tokens(tiny_data, monkeypatch):
    from studio import estimate

    monkeypatch.setattr(estimate, "measured_speed", lambda *a: None)
    config = RunConfig(model=TINY_TEST_MODEL, data_path=str(tiny_data), max_steps=0, epochs=2, batch_size=4,
                       validation_fraction=0.2)
    result = estimate.estimate_run(config)
    assert result.steps == 8  # 16 training rows / 4 per step x 2 epochs
    assert result.tokens > 0 and result.seconds > 0 and result.fit == "fits"
    assert "calibrated" in result.basis and "steps" in result.summary()


def test_the_tokenizer_files_alone_are_enough_for_the_test_models(tmp_path, monkeypatch):
    # A GPU machine without the bundled package gets only the tokenizer files: the tiny test model still builds.
    import shutil

    source = models.bundled_model_dir()
    target = tmp_path / "cache" / "SmolLM2-135M-Instruct"
    target.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "bundled_model_dir", lambda: pytest.fail("needed the bundled weights"))
    tokenizer = models.load_tokenizer(BUNDLED_MODEL)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False).count("<|im_start|>") >= 2
    assert (models.tiny_test_model_dir() / "config.json").is_file()


def test_cuda_without_bitsandbytes_falls_back_or_names_the_fix(monkeypatch):
    """A GPU machine set up without the gpu extra: Automatic trains LoRA 16-bit, an explicit QLoRA says what to
    install, instead of transformers' ImportError in the middle of a run."""
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(models, "package_installed", lambda name: False)
    assert models.resolve_method(RunConfig(method="auto")) == "lora16"
    with pytest.raises(ConfigError, match="pip install bitsandbytes"):
        models.resolve_method(RunConfig(method="qlora"))
    monkeypatch.setattr(models, "package_installed", lambda name: name == "bitsandbytes")
    assert models.resolve_method(RunConfig(method="auto")) == "qlora"
