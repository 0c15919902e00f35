"""`POST /v1/completions`: a prompt (text, or token ids) continued, whole or streamed."""

# no `from __future__ import annotations`: FastAPI reads the handler's annotations

import time

from fastapi import APIRouter, Request

from .errors import ApiError
from .generation import check_model, encode, submit
from .schemas import CompletionRequest
from .state import Server
from .streaming import respond

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default max_tokens for /v1/completions

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, srv: Server):
    check_model(srv, body)
    p = body.prompt
    if isinstance(p, list) and p and all(isinstance(x, str) for x in p):
        if len(p) != 1:
            raise ApiError(400, "one prompt a request (a list of several strings is a batch; send them apart)",
                           param="prompt")
        p = p[0]
    ids = encode(srv, p) if isinstance(p, str) else list(p)
    s = submit(srv, ids, body, DEFAULT_COMPLETION_TOKENS)
    base = {"id": s.id, "object": "text_completion", "created": int(time.time()), "model": srv.model_name}

    def choice(text, finish):
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    return await respond(srv, request, s, body, ids, base, base, choice, choice)
