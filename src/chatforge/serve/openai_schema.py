"""The OpenAI API's request and response models: what ``/v1/chat/completions`` and ``/v1/completions`` accept,
validated exactly as declared here, and what they return. ``/openapi.json`` is generated from these classes.

Policy for fields a client may send (docs/serve.md lists them):
* every field declared here is honoured;
* a field OpenAI defines that chatforge does not implement (tools, audio, reasoning, ...) is refused with a 400
  naming it (`REFUSED_CHAT`, `REFUSED_COMPLETIONS`); sent as null, or as the value that means "off" (``tools: []``,
  ``tool_choice: "none"``), it asks for nothing and is accepted;
* any other field is refused as unknown, as OpenAI's own API does ("Unrecognized request argument"). vLLM instead
  ignores unknown fields with a warning in its log; a client then never learns that its field did nothing.
Values are checked strictly: ``"10"`` is not an integer and ``1`` is not a boolean.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from chatforge import chat
from chatforge.serve.errors import APIError

MAX_N = 16  # choices per request
MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat; completions' ``logprobs`` allows 5
MAX_STOPS = 4
SEED_RANGE = 2**63


def invalid(field: str, message: str) -> PydanticCustomError:
    """A validation error about ``field`` in chatforge's own words."""
    return PydanticCustomError(field, "{message}", {"message": message})


StopString = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
LogitBias = Annotated[dict[str, float], WithJsonSchema({
    "type": "object", "propertyNames": {"pattern": "^[0-9]+$"},
    "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}})]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ---- shared request parts ------------------------------------------------------------------------------------


class StreamOptions(Request):
    include_usage: bool = Field(False, description="Send a last chunk with the token usage (and empty choices).")
    include_obfuscation: bool = Field(
        False, description="Must be false or left out: chatforge adds no obfuscation field to its chunks.")


class SamplingFields(Request):
    """The fields both endpoints share: the model and how to sample."""

    model: str = Field(description="The served model's id (GET /v1/models); any other answers 404.")

    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI's formula: subtracted from a token's "
                                     "logit once per time it was already sampled in this reply.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Subtracted from the logit of every token "
                                    "already sampled in this reply.")
    logit_bias: LogitBias | None = Field(
        None, description="Token id (as a string) -> bias added to its logit before sampling.")
    n: int = Field(1, ge=1, le=MAX_N, description="Choices to sample for each prompt, decoded together in the batch.")
    seed: int | None = Field(None, ge=-SEED_RANGE, lt=SEED_RANGE,
                             description="Reproducible sampling: choice j is drawn with seed + j.")
    stop: str | Annotated[list[StopString], Field(max_length=MAX_STOPS)] | None = Field(None, description=f"Up to {MAX_STOPS} strings that end the reply "
                                         "(not included in it).")
    stream: bool = False
    stream_options: StreamOptions | None = Field(None, description="Only with stream: true.")
    temperature: float = Field(1.0, ge=0, le=2, description="0 is greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="chatforge's (and vLLM's) extension: sample among the k most likely "
                       "tokens; 0 = off.")
    user: str | None = Field(None, max_length=256, description="Your end user's id: logged with any moderation "
                             "flag the request raises.")

    @field_validator("stop", mode="wrap")
    @classmethod
    def _stop(cls, value: Any, handler: Any) -> Any:
        problem = f"stop must be a string or a list of up to {MAX_STOPS} non-empty strings, got {value!r:.80}"
        try:
            stop = handler(value)
        except ValidationError:
            raise invalid("stop", problem) from None
        if isinstance(stop, list) and (len(stop) > MAX_STOPS or not all(stop)):
            raise invalid("stop", problem)
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not key.isdigit():
                raise invalid("logit_bias", f"logit_bias keys must be token ids (digits), got {key!r:.40}")
            if not -100 <= bias <= 100:
                raise invalid("logit_bias", f"logit_bias values must be between -100 and 100, got {bias}")
        return value

    @model_validator(mode="after")
    def _options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise invalid("stream_options", "stream_options is only allowed when stream is true")
        return self

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def bias(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(k), float(v)) for k, v in (self.logit_bias or {}).items())


# ---- /v1/chat/completions ------------------------------------------------------------------------------------


class TextPart(Request):
    type: Literal["text"]
    text: str


class ChatMessage(Request):
    role: Literal["system", "developer", "user", "assistant"] = Field(description="developer is read as system.")
    content: Annotated[str, Field(pattern=r"\S")] | Annotated[list[TextPart], Field(min_length=1)] = Field(
        description="Not blank.")
    name: None = Field(None, description="Accepted only as null: the chat template has no place for names.")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


# Fields an assistant message copied back from a response carries; null (or an empty list) says nothing.
_ECHOED_MESSAGE_FIELDS = ("refusal", "tool_calls", "function_call", "audio", "annotations")


class ResponseFormatText(Request):
    type: Literal["text"]


class ResponseFormatJSONObject(Request):
    type: Literal["json_object"]


