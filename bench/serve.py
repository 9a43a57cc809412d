"""Endpoint throughput: `python -m studio serve` answering 1 client, then 4 at once, through the openai client.

    python bench/serve.py [RUN_DIR] [--requests 8] [--max-tokens 48]

Without RUN_DIR a run of the tiny test model is trained first (seconds), so the figure is about the server
(queueing, HTTP, streaming) more than the model; give a run of the bundled model for real-world numbers.
Prints generated tokens/s and mean seconds per request for 1 and for 4 concurrent clients, and their ratio. One
model answers one request at a time, so 4 clients should get about the same total tokens/s as 1 (ratio near 1.0:
no throughput lost to the line), each waiting its turn.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = ["What colour is the sky?", "Who runs the bakery?", "How many moons are there?", "What do people drink?",
             "When does the market open?", "Tell me about the weather.", "What is your name?", "Say hello."]


def tiny_run(folder: Path) -> Path:
    from studio import train
    from studio.config import TINY_TEST_MODEL, RunConfig

    data = folder / "train.jsonl"
    data.write_text("".join(f'{{"prompt": "{q}", "response": "An answer about {q.lower()}"}}\n' for q in QUESTIONS))
    run_dir = folder / "runs" / "bench-serve"
    config = RunConfig(model=TINY_TEST_MODEL, data_path=str(data), max_steps=5, eval_every=0, validation_fraction=0.0)
    assert train.run(config, run_dir) == "finished", (run_dir / "worker.log").read_text()[-2000:]
    return run_dir


def measure(client, model: str, clients: int, requests: int, max_tokens: int) -> tuple[float, float]:
    """(generated tokens per second overall, mean seconds per request) with `clients` threads sharing `requests`."""
    tokens, latencies, lock = [0], [], threading.Lock()

    def worker(offset: int):
        for i in range(offset, requests, clients):
            started = time.perf_counter()
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                max_tokens=max_tokens, temperature=0.7, seed=i)
            with lock:
                tokens[0] += reply.usage.completion_tokens
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return tokens[0] / wall, sum(latencies) / len(latencies)


def main() -> int:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run_dir) if args.run_dir else tiny_run(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "studio", "serve", str(run_dir), "--port", str(port)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ})
        try:
            print(proc.stdout.readline().strip())
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600)
            model = run_dir.resolve().name
            measure(client, model, 1, 1, 4)  # warm-up: first-call costs are not throughput
            one = measure(client, model, 1, args.requests, args.max_tokens)
            four = measure(client, model, 4, args.requests, args.max_tokens)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{'clients':>8} {'tokens/s':>10} {'s/request':>10}")
    print(f"{1:>8} {one[0]:>10.1f} {one[1]:>10.2f}")
    print(f"{4:>8} {four[0]:>10.1f} {four[1]:>10.2f}")
    print(f"4 clients / 1 client, total tokens/s: {four[0] / one[0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
