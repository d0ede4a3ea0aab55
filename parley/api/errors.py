"""Errors on `/v1` in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Every failure on a `/v1` path, FastAPI's own included (bad JSON, validation), is turned into this
shape with the status the official SDK maps to its exception classes; no stack trace leaves.
The admin API keeps FastAPI's `{"detail": …}`. Both shapes are declared in the OpenAPI schema
(`V1_ERRORS`, `ADMIN_ERRORS`), which the schema fuzz test holds every answer to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from parley.errors import Conflict, NotFound, RequestError

log = structlog.get_logger(__name__)

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorPublic(BaseModel):
    """A `/v1` error, as the OpenAI SDK reads it."""

    error: ErrorObject


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class AdminErrorPublic(BaseModel):
    """An admin error: a sentence, or for a request that fails validation, each problem
    without the value that caused it (`admin_validation_error`)."""

    detail: str | list[ValidationIssue]


def _declared(model: type[BaseModel], statuses: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model, "description": text} for status, text in statuses.items()}


V1_ERRORS = _declared(
    ErrorPublic,
    {
        400: "Invalid request: the body, a parameter or the path (`param` names which)",
        401: "Missing, unknown or revoked API key, or a suspended user",
        404: "No such object for this caller",
        409: "Conflicts with the object's state (or an idempotency key's first request)",
        413: "Request body too large",
        429: "Rate limit reached, or too many failed sign-ins from this address",
    },
) | {
    # Every other status on `/v1` (408, 5xx) has the same shape; declaring it also keeps FastAPI
    # from documenting a 422 that `/v1` never answers (validation errors are 400s).
    "default": {"model": ErrorPublic, "description": "Any other error, in the same shape"}
}
"""The errors every `/v1` route can answer, for its router's `responses=`."""

ADMIN_ERRORS = _declared(
    AdminErrorPublic,
    {
        400: "Invalid request (a NUL in the path or query, a refused value)",
        401: "Missing or unknown admin bearer token",
        403: "The token's user is not an admin",
        404: "No such object",
        409: "Conflicts with the object's state",
        413: "Request body too large",
        422: "Invalid parameters or body",
        429: "Too many failed sign-ins from this address",
    },
)
"""The errors every admin route can answer, for its router's `responses=`."""


class APIError(Exception):
    """An error answered to a `/v1` caller."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(what: str, ident: str, *, param: str | None = None) -> APIError:
    return APIError(404, f"No {what} found with id '{ident}'.", param=param, code="not_found")


def from_request_error(exc: RequestError) -> APIError:
    """The turn logic's refusal as the status OpenAI gives for it."""
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 400
    return APIError(status, exc.message, param=exc.param, code=exc.code)


def is_v1(request: Request) -> bool:
    return is_v1_path(request.url.path)


def is_v1_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def install(app: FastAPI) -> None:
    """Answer errors on `/v1` like OpenAI; other paths keep FastAPI's defaults."""
    from fastapi.exception_handlers import (
        http_exception_handler,
        request_validation_exception_handler,
    )

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        return exc.response()

    async def on_request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)
        return from_request_error(exc).response()

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if request.url.path.startswith("/admin/"):
            return admin_validation_error(exc)
        if not is_v1(request):
            return await request_validation_exception_handler(request, exc)
        return validation_error(exc).response()

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not is_v1(request):
            return await http_exception_handler(request, exc)
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return APIError(exc.status_code, message, headers=exc.headers).response()

    async def on_crash(request: Request, exc: Exception) -> Response:
        # Starlette logs the exception itself; the caller gets no trace of it.
        if is_v1(request):
            return APIError(
                500, "The server had an error while processing your request."
            ).response()
        return PlainTextResponse("Internal Server Error", status_code=500)

    app.add_exception_handler(Exception, on_crash)
    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestError, on_request_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def admin_validation_error(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without the values that failed: an admin body may carry a token or an app
    secret, which must not come back in an answer (or a proxy's log of it)."""
    errors = [
        {key: value for key, value in error.items() if key not in ("input", "ctx", "url")}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def validation_error(exc: RequestValidationError) -> APIError:
    """FastAPI's 422 as OpenAI's 400, naming the first offending parameter."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    if first.get("type") == "json_invalid":
        return APIError(
            400,
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        )
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid request"))
    if param:
        message = f"Invalid value for '{param}': {message}"
    return APIError(400, message, param=param, code="invalid_value")
