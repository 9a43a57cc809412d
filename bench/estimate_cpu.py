"""How close the Settings tab's run-time estimate is to a real run: bundled SmolLM2, 12 steps on CPU.

    python bench/estimate_cpu.py

Prints the estimate (calibrated default, not a speed recorded by an earlier run), the measured wall time of
the same run, and their ratio. Goal: within a factor of 2. A timed check belongs here, not in the test suite,
where another process on the same cores can double the run time.
"""

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio import estimate, train  # noqa: E402
from studio.config import BUNDLED_MODEL, RunConfig  # noqa: E402


def main() -> int:
    estimate.measured_speed = lambda *args: None  # the calibrated default is what a first-time user sees
    config = RunConfig(model=BUNDLED_MODEL, data_path=str(ROOT / "assets/samples/customer_support.jsonl"),
                       max_steps=12, batch_size=4, max_seq_length=256, validation_fraction=0.1, eval_every=0,
                       save_every=0)
    predicted = estimate.estimate_run(config).seconds
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        status = train.run(config, Path(folder) / "run")
    actual = time.time() - started
    ratio = actual / predicted
    print(f"estimate {predicted:.0f} s, actual {actual:.0f} s ({status}), actual/estimate {ratio:.2f} "
          f"(goal: between 0.5 and 2)")
    return 0 if 0.5 <= ratio <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
