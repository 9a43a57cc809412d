"""What the report card adds to a run: a 300-row CPU run of the bundled model, then its report, timed.

    python bench/report_overhead.py [--data assets/samples/customer_support.jsonl] [--rows 300] [--json FILE]
                                    [--keep FOLDER]

The run is `studio.train.run` with the RunConfig defaults (one epoch, batch 4, a tenth held out: what
`python -m studio train` does with the support sample), timed from start to its adapter on disk, model load
included. Then `studio.evaluate.evaluate_run` on it twice: first with an empty cache of base-model results (a
person's first run on this data), then again (a second run on the same data and base model: only the tuned side is
computed), and the first report once more with generate()'s fixed batches in place of evaluate.greedy_shrinking.
Printed: the seconds of each, each stage of the report, and report / run. Goal: the first report at most
0.25 x the run. Both share the machine in turn, so a busy minute slows the one that runs in it: run it on an idle
machine, or twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio import evaluate, train  # noqa: E402
from studio.config import BUNDLED_MODEL, RunConfig  # noqa: E402


def timed_report(run_dir: Path) -> tuple[float, dict, dict]:
    """(seconds, seconds per stage, report)."""
    stages: dict[str, float] = {}
    marks: list[tuple[str, float]] = []

    def progress(stage: str) -> None:
        marks.append((stage, time.time()))

    started = time.time()
    report = evaluate.evaluate_run(run_dir, progress=progress)
    ended = time.time()
    marks.insert(0, ("load model, data", started))
    for (stage, t0), (_, t1) in zip(marks, marks[1:] + [("", ended)]):
        stages[stage] = t1 - t0
    return ended - started, stages, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "assets/samples/customer_support.jsonl"))
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--json", default=None, help="write the figures to this file too")
    parser.add_argument("--keep", default=None, help="copy the run folder (with its report) here to look at")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        lines = Path(args.data).read_text(encoding="utf-8").splitlines()[:args.rows]
        data_path = folder / "data.jsonl"
        data_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        evaluate.BASE_CACHE_DIR = folder / "report-base"  # empty: the first report computes the base side
        # report_card off: the run is timed without its own report (the worker's report would also fill the base
        # cache, and the "first" report below would then be a second one).
        config = RunConfig(model=BUNDLED_MODEL, data_path=str(data_path), run_name="report-overhead",
                           report_card=False)
        started = time.time()
        status = train.run(config, folder / "run")
        run_s = time.time() - started
        if status != "finished":
            print(f"the run {status}: {(folder / 'run' / 'worker.log').read_text()[-2000:]}")
            return 1
        first_s, first_stages, report = timed_report(folder / "run")
        second_s, second_stages, _ = timed_report(folder / "run")
        # The same first report with generate()'s fixed batches (a finished answer computed until its batch ends):
        # what evaluate.greedy_shrinking pays, measured on this machine in this run.
        evaluate.BASE_CACHE_DIR = folder / "report-base-generate"
        evaluate.SHRINKING_BATCH = False
        fixed_s, fixed_stages, _ = timed_report(folder / "run")
        evaluate.SHRINKING_BATCH = True
        if args.keep:
            import shutil

            shutil.copytree(folder / "run", args.keep, dirs_exist_ok=True)
    figures = {"rows": len(lines), "run_s": run_s, "report_first_s": first_s, "report_second_s": second_s,
               "first_over_run": first_s / run_s, "second_over_run": second_s / run_s,
               "first_stages": first_stages, "second_stages": second_stages,
               "first_with_generate_s": fixed_s, "first_with_generate_stages": fixed_stages,
               "task_rows": report["task"]["rows"], "probes": report["general"]["probes"],
               "parroting_rows": report["parroting"]["train"]["rows"], "verdict": report["verdict"]["text"]}
    print(f"run ({len(lines)} rows, bundled model, CPU): {run_s:.0f} s")
    for name, seconds, stages in (("first report", first_s, first_stages),
                                  ("second report", second_s, second_stages),
                                  ("first report, generate()'s fixed batches", fixed_s, fixed_stages)):
        detail = ", ".join(f"{stage} {s:.0f} s" for stage, s in stages.items())
        print(f"{name}: {seconds:.0f} s = {seconds / run_s:.2f} x the run ({detail})")
    print(f"shrinking batches: first report {fixed_s / first_s:.2f}x faster than with generate()")
    print(f"goal: first report at most 0.25 x the run: {'met' if first_s <= 0.25 * run_s else 'NOT met'}")
    print(f"verdict: {report['verdict']['text']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
