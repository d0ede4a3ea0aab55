"""The `POST /v1/responses` body at the edge, without a server: every 400 in OpenAI's words with
the parameter it names, the items' one shape, and the turn package kept free of HTTP."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

import parley.responses
from parley.api.errors import APIError
from parley.api.responses.request import (
    DEFAULT_ONLY,
    KNOWN_FIELDS,
    RULES,
    UNSUPPORTED_FIELDS,
    parse_create,
)
from parley.api.responses.schemas import CreateBody
from parley.responses.request import CreateRequest


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "default", "input": "hi", **fields}


def user(*parts: Any) -> dict[str, Any]:
    return body(input=[{"role": "user", "content": list(parts)}])


def refused(sent: dict[str, Any]) -> APIError:
    with pytest.raises(APIError) as caught:
        parse_create(sent)
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
    return caught.value


IMAGE_ONLY = "'input_image' is not supported."
NOT_HERE = "is not supported here; send messages, function_call and function_call_output items."
STRING = "expected a string."
METADATA = "keys are at most 64 characters and values strings of at most 512."

# (body, param, message, code): one case for every rule, and for the places it covers.
CASES: list[tuple[dict[str, Any], str, str, str | None]] = [
    (
        {"input": "hi"},
        "model",
        "Missing required parameter: 'model'.",
        "missing_required_parameter",
    ),
    (body(model=""), "model", "Missing required parameter: 'model'.", "missing_required_parameter"),
    (body(model=5), "model", "Missing required parameter: 'model'.", "missing_required_parameter"),
    (body(x_context=[1]), "x_context", "Invalid 'x_context': expected a JSON object.", None),
    (
        body(x_context={"blob": "x" * 11_000}),
        "x_context",
        "Invalid 'x_context': at most 10 KB of JSON.",
        "string_above_max_length",
    ),
    ({"model": "m"}, "input", "Missing required parameter: 'input'.", "missing_required_parameter"),
    (body(input=""), "input", "Invalid 'input': empty string.", "empty_string"),
    (
        body(input=[]),
        "input",
        "Invalid 'input': expected a string or a non-empty array of items.",
        None,
    ),
    (
        body(input=5),
        "input",
        "Invalid 'input': expected a string or a non-empty array of items.",
        None,
    ),
    (body(input=["hi"]), "input[0]", "Invalid 'input[0]': expected an object.", None),
    (
        body(input=[{"type": "reasoning"}]),
        "input[0].type",
        f"Invalid 'input[0].type': 'reasoning' {NOT_HERE}",
        None,
    ),
    (
        body(input=[{"content": "x"}]),
        "input[0].type",
        f"Invalid 'input[0].type': 'None' {NOT_HERE}",
        None,
    ),
    (
        body(input=[{"role": "robot", "content": "x"}]),
        "input[0].role",
        "Invalid 'input[0].role': expected one of user, assistant, system, developer.",
        None,
    ),
    (
        body(input=[{"type": "message", "content": "x"}]),
        "input[0].role",
        "Invalid 'input[0].role': expected one of user, assistant, system, developer.",
        None,
    ),
    (
        body(input=[{"role": "user", "content": []}]),
        "input[0].content",
        "Invalid 'input[0].content': expected a string or an array of parts.",
        None,
    ),
    (
        body(input=[{"role": "assistant", "content": 5}]),
        "input[0].content",
        "Invalid 'input[0].content': expected a string or an array of parts.",
        None,
    ),
    (user("x"), "input[0].content[0]", "Invalid 'input[0].content[0]': expected an object.", None),
    (
        user({"type": "input_audio"}),
        "input[0].content[0].type",
        "Invalid 'input[0].content[0].type': 'input_audio' is not supported.",
        None,
    ),
    (
        body(input=[{"role": "assistant", "content": [{"type": "input_image", "file_id": "f"}]}]),
        "input[0].content[0].type",
        f"Invalid 'input[0].content[0].type': {IMAGE_ONLY}",
        None,
    ),
    (
        user({"type": "input_text", "text": "a"}, {"type": "output_text"}),
        "input[0].content[1].text",
        f"Invalid 'input[0].content[1].text': {STRING}",
        None,
    ),
    (
        user({"type": "input_image", "image_url": 5}),
        "input[0].content[0]",
        "Invalid 'input[0].content[0]': an input_image needs an image_url or a file_id.",
        None,
    ),
    (
        user({"type": "input_image", "image_url": "https://example.com/a.png", "detail": "ultra"}),
        "input[0].content[0].detail",
        "Invalid 'input[0].content[0].detail'.",
        None,
    ),
    (
        body(input=[{"type": "function_call", "call_id": "c", "name": "n", "arguments": {}}]),
        "input[0]",
        "Invalid 'input[0]': a function_call needs call_id, name and arguments (a string).",
        None,
    ),
    (
        body(input=[{"type": "function_call_output", "call_id": "", "output": "o"}]),
        "input[0].call_id",
        "Missing required parameter: 'input[0].call_id'.",
        None,
    ),
    (
        body(instructions=1),
        "instructions",
        "Invalid type for 'instructions': expected a string.",
        "invalid_type",
    ),
    (body(tools={}), "tools", "Invalid 'tools': expected an array.", None),
    (
        body(tools=[{"type": "web_search"}]),
        "tools[0]",
        "Invalid 'tools[0]': only function tools can be given to this agent.",
        None,
    ),
    (
        body(tools=["f"]),
        "tools[0]",
        "Invalid 'tools[0]': only function tools can be given to this agent.",
        None,
    ),
    (
        body(tools=[{"type": "function"}]),
        "tools[0].name",
        "Missing required parameter: 'tools[0].name'.",
        None,
    ),
    (
        body(tools=[{"type": "function", "name": "f", "parameters": []}]),
        "tools[0].parameters",
        "Invalid 'tools[0].parameters': expected an object.",
        None,
    ),
    (
        body(tool_choice={"type": "function"}),
        "tool_choice",
        "Invalid 'tool_choice': expected 'auto', 'none', 'required' or a function.",
        None,
    ),
    (
        body(tool_choice="any"),
        "tool_choice",
        "Invalid 'tool_choice': expected 'auto', 'none', 'required' or a function.",
        None,
    ),
    (
        body(temperature=True),
        "temperature",
        "Invalid 'temperature': expected a number from 0.0 to 2.0.",
        "invalid_value",
    ),
    (
        body(temperature=2.5),
        "temperature",
        "Invalid 'temperature': expected a number from 0.0 to 2.0.",
        "invalid_value",
    ),
    (
        body(max_output_tokens=16.0),
        "max_output_tokens",
        "Invalid 'max_output_tokens': expected an integer of at least 16.",
        "integer_below_min_value",
    ),
    (
        body(max_output_tokens=15),
        "max_output_tokens",
        "Invalid 'max_output_tokens': expected an integer of at least 16.",
        "integer_below_min_value",
    ),
    (
        body(max_output_tokens=2**70),
        "max_output_tokens",
        "Invalid 'max_output_tokens': expected an integer of at most 128000.",
        "integer_above_max_value",
    ),
    (
        body(top_p=1.01),
        "top_p",
        "Invalid 'top_p': expected a number from 0.0 to 1.0.",
        "invalid_value",
    ),
    (
        body(top_logprobs=-1),
        "top_logprobs",
        "Invalid 'top_logprobs': expected an integer from 0 to 20.",
        "invalid_value",
    ),
    (body(text="json"), "text", "Invalid 'text': expected an object.", None),
    (
        body(text={"format": {"type": "json_schema", "name": "x"}}),
        "text.format",
        "Invalid 'text.format': expected a format of type text, json_object or json_schema "
        "(with a name and a schema).",
        None,
    ),
    (
        body(text={"format": {"type": "json_schema", "name": "a b", "schema": {}}}),
        "text.format.name",
        "Invalid 'text.format.name': at most 64 letters, digits, underscores and dashes.",
        None,
    ),
    (
        body(text={"verbosity": "loud"}),
        "text.verbosity",
        "Invalid 'text.verbosity': expected one of low, medium, high.",
        None,
    ),
    (
        body(reasoning=[]),
        "reasoning",
        "Invalid 'reasoning': expected an object with effort and summary.",
        None,
    ),
    (
        body(reasoning={"effort": "max"}),
        "reasoning.effort",
        "Invalid 'reasoning.effort': expected one of none, minimal, low, medium, high, xhigh.",
        None,
    ),
    (
        body(reasoning={"summary": "all"}),
        "reasoning.summary",
        "Invalid 'reasoning.summary': expected one of auto, concise, detailed.",
        None,
    ),
    (
        user({"type": "input_image", "image_url": "http://169.254.169.254/"}),
        "input[0].content[0].image_url",
        "Invalid 'input[0].content[0].image_url': only https URLs to public hosts and data: "
        "URLs are accepted.",
        "invalid_value",
    ),
    (
        body(metadata={str(i): "v" for i in range(17)}),
        "metadata",
        "Invalid 'metadata': expected an object of at most 16 pairs.",
        None,
    ),
    (
        body(metadata={"k" * 65: "v"}),
        f"metadata.{'k' * 65}",
        f"Invalid 'metadata.{'k' * 65}': {METADATA}",
        None,
    ),
    (body(metadata={"a": "b", "k": 5}), "metadata.k", f"Invalid 'metadata.k': {METADATA}", None),
    (body(metadata={"k": "v" * 513}), "metadata.k", f"Invalid 'metadata.k': {METADATA}", None),
    (body(store="true"), "store", "Invalid type for 'store': expected a boolean.", "invalid_type"),
    (
        body(background=1),
        "background",
        "Invalid type for 'background': expected a boolean.",
        "invalid_type",
    ),
    (
        body(stream="yes"),
        "stream",
        "Invalid type for 'stream': expected a boolean.",
        "invalid_type",
    ),
    (
        body(previous_response_id=7),
        "previous_response_id",
        "Invalid type for 'previous_response_id': expected a string.",
        "invalid_type",
    ),
    (body(bogus=1), "bogus", "Unknown parameter: 'bogus'.", "unknown_parameter"),
    # Wrong types that were dropped or taken as something else, now named where they are.
    (
        user(
            {"type": "input_text", "text": "a"},
            {"type": "input_image", "image_url": 5, "file_id": "f"},
        ),
        "input[0].content[1].image_url",
        "Invalid type for 'input[0].content[1].image_url': expected a string.",
        "invalid_type",
    ),
    (
        user({"type": "input_image", "image_url": "https://example.com/a.png", "file_id": ["f"]}),
        "input[0].content[0].file_id",
        "Invalid type for 'input[0].content[0].file_id': expected a string.",
        "invalid_type",
    ),
    (
        user({"type": "input_file", "file_url": 5}),
        "input[0].content[0].file_url",
        "Invalid type for 'input[0].content[0].file_url': expected a string.",
        "invalid_type",
    ),
    (
        user({"type": "input_file", "file_data": "d", "filename": 1}),
        "input[0].content[0].filename",
        "Invalid type for 'input[0].content[0].filename': expected a string.",
        "invalid_type",
    ),
    (
        body(tools=[{"type": "function", "name": "f", "strict": "false"}]),
        "tools[0].strict",
        "Invalid type for 'tools[0].strict': expected a boolean.",
        "invalid_type",
    ),
    (
        body(tools=[{"type": "function", "name": "f", "description": 5}]),
        "tools[0].description",
        "Invalid type for 'tools[0].description': expected a string.",
        "invalid_type",
    ),
    # A list for a role was a TypeError (a 500) before it was compared with the roles.
    (
        body(input=[{"role": "user", "content": "ok"}, {"role": ["user"], "content": "x"}]),
        "input[1].role",
        "Invalid 'input[1].role': expected one of user, assistant, system, developer.",
        None,
    ),
]


@pytest.mark.parametrize(("sent", "param", "message", "code"), CASES)
def test_each_problem_is_told_in_openai_words_at_its_param(
    sent: dict[str, Any], param: str, message: str, code: str | None
) -> None:
    error = refused(sent)
    assert (error.param, error.message, error.code) == (param, message, code)


def test_every_field_has_a_rule_and_every_rule_is_tried() -> None:
    tops = {where.partition(":")[0].split("[")[0].split(".")[0] for where in RULES}
    assert set(CreateBody.model_fields) <= tops
    told = [message for _, _, message, _ in CASES]
    for rule in RULES.values():
        wording = re.escape(rule.message).replace(r"\{param\}", ".+").replace(r"\{kind\}", ".+")
        assert any(re.fullmatch(wording, message) for message in told), rule.message


def test_unknown_fields_are_named_first_by_name() -> None:
    error = refused(body(zeta=1, alpha=None, model=5))
    assert (error.param, error.message) == ("alpha", "Unknown parameter: 'alpha'.")


def test_the_first_problem_is_reported_in_field_order() -> None:
    assert refused(body(model=None, input=None)).param == "model"
    assert refused(body(input=None, x_context=5)).param == "x_context"
    assert refused(body(temperature=9, stream="x", metadata=5)).param == "temperature"
    too_many = {"bad": 5, **{str(i): "v" for i in range(16)}}
    assert refused(body(metadata=too_many)).param == "metadata"
    two_bad_items = body(input=[{"role": "robot"}, {"type": "bad"}])
    assert refused(two_bad_items).param == "input[0].role"
    # An image with no source says so before its detail is looked at.
    assert refused(user({"type": "input_image", "detail": "bad"})).param == "input[0].content[0]"


def test_nulls_are_fields_not_sent_and_default_only_fields_pass() -> None:
    nulls = dict.fromkeys(["instructions", "tools", "tool_choice", "temperature"], None)
    nulls |= dict.fromkeys(["max_output_tokens", "metadata", "previous_response_id"], None)
    nulls |= dict.fromkeys(["x_context", "store", "background", "stream"], None)
    nulls |= dict.fromkeys(UNSUPPORTED_FIELDS, None)
    defaults = {name: allowed[0] for name, allowed in DEFAULT_ONLY.items()}
    create = parse_create(body(**nulls, **defaults))
    assert create == CreateRequest(model="default", input=create.input)
    assert create.store is True and create.background is False


def test_every_sdk_parameter_is_read_or_refused() -> None:
    from openai.types.responses import response_create_params

    sdk_fields = set(response_create_params.ResponseCreateParamsBase.__annotations__)
    handled = KNOWN_FIELDS | DEFAULT_ONLY.keys() | UNSUPPORTED_FIELDS
    assert sdk_fields - {"x_context"} <= handled
    for name in sorted(UNSUPPORTED_FIELDS & sdk_fields):
        problem = refused(body(**{name: "x"}))
        assert (problem.param, problem.code) == (name, "unsupported_parameter")
    for name in sorted(DEFAULT_ONLY):
        problem = refused(body(**{name: "surely not"}))
        assert (problem.param, problem.code) == (name, "unsupported_value")
    assert refused(body(parallel_tool_calls=False)).param == "parallel_tool_calls"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_output_tokens": 2**70}, "max_output_tokens"),
        ({"max_output_tokens": 128_001}, "max_output_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.1}, "top_p"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format"),
        ({"text": {"format": {"type": "text"}, "colour": "red"}}, "text"),
        ({"text": {"verbosity": "loud"}}, "text.verbosity"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"reasoning": {"summary": "long"}}, "reasoning.summary"),
        ({"store": False, "background": True}, "background"),
    ],
)
def test_out_of_range_and_malformed_settings_name_the_parameter(
    fields: dict[str, Any], param: str
) -> None:
    assert refused(body(**fields)).param == param


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "http://example.com/a.png",
        "https://localhost/a.png",
        "https://api.localhost/a.png",
        "https://127.0.0.1/a.png",
        "https://10.0.0.8/a.png",
        "https://192.168.1.1/a.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://[::1]/a.png",
        "https://[::ffff:127.0.0.1]/a.png",
        "https://0.0.0.0/a.png",
        "ftp://example.com/a.png",
        "not a url",
    ],
)
def test_image_and_file_urls_must_be_public_https(url: str) -> None:
    problem = refused(user({"type": "input_image", "image_url": url}))
    assert (problem.param, problem.code) == ("input[0].content[0].image_url", "invalid_value")
    problem = refused(user({"type": "input_file", "file_url": url}))
    assert problem.param == "input[0].content[0].file_url"


def test_https_and_data_urls_are_forwarded() -> None:
    for url in ("https://example.com/a.png", "https://8.8.8.8/a.png", "data:image/png;base64,AA"):
        (item,) = parse_create(user({"type": "input_image", "image_url": url})).input
        assert item["content"][0]["image_url"] == url


def test_text_and_reasoning_are_kept_as_sent() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    text = {"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}}
    create = parse_create(body(text=text, reasoning={"effort": "low"}, top_p=0.5))
    assert create.text == text
    assert create.reasoning == {"effort": "low"}
    assert create.top_p == 0.5


def test_string_input_is_one_user_message_with_an_id() -> None:
    (item,) = parse_create(body(input="Where is my order?")).input
    assert item.pop("id").startswith("msg_")
    assert item == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Where is my order?"}],
        "status": "completed",
    }


def test_items_are_rebuilt_in_one_shape_each_with_an_id_of_its_own() -> None:
    sent = body(
        input=[
            {"role": "system", "content": [{"type": "output_text", "text": "Be brief."}]},
            {  # an earlier output sent back as the SDK gives it, ids and statuses included
                "id": "msg_old",
                "type": "message",
                "role": "assistant",
                "status": "incomplete",
                "content": [{"type": "output_text", "text": "Hi", "annotations": [1]}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "file_id": "file_1", "extra": True},
                    {"type": "input_file", "file_url": "https://x/a.pdf", "detail": "low"},
                ],
            },
            {"type": "function_call", "call_id": "c1", "name": "lookup"},
            {"type": "function_call_output", "call_id": "c1", "output": {"ok": True}},
        ]
    )
    items = parse_create(sent).input
    ids = [item.pop("id") for item in items]
    assert [i.split("_")[0] for i in ids] == ["msg", "msg", "msg", "fc", "fco"]
    assert len(set(ids)) == len(ids) and "msg_old" not in ids
    assert items == [
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Be brief."}],
            "status": "completed",
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi", "annotations": []}],
            "status": "completed",
        },
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_image", "detail": "auto", "file_id": "file_1"},
                {"type": "input_file", "file_url": "https://x/a.pdf"},
            ],
            "status": "completed",
        },
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "lookup",
            "arguments": "{}",
            "status": "completed",
        },
        {
            "type": "function_call_output",
            "call_id": "c1",
            "output": '{"ok": true}',
            "status": "completed",
        },
    ]


def test_tools_tool_choice_and_settings_are_kept_in_their_shape() -> None:
    create = parse_create(
        body(
            tools=[
                {"type": "function", "name": "a", "parameters": {"type": "object"}, "x": 1},
                {"type": "function", "name": "b", "strict": False, "description": ""},
                {"type": "function", "name": "c", "strict": None},
            ],
            tool_choice={"type": "function", "name": "a", "extra": 1},
            temperature=1,
            max_output_tokens=16,
            metadata={"ticket": "T-7"},
            x_context={"page": "checkout"},
            stream=True,
        )
    )
    assert create.tools == [
        {"type": "function", "name": "a", "parameters": {"type": "object"}, "strict": True},
        {"type": "function", "name": "b", "parameters": None, "strict": False, "description": ""},
        {"type": "function", "name": "c", "parameters": None, "strict": False},
    ]
    assert create.tool_choice == {"type": "function", "name": "a"}
    assert create.temperature == 1.0 and isinstance(create.temperature, float)
    assert (create.max_output_tokens, create.metadata) == (16, {"ticket": "T-7"})
    assert create.x_context == {"page": "checkout"}
    assert create.stream is True
    assert parse_create(body(tool_choice="required")).tool_choice == "required"


def test_x_context_may_fill_its_10_kb() -> None:
    create = parse_create(body(x_context={"blob": "x" * 10_000}))
    assert create.x_context == {"blob": "x" * 10_000}


def test_the_turn_package_knows_nothing_of_http() -> None:
    for path in Path(parley.responses.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                top = name.split(".")
                assert top[0] not in ("fastapi", "starlette", "pydantic"), (path, name)
                assert top[:2] != ["parley", "api"], (path, name)
