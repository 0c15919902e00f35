"""A model opened from any source: its config, its weights (read lazily), its tokenizer, and
where it came from. `engines.model.sources` opens one from each kind of source."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import ModelConfig
from .weights import ModelWeights


@dataclass
class Checkpoint:
    config: ModelConfig
    weights: ModelWeights
    tokenizer: object | None  # tokenizers.Tokenizer
    source: str  # what the user passed
    kind: str  # preset | directory | hf-cache
    path: str | None
    stored_bytes: int  # bytes of the weights as stored (or as generated, for presets)
    open_seconds: float
    notes: list[str] = field(default_factory=list)
    quant: str | None = None  # the block format most weights are stored in (GGUF), or None: floats
    tokenizer_problem: str | None = None  # why the file's tokenizer cannot be used (it is None then)
    chat_template: str | None = None  # Jinja source: tokenizer_config.json's, or GGUF's tokenizer.chat_template

    @property
    def name(self) -> str:
        return self.config.name or self.source
