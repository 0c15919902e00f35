"""A generation request into the engine loop, checked first: the model asked for, the prompt's
ids, the number of new tokens and the sampling parameters. What cannot run is an `ApiError`
(400, 404, 500 or 503) before anything reaches the engine."""

from __future__ import annotations

import time

from engines.errors import UserError
from engines.sampling import SamplingParams

from .errors import ApiError
from .loop import Overloaded, ShuttingDown
from .state import ServerState

RETRY_AFTER_S = 1


def check_model(srv: ServerState, body) -> None:
    if body.model != srv.model_name:
        raise ApiError(404, f"the model {body.model!r} does not exist here; this server serves {srv.model_name!r}",
                       "not_found_error", "model", "model_not_found")


def sampling_params(body) -> SamplingParams:
    greedy = body.temperature == 0.0
    return SamplingParams(greedy=greedy, temperature=body.temperature if not greedy else 1.0,
                          top_k=max(0, body.top_k), top_p=body.top_p,
                          seed=body.seed if body.seed is not None else time.time_ns() % (1 << 31))


def encode(srv: ServerState, text: str) -> list[int]:
    if srv.tok is None:
        raise ApiError(400, f"{srv.model_name} has no tokenizer: send the prompt as a list of token ids",
                       param="prompt")
    from engines.model.tokenizer import encode

    return encode(srv.tok, text)


def max_new_tokens(srv: ServerState, body, prompt_len: int, default: int) -> int:
    n = body.max_completion_tokens or body.max_tokens
    if n is None:
        n = max(1, min(default, srv.cfg.max_position_embeddings - prompt_len))
    return n


def submit(srv: ServerState, ids: list[int], body, default_tokens: int):
    """The request in the engine loop's queue; its `Stream`."""
    cfg, loop = srv.cfg, srv.loop
    if not ids:
        raise ApiError(400, "the prompt is empty", param="prompt")
    if any(not (0 <= t < cfg.vocab_size) for t in ids):
        raise ApiError(400, f"prompt token ids must be in 0..{cfg.vocab_size - 1}", param="prompt")
    n = max_new_tokens(srv, body, len(ids), default_tokens)
    stop_ids = () if body.ignore_eos else tuple(cfg.eos_token_ids)
    if loop.error:
        raise ApiError(500, f"the engine failed: {loop.error}", "server_error")
    try:
        return loop.submit(ids, n, sampling_params(body), stop_ids)
    except Overloaded as e:
        raise ApiError(503, f"the server is busy: {e}; retry after {RETRY_AFTER_S} s", "server_busy",
                       code="overloaded", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except ShuttingDown as e:
        raise ApiError(503, str(e), "server_busy", code="shutting_down",
                       headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except UserError as e:
        raise ApiError(400, str(e), param="max_tokens" if "max_tokens" in str(e) or "new tokens" in str(e)
                       else "prompt", code="context_length_exceeded") from None
