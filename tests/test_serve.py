"""`python -m studio serve`: an OpenAI-compatible endpoint, driven by the official `openai` client as users will."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import httpx
import openai
import pytest

from studio import train
from studio.chat import ChatSession, GenerationSettings

from .conftest import MEMORISED, studio_cmd
from .test_train import tiny_config

KEY = "test-key-123"
PROMPT, ANSWER = MEMORISED[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from .conftest import write_messages_jsonl

    folder = tmp_path_factory.mktemp("serve")
    data = write_messages_jsonl(folder / "train.jsonl", 20)
    run_dir = folder / "runs" / "served-run"
    assert train.run(tiny_config(data, max_steps=40, eval_every=0, validation_fraction=0.0), run_dir) == "finished"
    return run_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_run):
    port = _free_port()
    proc = subprocess.Popen(studio_cmd("serve", str(trained_run), "--port", str(port), "--api-key", KEY),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    line = proc.stdout.readline()
    assert line.startswith("Serving served-run at http://127.0.0.1:"), line + proc.stderr.read()
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert err == "", err  # nothing but our own lines, even after serving


def test_models_lists_the_tuned_and_the_base_model(server):
    client = openai.OpenAI(base_url=server, api_key=KEY)
    assert [m.id for m in client.models.list()] == ["served-run", "served-run:base"]


def test_chat_completion_plain_and_streamed_match_the_chat_tab(server, trained_run):
    client = openai.OpenAI(base_url=server, api_key=KEY)
    reply = client.chat.completions.create(model="served-run", messages=[{"role": "user", "content": PROMPT}],
                                           max_tokens=12, temperature=0)
    text = reply.choices[0].message.content
    assert text.startswith(ANSWER[:20]), text  # the memorised answer: the adapter is on
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 5
    assert reply.choices[0].finish_reason in ("stop", "length")
    # Streamed: the pieces add up to the same greedy answer.
    stream = client.chat.completions.create(model="served-run", messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=12, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == text
    # The base model id answers with the adapter off: what the Chat tab's Base column says.
    base = client.chat.completions.create(model="served-run:base", messages=[{"role": "user", "content": PROMPT}],
                                          max_tokens=12, temperature=0).choices[0].message.content
    session = ChatSession.for_run(trained_run, check_gpu=False)
    expected = session.generate(PROMPT, GenerationSettings(max_new_tokens=12, repetition_penalty=1.0),
                                use_adapter=False)
    assert base == expected and base != text


def test_completions_and_stop_strings(server):
    client = openai.OpenAI(base_url=server, api_key=KEY)
    out = client.completions.create(model="served-run", prompt="On Zorblax the sky", max_tokens=8, temperature=0)
    assert out.choices[0].text and out.usage.prompt_tokens > 0
    stopped = client.chat.completions.create(model="served-run", messages=[{"role": "user", "content": PROMPT}],
                                             max_tokens=12, temperature=0, stop=["sky"])
    assert stopped.choices[0].message.content == ANSWER.split("sky")[0]
    assert stopped.choices[0].finish_reason == "stop"


def test_wrong_key_unknown_model_and_bad_requests_are_refused(server):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server, api_key="wrong").models.list()
    assert httpx.get(f"{server}/models").status_code == 401  # no key at all
    client = openai.OpenAI(base_url=server, api_key=KEY)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="served-run", messages=[{"role": "user", "content": "Hi"}],
                                       max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(model="served-run", messages=[{"role": "assistant", "content": "Hi"}])


def test_concurrent_requests_all_get_their_answer_in_turn(server):
    client = openai.OpenAI(base_url=server, api_key=KEY, timeout=120)
    answers: dict[int, str] = {}

    def ask(i: int):
        question, _ = MEMORISED[i]
        answers[i] = client.chat.completions.create(
            model="served-run", messages=[{"role": "user", "content": question}], max_tokens=10,
            temperature=0).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(answers) == [0, 1, 2, 3] and time.time() - started < 120
    for i, text in answers.items():
        assert text.startswith(MEMORISED[i][1][:12]), (i, text)


def test_listening_beyond_this_machine_needs_a_key(trained_run):
    out = subprocess.run(studio_cmd("serve", str(trained_run), "--host", "0.0.0.0"), capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if k != "STUDIO_API_KEY"})
    assert out.returncode == 1 and out.stderr.startswith("Error: listening on 0.0.0.0") and "--api-key" in out.stderr
    out = subprocess.run(studio_cmd("serve", str(trained_run.parent / "missing")), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("Error: The run folder")