class JSONSchemaFormat(Request):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatJSONSchema(Request):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema,
                           Field(discriminator="type")]


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation, ending with a user message.")
    logprobs: bool = Field(False, description="Return the log-probability of each token of the reply.")
    top_logprobs: int = Field(0, ge=0, le=MAX_TOP_LOGPROBS, description="With logprobs: that many most likely "
                              "alternatives of each token.")
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1, description="Deprecated by OpenAI for max_completion_tokens, which "
                                   "wins when both are given.")
    response_format: ResponseFormat | None = None
    store: bool = Field(True, description="false: the exchange is not kept in chatforge's store (it is still "
                        "counted in the request log).")
    service_tier: Literal["auto", "default"] | None = Field(None, description="There is one tier.")
    modalities: list[Literal["text"]] | None = Field(None, description="Text is the only output.")
    safety_identifier: str | None = Field(None, max_length=256, description="Like user.")

    @field_validator("messages", mode="wrap")
    @classmethod
    def _messages(cls, value: Any, handler: Any) -> Any:
        # chatforge's own checks first: they name the message and the problem better than the typed ones
        if not isinstance(value, list):
            raise invalid("messages", "'messages' must be a list of {role, content} objects, got "
                                      f"{type(value).__name__}")
        if not value:
            raise invalid("messages", "'messages' is empty: it needs at least one user message")
        cleaned = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise invalid("messages", f"message {i}: expected an object with 'role' and "
                                          f"'content', got {type(item).__name__}")
            item = {k: v for k, v in item.items() if not (k in _ECHOED_MESSAGE_FIELDS and v in (None, []))}
            if "role" not in item:
                raise invalid("messages", f"message {i}: missing 'role'")
            role = item["role"]
            if role not in ("system", "developer", "user", "assistant"):
                raise invalid("messages", f"message {i}: unknown role {role!r}; expected one of "
                                          "system, developer, user, assistant (tool messages: no tool calling)")
            if "content" not in item:
                raise invalid("messages", f"message {i}: missing 'content'")
            content = item["content"]
            if isinstance(content, list):
                if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                    raise invalid("messages", f"message {i}: only text content parts are supported")
            elif not isinstance(content, str):
                raise invalid("messages", f"message {i} ({role}): content must be a string or a list "
                                          f"of text parts, got {type(content).__name__}")
            extra = sorted(set(item) - {"role", "content", "name"})
            if extra:
                raise invalid("messages", f"message {i}: unsupported field '{extra[0]}'")
            if item.get("name") is not None:
                raise invalid("messages", f"message {i}: 'name' is not supported (the chat template "
                                          "has no place for it)")
            cleaned.append(item)
        # the conversation as the model will see it: order, blank or invalid text, size (chat.validate_messages)
        as_chat = [chat.Message("system" if x["role"] == "developer" else x["role"],
                                x["content"] if isinstance(x["content"], str) else
                                "".join(str(p.get("text", "")) for p in x["content"])) for x in cleaned]
        try:
            chat.validate_messages(as_chat, last="user")
        except chat.ConversationError as err:
            raise invalid("messages", str(err)) from None
        return handler(cleaned)

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise invalid("top_logprobs", "top_logprobs needs logprobs: true")
        return self


# Fields of OpenAI's chat API that chatforge refuses by name, with why; the value that asks for nothing is accepted.
REFUSED_CHAT: dict[str, tuple[str, tuple[Any, ...]]] = {
    "tools": ("tool calling is not supported", (None, [])),
    "tool_choice": ("tool calling is not supported", (None, "none")),
    "parallel_tool_calls": ("tool calling is not supported", (None,)),
    "functions": ("function calling is not supported", (None, [])),
    "function_call": ("function calling is not supported", (None, "none")),
    "audio": ("audio output is not supported", (None,)),
    "prediction": ("predicted outputs are not supported", (None,)),
    "web_search_options": ("web search is not supported", (None,)),
    "reasoning_effort": ("the model does not reason in hidden tokens", (None,)),
    "verbosity": ("verbosity is not supported", (None,)),
    "metadata": ("metadata cannot be stored (the store has no place for it)", (None, {})),
    "prompt_cache_key": ("there is no prompt cache", (None,)),
    "prompt_cache_retention": ("there is no prompt cache", (None,)),
    "prompt_cache_options": ("there is no prompt cache", (None,)),
    "moderation": ("moderation is configured by the server (chatforge serve --moderation)", (None,)),
}


# ---- /v1/completions -----------------------------------------------------------------------------------------


