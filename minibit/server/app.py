"""The web side of ``minibit serve``: OpenAI-style routes on Starlette.

Routes::

    GET  /                      the chat page (chat.html beside this file)
    GET  /health                {"status": "ok", "model", "slots", "active", "queued", ...}
    GET  /v1/models             the one model, as OpenAI lists models
    GET  /v1/models/{id}
    POST /v1/completions        text continuation of "prompt"
    POST /v1/chat/completions   a reply to "messages" through the model's chat template

A request is read (at most ``max_body`` bytes), parsed as JSON (NaN and Infinity refused),
validated (schemas.py), its prompt tokenized and checked against the context, and only then
queued for the worker (scheduler.py).  Every refusal is a 4xx with OpenAI's error body
``{"error": {"message", "type", "param", "code"}}`` and touches no shared state, so the
requests after it get the same answers as if it had never come.

The text is exactly ``model.generate(prompt, max_new_tokens=max_tokens, ...)`` (chat: of
the rendered template, as ``Model.chat`` does), whole or as server-sent events
(``data: {chunk}`` lines, then ``data: [DONE]``).  finish_reason is "stop" for EOS or a stop
string, "length" when max_tokens or the context ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from .._errors import FormatError
from ..generate import render_chat
from .scheduler import Job, QueueFull, Scheduler, ShuttingDown
from .schemas import (ChatRequest, CompletionRequest, ValidationError, describe, error_body,
                      unsupported_field)

__all__ = ["create_app", "ApiError"]

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}
COMPLETION_DEFAULT_MAX_TOKENS = 16          # OpenAI's default for /v1/completions
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat.html")


class ApiError(Exception):
    """A refused request: becomes ``status`` with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.type, self.param, self.code), self.status)


