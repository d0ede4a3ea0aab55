"""The one place Parley talks to the upstream Responses API, through the official SDK.

The SDK retries 408/409/429/5xx and connection errors with backoff and honours Retry-After
(`OPENAI_MAX_RETRIES` times); what is left after that reaches us here and is re-raised as
`LLMError`, so nothing above this module sees an `openai` exception. Every call goes through
an `UpstreamLimiter` (concurrency, client-side rates, upstream rate-limit headers).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import openai
import orjson
from openai import AsyncOpenAI, AsyncStream, DefaultAioHttpClient
from openai._legacy_response import LegacyAPIResponse
from openai._types import RequestOptions

from parley.agent.limiter import UpstreamLimiter, estimate_tokens
from parley.errors import LLMError
from parley.observability import tracing
from parley.observability.metrics import UPSTREAM_ERRORS, UPSTREAM_SECONDS

RETRYABLE_STATUSES = {408, 409, 429}
MODERATION_MODEL = "omni-moderation-latest"


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str
    """JSON text, as the model wrote it (it may not parse)."""


@dataclass(frozen=True, slots=True)
class LLMResponse:
    response_id: str
    model: str
    text: str
    usage: Usage
    latency_ms: int
    tool_calls: tuple[ToolCall, ...] = ()
    output: list[dict[str, Any]] = field(default_factory=list)
    """The output items as the upstream sent them (messages, function calls, …)."""
    status: str = "completed"
    incomplete_reason: str | None = None


OnDelta = Callable[[str], Awaitable[None]]

_RAW_CREATE: RequestOptions = {
    # What `responses.with_raw_response.create` asks of the client: the raw response back
    # (its headers feed the limiter), and the bearer key as for every Responses API call.
    "headers": {"X-Stainless-Raw-Response": "true"},
    "security": {"bearer_auth": True},
}
"""Called with each piece of output text as the upstream streams it."""


def create_client(
    *, api_key: str | None, base_url: str, timeout_s: float, max_retries: int
) -> AsyncOpenAI:
    # On aiohttp's connections (the SDK's `aiohttp` extra): the SDK's default httpx2
    # transport spent ~2.5 ms of CPU per call on loopback, aiohttp's ~1.75 ms (measured with
    # `LLM.respond` against the simulator). The SDK maps aiohttp's errors as it does httpx2's:
    # timeouts and connection errors are retried, then raised as its own.
    http_client = DefaultAioHttpClient()
    tracing.instrument_http_client(http_client)
    # The SDK refuses to start without a key; a local OpenAI-compatible server needs none.
    client = AsyncOpenAI(
        api_key=api_key or "not-set",
        base_url=base_url,
        timeout=timeout_s,
        max_retries=max_retries,
        http_client=http_client,
    )
    # The SDK imports each resource's module on its first use: at start, not in the first
    # caller's request (the Responses API's modules take a good part of a second to import).
    _ = client.responses, client.conversations, client.moderations, client.audio
    return client


class LLM:
    def __init__(self, client: AsyncOpenAI, limiter: UpstreamLimiter | None = None) -> None:
        self._client = client
        self._limiter = limiter or UpstreamLimiter()

    async def create_conversation(
        self, *, metadata: dict[str, str], items: list[dict[str, Any]] | None = None
    ) -> str:
        """A new upstream conversation, starting with `items` (at most 20) when given."""
        extra: dict[str, Any] = {"items": items} if items else {}
        try:
            # No model tokens are spent here, but it is a request and takes a slot.
            async with self._limiter.slot(tokens=0):
                conversation = await self._client.conversations.create(metadata=metadata, **extra)
        except openai.OpenAIError as exc:
            raise self._failed(exc) from exc
        return conversation.id

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete an upstream conversation; False when the upstream has no such conversation
        (deleted before, or expired), which is as good. Tried once: the caller retries later."""
        return await self._delete(self._once.conversations.delete, conversation_id)

    async def delete_response(self, response_id: str) -> bool:
        """Delete a stored response; False when the upstream has none by that id."""
        return await self._delete(self._once.responses.delete, response_id)

    async def _delete(self, call: Callable[[str], Awaitable[object]], object_id: str) -> bool:
        try:
            async with self._limiter.slot(tokens=0):
                await call(object_id)
        except openai.NotFoundError:
            return False
        except openai.OpenAIError as exc:
            raise self._failed(exc) from exc
        return True

    @property
    def _once(self) -> AsyncOpenAI:
        """The client without the SDK's own retries, for calls whose caller keeps a durable
        retry of its own (the upstream deletions) and must not wait through backoffs."""
        return self._client.with_options(max_retries=0)

    async def flagged(self, texts: list[str], *, model: str = MODERATION_MODEL) -> bool:
        """Whether the moderation endpoint flags any of `texts`."""
        try:
            async with self._limiter.slot(tokens=0):
                result = await self._client.moderations.create(model=model, input=texts)
        except openai.OpenAIError as exc:
            raise self._failed(exc) from exc
        return any(item.flagged for item in result.results)

    async def transcribe(
        self, *, audio: bytes, filename: str, content_type: str, model: str
    ) -> str:
        """The text spoken in `audio` (`audio.transcriptions.create`, multipart upload)."""
        try:
            async with self._limiter.slot(tokens=0):
                result = await self._client.audio.transcriptions.create(
                    model=model, file=(filename, audio, content_type)
                )
        except openai.OpenAIError as exc:
            raise self._failed(exc) from exc
        return result.text.strip()

    async def respond(self, on_delta: OnDelta | None = None, **params: Any) -> LLMResponse:
        """`responses.create` with `params`; the text of every output message, joined. With
        `on_delta` the answer is streamed, and each piece of text is handed on as it comes."""
        try:
            async with self._limiter.slot(tokens=estimate_tokens(params)) as permit:
                # Timed from the upstream call, not from the wait for a slot.
                started = time.perf_counter()
                # The raw response carries the x-ratelimit-* headers the limiter adapts to.
                if on_delta is None:
                    raw = await self._create(params, stream=False)
                    self._limiter.observe(raw.headers)
                    # Read as plain JSON: the SDK's models would be built only to be dumped
                    # back into the dicts Parley stores.
                    body = _response_json(orjson.loads(raw.http_response.content))
                else:
                    body = await self._streamed(on_delta, params)
                usage = _usage(body.get("usage"))
                self._limiter.settle(permit, usage.input_tokens + usage.output_tokens)
        except openai.OpenAIError as exc:
            raise self._failed(exc) from exc
        elapsed = time.perf_counter() - started
        UPSTREAM_SECONDS.observe(elapsed)
        return _llm_response(body, usage, round(elapsed * 1000))

    async def _streamed(self, on_delta: OnDelta, params: dict[str, Any]) -> dict[str, Any]:
        """One streamed call: text deltas handed on, the final Response's JSON returned.
        The SDK decodes the stream and raises its errors; each event stays the JSON it came
        as (`AsyncStream[object]`), not a model built per delta."""
        raw = await self._create(params, stream=True)
        self._limiter.observe(raw.headers)
        stream: AsyncStream[Any] = raw.parse(to=AsyncStream[object])
        final = None
        try:
            async for event in stream:
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "response.output_text.delta":
                    await on_delta(event["delta"])
                elif kind in ("response.completed", "response.incomplete"):
                    final = event["response"]
                elif kind == "response.failed":
                    error = event["response"].get("error") or {}
                    raise LLMError(
                        f"upstream response failed: {error.get('message', 'unknown')}",
                        retryable=False,
                        code=error.get("code"),
                    )
                elif kind == "error":
                    raise LLMError(
                        f"upstream stream error: {event.get('message')}",
                        retryable=False,
                        code=event.get("code"),
                    )
        finally:
            await stream.close()
        if final is None:
            raise LLMError("upstream stream ended without a response", retryable=True)
        return _response_json(final)

    async def _create(self, params: dict[str, Any], *, stream: bool) -> LegacyAPIResponse[Any]:
        """POST /responses through the client, the body sent as Parley built it.

        `responses.create` first walks the whole body against the SDK's TypedDicts
        (`async_maybe_transform`: hundreds of calls per request, the largest single cost of a
        call in profiles of `parley serve`), to rename or reformat fields that the Responses
        API's params never need: Parley's params are already the API's JSON (dicts, lists,
        strings, numbers). The client's own request path is kept: auth, retries with
        backoff, timeouts, errors, SSE decoding.
        """
        body = {**params, "stream": True} if stream else params
        response = await self._client.post(
            "/responses",
            cast_to=object,
            body=body,
            options=_RAW_CREATE,
            stream=stream,
            stream_cls=AsyncStream[object],
        )
        return cast(LegacyAPIResponse[Any], response)

    async def close(self) -> None:
        await self._client.close()

    def _failed(self, exc: openai.OpenAIError) -> LLMError:
        # What the SDK gave up on: its headers (429 retry-after, remaining 0) hold new calls.
        if isinstance(exc, openai.APIStatusError):
            self._limiter.observe(exc.response.headers, status=exc.status_code)
        error = _as_llm_error(exc)
        UPSTREAM_ERRORS.labels("true" if error.retryable else "false").inc()
        return error