class CompletionRequest(SamplingFields):
    prompt: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] \
        | TokenIds | Annotated[list[TokenIds], Field(min_length=1)] = Field(
        description="A text, a list of texts, a list of token ids, or a list of those; each gets n choices.")
    echo: bool = Field(False, description="Put the prompt's text before each choice's text.")
    logprobs: int | None = Field(None, ge=0, le=5, description="Log-probabilities of the tokens and of that many "
                                 "most likely alternatives.")
    max_tokens: int | None = Field(None, ge=1, description="Default 16 (or the server's limit if lower).")
    best_of: int | None = Field(None, ge=1, le=MAX_N, description="Accepted only equal to n (or null): choosing "
                                "the best of more samples is not implemented.")
    suffix: str | None = Field(None, description="Accepted only as null or empty: no insertion (fill-in-the-middle).")

    @field_validator("prompt", mode="wrap")
    @classmethod
    def _prompt(cls, value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise invalid("prompt", "'prompt' must be a non-empty string, a list of them, a list of token ids "
                          f"(integers >= 0) or a list of such lists; got {value!r:.60}") from None

    @model_validator(mode="after")
    def _refused_values(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise invalid("best_of", "best_of other than n is not supported (no choosing the best of "
                                      "more samples)")
        if self.suffix:
            raise invalid("suffix", "suffix is not supported (no insertion / fill-in-the-middle)")
        if self.echo and self.logprobs is not None:
            raise invalid("logprobs", "logprobs with echo (the prompt's log-probabilities) is not "
                                      "supported")
        return self

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


REFUSED_COMPLETIONS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "metadata": REFUSED_CHAT["metadata"],
    "response_format": ("response_format is a chat completions field here: use /v1/chat/completions", (None,)),
}


# ---- responses -----------------------------------------------------------------------------------------------


class Response(BaseModel):
    pass


class ErrorDetail(Response):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(Response):
    error: ErrorDetail


class Model(Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(Response):
    object: Literal["list"] = "list"
    data: list[Model]


class Usage(Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(Response):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(Response):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Response):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class Envelope(Response):
    """What every completion response and chunk carries around its choices."""

    id: str
    created: int
    model: str


class AssistantMessage(Response):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class ChatChoice(Response):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage
    service_tier: Literal["default"] = "default"
    system_fingerprint: str | None = None


class ChunkDelta(Response):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(Response):
    index: int
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(Envelope):
    """One server-sent event of a streamed chat completion (``data: {...}``; the stream ends with
    ``data: [DONE]``)."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(Response):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(Response):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class Completion(Envelope):
    """Also each server-sent event of a streamed completion (with that event's text)."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


# ---- validating a request ------------------------------------------------------------------------------------

_KINDS = {"int_type": "an integer", "int_parsing": "an integer", "float_type": "a number", "bool_type": "a boolean",
          "string_type": "a string", "list_type": "a list", "dict_type": "an object", "model_type": "an object"}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
           "less_than": ("<", "lt")}


R = TypeVar("R", bound=SamplingFields)


def parse_request(model: type[R], data: dict[str, Any], refused: dict[str, tuple[str, tuple[Any, ...]]]) -> R:
    """``data`` validated as ``model``, or an APIError (400) that names the field and the problem."""
    data = _whole_numbers(data)
    for name, (why, neutral) in refused.items():
        if name in data:
            if any(data[name] == v and type(data[name]) is type(v) for v in neutral):
                del data[name]  # asks for nothing
            else:
                raise APIError(400, f"'{name}' is not supported: {why}", param=name, code="unsupported_parameter")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise _as_api_error(err) from None


def _whole_numbers(value: Any) -> Any:
    """JSON Schema counts 2.0 as an integer, and so do we (2.5 and "2" are not): whole floats become ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**64:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _as_api_error(err: ValidationError) -> APIError:
    first = err.errors(include_url=False)[0]
    kind, value = first["type"], first.get("input")
    loc = [str(x) for x in first["loc"]]
    # a union's member names ("str", "list[str]", "function-wrap[...]") are not part of the field's path
    path = [x for x in loc if not any(c in x for c in "[]") and x not in ("str", "int", "float", "bool")]
    field = ".".join(path) or kind
    got = type(value).__name__ if value is not None else "null"
    if kind == "missing":
        return APIError(400, f"missing required field '{field}'", param=field, code="missing_field")
    if kind == "extra_forbidden":
        return APIError(400, f"unknown field '{field}'", param=field, code="unknown_field")
    if kind in _KINDS:
        return APIError(400, f"'{field}' must be {_KINDS[kind]}, got {got}", param=field, code="invalid_type")
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return APIError(400, f"{field} must be {op} {first['ctx'][key]}, got {value!r}", param=field,
                        code="invalid_value")
    if kind in ("too_long", "too_short"):
        return APIError(400, f"{field}: {first['msg'].lower()}", param=field, code="invalid_value")
    if kind in ("literal_error", "union_tag_invalid", "enum"):
        expected = first.get("ctx", {}).get("expected", "")
        return APIError(400, f"{field} must be {expected}, got {value!r}", param=field, code="invalid_value")
    if kind == "union_tag_not_found":
        return APIError(400, f"{field} needs a 'type'", param=field, code="invalid_value")
    # chatforge's own checks (`invalid`): a model-level check has no path, its error type names the field
    return APIError(400, first["msg"], param=field, code="invalid_value")
