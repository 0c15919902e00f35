"""The HTTP side of `aios serve`: OpenAI's completions and chat completions (streamed as
server-sent events, or whole), `/v1/models`, `/health`, `/metrics` (Prometheus) and
`/aios/state` (the serving view's JSON, which `aios top --url` draws), on FastAPI.

Errors are OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`:
400 for malformed JSON, fields of the wrong type and prompts that do not fit; 401 for a
missing or wrong API key; 404 for an unknown model; 503 (with Retry-After) when the queue is
full or the server is stopping; 500 when the engine failed. A handler never touches the engine:
it submits to the `EngineLoop` and reads its stream.

Request fields taken, beyond OpenAI's usual ones (model, prompt or messages, max_tokens,
temperature, top_p, seed, stop, stream, stream_options.include_usage, n=1): vLLM's `top_k`
and `ignore_eos`, and `return_token_ids` (the choice then carries `token_ids`, and the
response `prompt_token_ids`), which is how a test compares ids with `aios run`.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations, which name local classes

import asyncio
import json
import time
from typing import Optional, Union

from engines.errors import UserError
from engines.sampling import SamplingParams

from .loop import Final, Overloaded, ShuttingDown

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions
DEFAULT_CHAT_TOKENS = 512  # for chat, capped by what the context has left
RETRY_AFTER_S = 1


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.body, self.headers = status, error_body(message, type_, param, code), headers


def build_app(loop, ckpt, model_name: str, api_key: str | None = None, metrics=None, chat=None):
    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .chat import ChatFormat

    chat = chat or ChatFormat(ckpt.chat_template, ckpt.tokenizer)
    cfg = ckpt.config
    tok = ckpt.tokenizer
    created = int(time.time())

    class _Base(BaseModel):
        model_config = ConfigDict(extra="allow")  # unknown OpenAI fields are accepted and ignored
        model: str
        max_tokens: Optional[int] = Field(default=None, ge=1)
        max_completion_tokens: Optional[int] = Field(default=None, ge=1)
        temperature: float = Field(default=1.0, ge=0.0, le=2.0)
        top_p: float = Field(default=1.0, gt=0.0, le=1.0)
        top_k: int = Field(default=0, ge=-1)
        seed: Optional[int] = None
        stop: Optional[Union[str, list[str]]] = None
        stream: bool = False
        stream_options: Optional[dict] = None
        n: int = Field(default=1, ge=1, le=1)
        ignore_eos: bool = False
        return_token_ids: bool = False

    class CompletionRequest(_Base):
        prompt: Union[str, list[int], list[str]]

    class Message(BaseModel):
        model_config = ConfigDict(extra="allow")
        role: str
        content: Union[str, list[dict], None] = None

    class ChatRequest(_Base):
        messages: list[Message] = Field(min_length=1)

    app = FastAPI(title="aios serve", version="0.1.0", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
        if first.get("type") == "json_invalid":
            msg = "the request body is not valid JSON"
        else:
            msg = f"{where or 'body'}: {first.get('msg', 'invalid')}"
        return JSONResponse(error_body(msg, param=where), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    async def check_key(request: Request):
        if api_key is None:
            return
        got = request.headers.get("authorization", "")
        if got != f"Bearer {api_key}":
            raise ApiError(401, "a valid API key is needed: Authorization: Bearer <key>", "authentication_error",
                           code="invalid_api_key")

    deps = [Depends(check_key)]

    @app.get("/health", dependencies=deps)
    async def health():
        if loop.error:
            return JSONResponse({"status": "error", "error": loop.error}, status_code=500)
        return {"status": "ok" if loop.accepting else "stopping"}

    @app.get("/v1/models", dependencies=deps)
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "aios", "max_model_len": cfg.max_position_embeddings}]}

    @app.get("/metrics", dependencies=deps)
    async def prom():
        if metrics is None:
            return Response("", media_type="text/plain")
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/aios/state", dependencies=deps)
    async def state():
        return loop.view().to_json()

    # --- the two generation endpoints --------------------------------------------------------------
    def _check_model(body):
        if body.model != model_name:
            raise ApiError(404, f"the model {body.model!r} does not exist here; this server serves {model_name!r}",
                           "not_found_error", "model", "model_not_found")

    def _params(body) -> SamplingParams:
        greedy = body.temperature == 0.0
        return SamplingParams(greedy=greedy, temperature=body.temperature if not greedy else 1.0,
                              top_k=max(0, body.top_k), top_p=body.top_p,
                              seed=body.seed if body.seed is not None else time.time_ns() % (1 << 31))

    def _encode(text: str) -> list[int]:
        if tok is None:
            raise ApiError(400, f"{model_name} has no tokenizer: send the prompt as a list of token ids", param="prompt")
        from engines.model.tokenizer import encode

        return encode(tok, text)

    def _max_tokens(body, prompt_len: int, default: int) -> int:
        n = body.max_completion_tokens or body.max_tokens
        if n is None:
            n = max(1, min(default, cfg.max_position_embeddings - prompt_len))
        return n

    def _submit(ids: list[int], body, default_tokens: int):
        if not ids:
            raise ApiError(400, "the prompt is empty", param="prompt")
        if any(not (0 <= t < cfg.vocab_size) for t in ids):
            raise ApiError(400, f"prompt token ids must be in 0..{cfg.vocab_size - 1}", param="prompt")
        n = _max_tokens(body, len(ids), default_tokens)
        stop_ids = () if body.ignore_eos else tuple(cfg.eos_token_ids)
        if loop.error:
            raise ApiError(500, f"the engine failed: {loop.error}", "server_error")
        try:
            return loop.submit(ids, n, _params(body), stop_ids)
        except Overloaded as e:
            raise ApiError(503, f"the server is busy: {e}; retry after {RETRY_AFTER_S} s", "server_busy",
                           code="overloaded", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except ShuttingDown as e:
            raise ApiError(503, str(e), "server_busy", code="shutting_down",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        except UserError as e:
            raise ApiError(400, str(e), param="max_tokens" if "max_tokens" in str(e) or "new tokens" in str(e)
                           else "prompt", code="context_length_exceeded") from None

    def _stops(body) -> list[str]:
        s = body.stop
        return [] if s is None else [s] if isinstance(s, str) else [x for x in s if x]

    async def _tokens(s, body):
        """(text piece, token id or None, Final or None) as they come; the stream is aborted when
        the client goes away, the request is cancelled, or a stop string matched."""
        from engines.model.tokenizer import StreamDecoder

        dec = StreamDecoder(tok) if tok is not None else None
        stops = _stops(body)
        text = ""
        emitted = 0  # characters of `text` already handed out
        hold = max((len(x) for x in stops), default=1) - 1  # a stop string may be split across pieces
        try:
            while True:
                item = await s.queue.get()
                if isinstance(item, Final):
                    if dec is not None:
                        text += dec.flush()
                    yield text[emitted:], None, item
                    return
                piece = dec.push(item) if dec is not None else ""
                text += piece
                cut = _find_stop(text, stops, emitted)
                if cut is not None:
                    loop.abort(s)
                    yield text[emitted:cut], item, None
                    yield "", None, Final("stop")
                    return
                upto = len(text) - hold if stops else len(text)
                if upto > emitted:
                    yield text[emitted:upto], item, None
                    emitted = upto
                else:
                    yield "", item, None
        finally:
            if not s.ended:
                loop.abort(s)

    def _usage(prompt_len: int, n_out: int) -> dict:
        return {"prompt_tokens": prompt_len, "completion_tokens": n_out, "total_tokens": prompt_len + n_out}

    async def _whole(request: Request, s, body):
        """Collect a stream while watching for the client going away (then abort at once)."""
        parts, ids, final = [], [], None

        async def collect():
            nonlocal final
            async for piece, tid, f in _tokens(s, body):
                parts.append(piece)
                if tid is not None:
                    ids.append(tid)
                if f is not None:
                    final = f

        task = asyncio.create_task(collect())
        try:
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if not done and await request.is_disconnected():
                    task.cancel()
                    loop.abort(s)
                    raise ApiError(499, "the client went away")
            task.result()
        finally:
            if not task.done():
                task.cancel()
        if final is not None and final.reason == "error":
            raise ApiError(500, f"the engine failed: {final.error}", "server_error")
        return "".join(parts), ids, final

    def _sse(obj) -> str:
        return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"

    async def _stream(request: Request, s, body, chunk, prompt_len: int, first=None):
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        n_out = 0
        try:
            if first is not None:
                yield _sse(first)
            async for piece, tid, f in _tokens(s, body):
                if tid is not None:
                    n_out += 1
                if f is not None and f.reason == "error":
                    yield _sse(error_body(f"the engine failed: {f.error}", "server_error"))
                    yield "data: [DONE]\n\n"
                    return
                if piece or f is not None or (tid is not None and body.return_token_ids):
                    yield _sse(chunk(piece, None if f is None else f.reason, tid))
                if f is not None:
                    break
            if include_usage:
                yield _sse({**chunk("", None, None, usage=True), "usage": _usage(prompt_len, n_out)})
            yield "data: [DONE]\n\n"
        finally:
            if not s.ended:
                loop.abort(s)

    @app.post("/v1/completions", dependencies=deps)
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body)
        p = body.prompt
        if isinstance(p, list) and p and all(isinstance(x, str) for x in p):
            if len(p) != 1:
                raise ApiError(400, "one prompt a request (a list of several strings is a batch; send them apart)",
                               param="prompt")
            p = p[0]
        ids = _encode(p) if isinstance(p, str) else list(p)
        s = _submit(ids, body, DEFAULT_COMPLETION_TOKENS)
        rid = s.id
        base = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_name}
        if body.stream:
            def chunk(text, finish, tid, usage=False):
                c = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
                if body.return_token_ids and tid is not None:
                    c["token_ids"] = [tid]
                return {**base, "choices": [] if usage else [c]}

            return StreamingResponse(_stream(request, s, body, chunk, len(ids)), media_type="text/event-stream")
        text, out_ids, final = await _whole(request, s, body)
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": final.reason}
        resp = {**base, "choices": [choice], "usage": _usage(len(ids), len(out_ids))}
        if body.return_token_ids:
            choice["token_ids"] = out_ids
            resp["prompt_token_ids"] = ids
        return resp

    @app.post("/v1/chat/completions", dependencies=deps)
    async def chat_completions(body: ChatRequest, request: Request):
        _check_model(body)
        msgs = []
        for m in body.messages:
            c = m.content
            if isinstance(c, list):  # OpenAI's content parts: the text ones, joined
                c = "".join(x.get("text", "") for x in c if isinstance(x, dict) and x.get("type") == "text")
            msgs.append({"role": m.role, "content": c or ""})
        try:
            prompt = chat.render(msgs)
        except UserError as e:
            raise ApiError(400, str(e), param="messages") from None
        ids = _encode(prompt)
        s = _submit(ids, body, DEFAULT_CHAT_TOKENS)
        base = {"id": s.id.replace("cmpl", "chatcmpl"), "object": "chat.completion", "created": int(time.time()),
                "model": model_name}
        if body.stream:
            def chunk(text, finish, tid, usage=False):
                c = {"index": 0, "delta": {"content": text} if text or finish is None else {},
                     "logprobs": None, "finish_reason": finish}
                if body.return_token_ids and tid is not None:
                    c["token_ids"] = [tid]
                return {**base, "object": "chat.completion.chunk", "choices": [] if usage else [c]}

            first = {**base, "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                  "finish_reason": None}]}
            return StreamingResponse(_stream(request, s, body, chunk, len(ids), first), media_type="text/event-stream")
        text, out_ids, final = await _whole(request, s, body)
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": final.reason}
        resp = {**base, "choices": [choice], "usage": _usage(len(ids), len(out_ids))}
        if body.return_token_ids:
            choice["token_ids"] = out_ids
            resp["prompt_token_ids"] = ids
        return resp

    app.state.chat = chat
    return app


def _find_stop(text: str, stops: list[str], since: int) -> int | None:
    """Where the first stop string starts in `text` (looking from a little before `since`)."""
    best = None
    for st in stops:
        i = text.find(st, max(0, since - len(st)))
        if i != -1 and (best is None or i < best):
            best = i
    return best

