"""The CPU number format: the probe chooses by measured speed, a forced choice is honoured, and bf16 training (with
packed attention and trained-positions-only loss) lands where fp32 does."""

import dataclasses
import json

import pytest
import torch

from studio import precision, train
from studio.config import TINY_TEST_MODEL, RunConfig
from studio.errors import ConfigError
from studio.events import read_events, replay

from .test_train import tiny_config


def fake_timer(seconds: dict[str, float]):
    calls = []

    def timer(dtype_name, threads, shape):
        calls.append((dtype_name, threads, shape))
        return seconds[dtype_name]

    timer.calls = calls
    return timer


def test_probe_picks_bf16_only_when_clearly_faster():
    faster = precision.measure(threads=2, timer=fake_timer({"fp32": 0.010, "bf16": 0.004}))  # 2.5x
    assert faster.name == "bf16" and faster.bf16
    assert "2.50x the speed of fp32" in faster.reason and "GFLOP" not in faster.reason
    assert faster.peak_flops == pytest.approx(precision.PROBE_FLOPS / 0.004)
    slower = precision.measure(threads=2, timer=fake_timer({"fp32": 0.005, "bf16": 0.100}))  # emulated: 20x slower
    assert slower.name == "fp32" and "0.05x the speed of fp32" in slower.reason
    assert slower.peak_flops == pytest.approx(precision.PROBE_FLOPS / 0.005)
    # A small gain does not pay for bf16's rounding: the threshold decides, both sides of it.
    assert precision.measure(timer=fake_timer({"fp32": 0.0125, "bf16": 0.010})).name == "fp32"  # 1.25x
    assert precision.measure(timer=fake_timer({"fp32": 0.0135, "bf16": 0.010})).name == "bf16"  # 1.35x
    timer = fake_timer({"fp32": 0.01, "bf16": 0.01})
    shape = (512, 64, 128)
    assert precision.measure(threads=3, shape=shape, timer=timer).fp32_flops == pytest.approx(2 * 512 * 64 * 128 / 0.01)
    # Both formats, at the thread count and the model's shape asked for.
    assert sorted(set(timer.calls)) == [("bf16", 3, shape), ("fp32", 3, shape)]


def test_one_slow_round_from_a_busy_neighbour_does_not_decide():
    """Seen on a shared machine: fp32 slowed 60x for one round while a benchmark ran beside it. The median of the
    rounds' ratios keeps the choice on what the processor does, not on that moment."""
    rounds = iter([0.500, 0.010, 0.010, 0.010, 0.010, 0.010])  # fp32, bf16 per round: the first fp32 is stalled

    def timer(dtype_name, threads, shape):
        return next(rounds)

    chosen = precision.measure(timer=timer)
    assert chosen.name == "fp32" and "1.00x" in chosen.reason


def test_real_probe_is_short_and_follows_the_model_shape():
    import time

    t0 = time.perf_counter()
    chosen = precision.choose("auto", threads=1)
    assert time.perf_counter() - t0 < 1.5  # a few hundred ms; generous for a busy shared machine
    assert chosen.name in ("fp32", "bf16") and chosen.fp32_flops > 0 and chosen.bf16_flops > 0
    assert precision.choose("auto", threads=1) is chosen  # measured once per process
    from studio import models

    tiny = precision.model_shape(models.load_config(TINY_TEST_MODEL))
    assert tiny == (512, 64, 128)
    # The tiny model's products are too small for bf16 to repay its casts, on any processor: fp32.
    assert precision.choose("auto", shape=tiny).name == "fp32"


def test_forced_precision_is_taken_without_probing():
    for name in ("fp32", "bf16"):
        chosen = precision.choose(name)
        assert chosen.name == name and chosen.reason == "chosen in settings" and chosen.fp32_flops is None


def test_config_field_is_validated_and_old_files_load(tmp_path):
    assert RunConfig().cpu_precision == "auto"
    with pytest.raises(ConfigError, match="cpu_precision"):
        RunConfig(cpu_precision="fp16")
    old = RunConfig().to_dict()
    del old["cpu_precision"]  # a config file written before the field existed
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    assert RunConfig.load(path).cpu_precision == "auto"


def _run(config: RunConfig, run_dir):
    status = train.run(config, run_dir)
    assert status == "finished", (run_dir / "worker.log").read_text()[-2000:]
    events = read_events(run_dir)
    return next(e for e in events if e["type"] == "start"), replay(events)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU precision applies on a CPU")
def test_forced_bf16_and_fp32_runs_train_and_agree(tiny_data, tmp_path):
    # Packed rows with per-example attention and the trained-positions-only loss: the studio's fast path, in both.
    config = tiny_config(tiny_data, validation_path=str(tiny_data), max_steps=12, eval_every=0)
    assert config.packing and train.VARLEN_ATTENTION and train.TRAINED_LOGITS_ONLY
    results = {}
    for name in ("fp32", "bf16"):
        start, history = _run(dataclasses.replace(config, cpu_precision=name), tmp_path / name)
        assert start["cpu_precision"] == name and start["cpu_precision_reason"] == "chosen in settings"
        assert "cpu precision: %s" % name in (tmp_path / name / "worker.log").read_text()
        results[name] = history
    fp32, bf16 = results["fp32"].eval_loss, results["bf16"].eval_loss
    assert fp32[-1] < 0.7 * fp32[0] and bf16[-1] < 0.7 * bf16[0]  # both learn the memorised answers
    # Same examples, same seed: bf16 rounding moves the validation loss a little, not the outcome.
    assert bf16[0] == pytest.approx(fp32[0], rel=0.02)
    assert bf16[-1] == pytest.approx(fp32[-1], rel=0.02)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU precision applies on a CPU")
