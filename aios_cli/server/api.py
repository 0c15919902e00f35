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

One concept a file: `build_app` here (the app, the API key, the wiring); `errors` (the error
object and its handlers); `schemas` (the request bodies); `state` (what the routes read, on
`app.state`); `generation` (a request checked and submitted); `streaming` (its tokens out,
whole or as SSE); `routes_completions`, `routes_chat`, `routes_meta` (the endpoints).
"""

# no `from __future__ import annotations`: FastAPI reads `check_key`'s annotation

from fastapi import Depends, FastAPI, Request

from . import routes_chat, routes_completions, routes_meta
from .chat import ChatFormat
from .errors import ApiError, add_error_handlers
from .state import ServerState


def build_app(loop, ckpt, model_name: str, api_key: str | None = None, metrics=None, chat=None) -> FastAPI:
    chat = chat or ChatFormat(ckpt.chat_template, ckpt.tokenizer)
    app = FastAPI(title="aios serve", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.server = ServerState(loop, ckpt, model_name, chat, api_key, metrics)
    app.state.chat = chat
    add_error_handlers(app)
    for routes in (routes_meta, routes_completions, routes_chat):
        app.include_router(routes.router, dependencies=[Depends(check_key)])
    return app


async def check_key(request: Request) -> None:
    """Every route wants `Authorization: Bearer <key>` when the server has a key."""
    api_key = request.app.state.server.api_key
    if api_key is None:
        return
    got = request.headers.get("authorization", "")
    if got != f"Bearer {api_key}":
        raise ApiError(401, "a valid API key is needed: Authorization: Bearer <key>", "authentication_error",
                       code="invalid_api_key")
