"""A run as one GGUF file for llama.cpp, Ollama and LM Studio, with an Ollama Modelfile beside it (named after the
GGUF file, OUT.Modelfile, so an f16 and a q8_0 export in one folder each keep their own).

The adapter is merged into the base weights first (export.merge_adapter, full precision), then the merged folder is
written with the `gguf` package's own writer and tensor-name maps (the ones llama.cpp's converter uses), so the
names and metadata are what llama.cpp expects rather than a list of ours. The tokenizer goes in as llama.cpp's
"gpt2" byte-level BPE (tokens, merges, special ids) with the chat template, so `ollama run` answers in the format
the model was trained on.

Supported: the llama family as llama.cpp names it - llama (SmolLM2, Llama 3.x), mistral (written as llama, as
llama.cpp does), qwen2 and qwen3. Others get one sentence saying to use the merged safetensors instead.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

log = logging.getLogger("studio.gguf_export")

QUANTS = ("f16", "q8_0")


@dataclass(frozen=True)
class GgufArch:
    """How one transformers architecture is written: llama.cpp's architecture, and whether Q and K are permuted
    (llama.cpp stores llama's rotary halves interleaved; the Qwen models use the NeoX layout as transformers does)."""

    gguf_arch: str
    permute_qk: bool
    # llama.cpp's pre-tokenizer names for byte-level BPE; used when a model's own is not known.
    default_pre: str


ARCHITECTURES = {
    "llama": GgufArch("LLAMA", True, "llama-bpe"),
    "mistral": GgufArch("LLAMA", True, "llama-bpe"),
    "qwen2": GgufArch("QWEN2", False, "qwen2"),
    "qwen3": GgufArch("QWEN3", False, "qwen2"),
}
# Pre-tokenizer names llama.cpp knows, by tokenizer family (the regex that splits text before BPE).
KNOWN_PRE = {"smollm": "smollm", "qwen": "qwen2", "llama-3": "llama-bpe", "llama3": "llama-bpe"}


def architecture_of(config: dict) -> GgufArch:
    model_type = config.get("model_type", "")
    if model_type not in ARCHITECTURES:
        raise UserError(f"GGUF export supports the {', '.join(sorted(ARCHITECTURES))} architectures; this model is "
                        f"{model_type or 'of an unknown type'}: export merged weights (--merged) and convert them "
                        f"with llama.cpp's convert_hf_to_gguf.py.")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if (rope.get("rope_type") or "default") != "default":
        raise UserError(f"This model's rope scaling ({rope.get('rope_type')}) is not written to GGUF by Studio yet: "
                        f"export merged weights (--merged) and convert them with llama.cpp's convert_hf_to_gguf.py.")
    return ARCHITECTURES[model_type]


def _permute(weight, n_head: int):
    """llama.cpp's permute for Q and K: the inverse of what transformers' GGUF loader undoes on reading."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape))


def write_gguf(model_dir: str | Path, out_path: str | Path, quant: str = "f16", name: str | None = None) -> Path:
    """Write the transformers model folder `model_dir` (safetensors, config.json, tokenizer) as one GGUF file."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    if quant not in QUANTS:
        raise UserError(f"--quant {quant} is not offered: use one of {', '.join(QUANTS)}.")
    model_dir, out_path = Path(model_dir), Path(out_path)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = architecture_of(config)
    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // n_head
    arch_id = getattr(gguf.MODEL_ARCH, arch.gguf_arch)
    names = gguf.get_tensor_name_map(arch_id, n_layers)

    tmp = out_path.with_name(f".{out_path.name}.tmp")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch_id])
    writer.add_name(name or model_dir.name)
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    rope = config.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))
    file_type = gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    writer.add_file_type(file_type)

    n_vocab = _add_tokenizer(writer, model_dir, config, arch)

    tied = bool(config.get("tie_word_embeddings"))
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir} holds no safetensors weights to convert.")
    for file in files:
        with safe_open(str(file), framework="np") as f:
            for key in f.keys():
                if tied and key == "lm_head.weight":
                    continue  # llama.cpp reuses the embedding when there is no output tensor
                tensor = f.get_tensor(key).astype(np.float32)
                base, _, suffix = key.rpartition(".")
                target = names.get_name(base)
                if target is None:
                    raise UserError(f"The tensor {key} has no GGUF name for {arch.gguf_arch.lower()}: export merged "
                                    f"weights (--merged) instead.")
                if arch.permute_qk and base.endswith("self_attn.q_proj"):
                    tensor = _permute(tensor, n_head)
                elif arch.permute_qk and base.endswith("self_attn.k_proj"):
                    tensor = _permute(tensor, n_kv)
                if base == "model.embed_tokens" and tensor.shape[0] < n_vocab:
                    tensor = np.concatenate([tensor, np.zeros((n_vocab - tensor.shape[0], tensor.shape[1]),
                                                              dtype=tensor.dtype)])
                _add_tensor(writer, f"{target}.{suffix}", tensor, quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out_path)
    return out_path


