"""One run on two GPUs (torchrun, NCCL): DDP against one GPU, and QLoRA sharded with FSDP. Skipped below 2 GPUs.

What it measures, printed for bench/README.md (run with -s):
- DDP, LoRA 16-bit, 2 GPUs x batch 4 against 1 GPU x batch 8 (same global batch, seed, packing): the final
  training loss within 5%, and tokens per second of the two (expected: about 1.8x);
- FSDP, QLoRA, 2 GPUs: the run finishes, its adapter reloads onto the 4-bit base, and each GPU's peak memory
  (the end event's peak_memory_gb, rank 0's) is below the one-GPU QLoRA run's.
The model is a 4-layer Qwen2 shape with random weights (tests/gpu/test_qlora.py's small_model_dir)."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from studio.config import RunConfig
from studio.events import read_events, replay

from ..conftest import write_messages_jsonl
from .test_qlora import small_model_dir  # noqa: F401 - the fixture

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(tmp_path: Path, name: str, **settings) -> tuple[Path, dict]:
    config = RunConfig(**{"max_steps": 20, "eval_every": 0, "validation_fraction": 0.0, "lora_dropout": 0.0,
                          "warmup_ratio": 0.0, "lr_scheduler": "constant_with_warmup", "report_card": False,
                          "save_every": 0, "master_port": free_port(), **settings})
    path = tmp_path / f"{name}.json"
    config.save(path)
    out = subprocess.run([sys.executable, "-m", "studio", "train", str(path), "--runs-dir", str(tmp_path / name)],
                         capture_output=True, text=True, timeout=540)
    assert out.returncode == 0, out.stderr
    run_dir = Path(out.stdout.strip())
    return run_dir, replay(read_events(run_dir))


def test_ddp_on_two_gpus_matches_one_and_is_faster(small_model_dir, tmp_path):  # noqa: F811
    data = write_messages_jsonl(tmp_path / "train.jsonl", 400)
    common = dict(model=str(small_model_dir), data_path=str(data), method="lora16", max_seq_length=256)
    _, one = train(tmp_path, "one", devices="1", batch_size=8, **common)
    _, two = train(tmp_path, "two", devices="2", batch_size=4, **common)
    assert two.start["processes"] == 2 and two.start["global_batch"] == 8
    assert two.train_loss[-1] == pytest.approx(one.train_loss[-1], rel=0.05)
    speed_one, speed_two = one.last_log["tokens_per_s"], two.last_log["tokens_per_s"]
    print(f"\nDDP: final loss {one.train_loss[-1]:.4f} (1 GPU) {two.train_loss[-1]:.4f} (2 GPUs); tokens/s "
          f"{speed_one:,.0f} -> {speed_two:,.0f} ({speed_two / speed_one:.2f}x)")


def test_qlora_sharded_with_fsdp_on_two_gpus(small_model_dir, tmp_path):  # noqa: F811
    pytest.importorskip("bitsandbytes")
    from peft import PeftModel

    from studio import models

    data = write_messages_jsonl(tmp_path / "train.jsonl", 200)
    common = dict(model=str(small_model_dir), data_path=str(data), method="qlora", batch_size=4, max_seq_length=256)
    _, one = train(tmp_path, "one", devices="1", **common)
    run_dir, two = train(tmp_path, "fsdp", devices="2", sharding="fsdp", **common)
    assert two.end["status"] == "finished" and two.start["processes"] == 2
    base = models.load_base_model(str(small_model_dir), "qlora")
    tuned = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    assert any("lora_" in name for name, _ in tuned.named_parameters())
    print(f"\nFSDP QLoRA: peak {one.end['peak_memory_gb']:.2f} GB (1 GPU) -> "
          f"{two.end['peak_memory_gb']:.2f} GB per GPU (2 GPUs); final loss {one.train_loss[-1]:.4f} / "
          f"{two.train_loss[-1]:.4f}")
    assert two.end["peak_memory_gb"] < one.end["peak_memory_gb"]
