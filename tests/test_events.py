import json
import subprocess
import sys

from studio.events import EventWriter, read_events, read_status, replay, smooth, write_status


def test_events_replay_into_curves_and_resume_overwrites(tmp_path):
    writer = EventWriter(tmp_path)
    writer.write("start", total_steps=4)
    for step, loss in [(1, 3.0), (2, 2.5), (3, 2.0)]:
        writer.write("log", step=step, loss=loss, learning_rate=1e-4)
    writer.write("eval", step=2, eval_loss=2.7)
    writer.write("checkpoint", step=2, path="checkpoints/checkpoint-2")
    writer.write("end", status="stopped", step=3)
    # A resume from step 2 logs step 3 again: the newer value wins, the end is cleared by the start.
    writer.write("start", total_steps=4, resumed_from=2)
    writer.write("log", step=3, loss=1.9, learning_rate=5e-5)
    writer.write("log", step=4, loss=1.5, learning_rate=0.0)
    writer.close()
    history = replay(read_events(tmp_path))
    assert history.train_steps == [1, 2, 3, 4]
    assert history.train_loss == [3.0, 2.5, 1.9, 1.5]
    assert history.eval_steps == [2] and history.best_eval_loss == 2.7
    assert history.end == {} and history.start["resumed_from"] == 2


def test_half_written_line_is_ignored(tmp_path):
    (tmp_path / "events.jsonl").write_text(json.dumps({"type": "log", "step": 1, "loss": 1.0}) + "\n{\"type\": \"lo")
    assert len(read_events(tmp_path)) == 1


def test_events_read_back_from_a_fresh_process(tmp_path):
    writer = EventWriter(tmp_path)
    writer.write("log", step=1, loss=1.25, learning_rate=0.1)
    writer.close()
    write_status(tmp_path, status="running", step=1)
    code = ("import sys; from studio.events import read_events, replay, read_status; "
            "h = replay(read_events(sys.argv[1])); print(h.train_loss[0], read_status(sys.argv[1])['status'])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1.25", "running"]
    assert read_status(tmp_path)["step"] == 1


def test_smooth_starts_at_first_value_and_follows():
    values = smooth([4.0, 2.0, 2.0, 2.0], 0.5)
    assert values[0] == 4.0 and 2.0 < values[-1] < values[1]


def test_best_validation_loss_is_what_the_adapter_reached_not_the_untouched_model():
    history = replay([{"type": "eval", "step": 0, "eval_loss": 2.0}, {"type": "eval", "step": 10, "eval_loss": 2.4},
                      {"type": "eval", "step": 20, "eval_loss": 2.6}])
    assert history.best_eval_loss == 2.4
    assert replay([{"type": "eval", "step": 0, "eval_loss": 2.0}]).best_eval_loss is None