def _add_tensor(writer, name: str, tensor, quant: str) -> None:
    import gguf
    import numpy as np

    # 1-D tensors (norms, biases) stay float32, as llama.cpp's converter keeps them: they are tiny and sensitive.
    if tensor.ndim == 1:
        writer.add_tensor(name, tensor.astype(np.float32))
    elif quant == "q8_0" and tensor.shape[-1] % 32 == 0:
        data = gguf.quants.quantize(tensor, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, tensor.astype(np.float16))


def _add_tokenizer(writer, model_dir: Path, config: dict, arch: GgufArch) -> int:
    """Tokens, types, merges and special ids as llama.cpp's 'gpt2' BPE; returns the vocabulary size written."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if spec.get("model", {}).get("type") != "BPE":
        raise UserError("GGUF export supports byte-level BPE tokenizers (Llama 3, Qwen, SmolLM): export merged "
                        "weights (--merged) and convert them with llama.cpp.")
    n_vocab = max(config.get("vocab_size") or 0, len(tokenizer))
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(n_vocab):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added[token].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    name = (config.get("_name_or_path") or model_dir.name).lower()
    writer.add_tokenizer_pre(next((pre for key, pre in KNOWN_PRE.items() if key in name), arch.default_pre))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # Merges, special token ids (bos, eos, pad, ...) and the chat template, read as llama.cpp's converter reads them.
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab).add_to_gguf(writer)
    return n_vocab


def modelfile(gguf_name: str, model_dir: Path) -> str:
    """An Ollama Modelfile for the GGUF beside it: the template comes from the GGUF's own chat template."""
    generation = model_dir / "generation_config.json"
    lines = [f"FROM ./{gguf_name}", "PARAMETER temperature 0.7"]
    if generation.is_file():
        try:
            cfg = json.loads(generation.read_text(encoding="utf-8"))
            if cfg.get("repetition_penalty"):
                lines.append(f"PARAMETER repeat_penalty {cfg['repetition_penalty']}")
        except ValueError:
            pass
    return "\n".join(lines) + "\n"


def modelfile_path(gguf_path: str | Path) -> Path:
    """The Ollama Modelfile beside a GGUF file: OUT.gguf -> OUT.Modelfile."""
    gguf_path = Path(gguf_path)
    return gguf_path.with_name(f"{gguf_path.stem}.Modelfile")


def ollama_lines(gguf_path: str | Path) -> tuple[str, str]:
    """(ollama create ..., ollama run ...) for the GGUF's Modelfile, run in the GGUF's folder. Ollama model names
    are lower case letters, digits, '.', '_' and '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", Path(gguf_path).stem.lower()).strip("-.") or "model"
    return f"ollama create {name} -f {modelfile_path(gguf_path).name}", f"ollama run {name}"


def export_gguf(run_dir: str | Path, out_path: str | Path, quant: str = "f16") -> Path:
    """Merge the run's adapter and write OUT.gguf plus an Ollama `OUT.Modelfile` in the same folder."""
    from .export import merge_adapter

    run_dir, out_path = Path(run_dir), Path(out_path)
    if out_path.suffix.lower() != ".gguf":
        raise UserError(f"{out_path.name}: name the file with a .gguf ending, e.g. my-model.gguf.")
    if quant not in QUANTS:
        raise UserError(f"--quant {quant} is not offered: use one of {', '.join(QUANTS)}.")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".merge-", dir=out_path.parent) as tmp:
        merged = merge_adapter(run_dir, Path(tmp) / "merged")
        architecture_of(json.loads((merged / "config.json").read_text(encoding="utf-8")))
        try:
            write_gguf(merged, out_path, quant, name=run_dir.name)
            modelfile_path(out_path).write_text(modelfile(out_path.name, merged), encoding="utf-8")
        except OSError as err:
            raise UserError(f"The GGUF file could not be written to {out_path} ({err.strerror or err}): check the "
                            f"free disk space and permissions.") from err
        finally:
            shutil.rmtree(Path(tmp) / "merged", ignore_errors=True)
    return out_path
