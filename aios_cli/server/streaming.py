"""A request's tokens out of the engine loop as text: decoded piece by piece, cut at a stop
string, and answered whole or as server-sent events. The request is aborted (its KV blocks back
to the pool) when the client goes away, the response is cancelled, or a stop string matched."""

from __future__ import annotations

import asyncio
import json

from .errors import ApiError, error_body
from .loop import Final
from .state import ServerState


def stop_strings(body) -> list[str]:
    s = body.stop
    return [] if s is None else [s] if isinstance(s, str) else [x for x in s if x]


def find_stop(text: str, stops: list[str], since: int) -> int | None:
    """Where the first stop string starts in `text` (looking from a little before `since`)."""
    best = None
    for st in stops:
        i = text.find(st, max(0, since - len(st)))
        if i != -1 and (best is None or i < best):
            best = i
    return best


async def tokens(srv: ServerState, s, body):
    """(text piece, token id or None, Final or None) as they come; the stream is aborted when
    the client goes away, the request is cancelled, or a stop string matched."""
    from engines.model.tokenizer import StreamDecoder

    loop = srv.loop
    dec = StreamDecoder(srv.tok) if srv.tok is not None else None
    stops = stop_strings(body)
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
            cut = find_stop(text, stops, emitted)
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


def usage(prompt_len: int, n_out: int) -> dict:
    return {"prompt_tokens": prompt_len, "completion_tokens": n_out, "total_tokens": prompt_len + n_out}


async def whole(srv: ServerState, request, s, body):
    """Collect a stream while watching for the client going away (then abort at once);
    (text, token ids, Final)."""
    parts, ids, final = [], [], None

    async def collect():
        nonlocal final
        async for piece, tid, f in tokens(srv, s, body):
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
                srv.loop.abort(s)
                raise ApiError(499, "the client went away")
        task.result()
    finally:
        if not task.done():
            task.cancel()
    if final is not None and final.reason == "error":
        raise ApiError(500, f"the engine failed: {final.error}", "server_error")
    return "".join(parts), ids, final


def sse(obj) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


async def events(srv: ServerState, s, body, chunk, prompt_len: int, first=None):
    """The SSE body: `first` (if any), a `chunk(text, finish_reason, token id)` per piece, the
    usage when `stream_options.include_usage` asks, then `[DONE]`."""
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    n_out = 0
    try:
        if first is not None:
            yield sse(first)
        async for piece, tid, f in tokens(srv, s, body):
            if tid is not None:
                n_out += 1
            if f is not None and f.reason == "error":
                yield sse(error_body(f"the engine failed: {f.error}", "server_error"))
                yield "data: [DONE]\n\n"
                return
            if piece or f is not None or (tid is not None and body.return_token_ids):
                yield sse(chunk(piece, None if f is None else f.reason, tid))
            if f is not None:
                break
        if include_usage:
            yield sse({**chunk("", None, None, usage=True), "usage": usage(prompt_len, n_out)})
        yield "data: [DONE]\n\n"
    finally:
        if not s.ended:
            srv.loop.abort(s)


async def respond(srv: ServerState, request, s, body, prompt_ids: list[int], base: dict, chunk_base: dict,
                  piece_choice, whole_choice, first=None):
    """The response to a generation request: when `body.stream`, server-sent events of
    `chunk_base` with `piece_choice(text, finish_reason)` a piece; else `base` with
    `whole_choice(text, finish_reason)` and the usage. `return_token_ids` adds the ids to both."""
    if body.stream:
        from fastapi.responses import StreamingResponse

        def chunk(text, finish, tid, usage=False):
            c = piece_choice(text, finish)
            if body.return_token_ids and tid is not None:
                c["token_ids"] = [tid]
            return {**chunk_base, "choices": [] if usage else [c]}

        return StreamingResponse(events(srv, s, body, chunk, len(prompt_ids), first), media_type="text/event-stream")
    text, out_ids, final = await whole(srv, request, s, body)
    choice = whole_choice(text, final.reason)
    resp = {**base, "choices": [choice], "usage": usage(len(prompt_ids), len(out_ids))}
    if body.return_token_ids:
        choice["token_ids"] = out_ids
        resp["prompt_token_ids"] = prompt_ids
    return resp
