"""A `POST /v1/responses` body, checked as OpenAI checks it, into a `CreateRequest`.

The body is validated by the typed models in `schemas.py`. Every problem is a 400 naming the
parameter (`param`), never FastAPI's 422: the first validation error is told by the rule for
where it is (`RULES`), in OpenAI's words.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from parley.api.errors import APIError, bad_request
from parley.api.responses.schemas import (
    MAX_METADATA_KEY,
    MAX_METADATA_PAIRS,
    MAX_METADATA_VALUE,
    MAX_OUTPUT_TOKENS,
    MAX_TOP_LOGPROBS,
    MAX_X_CONTEXT_BYTES,
    CreateBody,
)
from parley.responses.request import CreateRequest

KNOWN_FIELDS = frozenset(CreateBody.model_fields)
DEFAULT_ONLY: dict[str, tuple[Any, ...]] = {
    # Sent by SDKs and clients with the value that is what Parley does anyway; any other value
    # asks for something Parley does not do, and is refused.
    "parallel_tool_calls": (True,),
    "truncation": ("disabled",),
    "service_tier": ("auto", "default"),
    "include": ([],),
}
UNSUPPORTED_FIELDS = frozenset(
    {
        # The OpenAI SDK's `responses.create` parameters that Parley does not honour: refused
        # with a 400 naming them, never silently dropped. Parley's agent profile decides the
        # prompt, and the thread is chained by `previous_response_id`, not a conversation.
        "access_programs",
        "background_options",
        "context_management",
        "conversation",
        "image",
        "max_tool_calls",
        "moderation",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "safety_identifier",
        "stream_options",
        "user",
    }
)
"""Every other field the SDK can send is read (`CreateBody`) or in `DEFAULT_ONLY`; anything
else is an unknown parameter."""


def body_hash(body: dict[str, Any]) -> str:
    """The body as the idempotency check compares it: parsed JSON, keys sorted. The form is
    stored with each response, so it stays `json.dumps`'s, not a faster encoder's."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_json(raw: bytes) -> dict[str, Any]:
    # The stdlib's parser, not orjson: a request is small, and orjson reads what the stdlib
    # does differently (NaN refused, integers past 64 bits as floats).
    try:
        body = json.loads(raw)
    except RecursionError:
        raise bad_request(
            "The JSON body of your request is nested too deeply.", code="invalid_json"
        ) from None
    except ValueError:
        raise APIError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_type")
    return body


