"""`python -m studio serve RUN_DIR`: the fine-tuned model behind an OpenAI-compatible HTTP endpoint.

Any program that speaks the OpenAI API (the official `openai` client, LangChain, a chat front-end) can then use the
model: `/v1/chat/completions` (streamed or not), `/v1/completions` (raw text continuation) and `/v1/models`. The
run's base model is loaded once with its adapter attached, as in the Chat tab; the model id `<run id>` answers
with the adapter on, `<run id>:base` with it off, so a client can compare the two.

One model answers one request at a time: requests wait in a first-come, first-served line (one generation thread
takes them from a FIFO queue), so four clients each get their turn instead of racing for a lock. Listening beyond
this machine (any --host other than 127.0.0.1/localhost) requires --api-key (or $STUDIO_API_KEY); with a key set,
a request without the right `Authorization: Bearer KEY` gets 401.

Nothing here imports gradio.
"""

import hmac
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .logs import ArgumentParser, tell_user

log = logging.getLogger("studio.serve")

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
BASE_SUFFIX = ":base"
DEFAULT_PORT = 8000
MAX_TOKENS_LIMIT = 8192


def needs_api_key(host: str) -> bool:
    """Anything that other machines can reach must be behind a key."""
    return host not in LOCAL_HOSTS


# --- one request ------------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One generation waiting in line: the prompt's token ids, its settings, and where its text goes."""

    input_ids: list[int]
    use_adapter: bool
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: list[str]
    pieces: queue.Queue = field(default_factory=queue.Queue)  # str chunks, then a final dict (or an exception)
    cancelled: threading.Event = field(default_factory=threading.Event)


