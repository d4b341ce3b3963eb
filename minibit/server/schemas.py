"""Request bodies of the OpenAI-style routes, as pydantic models, and the error body.

Validation is strict: a number must be a JSON number (``"0.5"`` is refused, an integer is
accepted where a float is expected), a boolean a JSON boolean, a string a string.  NaN and
infinities never get here (the JSON reader refuses them).  Fields a client may send that
minibit does not implement are ignored when they are absent or hold their default, and
refused otherwise (``UNSUPPORTED``), so no client believes it got what it asked for.

Ranges follow the OpenAI API (temperature in [0, 2], top_p in (0, 1], penalties in [-2, 2],
``n`` = 1, at most 4 stop strings); ``top_k``, ``min_p`` and ``repeat_penalty`` are
minibit's own sampling options (see minibit.sampling).  ``max_tokens`` is checked against
the context by the web layer, which knows the prompt's length.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["CompletionRequest", "ChatRequest", "error_body", "describe", "unsupported_field",
           "ValidationError"]

BIG = 2 ** 31 - 1                     # no count in a request is larger than this
MAX_TEXT = 1 << 20                    # characters in one prompt or message

Text = Annotated[str, Field(max_length=MAX_TEXT)]
Stop = Annotated[str, Field(max_length=256)]

# field -> the values that mean "not asked for"
UNSUPPORTED = {
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False),
    "best_of": (None, 1), "suffix": (None, ""), "logit_bias": (None, {}),
    "tools": (None, []), "functions": (None, []), "tool_choice": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int, Field(ge=1, le=BIG)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2 ** 63)] | None = None
    stop: Stop | Annotated[list[Stop], Field(max_length=4)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    top_k: Annotated[int, Field(ge=0, le=BIG)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None

    def stops(self) -> tuple:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def generate_kwargs(self) -> dict:
        """Model.generate keywords (without max_new_tokens); OpenAI's defaults where absent."""
        def pick(v, default):
            return default if v is None else v
        return dict(temperature=float(pick(self.temperature, 1.0)), top_p=float(pick(self.top_p, 1.0)),
                    top_k=pick(self.top_k, 0), min_p=float(pick(self.min_p, 0.0)),
                    repeat_penalty=float(pick(self.repeat_penalty, 1.0)),
                    frequency_penalty=float(pick(self.frequency_penalty, 0.0)),
                    presence_penalty=float(pick(self.presence_penalty, 0.0)),
                    seed=self.seed, stop=self.stops())


class CompletionRequest(_Sampling):
    """POST /v1/completions.  ``prompt``: a string, or a list holding one string."""

    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=1)]

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: Text


class Message(BaseModel):
    """One chat message; "developer" is OpenAI's newer name for "system" and is passed to the
    chat template as "system"."""

    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[TextPart], Field(max_length=256)]

    def as_template_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(_Sampling):
    """POST /v1/chat/completions.  ``max_completion_tokens`` is the newer name of max_tokens."""

    messages: Annotated[list[Message], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=BIG)] | None = None

    def completion_limit(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


def unsupported_field(data: dict) -> str | None:
    """The first field of ``data`` that asks for something minibit does not implement."""
    for name, defaults in UNSUPPORTED.items():
        if name in data and not any(data[name] == d and type(data[name]) is type(d) for d in defaults):
            return name
    return None


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """The OpenAI error object: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def describe(err: ValidationError) -> tuple[str, str | None]:
    """(one readable message, the first offending field) for a pydantic ValidationError."""
    parts = []
    for e in err.errors(include_url=False)[:3]:
        where = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    first = err.errors(include_url=False)[0]["loc"] if err.error_count() else ()
    return "; ".join(parts), (str(first[0]) if first else None)