def _llm_response(body: dict[str, Any], usage: Usage, latency_ms: int) -> LLMResponse:
    """A Response object's JSON as the turn reads it."""
    output: list[dict[str, Any]] = body.get("output") or []
    incomplete = body.get("incomplete_details") or {}
    return LLMResponse(
        response_id=body["id"],
        model=body.get("model", ""),
        text=_output_text(output),
        usage=usage,
        latency_ms=latency_ms,
        tool_calls=_tool_calls(output),
        output=output,
        status=body.get("status") or "completed",
        incomplete_reason=incomplete.get("reason"),
    )


def _output_text(output: list[dict[str, Any]]) -> str:
    """The text of every output message, joined (the SDK's `Response.output_text`)."""
    return "".join(
        part.get("text") or ""
        for item in output
        if item.get("type") == "message"
        for part in item.get("content") or ()
        if part.get("type") == "output_text"
    )


def _tool_calls(output: list[dict[str, Any]]) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(call_id=item["call_id"], name=item["name"], arguments=item["arguments"])
        for item in output
        if item.get("type") == "function_call"
    )


def _response_json(body: dict[str, Any]) -> dict[str, Any]:
    """A Response object's JSON with its null fields left out, as the SDK's
    `model_dump(exclude_none=True)` leaves them, where the turn reads them as absent: at the
    top and throughout `output` (which is stored). The other values are read with fallbacks
    for null (`usage`) or not at all, so they are not walked."""
    clean = {key: value for key, value in body.items() if value is not None}
    output = clean.get("output")
    if output is not None:
        clean["output"] = _without_none(output)
    return clean


