"""Chat messages to a prompt: the model's own chat template, rendered with Jinja as Hugging
Face's `apply_chat_template` renders it (a sandboxed environment, `trim_blocks` and
`lstrip_blocks`, `raise_exception` and `strftime_now` available, the tokenizer's special tokens
as `bos_token` / `eos_token`, `add_generation_prompt=True`).

Where the model has no template (the built-in presets, most test models), the fallback is
ChatML when the tokenizer knows `<|im_start|>` (Qwen's own format, which the presets'
tokenizer is), else plain lines `role: content` and a final `assistant:`. Either way the prompt
is what `aios serve --help` and the README say.
"""

from __future__ import annotations

import datetime
from functools import lru_cache

from engines.errors import UserError

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PLAIN = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
         "{% if add_generation_prompt %}assistant:{% endif %}")


class TemplateError(UserError):
    pass


def _raise(message):
    raise TemplateError(f"the chat template refused the messages: {message}", "check the roles and their order")


@lru_cache(maxsize=8)
def _compile(source: str):
    from jinja2.exceptions import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except TemplateSyntaxError as e:
        raise TemplateError(f"the model's chat template does not compile ({e.message})",
                            "fix chat_template in tokenizer_config.json") from None


class ChatFormat:
    """How one model's chat messages become its prompt."""

    def __init__(self, template: str | None, tokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab(with_added_tokens=True) if tokenizer is not None else {}
        if template:
            self.source, self.kind = template, "the model's chat template"
        elif "<|im_start|>" in vocab:
            self.source, self.kind = CHATML, "ChatML (the model has no chat template)"
        else:
            self.source, self.kind = PLAIN, "plain role: content lines (the model has no chat template)"
        self.special = {}
        for name, candidates in (("bos_token", ("<|endoftext|>", "<s>", "<|begin_of_text|>")),
                                 ("eos_token", ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>"))):
            self.special[name] = next((c for c in candidates if c in vocab), "")

    def render(self, messages: list[dict]) -> str:
        from jinja2.exceptions import SecurityError, TemplateError as JinjaError

        tmpl = _compile(self.source)
        try:
            return tmpl.render(messages=messages, add_generation_prompt=True, **self.special)
        except TemplateError:
            raise
        except (SecurityError, JinjaError, TypeError, ValueError, KeyError) as e:
            raise TemplateError(f"the chat template failed on these messages ({type(e).__name__}: {e})",
                                "check the messages' roles and content") from None
