"""What every route of `aios serve` reads: the engine loop, the model and its tokenizer, the
chat format, the metrics and the API key, kept on `app.state.server` and handed to a route
by FastAPI's `Depends(server_state)`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request


@dataclass
class ServerState:
    loop: object  # the EngineLoop: handlers submit to it and read its streams, never the engine
    ckpt: object
    model_name: str
    chat: object  # ChatFormat
    api_key: str | None = None
    metrics: object = None  # ServeMetrics, or None: /metrics is empty
    created: int = field(default_factory=lambda: int(time.time()))  # /v1/models' "created"

    @property
    def cfg(self):
        return self.ckpt.config

    @property
    def tok(self):
        return self.ckpt.tokenizer


def server_state(request: Request) -> ServerState:
    return request.app.state.server


Server = Annotated[ServerState, Depends(server_state)]  # a route's `srv: Server` parameter
