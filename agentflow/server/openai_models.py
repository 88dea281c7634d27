"""Request and response models of the OpenAI-compatible API (``openai_api``): the bodies it accepts,
checked strictly, and the shapes it answers with, for the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.config import JsonDict

from agentflow.server.generation import cleaned

MAX_STOP = 16
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


# ---- request models ------------------------------------------------------------------------------------------
# Strict (no coercion: ``true`` is not 1), and as much of what is accepted as JSON Schema can say is in
# the OpenAPI document; what it cannot (a tool named by tool_choice but not among the tools, a schema
# that does not compile, token ids past the vocabulary, a prompt longer than the context) is a 400.

class _Lenient(BaseModel):
    """Unknown fields are ignored, as OpenAI clients send newer ones (``store``, ``metadata`` ...)."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


NonEmpty = Annotated[str, Field(min_length=1)]
TokenId = Annotated[int, Field(ge=0)]


class FunctionCallIn(_Lenient):
    name: str = Field(min_length=1)
    arguments: str = Field(description="The arguments as a JSON string.")


class ToolCallIn(_Lenient):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class RefusalPart(_Lenient):
    type: Literal["refusal"]
    refusal: str


Content = str | list[TextPart]
"""A string, or text parts (joined by newlines); this model reads text only."""
AssistantContent = str | list[Annotated[TextPart | RefusalPart, Field(discriminator="type")]]


class SystemMessage(_Lenient):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Lenient):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Lenient):
    role: Literal["assistant"]
    content: AssistantContent | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None
    name: str | None = None


class ToolMessage(_Lenient):
    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class ToolParameters(_Lenient):
    """A JSON Schema of an object: ``type`` is ``object`` (``{}`` is taken as any object, as vLLM takes it);
    its other keywords pass through."""

    model_config = ConfigDict(extra="allow")

    type: Literal["object"] = "object"


class FunctionDef(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: ToolParameters | None = Field(default=None, description="JSON Schema of the arguments (an object; "
                                              "none: no arguments).")
    strict: bool | None = None


class ToolDef(_Lenient):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Lenient):
    name: str = Field(min_length=1)


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema",
                                           description="The JSON Schema the output follows (default: any object).")
    strict: bool | None = None


class TextFormat(_Lenient):
    type: Literal["text"]


class JsonObjectFormat(_Lenient):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(_Lenient):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class StreamOptions(_Lenient):
    include_usage: bool | None = False


class SamplingFields(_Lenient):
    """What chat and completion requests share."""

    model: str = Field(min_length=1, max_length=256)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=0, description="Not supported (only "
                                                "empty).")
    user: str | None = None


_SOME_TOOLS: JsonDict = {"type": "array", "minItems": 1}
_JSON_FORMAT: JsonDict = {"type": "object", "required": ["type"],
                          "properties": {"type": {"enum": ["json_object", "json_schema"]}}}
_CHAT_RULES: JsonDict = {
    # tool_choice "required" or a named tool needs tools
    "if": {"required": ["tool_choice"],
           "properties": {"tool_choice": {"anyOf": [{"const": "required"}, {"type": "object"}]}}},
    "then": {"required": ["tools"], "properties": {"tools": _SOME_TOOLS}},
    # tools and a JSON response_format do not go together (the tool-call format is the constraint)
    "not": {"required": ["tools", "response_format"],
            "properties": {"tools": _SOME_TOOLS, "response_format": _JSON_FORMAT}},
}


class ChatCompletionRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra=_CHAT_RULES)

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Wins over max_tokens.")
    logprobs: bool | None = Field(default=False, description="Not reported for requests with tools.")
    top_logprobs: int | None = Field(default=None, ge=0, le=0, description="Only 0 is supported.")
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None, description='"required" or a named tool needs tools.')
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    functions: None = Field(default=None, description="Not supported: use tools.")
    function_call: None = Field(default=None, description="Not supported: use tool_choice.")
    modalities: list[Literal["text"]] | None = Field(default=None, description="This model writes text only.")
    audio: None = Field(default=None, description="Not supported.")

    @field_validator("tool_choice")
    @classmethod
    def _choice_needs_tools(cls, value: Any, info: ValidationInfo) -> Any:
        if (value == "required" or isinstance(value, NamedToolChoice)) and not info.data.get("tools"):
            raise ValueError('"required" or a named tool needs tools')
        return value

    @field_validator("response_format")
    @classmethod
    def _no_json_with_tools(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("tools") and isinstance(value, (JsonObjectFormat, JsonSchemaResponseFormat)):
            raise ValueError("json_object / json_schema cannot be combined with tools (the tool-call format is the "
                             "constraint)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any) -> Any:
        return cleaned(data)


_TEXT_PROMPT: JsonDict = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_ECHO: JsonDict = {"if": {"required": ["echo"], "properties": {"echo": {"const": True}}},
                   "then": {"properties": {"prompt": _TEXT_PROMPT, "logprobs": {"type": "null"}}}}


class CompletionRequest(SamplingFields):
    model_config = ConfigDict(json_schema_extra=_ECHO)

    prompt: (NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=1)]
             | Annotated[list[TokenId], Field(min_length=1)]
             | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1, max_length=1)]) = \
        Field(description="One prompt: text or token ids (or a list holding one of them).")
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=0, description="Only 0 is supported (the chosen tokens' "
                                 "log-probabilities; no alternatives).")
    echo: bool | None = Field(default=False, description="Needs a text prompt and no logprobs.")
    suffix: str | None = Field(default=None, max_length=0, description="Not supported.")
    best_of: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported.")

    @field_validator("echo")
    @classmethod
    def _echo_needs_text(cls, value: Any, info: ValidationInfo) -> Any:
        prompt = info.data.get("prompt")
        if value and prompt is not None and not isinstance(prompt, str) and not isinstance(prompt[0], str):
            raise ValueError("echo needs a text prompt")
        if value and info.data.get("logprobs") is not None:
            raise ValueError("echo with logprobs (the prompt's log-probabilities) is not supported")
        return value

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any) -> Any:
        return cleaned(data)


# ---- response models (for the OpenAPI document; the handlers write the same shapes as dicts) ----------------

class PromptTokensDetails(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[dict[str, Any]]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessageOut
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]
