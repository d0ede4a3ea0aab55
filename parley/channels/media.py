"""Files customers send, as every layer sees them: the kinds, the form a `Media` is stored in
(a message's ``meta["media"]``), the content types Parley accepts, and the short labels that
stand for a file in the agent's history.

Nothing here downloads (that is `channels.download` and each channel's `fetch_media`); these
are pure functions on the neutral `Media` value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from parley.channels.base import Media

__all__ = [
    "AUDIO_TYPES",
    "IMAGE_TYPES",
    "MEDIA_KINDS",
    "accepted_types",
    "history_label",
    "media_from_stored",
    "media_to_stored",
    "sniff",
]

MEDIA_KINDS = frozenset({"image", "audio", "video", "document", "sticker", "file", "share"})
"""Message kinds that are (or carry) a file."""

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})
"""What the model accepts as `input_image`."""

AUDIO_TYPES = frozenset(
    {
        "audio/ogg",
        "audio/opus",
        "audio/mpeg",
        "audio/mp3",
        "audio/mp4",
        "audio/m4a",
        "audio/x-m4a",
        "audio/aac",
        "audio/amr",
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/webm",
        "audio/flac",
        "video/mp4",  # Instagram's voice messages arrive as MP4 audio
    }
)
"""What a voice note or audio file may be: WhatsApp's (ogg/opus, aac, amr, mpeg, mp4) and
Instagram's and Messenger's (mp4, m4a). The transcription API refuses the ones it does not
take (amr), and the agent is told the note could not be transcribed."""

GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
"""Content types that say nothing; the bytes' own signature decides instead."""


def accepted_types(kind: str) -> frozenset[str]:
    """The content types Parley downloads a file of this kind as; empty: never downloaded."""
    if kind in ("image", "sticker"):
        return IMAGE_TYPES
    if kind == "audio":
        return AUDIO_TYPES
    return frozenset()


def bare_type(content_type: str | None) -> str:
    """``"audio/ogg; codecs=opus"`` → ``"audio/ogg"``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"OggS", "audio/ogg"),
    (0, b"#!AMR", "audio/amr"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"\xff\xfb", "audio/mpeg"),
    (0, b"\xff\xf3", "audio/mpeg"),
    (0, b"\xff\xf1", "audio/aac"),
    (0, b"\xff\xf9", "audio/aac"),
    (0, b"\x1a\x45\xdf\xa3", "audio/webm"),
    (0, b"fLaC", "audio/flac"),
    (4, b"ftyp", "audio/mp4"),
)


def sniff(data: bytes) -> str | None:
    """The content type the bytes' own signature shows, for the types Parley accepts."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    for offset, magic, content_type in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return content_type
    return None


# --- stored form ---------------------------------------------------------------------------

_FIELDS = tuple(f.name for f in fields(Media))


def media_to_stored(media: Media) -> dict[str, Any]:
    """A `Media` as JSON for a message's ``meta["media"]``: only the fields that are set."""
    stored = {name: getattr(media, name) for name in _FIELDS}
    return {k: v for k, v in stored.items() if v not in (None, False)}


def media_from_stored(stored: Iterable[Any] | None) -> list[Media]:
    """The `Media` values of a message's ``meta["media"]``; odd entries are skipped."""
    found = []
    for item in stored or ():
        if isinstance(item, Mapping) and isinstance(item.get("kind"), str):
            values = {k: v for k, v in item.items() if k in _FIELDS}
            found.append(Media(**values))
    return found


# --- labels --------------------------------------------------------------------------------


def history_label(kind: str, media: list[Media]) -> str | None:
    """How an earlier message's file reads in the agent's history: ``[image]``,
    ``[voice note]``, ``[document: receipt.pdf]``. The file itself is never sent again (an
    upstream conversation already holds it; a local history would resend megabytes each
    turn), so the label keeps only what the agent needs to follow the conversation."""
    first = media[0] if media else None
    if kind not in MEDIA_KINDS and first is None:
        return None
    kind = first.kind if first is not None else kind
    if kind == "audio":
        return "[voice note]" if first is None or first.voice else "[audio]"
    if kind in ("document", "file") and first is not None and first.filename:
        return f"[{kind}: {first.filename}]"
    if kind == "share":
        return "[shared post]"
    return f"[{kind}]"
