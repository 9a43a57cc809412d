"""Real QLoRA on CUDA with a model built from a config (random weights; no hub). Skipped without CUDA."""

import json

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    """A 4-layer Qwen2-shaped model with the bundled tokenizer, saved as safetensors."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from studio import models

    folder = tmp_path_factory.mktemp("qwen-small")
    tokenizer = AutoTokenizer.from_pretrained(models.bundled_tokenizer_dir())
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_qlora_trains_4bit_and_adapter_reloads(small_model_dir, tmp_path):
    import bitsandbytes as bnb
    from peft import PeftModel

    from studio import models, train
    from studio.config import RunConfig
    from studio.events import read_events, replay

    from ..conftest import write_messages_jsonl

    data = write_messages_jsonl(tmp_path / "d.jsonl", 40)
    config = RunConfig(model=str(small_model_dir), data_path=str(data), method="auto", max_steps=40,
                       learning_rate=3e-3, batch_size=8, max_seq_length=128, validation_fraction=0.2, eval_every=20,
                       save_every=0, warmup_ratio=0.0)
    assert models.resolve_method(config) == "qlora"
    base = models.load_base_model(config.model, "qlora")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules()), "base is not 4-bit"
    del base
    run_dir = tmp_path / "run"
    assert train.run(config, run_dir) == "finished", (run_dir / "worker.log").read_text()[-3000:]
    history = replay(read_events(run_dir))
    assert history.start["method"] == "qlora"
    assert sum(history.train_loss[-5:]) / 5 < 0.7 * sum(history.train_loss[:5]) / 5
    end = history.end
    print(json.dumps({"tokens_per_s": history.last_log["tokens_per_s"], "peak_memory_gb": end["peak_memory_gb"]}))
    reloaded = PeftModel.from_pretrained(models.load_base_model(config.model, "qlora"), run_dir / "adapter")
    tokenizer = models.load_tokenizer(config.model)
    ids = tokenizer("What colour is the sky on Zorblax?", return_tensors="pt").to("cuda")
    with torch.no_grad():
        assert torch.isfinite(reloaded(**ids).logits).all()
