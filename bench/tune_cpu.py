"""The settings search against the full grid it samples from, on the bundled model (CPU).

    python bench/tune_cpu.py [--steps 24] [--rows 120] [--trials 4] [--seq-len 256]

The grid: 3 learning rates x 3 LoRA ranks (alpha = 2 x rank), every cell trained to the end. The tuner: the same
choices (studio.tune with a categorical learning rate over the same three values), `--trials` trials, weak ones
pruned. Both on the same rows of the support sample. Prints the best validation loss each found, the optimizer steps
each spent (the compute), and the two ratios; goal: the tuner within 2% of the grid's best for at most 40% of its
steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio import jobs, train, tune  # noqa: E402
from studio.config import BUNDLED_MODEL, RunConfig  # noqa: E402
from studio.events import read_events, replay  # noqa: E402

LEARNING_RATES = (5e-5, 3e-4, 2e-3)
RANKS = (4, 8, 16)


class GridSpace(tune.SearchSpace):
    """The tuner limited to the grid's own cells, so the two search the same space."""

    def sample(self, trial, base):
        lr = trial.suggest_categorical("learning_rate", list(LEARNING_RATES))
        rank = trial.suggest_categorical("lora_rank", list(RANKS))
        return {"learning_rate": lr, "lora_rank": rank, "lora_alpha": 2 * rank}


def steps_of(run_dir: Path) -> int:
    history = replay(read_events(run_dir))
    return history.train_steps[-1] if history.train_steps else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256, help="cut-off in tokens; shorter rows train faster on CPU")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = (ROOT / "assets/samples/customer_support.jsonl").read_text().splitlines()[:args.rows]
        data = tmp / "rows.jsonl"
        data.write_text("\n".join(rows) + "\n")
        base = RunConfig(model=BUNDLED_MODEL, data_path=str(data), max_steps=args.steps, batch_size=4,
                         max_seq_length=args.seq_len, validation_fraction=0.2, eval_every=max(1, args.steps // 4),
                         save_every=0, report_card=False)  # both sides compared on training compute alone
        runs = tmp / "runs"
        started = time.time()
        grid = []
        for lr, rank in itertools.product(LEARNING_RATES, RANKS):
            config = dataclasses.replace(base, learning_rate=lr, lora_rank=rank, lora_alpha=2 * rank,
                                         run_name=f"grid lr={lr:g} r={rank}")
            run_dir = jobs.create_run_dir(config, runs)
            train.run(config, run_dir)
            grid.append((replay(read_events(run_dir)).best_eval_loss, steps_of(run_dir), lr, rank))
            print(f"grid lr={lr:g} rank={rank}: best validation loss {grid[-1][0]:.4f}", flush=True)
        grid_s = time.time() - started
        started = time.time()
        sweep_dir = tune.new_sweep_dir(runs)
        sweep = tune.Sweep(sweep_dir, base, runs, budget_s=8 * 3600, max_trials=args.trials, space=GridSpace(),
                           seed=0)
        sweep.run()
        tune_s = time.time() - started
        record = tune.read_sweep(sweep_dir)
        tuner_steps = sum(t.get("steps") or 0 for t in record["trials"])
        found = [t["best_val_loss"] for t in record["trials"] if t["status"] == "complete"]
    grid_best = min(g[0] for g in grid)
    grid_steps = sum(g[1] for g in grid)
    tuner_best = min(found) if found else float("nan")
    print(json.dumps({"trials": [{k: t.get(k) for k in ("params", "status", "best_val_loss", "steps")}
                                 for t in record["trials"]]}, indent=1))
    print(f"{'':8} {'best val loss':>14} {'steps':>7} {'minutes':>8}")
    print(f"{'grid':8} {grid_best:>14.4f} {grid_steps:>7} {grid_s / 60:>8.1f}")
    print(f"{'tuner':8} {tuner_best:>14.4f} {tuner_steps:>7} {tune_s / 60:>8.1f}")
    print(f"tuner best / grid best: {tuner_best / grid_best:.3f} (goal <= 1.02); "
          f"tuner steps / grid steps: {tuner_steps / grid_steps:.2f} (goal <= 0.40)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
