"""The simulated `POST /v1/audio/transcriptions`: a multipart upload of `file` and `model`,
answered `{"text": …}` (or plain text for ``response_format=text``) as OpenAI does.

The transcript is decided by the bytes: one a test registered for exactly those bytes
(`Transcripts.register`), else a fixed text naming their hash, so a test can tell which file
was heard. Files are refused by their name's extension, as the real API does.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import HTTP

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from parley.testing.faults import ApiError, Recorded

__all__ = ["Transcribed", "Transcripts"]

FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")


@dataclass(frozen=True)
class Transcribed:
    """One file the simulator transcribed."""

    filename: str
    content_type: str
    model: str
    data: bytes
    text: str


class Transcripts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[bytes, str] = {}
        self._heard: list[Transcribed] = []

    def register(self, data: bytes, text: str) -> None:
        """What the simulated model hears in `data`."""
        with self._lock:
            self._known[data] = text

    @property
    def heard(self) -> list[Transcribed]:
        with self._lock:
            return list(self._heard)

    def reset(self) -> None:
        with self._lock:
            self._known.clear()
            self._heard.clear()

    def text_for(self, data: bytes) -> str:
        with self._lock:
            known = self._known.get(data)
        return known if known is not None else f"audio {hashlib.sha256(data).hexdigest()[:12]}"

    async def create(self, request: Request, record: Recorded) -> Response:
        fields, files = _multipart(request.headers.get("content-type", ""), record.body)
        model = fields.get("model")
        if not model:
            raise ApiError(
                400, "you must provide a model parameter", code="missing_required_parameter"
            )
        if "file" not in files:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file")
        filename, content_type, data = files["file"]
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if extension not in FORMATS:
            raise ApiError(
                400,
                f"Invalid file format. Supported formats: {list(FORMATS)}",
                code="invalid_value",
                param="file",
            )
        text = self.text_for(data)
        with self._lock:
            self._heard.append(Transcribed(filename, content_type, model, data, text))
        if fields.get("response_format") == "text":
            return PlainTextResponse(text)
        return JSONResponse({"text": text, "usage": {"type": "duration", "seconds": 1}})


def _multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    """A `multipart/form-data` body's fields and files, read with the standard library."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, "The request must be multipart/form-data.")
    parsed = message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=HTTP
    )
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    parts = parsed.get_payload() if parsed.is_multipart() else []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, Message):
            continue
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, part.get_content_type(), data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files