def _without_none(value: Any) -> Any:
    """JSON with its null fields left out; scalars are taken as they are, without a call."""
    if isinstance(value, dict):
        return {
            key: _without_none(item) if isinstance(item, (dict, list)) else item
            for key, item in value.items()
            if item is not None
        }
    if isinstance(value, list):
        return [_without_none(item) if isinstance(item, (dict, list)) else item for item in value]
    return value


def _usage(usage: dict[str, Any] | None) -> Usage:
    if not usage:
        return Usage()
    input_details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    return Usage(
        input_tokens=usage.get("input_tokens") or 0,
        cached_tokens=input_details.get("cached_tokens") or 0,
        output_tokens=usage.get("output_tokens") or 0,
        reasoning_tokens=output_details.get("reasoning_tokens") or 0,
    )


def _as_llm_error(exc: openai.OpenAIError) -> LLMError:
    if isinstance(exc, openai.APITimeoutError):
        return LLMError("upstream timed out", retryable=True, code="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return LLMError("upstream unreachable", retryable=True, code="connection_error")
    if isinstance(exc, openai.APIStatusError):
        code = _error_code(exc.body)
        retryable = (
            exc.status_code in RETRYABLE_STATUSES or exc.status_code >= 500
        ) and code != "insufficient_quota"
        return LLMError(
            f"upstream {exc.status_code}{f' {code}' if code else ''}: {_error_message(exc)}",
            retryable=retryable,
            retry_after=_retry_after(exc.response.headers.get("retry-after")),
            status=exc.status_code,
            code=code,
        )
    return LLMError(f"upstream error: {type(exc).__name__}", retryable=False)


def _error_code(body: object) -> str | None:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("code") is not None:
            return str(error["code"])
    return None


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
    return exc.message[:500]


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