class _Server:
    """What the routes share: the model, its id, the context and the scheduler."""

    def __init__(self, model, model_id: str, slots: int, ctx: int | None, max_queue: int,
                 max_body: int):
        if model.tokenizer is None:
            raise FormatError(f"{model.source}: this model has no tokenizer; it cannot be served")
        self.model = model
        self.model_id = model_id
        self.n_ctx = model.config.max_position if ctx is None else min(ctx, model.config.max_position)
        if self.n_ctx < 2:
            raise FormatError(f"the context must hold at least 2 tokens, got {self.n_ctx}")
        self.max_body = max_body
        self.created = int(time.time())
        self.scheduler = Scheduler(model, slots=slots, max_queue=max_queue)

    # -- reading a request ---------------------------------------------------------------

    async def read(self, request: Request, schema):
        """The validated request body, or ApiError."""
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > self.max_body:
            raise ApiError(413, f"the request body has {size} bytes; the limit is {self.max_body}",
                           code="request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise ApiError(413, f"the request body is over the limit of {self.max_body} bytes",
                               code="request_too_large")
        try:
            data = json.loads(bytes(body), parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as e:   # UnicodeDecodeError is a ValueError
            raise ApiError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}",
                           code="invalid_json")
        refused = unsupported_field(data)
        if refused:
            raise ApiError(400, f"{refused!r} is not supported by minibit serve", param=refused,
                           code="unsupported_parameter")
        try:
            req = schema.model_validate(data)
        except ValidationError as e:
            message, param = describe(e)
            raise ApiError(400, message, param=param, code="invalid_value") from None
        if req.model != self.model_id:
            raise ApiError(404, f"the model {req.model!r} does not exist; this server has "
                                f"{self.model_id!r}", param="model", code="model_not_found")
        return req

    def count_prompt_tokens(self, prompt: str) -> int:
        """The prompt's length in tokens, encoded as minibit.generate.generate encodes it."""
        tok = self.model.tokenizer
        bos_text = tok.id_to_token(tok.bos_id) if tok.bos_id is not None else None
        return len(tok.encode(prompt, bos=not (bos_text and prompt.startswith(bos_text))))

    async def plan(self, prompt: str, req, max_tokens: int | None, default: int | None) -> dict:
        """Model.generate keywords for this request, or ApiError when it cannot fit."""
        n = await run_in_threadpool(self.count_prompt_tokens, prompt)
        if n == 0:
            raise ApiError(400, "the prompt is empty (this model's tokenizer adds no BOS)",
                           param="prompt", code="empty_prompt")
        if n >= self.n_ctx:
            raise ApiError(400, f"the prompt has {n} tokens; the context holds {self.n_ctx} "
                                f"(prompt and completion together)", param="messages" if
                           isinstance(req, ChatRequest) else "prompt", code="context_length_exceeded")
        room = self.n_ctx - n
        if max_tokens is None:
            max_tokens = room if default is None else min(default, room)
        elif max_tokens > room:
            raise ApiError(400, f"max_tokens = {max_tokens} and the prompt's {n} tokens exceed the "
                                f"context of {self.n_ctx} tokens (at most {room} here)",
                           param="max_tokens", code="context_length_exceeded")
        return dict(max_new_tokens=max_tokens, **req.generate_kwargs())

    # -- routes ----------------------------------------------------------------------------

    async def completions(self, request: Request):
        req = await self.read(request, CompletionRequest)
        prompt = req.prompt_text()
        kwargs = await self.plan(prompt, req, req.max_tokens, COMPLETION_DEFAULT_MAX_TOKENS)
        return JobResponse(self, prompt, kwargs, req, chat=False)

    async def chat(self, request: Request):
        req = await self.read(request, ChatRequest)
        try:
            prompt = render_chat(self.model, [m.as_template_dict() for m in req.messages])
        except FormatError as e:     # the model's template refused these messages
            raise ApiError(400, str(e), param="messages", code="invalid_messages") from None
        kwargs = await self.plan(prompt, req, req.completion_limit(), None)
        return JobResponse(self, prompt, kwargs, req, chat=True)

    def model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "minibit"}

    async def models(self, request: Request):
        return JSONResponse({"object": "list", "data": [self.model_card()]})

    async def one_model(self, request: Request):
        name = request.path_params["name"]
        if name != self.model_id:
            raise ApiError(404, f"the model {name!r} does not exist; this server has {self.model_id!r}",
                           param="model", code="model_not_found")
        return JSONResponse(self.model_card())

    async def health(self, request: Request):
        return JSONResponse({"status": "ok", "model": self.model_id, "context": self.n_ctx,
                             **self.scheduler.stats()})

    async def page(self, request: Request):
        with open(PAGE, encoding="utf-8") as f:
            return HTMLResponse(f.read())


def _refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number")


