"""The `POST /v1/responses` body as typed models, and each input item's one normal shape.

Validation is pydantic's, in strict mode: a JSON string is never taken for a number or a boolean,
as OpenAI checks types. `request.py` turns the first validation error into an OpenAI-shaped 400.
Fields of items that Parley does not use (the ids and statuses an SDK echoes back from an earlier
output) are dropped, and every item is rebuilt with an id of its own: the ids are what
`input_items` returns, and they are stripped again before the items go upstream.

The SDK's own request types are used where they say what Parley accepts (`tool_choice`); its
item and tool types are stricter than Parley's policy (a tool's `strict` and `parameters`, an
image's `detail`, a call's `arguments` are all required there), so those are modelled here.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from openai.types.responses import ToolChoiceFunctionParam, ToolChoiceOptions
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from parley.responses.request import CreateRequest, new_id

MAX_X_CONTEXT_BYTES = 10 * 1024
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_OUTPUT_TOKENS = 128_000
"""The most any OpenAI model writes in one response; a larger limit is a mistake, refused here
rather than forwarded upstream."""
MAX_TOP_LOGPROBS = 20

# Host names that always mean this machine or the cloud's metadata service.
_INTERNAL_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".local")

# A union member's tag that no member has: an item or part of a type Parley does not take.
_UNSUPPORTED = "unsupported"


class Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# --- content parts ----------------------------------------------------------------------------


class _Text(Wire):
    text: str

    def normalised(self, role: str) -> dict[str, Any]:
        # An assistant's text goes back upstream as the model's own output, whichever was sent.
        if role == "assistant":
            return {"type": "output_text", "text": self.text, "annotations": []}
        return {"type": "input_text", "text": self.text}


class InputText(_Text):
    type: Literal["input_text"]


class OutputText(_Text):
    type: Literal["output_text"]


def public_url(value: str) -> str:
    """An image or file URL the upstream may fetch: `https` to a public host, or a `data:` URL.

    Only what the URL itself says is judged (a literal IP, an obvious internal name); names
    are not resolved, so the check costs nothing and cannot be raced by DNS. The upstream
    fetches the URL, not Parley, so a name that resolves inward reaches only the upstream's
    own network."""
    if value.startswith("data:"):
        return value
    try:
        parts = urlsplit(value)
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        host, parts = "", None
    if parts is None or parts.scheme != "https" or not host or _internal(host):
        raise PydanticCustomError("unsafe_url", "not an https URL to a public host")
    return value


def _internal(host: str) -> bool:
    if host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


PublicURL = Annotated[str, AfterValidator(public_url)]


class InputImage(Wire):
    type: Literal["input_image"]
    image_url: PublicURL | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _has_a_source(cls, data: Any) -> Any:
        # Before the fields, so an image with nothing to show says so first.
        if not any(isinstance(data.get(name), str) for name in ("image_url", "file_id")):
            raise PydanticCustomError("image_source", "an input_image needs a source")
        return data

    def normalised(self, role: str) -> dict[str, Any]:
        image: dict[str, Any] = {"type": "input_image", "detail": self.detail}
        if self.image_url is not None:
            image["image_url"] = self.image_url
        if self.file_id is not None:
            image["file_id"] = self.file_id
        return image


class InputFile(Wire):
    type: Literal["input_file"]
    file_id: str | None = None
    file_url: PublicURL | None = None
    file_data: str | None = None
    filename: str | None = None

    def normalised(self, role: str) -> dict[str, Any]:
        # The fields the caller sent, nulls included; the upstream judges the file itself.
        return self.model_dump(exclude_unset=True)


def _part_tag(part: Any) -> str | None:
    # No tag for a non-object ("expected an object"); an unknown type matches no member.
    return str(part.get("type")) if isinstance(part, dict) else None


def _text_as_parts(value: Any) -> Any:
    # A string is the short form of one text part.
    return [{"type": "input_text", "text": value}] if isinstance(value, str) else value


UserPart = Annotated[
    Annotated[InputText, Tag("input_text")]
    | Annotated[OutputText, Tag("output_text")]
    | Annotated[InputImage, Tag("input_image")]
    | Annotated[InputFile, Tag("input_file")],
    Discriminator(_part_tag),
]
# The model's own earlier output is text only.
AssistantPart = Annotated[
    Annotated[InputText, Tag("input_text")] | Annotated[OutputText, Tag("output_text")],
    Discriminator(_part_tag),
]


# --- input items ------------------------------------------------------------------------------


def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": role,
        "content": content,
        "status": "completed",
    }


class UserMessage(Wire):
    role: Literal["user", "system", "developer"]
    content: Annotated[list[UserPart], BeforeValidator(_text_as_parts), Field(min_length=1)]

    def normalised(self) -> dict[str, Any]:
        return _message(self.role, [part.normalised(self.role) for part in self.content])


class AssistantMessage(Wire):
    role: Literal["assistant"]
    content: Annotated[list[AssistantPart], BeforeValidator(_text_as_parts), Field(min_length=1)]

    def normalised(self) -> dict[str, Any]:
        return _message(self.role, [part.normalised(self.role) for part in self.content])


class FunctionCall(Wire):
    call_id: str
    name: str
    arguments: str = "{}"

    def normalised(self) -> dict[str, Any]:
        return {
            "id": new_id("fc"),
            "type": "function_call",
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
            "status": "completed",
        }


class FunctionCallOutput(Wire):
    call_id: Annotated[str, Field(min_length=1)]
    output: Any = None

    def normalised(self) -> dict[str, Any]:
        # Any JSON is taken as the output and sent on as its text.
        output = self.output if isinstance(self.output, str) else json.dumps(self.output)
        return {
            "id": new_id("fco"),
            "type": "function_call_output",
            "call_id": self.call_id,
            "output": output,
            "status": "completed",
        }


def _item_tag(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        # An assistant's message holds the model's earlier output, so its parts differ.
        return "assistant" if item.get("role") == "assistant" else "message"
    return kind if kind in ("function_call", "function_call_output") else _UNSUPPORTED


def _string_as_message(value: Any) -> Any:
    # A string is the short form of one user message.
    if not isinstance(value, str):
        return value
    if not value:
        raise PydanticCustomError("empty_string", "empty string")
    return [{"role": "user", "content": value}]


Item = Annotated[
    Annotated[UserMessage, Tag("message")]
    | Annotated[AssistantMessage, Tag("assistant")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")],
    Discriminator(_item_tag),
]


# --- the body ---------------------------------------------------------------------------------


class FunctionTool(Wire):
    type: Literal["function"]
    name: Annotated[str, Field(min_length=1)]
    parameters: dict[str, Any] | None = None
    strict: bool | None = True
    description: str | None = None

    def normalised(self) -> dict[str, Any]:
        tool: dict[str, Any] = {
            "type": "function",
            "name": self.name,
            "parameters": self.parameters,
            "strict": bool(self.strict),  # a null `strict` is off
        }
        if self.description is not None:
            tool["description"] = self.description
        return tool


def _at_most_10_kb(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_X_CONTEXT_BYTES:
        raise PydanticCustomError("too_large", "too large")
    return value


def _at_most_16_pairs(value: Any) -> Any:
    # Counted before the pairs are checked, so too many pairs is what is reported.
    if isinstance(value, dict) and len(value) > MAX_METADATA_PAIRS:
        raise PydanticCustomError("too_long", "too many pairs")
    return value


MetadataKey = Annotated[str, Field(max_length=MAX_METADATA_KEY)]
MetadataValue = Annotated[str, Field(max_length=MAX_METADATA_VALUE)]


class Strict(BaseModel):
    """A setting passed upstream as sent: a field Parley does not know is refused, not dropped."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class TextFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    strict: bool | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _schema_has_a_name(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise PydanticCustomError("json_schema", "a json_schema needs a name and a schema")
        return self


