"""`POST /v1/chat/completions`: messages rendered by the model's chat template, then answered
whole or streamed as `chat.completion.chunk`s (the first one carries the role)."""

# no `from __future__ import annotations`: FastAPI reads the handler's annotations

import time

from fastapi import APIRouter, Request

from engines.errors import UserError

from .errors import ApiError
from .generation import check_model, encode, submit
from .schemas import ChatRequest
from .state import Server
from .streaming import respond

DEFAULT_CHAT_TOKENS = 512  # for chat, capped by what the context has left

router = APIRouter()


def _messages(body: ChatRequest) -> list[dict]:
    msgs = []
    for m in body.messages:
        c = m.content
        if isinstance(c, list):  # OpenAI's content parts: the text ones, joined
            c = "".join(x.get("text", "") for x in c if isinstance(x, dict) and x.get("type") == "text")
        msgs.append({"role": m.role, "content": c or ""})
    return msgs


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request, srv: Server):
    check_model(srv, body)
    try:
        prompt = srv.chat.render(_messages(body))
    except UserError as e:
        raise ApiError(400, str(e), param="messages") from None
    ids = encode(srv, prompt)
    s = submit(srv, ids, body, DEFAULT_CHAT_TOKENS)
    base = {"id": s.id.replace("cmpl", "chatcmpl"), "object": "chat.completion", "created": int(time.time()),
            "model": srv.model_name}
    chunk_base = {**base, "object": "chat.completion.chunk"}
    first = {**chunk_base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                        "finish_reason": None}]}

    def delta(text, finish):
        return {"index": 0, "delta": {"content": text} if text or finish is None else {},
                "logprobs": None, "finish_reason": finish}

    def message(text, finish):
        return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": finish}

    return await respond(srv, request, s, body, ids, base, chunk_base, delta, message, first)