class JobResponse:
    """The ASGI response of one generation: queues the job when the response starts, sends
    its text whole (JSON) or streamed (SSE), and cancels the job when the client goes away
    (a task listens for ``http.disconnect`` the whole time, so a client that leaves while
    its request waits in the queue or between two tokens is noticed at once)."""

    def __init__(self, server: _Server, prompt: str, kwargs: dict, req, chat: bool):
        self.server, self.prompt, self.kwargs, self.chat = server, prompt, kwargs, chat
        self.stream = bool(req.stream)
        self.include_usage = bool(req.stream and req.stream_options and req.stream_options.include_usage)
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.disconnected = False

    async def __call__(self, scope, receive, send):
        job = Job(self.prompt, self.kwargs)
        try:
            self.server.scheduler.submit(job)
        except (QueueFull, ShuttingDown) as e:
            await ApiError(503, str(e), code="server_busy", type_="server_error").response()(scope, receive, send)
            return
        watcher = asyncio.ensure_future(self._watch(receive, job))
        try:
            if self.stream:
                await self._send_stream(send, job)
            else:
                await self._send_whole(scope, receive, send, job)
        except OSError:              # the client went away while we were sending
            pass
        finally:
            watcher.cancel()
            job.cancel()             # no-op when it finished; frees its slot otherwise

    async def _watch(self, receive, job):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                job.cancel()
                return

    # -- bodies ----------------------------------------------------------------------------

    def _usage(self, res) -> dict:
        n = len(res.tokens)
        return {"prompt_tokens": res.prompt_tokens, "completion_tokens": n,
                "total_tokens": res.prompt_tokens + n}

    def _choice(self, text, finish, whole=False) -> dict:
        if not self.chat:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        if whole:
            return {"index": 0, "message": {"role": "assistant", "content": text},
                    "logprobs": None, "finish_reason": finish}
        delta = {} if text is None else {"content": text}
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def _envelope(self, choices, chunk: bool) -> dict:
        obj = "text_completion" if not self.chat else ("chat.completion.chunk" if chunk else "chat.completion")
        return {"id": self.id, "object": obj, "created": self.created, "model": self.server.model_id,
                "choices": choices}

    async def _send_whole(self, scope, receive, send, job):
        async for kind, value in job:
            if kind == "done":
                body = self._envelope([self._choice(value.text, FINISH[value.finish_reason], whole=True)], False)
                body["usage"] = self._usage(value)
                await JSONResponse(body)(scope, receive, send)
                return
            if kind == "error":
                await _job_error(value).response()(scope, receive, send)
                return
        if not self.disconnected:    # cancelled by a shutdown, not by the client
            await ApiError(503, "the server is shutting down", code="server_busy",
                           type_="server_error").response()(scope, receive, send)

    async def _send_stream(self, send, job):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"),
                                (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})

        async def event(obj):
            data = obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
            await send({"type": "http.response.body", "body": b"data: " + data + b"\n\n", "more_body": True})

        if self.chat:                # OpenAI's first chat chunk names the role
            await event(self._envelope([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}], True))
        ended = False
        async for kind, value in job:
            ended = kind in ("done", "error")
            if kind == "piece":
                await event(self._envelope([self._choice(value, None)], True))
            elif kind == "done":
                await event(self._envelope([self._choice(None if self.chat else "", FINISH[value.finish_reason])], True))
                if self.include_usage:
                    last = self._envelope([], True)
                    last["usage"] = self._usage(value)
                    await event(last)
            elif kind == "error":
                err = _job_error(value)
                await event(error_body(err.message, err.type, err.param, err.code))
        if not self.disconnected:
            if not ended:            # cancelled by a shutdown, not by the client: say so
                await event(error_body("the server is shutting down", "server_error", None, "server_busy"))
            await event(b"[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _job_error(e: Exception) -> ApiError:
    if isinstance(e, FormatError):
        return ApiError(400, str(e))
    return ApiError(500, f"generation failed: {type(e).__name__}: {e}", type_="server_error")


async def _api_error(request, exc: ApiError):
    return exc.response()


async def _http_error(request, exc: HTTPException):
    headers = getattr(exc, "headers", None)
    return JSONResponse(error_body(str(exc.detail), code=f"http_{exc.status_code}"), exc.status_code,
                        headers=headers)


async def _internal_error(request, exc: Exception):
    return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error"), 500)


def create_app(model, model_id: str = "demo", slots: int = 4, ctx: int | None = None,
               max_queue: int = 64, max_body: int = 4 << 20) -> Starlette:
    """The ASGI app serving ``model`` under the name ``model_id``.

    slots      generations that run at once, in turns (each holds one KV cache)
    ctx        tokens of context a request may use (prompt + max_tokens); default and
               upper bound: the model's ``config.max_position``
    max_queue  requests that may wait for a slot; more get 503
    max_body   bytes of one request body; more get 413

    The worker thread starts and stops with the app's lifespan; ``app.state.scheduler``
    is the Scheduler (its ``stats()`` are what /health shows).
    """
    server = _Server(model, model_id, slots, ctx, max_queue, max_body)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.scheduler.start()
        try:
            yield
        finally:
            server.scheduler.stop()

    routes = [
        Route("/", server.page, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{name:path}", server.one_model, methods=["GET"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: _api_error, HTTPException: _http_error,
                                        Exception: _internal_error})
    app.state.scheduler = server.scheduler
    app.state.server = server
    return app