def test_bf16_holds_base_weights_in_bf16_and_computes_in_bf16(tiny_data):
    config = tiny_config(tiny_data, cpu_precision="bf16")
    model = train.build_model(config, "lora32", precision=precision.choose("bf16"))
    base = model.get_base_model()
    linear = [m for m in base.modules() if isinstance(m, torch.nn.Linear) and m is not base.get_output_embeddings()]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    # Every frozen weight, embeddings and norms included: the residual stream stays bf16, nothing to cast.
    assert frozen and all(w.dtype == torch.bfloat16 for w in frozen)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)  # LoRA weights and so their Adam state
    assert base.get_input_embeddings().weight.dtype == torch.bfloat16
    # The trainer's forward runs under bf16 autocast: a linear layer's output comes out bf16, the loss fp32.
    seen = []
    hook = linear[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    trainer_class = train.studio_trainer_class()
    trainer = trainer_class.__new__(trainer_class)
    trainer.cpu_bf16 = True
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    loss = trainer.compute_loss(model, {"input_ids": ids, "labels": ids.clone(), "position_ids": torch.arange(6)[None]})
    hook.remove()
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU precision applies on a CPU")
def test_automatic_run_says_what_the_probe_measured(tiny_data, tmp_path):
    start, _ = _run(tiny_config(tiny_data, max_steps=2, eval_every=0, validation_fraction=0.0), tmp_path / "auto")
    assert start["cpu_precision"] == "fp32"  # the tiny model's products: see the probe test above
    assert "quick test" in start["cpu_precision_reason"] and "the speed of fp32" in start["cpu_precision_reason"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU precision applies on a CPU")
def test_estimate_uses_the_precision_chosen(tiny_data, monkeypatch):
    from studio import estimate

    asked = []
    monkeypatch.setattr(estimate, "measured_speed", lambda model, key: asked.append(key))
    speeds = {}
    for name in ("fp32", "bf16"):
        config = RunConfig(model=TINY_TEST_MODEL, data_path=str(tiny_data), max_steps=4, cpu_precision=name)
        speeds[name] = estimate.estimate_run(config).tokens_per_s
    assert speeds["bf16"] == pytest.approx(estimate.CPU_BF16_STEP_GAIN * speeds["fp32"])
    assert asked == ["lora32", "lora32+bf16"]  # a bf16 run's measured speed is its own record


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU precision applies on a CPU")
def test_chat_follows_the_run_precision(tiny_data, tmp_path):
    from studio.chat import ChatSession, GenerationSettings

    run_dir = tmp_path / "bf16"
    _run(tiny_config(tiny_data, max_steps=2, eval_every=0, validation_fraction=0.0, cpu_precision="bf16"), run_dir)
    session = ChatSession.for_run(run_dir, check_gpu=False)
    assert session.precision.name == "bf16" and session.precision.reason == "chosen in settings"
    assert {p.dtype for p in session.model.parameters()} == {torch.bfloat16}
    assert session.lean_layers > 0  # the lean LoRA forward still applies: base and adapter share one dtype
    base, tuned = session.compare("Who runs the Zorblax bakery?", GenerationSettings(max_new_tokens=4))
    assert isinstance(base, str) and isinstance(tuned, str)
    plain = ChatSession(TINY_TEST_MODEL, cpu_precision="fp32")
    assert plain.precision.name == "fp32" and {p.dtype for p in plain.model.parameters()} == {torch.float32}


def test_chat_measures_the_shape_of_writing_an_answer_one_token_at_a_time(monkeypatch):
    """Training's products have hundreds of rows; an answer is written a row at a time, where bf16 can lose even on
    a processor whose bf16 training runs 3x faster. The chat's automatic choice probes that shape."""
    from studio.chat import ChatSession

    asked = []
    real = precision.choose
    monkeypatch.setattr(precision, "choose", lambda setting, threads=None, shape=None: (
        asked.append(shape), real(setting, threads, shape))[1])
    ChatSession(TINY_TEST_MODEL, cpu_precision="auto")
    assert asked == [(precision.DECODE_TOKENS, 64, 128)] and precision.DECODE_TOKENS == 1


def test_the_report_card_measures_the_shape_of_its_batches_and_caches_each_precision_apart(tiny_data, tmp_path,
                                                                                          monkeypatch):
    """The report card writes answers GENERATE_ROWS rows at a time, where bf16 can win though a single row loses:
    its automatic choice probes that shape. The base model's cached results are kept per precision: bf16 and fp32
    answers part after some tokens."""
    from studio import evaluate
    from studio.chat import ChatSession

    run_dir = tmp_path / "run"
    assert train.run(tiny_config(tiny_data, max_steps=2, eval_every=0, cpu_precision="auto"), run_dir) == "finished"
    asked = []
    monkeypatch.setattr(precision, "_measured", lambda threads, shape: (
        asked.append(shape), precision.Precision("bf16" if shape[0] > 1 else "fp32", "measured"))[1])
    batched = ChatSession.for_run(run_dir, check_gpu=False, rows_at_once=evaluate.GENERATE_ROWS)
    single = ChatSession.for_run(run_dir, check_gpu=False)
    assert [shape[0] for shape in asked] == [evaluate.GENERATE_ROWS, precision.DECODE_TOKENS]
    assert (batched.precision.name, single.precision.name) == ("bf16", "fp32")
    assert evaluate.BaseCache._model_key(batched) != evaluate.BaseCache._model_key(single)