def parse_create(body: dict[str, Any]) -> CreateRequest:
    # A null field is one not sent (a misspelt one is named all the same).
    sent = {name: value for name, value in body.items() if value is not None}
    # A misspelt field is named before anything else is checked (the first by name).
    unknown = sorted(
        name
        for name in body
        if name not in KNOWN_FIELDS
        and name not in DEFAULT_ONLY
        and (name in sent or name not in UNSUPPORTED_FIELDS)
    )
    if unknown:
        name = unknown[0]
        if name in UNSUPPORTED_FIELDS:
            raise bad_request(
                f"Unsupported parameter: '{name}' is not supported by this agent.",
                param=name,
                code="unsupported_parameter",
            )
        raise bad_request(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    for name, allowed in sorted(DEFAULT_ONLY.items()):
        if name in sent and not any(_same(sent[name], value) for value in allowed):
            shown = " or ".join(json.dumps(value) for value in allowed)
            raise bad_request(
                f"Unsupported value for '{name}': this agent only takes {shown}.",
                param=name,
                code="unsupported_value",
            )
    given = {name: value for name, value in sent.items() if name in KNOWN_FIELDS}
    try:
        wire = CreateBody.model_validate(given)
    except ValidationError as exc:
        raise _problem(exc.errors(include_url=False)[0]) from None
    if wire.top_logprobs:
        raise bad_request(
            "Unsupported value for 'top_logprobs': this agent returns no log probabilities.",
            param="top_logprobs",
            code="unsupported_value",
        )
    if wire.background and not wire.store:
        # As OpenAI: a background response is fetched later, so it must be stored.
        raise bad_request(
            "Background mode requires store=true.", param="background", code="unsupported_value"
        )
    return wire.to_request()


def _same(sent: Any, allowed: Any) -> bool:
    # `True == 1` in Python, but not in JSON.
    return type(sent) is type(allowed) and sent == allowed


# --- validation errors as OpenAI's 400s -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """How a problem is told: `message` names the `{param}` (and `{kind}`, the type sent)."""

    message: str
    code: str | None = None
    suffix: str = ""
    """Added to the param: an unsupported item or part is reported at its `.type`."""


_STRING = Rule("Invalid type for '{param}': expected a string.", "invalid_type")
_BOOLEAN = Rule("Invalid type for '{param}': expected a boolean.", "invalid_type")
_OBJECT = Rule("Invalid '{param}': expected an object.")
_TEXT = Rule("Invalid '{param}': expected a string.")
_REQUIRED = Rule("Missing required parameter: '{param}'.", "missing_required_parameter")
_NESTED_REQUIRED = Rule("Missing required parameter: '{param}'.")
_PART = "input[]<*>.content[]"

# Keyed by where a problem is, as pydantic locates it: `[]` is any index, `*` any key, `<tag>`
# the union member an item's or part's type picked (`<*>`: any). A rule covers the places below
# it that have none of their own, and names its own place (so any problem inside a function_call
# names the item). `where:type` is for that pydantic error type at that place only.
RULES: dict[str, Rule] = {
    "model": _REQUIRED,
    "x_context": Rule("Invalid '{param}': expected a JSON object."),
    "x_context:too_large": Rule(
        f"Invalid '{{param}}': at most {MAX_X_CONTEXT_BYTES // 1024} KB of JSON.",
        "string_above_max_length",
    ),
    "input": Rule("Invalid '{param}': expected a string or a non-empty array of items."),
    "input:missing": _REQUIRED,
    "input:empty_string": Rule("Invalid '{param}': empty string.", "empty_string"),
    "input[]": _OBJECT,
    "input[]:union_tag_invalid": Rule(
        "Invalid '{param}': '{kind}' is not supported here; send messages, function_call and "
        "function_call_output items.",
        suffix=".type",
    ),
    "input[]<*>.role": Rule(
        "Invalid '{param}': expected one of user, assistant, system, developer."
    ),
    "input[]<*>.content": Rule("Invalid '{param}': expected a string or an array of parts."),
    _PART: _OBJECT,
    f"{_PART}:union_tag_invalid": Rule(
        "Invalid '{param}': '{kind}' is not supported.", suffix=".type"
    ),
    f"{_PART}<*>.text": _TEXT,
    f"{_PART}<input_image>": Rule(
        "Invalid '{param}': an input_image needs an image_url or a file_id."
    ),
    f"{_PART}<input_image>.detail": Rule("Invalid '{param}'."),
    **{
        f"{_PART}<*>.{name}": _STRING
        for name in ("image_url", "file_id", "file_url", "file_data", "filename")
    },
    **{
        f"{_PART}<*>.{name}:unsafe_url": Rule(
            "Invalid '{param}': only https URLs to public hosts and data: URLs are accepted.",
            "invalid_value",
        )
        for name in ("image_url", "file_url")
    },
    "input[]<function_call>": Rule(
        "Invalid '{param}': a function_call needs call_id, name and arguments (a string)."
    ),
    "input[]<function_call_output>.call_id": _NESTED_REQUIRED,
    "instructions": _STRING,
    "tools": Rule("Invalid '{param}': expected an array."),
    "tools[]": Rule("Invalid '{param}': only function tools can be given to this agent."),
    "tools[].name": _NESTED_REQUIRED,
    "tools[].parameters": _OBJECT,
    "tools[].strict": _BOOLEAN,
    "tools[].description": _STRING,
    "tool_choice": Rule("Invalid '{param}': expected 'auto', 'none', 'required' or a function."),
    "temperature": Rule("Invalid '{param}': expected a number from 0.0 to 2.0.", "invalid_value"),
    "max_output_tokens": Rule(
        "Invalid '{param}': expected an integer of at least 16.", "integer_below_min_value"
    ),
    "max_output_tokens:less_than_equal": Rule(
        f"Invalid '{{param}}': expected an integer of at most {MAX_OUTPUT_TOKENS}.",
        "integer_above_max_value",
    ),
    "top_p": Rule("Invalid '{param}': expected a number from 0.0 to 1.0.", "invalid_value"),
    "top_logprobs": Rule(
        f"Invalid '{{param}}': expected an integer from 0 to {MAX_TOP_LOGPROBS}.", "invalid_value"
    ),
    "text": Rule("Invalid '{param}': expected an object."),
    "text.format": Rule(
        "Invalid '{param}': expected a format of type text, json_object or json_schema "
        "(with a name and a schema)."
    ),
    "text.format.name": Rule(
        "Invalid '{param}': at most 64 letters, digits, underscores and dashes."
    ),
    "text.verbosity": Rule("Invalid '{param}': expected one of low, medium, high."),
    "reasoning": Rule("Invalid '{param}': expected an object with effort and summary."),
    "reasoning.effort": Rule(
        "Invalid '{param}': expected one of none, minimal, low, medium, high, xhigh."
    ),
    "reasoning.summary": Rule("Invalid '{param}': expected one of auto, concise, detailed."),
    "metadata": Rule(
        f"Invalid '{{param}}': expected an object of at most {MAX_METADATA_PAIRS} pairs."
    ),
    "metadata.*": Rule(
        f"Invalid '{{param}}': keys are at most {MAX_METADATA_KEY} characters and values "
        f"strings of at most {MAX_METADATA_VALUE}."
    ),
    "store": _BOOLEAN,
    "background": _BOOLEAN,
    "stream": _BOOLEAN,
    "previous_response_id": _STRING,
}

_SEGMENT = re.compile(r"\[\]|<[^>]*>|[^.\[<]+")
_COMPILED = [
    (tuple(_SEGMENT.findall(where)), error_type or None, rule)
    for key, rule in RULES.items()
    for where, _, error_type in [key.partition(":")]
]


def _problem(error: ErrorDetails) -> APIError:
    """The 400 for one pydantic error, by the most particular rule that covers it."""
    loc = error["loc"]
    covering = [
        (len(segments), error_type is not None, segments, rule)
        for segments, error_type, rule in _COMPILED
        if _covers(segments, error_type, error)
    ]
    # Every field of the body has a rule, so something always covers a problem.
    _, _, segments, rule = max(covering, key=lambda found: found[:2])
    param = _param(segments, loc) + rule.suffix
    given = error["input"]
    kind = given.get("type") if isinstance(given, dict) else None
    return bad_request(rule.message.format(param=param, kind=kind), param=param, code=rule.code)


def _covers(segments: tuple[str, ...], error_type: str | None, error: ErrorDetails) -> bool:
    loc = error["loc"]
    if len(segments) > len(loc) or not all(map(_fits, segments, loc)):
        return False
    return error_type is None or (error_type == error["type"] and len(segments) == len(loc))


def _fits(segment: str, part: str | int) -> bool:
    if segment == "[]":
        return isinstance(part, int)
    if segment in ("*", "<*>"):
        return isinstance(part, str)
    if segment.startswith("<"):
        return part == segment[1:-1]
    return part == segment


def _param(segments: tuple[str, ...], loc: tuple[str | int, ...]) -> str:
    """`input[0].content[1].image_url`: indices in brackets, union tags left out."""
    param = ""
    for segment, part in zip(segments, loc, strict=False):
        if segment == "[]":
            param += f"[{part}]"
        elif not segment.startswith("<"):
            param += f".{part}" if param else str(part)
    return param
