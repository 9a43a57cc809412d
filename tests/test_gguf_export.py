"""GGUF export: transformers reads the file back (gguf_file=) and answers with the same greedy tokens as the merged
model, for each architecture offered; others get one sentence."""

from __future__ import annotations

import pytest
import torch

from studio import gguf_export, models, train
from studio.errors import UserError

from .conftest import MEMORISED
from .test_train import tiny_config


def _prompt_ids(tokenizer, question: str):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        return_tensors="pt")
    return ids["input_ids"] if hasattr(ids, "keys") else ids


def _same_greedy_tokens(model_dir, gguf_path, n_prompts: int = 5) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                  dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    gguf_tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    for question, _ in MEMORISED[:n_prompts]:
        ids = _prompt_ids(tokenizer, question)
        want = reference.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1]:].tolist()
        got = loaded.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1]:].tolist()
        assert got == want, question
        assert gguf_tokenizer(question)["input_ids"] == tokenizer(question)["input_ids"]


def test_a_run_exports_to_gguf_with_a_modelfile_and_loads_back_the_same(tiny_data, tmp_path):
    from studio.export import merge_adapter

    run_dir = tmp_path / "runs" / "clinic"
    assert train.run(tiny_config(tiny_data, max_steps=4, eval_every=0, validation_fraction=0.0), run_dir) == "finished"
    out = gguf_export.export_gguf(run_dir, tmp_path / "share" / "clinic.gguf")
    assert out.is_file() and (out.parent / "clinic.Modelfile").read_text().startswith("FROM ./clinic.gguf")
    assert sorted(p.name for p in out.parent.iterdir()) == ["clinic.Modelfile", "clinic.gguf"]  # no merge folder left
    assert gguf_export.ollama_lines(out) == ("ollama create clinic -f clinic.Modelfile", "ollama run clinic")
    _same_greedy_tokens(merge_adapter(run_dir, tmp_path / "merged"), out)
    # The chat template travels in the file, so llama.cpp and Ollama format prompts as training did.
    import gguf

    reader = gguf.GGUFReader(out)
    assert "tokenizer.chat_template" in reader.fields
    # 8-bit: about half the size, and transformers still reads it.
    small = gguf_export.export_gguf(run_dir, tmp_path / "q8" / "clinic-q8.gguf", quant="q8_0")
    assert small.stat().st_size < 0.75 * out.stat().st_size
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(small.parent, gguf_file=small.name)


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3"])
def test_qwen_shaped_models_round_trip(tmp_path, model_type):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.bundled_tokenizer_dir())
    # Qwen3 at its real head size (128): transformers' GGUF reader does not read the key length back and assumes it.
    heads = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16) if model_type == "qwen2" \
        else dict(hidden_size=256, num_attention_heads=2, num_key_value_heads=1, head_dim=128)
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), intermediate_size=128, num_hidden_layers=2,
                                  max_position_embeddings=512, tie_word_embeddings=True, **heads,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (tmp_path / "out").mkdir()
    out = gguf_export.write_gguf(folder, tmp_path / "out" / "m.gguf")
    _same_greedy_tokens(folder, out, n_prompts=2)


def test_other_architectures_and_bad_names_get_one_sentence(tmp_path):
    with pytest.raises(UserError, match="GGUF export supports .*gemma3_text"):
        gguf_export.architecture_of({"model_type": "gemma3_text"})
    with pytest.raises(UserError, match="rope scaling"):
        gguf_export.architecture_of({"model_type": "llama", "rope_parameters": {"rope_type": "yarn"}})
    with pytest.raises(UserError, match=r"\.gguf ending"):
        gguf_export.export_gguf(tmp_path, tmp_path / "model.bin")
    with pytest.raises(UserError, match="not offered"):
        gguf_export.export_gguf(tmp_path, tmp_path / "m.gguf", quant="q2_k")