class TextConfig(Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(Strict):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class CreateBody(Wire):
    """The fields Parley reads, in the order they are checked: the first problem is reported."""

    model: Annotated[str, Field(min_length=1)]
    x_context: Annotated[dict[str, Any], AfterValidator(_at_most_10_kb)] | None = None
    input: Annotated[list[Item], BeforeValidator(_string_as_message), Field(min_length=1)]
    instructions: str | None = None
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: ToolChoiceOptions | ToolChoiceFunctionParam | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    max_output_tokens: Annotated[int, Field(ge=16, le=MAX_OUTPUT_TOKENS)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], BeforeValidator(_at_most_16_pairs)] = (
        Field(default_factory=dict)
    )
    store: bool = True
    background: bool = False
    stream: bool = False
    previous_response_id: str | None = None

    def to_request(self) -> CreateRequest:
        tool_choice: Any = self.tool_choice
        if isinstance(tool_choice, dict):  # the SDK's function choice, without anything extra
            tool_choice = {"type": "function", "name": tool_choice["name"]}
        return CreateRequest(
            model=self.model,
            input=[item.normalised() for item in self.input],
            instructions=self.instructions,
            tools=[tool.normalised() for tool in self.tools],
            tool_choice=tool_choice,
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            top_p=self.top_p,
            text=_dumped(self.text),
            reasoning=_dumped(self.reasoning),
            metadata=dict(self.metadata),
            store=self.store,
            background=self.background,
            stream=self.stream,
            previous_response_id=self.previous_response_id,
            x_context=self.x_context,
        )


def _dumped(setting: Strict | None) -> dict[str, Any] | None:
    return None if setting is None else setting.model_dump(by_alias=True, exclude_none=True)
