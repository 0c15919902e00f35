"""The request bodies of `/v1/completions` and `/v1/chat/completions`: OpenAI's usual fields,
vLLM's `top_k` and `ignore_eos`, and `return_token_ids`. Unknown fields are accepted and
ignored, as OpenAI's own server does; a field of the wrong type or range is a 400."""

# no `from __future__ import annotations`: pydantic and FastAPI read these annotations at run time

from pydantic import BaseModel, ConfigDict, Field


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields are accepted and ignored
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=-1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int = Field(default=1, ge=1, le=1)
    ignore_eos: bool = False
    return_token_ids: bool = False


class CompletionRequest(GenerationRequest):
    prompt: str | list[int] | list[str]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict] | None = None


class ChatRequest(GenerationRequest):
    messages: list[Message] = Field(min_length=1)
