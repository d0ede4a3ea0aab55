"""A `POST /v1/responses` body, checked field by field as OpenAI checks it.

Every problem is a 400 naming the parameter (`param`), never FastAPI's 422. Input items are
normalised to one shape, each with an id of its own: the ids are what `input_items` returns,
and they are stripped again before the items go upstream.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from parley.api.errors import APIError, bad_request
from parley.responses.request import CreateRequest, new_id

MAX_X_CONTEXT_BYTES = 10 * 1024
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512

KNOWN_FIELDS = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "temperature",
    "max_output_tokens",
    "metadata",
    "store",
    "background",
    "stream",
    "previous_response_id",
    "x_context",
}
IGNORED_FIELDS = {
    # Accepted for compatibility with what SDKs and clients send; Parley's agent decides these.
    "parallel_tool_calls",
    "top_p",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "truncation",
    "service_tier",
    "include",
    "text",
    "reasoning",
    "stream_options",
    "max_tool_calls",
    "top_logprobs",
}
_MESSAGE_ROLES = {"user", "assistant", "system", "developer"}
_INPUT_PARTS = {"input_text", "input_image", "input_file"}


def body_hash(raw: bytes) -> str:
    """The body as the idempotency check compares it: parsed JSON, keys sorted."""
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = raw.decode("utf-8", "replace")
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
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
    unknown = sorted(set(body) - KNOWN_FIELDS - IGNORED_FIELDS)
    if unknown:
        raise bad_request(
            f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request(
            "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    x_context = _x_context(body.get("x_context"))
    return CreateRequest(
        model=model,
        input=_input(body.get("input")),
        instructions=_optional_str(body, "instructions"),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        temperature=_number(body, "temperature", 0.0, 2.0),
        max_output_tokens=_max_output_tokens(body.get("max_output_tokens")),
        metadata=_metadata(body.get("metadata")),
        store=_bool(body, "store", True),
        background=_bool(body, "background", False),
        stream=_bool(body, "stream", False),
        previous_response_id=_optional_str(body, "previous_response_id"),
        x_context=x_context,
    )


# --- fields ---------------------------------------------------------------------------------


def _input(value: Any) -> list[dict[str, Any]]:
    if value is None:
        raise bad_request(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    if isinstance(value, str):
        if not value:
            raise bad_request("Invalid 'input': empty string.", param="input", code="empty_string")
        return [_message("user", [{"type": "input_text", "text": value}])]
    if not isinstance(value, list) or not value:
        raise bad_request(
            "Invalid 'input': expected a string or a non-empty array of items.", param="input"
        )
    return [_item(item, f"input[{index}]") for index, item in enumerate(value)]


def _item(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise bad_request(f"Invalid '{where}': expected an object.", param=where)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise bad_request(
                f"Invalid '{where}.role': expected one of user, assistant, system, developer.",
                param=f"{where}.role",
            )
        return _message(role, _content(item.get("content"), role, f"{where}.content"))
    if kind == "function_call_output":
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str) or not call_id:
            raise bad_request(
                f"Missing required parameter: '{where}.call_id'.", param=f"{where}.call_id"
            )
        if not isinstance(output, str):
            output = json.dumps(output)
        return {
            "id": new_id("fco"),
            "type": "function_call_output",
            "call_id": call_id,
            "output": output,
            "status": "completed",
        }
    if kind == "function_call":
        call_id, name = item.get("call_id"), item.get("name")
        arguments = item.get("arguments", "{}")
        if (
            not isinstance(call_id, str)
            or not isinstance(name, str)
            or not isinstance(arguments, str)
        ):
            raise bad_request(
                f"Invalid '{where}': a function_call needs call_id, name and arguments (a string).",
                param=where,
            )
        return {
            "id": new_id("fc"),
            "type": "function_call",
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": "completed",
        }
    raise bad_request(
        f"Invalid '{where}.type': '{kind}' is not supported here; send messages, "
        "function_call and function_call_output items.",
        param=f"{where}.type",
    )


def _message(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": role,
        "content": content,
        "status": "completed",
    }


def _content(value: Any, role: str, where: str) -> list[dict[str, Any]]:
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(value, str):
        part: dict[str, Any] = {"type": text_type, "text": value}
        if role == "assistant":
            part["annotations"] = []
        return [part]
    if not isinstance(value, list) or not value:
        raise bad_request(
            f"Invalid '{where}': expected a string or an array of parts.", param=where
        )
    parts = []
    for index, part in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise bad_request(f"Invalid '{at}': expected an object.", param=at)
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            if not isinstance(part.get("text"), str):
                raise bad_request(f"Invalid '{at}.text': expected a string.", param=f"{at}.text")
            clean: dict[str, Any] = {"type": text_type, "text": part["text"]}
            if text_type == "output_text":
                clean["annotations"] = []
            parts.append(clean)
        elif kind == "input_image" and role != "assistant":
            url, file_id = part.get("image_url"), part.get("file_id")
            if not isinstance(url, str) and not isinstance(file_id, str):
                raise bad_request(
                    f"Invalid '{at}': an input_image needs an image_url or a file_id.", param=at
                )
            detail = part.get("detail", "auto")
            if detail not in ("low", "high", "auto", "original"):
                raise bad_request(f"Invalid '{at}.detail'.", param=f"{at}.detail")
            image: dict[str, Any] = {"type": "input_image", "detail": detail}
            if isinstance(url, str):
                image["image_url"] = url
            if isinstance(file_id, str):
                image["file_id"] = file_id
            parts.append(image)
        elif kind == "input_file" and role != "assistant":
            parts.append(
                {
                    k: v
                    for k, v in part.items()
                    if k in ("type", "file_id", "file_url", "file_data", "filename")
                }
            )
        else:
            raise bad_request(
                f"Invalid '{at}.type': '{kind}' is not supported.", param=f"{at}.type"
            )
    return parts


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("Invalid 'tools': expected an array.", param="tools")
    tools = []
    for index, tool in enumerate(value):
        at = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise bad_request(
                f"Invalid '{at}': only function tools can be given to this agent.", param=at
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"Missing required parameter: '{at}.name'.", param=f"{at}.name")
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise bad_request(
                f"Invalid '{at}.parameters': expected an object.", param=f"{at}.parameters"
            )
        clean: dict[str, Any] = {
            "type": "function",
            "name": name,
            "parameters": parameters,
            "strict": bool(tool.get("strict", True)),
        }
        if isinstance(tool.get("description"), str):
            clean["description"] = tool["description"]
        tools.append(clean)
    return tools


def _tool_choice(value: Any) -> Any:
    if value is None or value in ("auto", "none", "required"):
        return value
    if (
        isinstance(value, dict)
        and value.get("type") == "function"
        and isinstance(value.get("name"), str)
    ):
        return {"type": "function", "name": value["name"]}
    raise bad_request(
        "Invalid 'tool_choice': expected 'auto', 'none', 'required' or a function.",
        param="tool_choice",
    )


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS:
        raise bad_request(
            f"Invalid 'metadata': expected an object of at most {MAX_METADATA_PAIRS} pairs.",
            param="metadata",
        )
    for key, item in value.items():
        if (
            len(key) > MAX_METADATA_KEY
            or not isinstance(item, str)
            or len(item) > MAX_METADATA_VALUE
        ):
            raise bad_request(
                f"Invalid 'metadata.{key}': keys are at most {MAX_METADATA_KEY} characters and "
                f"values strings of at most {MAX_METADATA_VALUE}.",
                param=f"metadata.{key}",
            )
    return dict(value)


def _x_context(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("Invalid 'x_context': expected a JSON object.", param="x_context")
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_X_CONTEXT_BYTES:
        raise bad_request(
            f"Invalid 'x_context': at most {MAX_X_CONTEXT_BYTES // 1024} KB of JSON.",
            param="x_context",
            code="string_above_max_length",
        )
    return value


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_request(
            f"Invalid type for '{name}': expected a string.", param=name, code="invalid_type"
        )
    return value


def _bool(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(
            f"Invalid type for '{name}': expected a boolean.", param=name, code="invalid_type"
        )
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request(
            f"Invalid '{name}': expected a number from {low} to {high}.",
            param=name,
            code="invalid_value",
        )
    return float(value)


def _max_output_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 16:
        raise bad_request(
            "Invalid 'max_output_tokens': expected an integer of at least 16.",
            param="max_output_tokens",
            code="integer_below_min_value",
        )
    return value