class Generator:
    """The loaded run and the single thread that generates, taking jobs in arrival order."""

    def __init__(self, session, run_id: str):
        self.session = session
        self.run_id = run_id
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="studio-serve-generate", daemon=True)
        self.thread.start()

    @property
    def model_ids(self) -> list[str]:
        ids = [self.run_id + BASE_SUFFIX]
        return [self.run_id, *ids] if self.session.has_adapter else ids

    def use_adapter_for(self, model_id: str | None) -> bool:
        """The adapter on for the run's own id (or no id), off for `<run id>:base`; anything else is refused."""
        if not model_id or model_id == self.run_id:
            if not self.session.has_adapter:
                return False
            return True
        if model_id == self.run_id + BASE_SUFFIX:
            return False
        raise ApiError(404, f"The model {model_id!r} is not served here: use {' or '.join(self.model_ids)}.",
                       "model_not_found")

    def chat_ids(self, messages: list[dict]) -> list[int]:
        from . import data

        text = data.render_chat(messages, self.session.tokenizer, add_generation_prompt=True)
        return list(self.session.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text_ids(self, prompt: str) -> list[int]:
        return list(self.session.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def submit(self, job: Job) -> Job:
        self.jobs.put(job)
        return job

    def close(self) -> None:
        self.jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if job.cancelled.is_set():  # the client left while waiting in line
                continue
            try:
                job.pieces.put(self._generate(job))
            except Exception as err:  # noqa: BLE001 - handed to the request that asked, which answers 500
                log.exception("generation failed")
                job.pieces.put(err)

    def _generate(self, job: Job) -> dict:
        import contextlib

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        from .chat import GenerationSettings

        session = self.session
        settings = GenerationSettings(max_new_tokens=job.max_tokens, temperature=job.temperature, top_p=job.top_p,
                                      seed=job.seed, repetition_penalty=1.0)
        ids = torch.tensor([job.input_ids], dtype=torch.long, device=session.model.device)
        streamer = TextIteratorStreamer(session.tokenizer, skip_prompt=True, skip_special_tokens=True)
        halt = threading.Event()  # a stop string seen, or the client gone

        class Halt(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                stop = halt.is_set() or job.cancelled.is_set()
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        result: dict = {}

        def run():
            try:
                switch = session.model.disable_adapter() if session.has_adapter and not job.use_adapter \
                    else contextlib.nullcontext()
                with switch, torch.inference_mode():
                    torch.manual_seed(job.seed)
                    out = session.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                                 stopping_criteria=StoppingCriteriaList([Halt()]),
                                                 **session.generation_kwargs(settings))
                result["completion_tokens"] = int(out.shape[1] - ids.shape[1])
            except BaseException as err:  # noqa: BLE001 - re-raised below, in this thread
                result["error"] = err
            finally:
                streamer.text_queue.put(streamer.stop_signal)

        worker = threading.Thread(target=run, name="studio-serve-model", daemon=True)
        worker.start()
        text, sent, stopped_by_string = "", 0, False
        for piece in streamer:
            text += piece
            cut = _first_stop(text, job.stop)
            if cut is not None:
                text, stopped_by_string = text[:cut], True
                halt.set()
            # Hold back a tail that may be the start of a stop string, and a half multi-byte character.
            safe = len(text) if stopped_by_string else len(text) - _held_back(text, job.stop)
            safe = len(text[:safe].rstrip("\ufffd"))
            if safe > sent:
                job.pieces.put(text[sent:safe])
                sent = safe
            if stopped_by_string:
                break
        for _ in streamer:  # drain until the model thread ends
            pass
        worker.join()
        if "error" in result:
            raise result["error"]
        text = text.rstrip("\ufffd")
        if len(text) > sent:
            job.pieces.put(text[sent:])
        completion = result.get("completion_tokens", 0)
        finish = "length" if completion >= job.max_tokens and not stopped_by_string else "stop"
        return {"text": text, "finish_reason": finish, "prompt_tokens": len(job.input_ids),
                "completion_tokens": completion}


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could still grow into a stop string."""
    longest = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                longest = max(longest, n)
                break
    return longest


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code

    def body(self) -> dict:
        kind = "authentication_error" if self.status == 401 else "invalid_request_error"
        return {"error": {"message": self.message, "type": kind, "param": None, "code": self.code}}


# --- request parsing --------------------------------------------------------------------------------------------
def _number(body: dict, name: str, default, low, high, kind=float):
    value = body.get(name, default)
    if value is None:
        value = default
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name} must be a number between {low} and {high}.") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} is {value}: it must lie between {low} and {high}.")
    return value


def _stops(body: dict) -> list[str]:
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop) or len(stop) > 4:
        raise ApiError(400, "stop must be a string or a list of up to 4 strings.")
    return stop


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content} objects.")
    clean = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ApiError(400, "Each message needs a role of system, user or assistant.")
        content = m.get("content")
        if isinstance(content, list):  # the content-parts form: only text parts are understood
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise ApiError(400, "Each message's content must be text.")
        clean.append({"role": m["role"], "content": content})
    if clean[-1]["role"] != "user":
        raise ApiError(400, "The last message must come from the user.")
    return clean


def make_job(generator: Generator, body: dict, input_ids: list[int]) -> Job:
    return Job(input_ids=input_ids, use_adapter=generator.use_adapter_for(body.get("model")),
               max_tokens=_number(body, "max_tokens", 256, 1, MAX_TOKENS_LIMIT, int)
               if body.get("max_completion_tokens") is None
               else _number(body, "max_completion_tokens", 256, 1, MAX_TOKENS_LIMIT, int),
               temperature=_number(body, "temperature", 0.0, 0.0, 2.0),
               top_p=_number(body, "top_p", 1.0, 0.01, 1.0), seed=_number(body, "seed", 0, 0, 2**31 - 1, int),
               stop=_stops(body))


# --- the app ----------------------------------------------------------------------------------------------------
def build_app(generator: Generator, api_key: str | None):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="Studio endpoint", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                err = ApiError(401, "Missing or wrong API key: send the key given to `studio serve --api-key` as "
                                    "'Authorization: Bearer KEY'.", "invalid_api_key")
                return JSONResponse(err.body(), status_code=401)
        return await call_next(request)

    async def read_body(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "The request body must be JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body

    @app.get("/v1/models")
    def list_models():
        now = int(time.time())
        return {"object": "list", "data": [{"id": i, "object": "model", "created": now, "owned_by": "studio"}
                                           for i in generator.model_ids]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        messages = _messages(body)
        job = make_job(generator, body, generator.chat_ids(messages))
        return await respond(job, body, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "prompt must be one non-empty string.")
        job = make_job(generator, body, generator.text_ids(prompt))
        return await respond(job, body, chat=False)

    async def respond(job: Job, body: dict, chat: bool):
        model_id = body.get("model") or generator.model_ids[0]
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        generator.submit(job)
        if body.get("stream"):
            return StreamingResponse(stream_events(job, ident, created, model_id, chat), media_type="text/event-stream")
        try:  # waited for in a worker thread: the event loop keeps taking other requests into the line
            final = await run_in_threadpool(lambda: [item for item in _items(job) if isinstance(item, dict)][-1])
        finally:
            job.cancelled.set()
        usage = {"prompt_tokens": final["prompt_tokens"], "completion_tokens": final["completion_tokens"],
                 "total_tokens": final["prompt_tokens"] + final["completion_tokens"]}
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": final["text"]}, "logprobs": None,
                      "finish_reason": final["finish_reason"]}
            return {"id": ident, "object": "chat.completion", "created": created, "model": model_id,
                    "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": final["text"], "logprobs": None, "finish_reason": final["finish_reason"]}
        return {"id": ident, "object": "text_completion", "created": created, "model": model_id,
                "choices": [choice], "usage": usage}

    def stream_events(job: Job, ident: str, created: int, model_id: str, chat: bool) -> Iterator[str]:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(delta: str | None, finish: str | None, first: bool = False) -> str:
            if chat:
                content = {"role": "assistant", "content": ""} if first else ({"content": delta} if delta else {})
                choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            data = {"id": ident, "object": kind, "created": created, "model": model_id, "choices": [choice]}
            return f"data: {json.dumps(data)}\n\n"

        try:
            if chat:
                yield chunk(None, None, first=True)
            for item in _items(job):
                if isinstance(item, dict):
                    yield chunk(None, item["finish_reason"])
                else:
                    yield chunk(item, None)
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # a client that hung up frees the model at the next token

    return app


def _items(job: Job) -> Iterator[str | dict]:
    """The job's text pieces as they come, then its final dict; a failed generation becomes a 500."""
    while True:
        item = job.pieces.get()
        if isinstance(item, BaseException):
            message = str(item) if isinstance(item, UserError) else "The model failed to answer (see the log)."
            raise ApiError(500, message, "generation_failed")
        yield item
        if isinstance(item, dict):
            return


# --- CLI --------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m studio serve",
                            description="Serve a run's fine-tuned model behind an OpenAI-compatible API "
                                        "(/v1/chat/completions, /v1/completions, /v1/models).")
    parser.add_argument("run_dir", help="a finished or stopped run folder, e.g. runs/20250101-120000-support")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; anything else needs "
                             "--api-key)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--api-key", default=os.environ.get("STUDIO_API_KEY"),
                        help="clients must send 'Authorization: Bearer KEY' (default: $STUDIO_API_KEY)")
    args = parser.parse_args(argv)
    if needs_api_key(args.host) and not args.api_key:
        tell_user(f"Error: listening on {args.host} lets other machines in: give --api-key KEY (or set "
                  f"STUDIO_API_KEY), or keep the default --host 127.0.0.1.")
        return 1
    try:
        from .chat import ChatSession

        session = ChatSession.for_run(args.run_dir)
    except UserError as err:
        tell_user(f"Error: {err}")
        return 1
    try:  # bound here, before the model thread starts serving, so a taken port is one sentence, not uvicorn's exit
        listener = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((args.host, args.port))
    except OSError as err:
        tell_user(f"Error: cannot listen on {args.host}:{args.port} ({err.strerror}): pick another --port, or a "
                  f"--host that is an address of this machine.")
        return 1
    generator = Generator(session, Path(args.run_dir).resolve().name)
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(build_app(generator, args.api_key), log_level="warning",
                                           access_log=False))
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Serving {generator.run_id} at http://{shown}:{args.port}/v1 (models: {', '.join(generator.model_ids)}); "
          f"Ctrl+C stops it.", flush=True)
    try:
        server.run(sockets=[listener])
    finally:
        generator.close()
    return 0
