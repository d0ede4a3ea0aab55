"""What a turn makes of the files its messages carry, before the model is called.

- Images are downloaded (within `channels.download`'s limits) and go to the model as
  `input_image` parts, base64 data URLs: Meta's URLs need the account's token, so the model
  could not fetch them itself.
- Voice notes and audio are transcribed when `PARLEY_TRANSCRIBE` is on; the transcript
  becomes the message's stored text, so a redone turn, the history and an operator read it.
- Everything else (documents, videos, stickers, shares, and whatever could not be loaded) is
  described to the agent in brackets, with a note on what it cannot open, so it answers
  sensibly instead of pretending. The customer never sees why a file failed.

Downloads and transcriptions share one semaphore per process (`PARLEY_MEDIA_CONCURRENCY`);
each has its own timeout (`PARLEY_MEDIA_TIMEOUT`, `OPENAI_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.agent.turn import Agent
from parley.channels.base import Downloaded, Media
from parley.channels.media import bare_type, media_from_stored
from parley.errors import LLMError, MediaUnavailable
from parley.store.models import Account, Message
from parley.store.queries.turns import TurnWork, save_transcript

log = structlog.get_logger(__name__)

MAX_IMAGES_PER_TURN = 4
"""Images one turn sends the model; more in one burst are described, not sent (each is up
to `PARLEY_MEDIA_MAX_BYTES`, and a request carries them all)."""

MAX_IMAGE_CHARS_PER_TURN = 40_000_000
"""Characters of image data URLs one request may carry: OpenAI takes at most 50 MB a request,
and base64 makes a file a third larger, so four photos at the size cap would not fit."""

_EXTENSIONS = {
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "mp4",
    "video/mp4": "mp4",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "aac",
    "audio/amr": "amr",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/webm": "webm",
    "audio/flac": "flac",
}
"""The transcription API tells a file's format by its name's extension."""


_WHY = {
    "too_large": "the file is larger than we accept",
    "wrong_type": "the file is not of a type we can read",
}
"""A refusal the customer can act on, in words the agent may pass on; any other failure
(gone, timeout, a host off the allow-list) is just "the download failed"."""


class MediaSource(Protocol):
    async def fetch_media(self, account: Account, media: Media) -> Downloaded:
        """`media`, downloaded with `account`'s credentials.

        Raises:
            MediaUnavailable: refused or not fetched, with a short reason.
        """


@dataclass(frozen=True, slots=True)
class MediaConfig:
    transcribe: bool = False
    transcribe_model: str = "gpt-4o-mini-transcribe"
    max_images: int = MAX_IMAGES_PER_TURN


@dataclass(frozen=True, slots=True)
class ReadMessage:
    """One waiting message as the model gets it."""

    text: str | None
    """The customer's own words: the body, a caption, a transcript."""
    notes: tuple[str, ...] = ()
    """What came with it, described in brackets (``[The customer sent a document: …]``)."""
    images: tuple[str, ...] = field(default=(), repr=False)
    """`input_image` data URLs."""
    unreadable: tuple[str, ...] = ()
    """What the agent cannot open (``a voice note``), for the turn's note to it."""

    @property
    def empty(self) -> bool:
        return not (self.text or self.notes or self.images)

    def item(self) -> dict[str, Any]:
        """A user message item: plain text when that is all, else parts."""
        if not (self.notes or self.images):
            return {"role": "user", "content": self.text or ""}
        words = " ".join(part for part in (*self.notes, self.text) if part)
        parts: list[dict[str, Any]] = [{"type": "input_text", "text": words}] if words else []
        parts += [{"type": "input_image", "image_url": url} for url in self.images]
        return {"role": "user", "content": parts}


def plain(message: Message) -> ReadMessage:
    """A message as read with no media reader: its text, or its kind as unreadable."""
    return ReadMessage(text=message.text, unreadable=() if message.text else (message.kind,))


class MediaReader:
    def __init__(
        self,
        *,
        source: MediaSource,
        agent: Agent,
        sessions: async_sessionmaker[AsyncSession],
        config: MediaConfig,
        concurrency: int,
    ) -> None:
        self._source = source
        self._agent = agent
        self._sessions = sessions
        self._config = config
        self._slots = asyncio.Semaphore(concurrency)

    async def read(self, work: TurnWork) -> list[ReadMessage]:
        """Each waiting message as the model gets it, in order; files fetched concurrently."""
        images_left = self._config.max_images
        reads = []
        for message in work.pending:
            media = media_from_stored(message.meta.get("media"))
            images = sum(1 for m in media if m.kind == "image")
            reads.append(self._read(work.account, message, media, images_left))
            images_left = max(0, images_left - images)
        return _within_budget(list(await asyncio.gather(*reads)))

    async def _read(
        self, account: Account, message: Message, media: list[Media], images_left: int
    ) -> ReadMessage:
        read = ReadMessage(text=message.text) if media else plain(message)
        for item in media:
            if item.kind == "image" and images_left > 0:
                images_left -= 1
                read = _add(read, await self._image(account, item))
            elif item.kind == "image":
                read = _add(read, _described(item, "too many images at once"))
            elif item.kind == "audio":
                read = await self._audio(account, message, item, read)
            else:
                read = _add(read, _described(item))
        return read

    async def _image(self, account: Account, media: Media) -> ReadMessage:
        try:
            file = await self._fetch(account, media)
        except MediaUnavailable as exc:
            return _described(media, _WHY.get(exc.reason, "the download failed"))
        encoded = base64.b64encode(file.data).decode("ascii")
        return ReadMessage(text=None, images=(f"data:{file.content_type};base64,{encoded}",))

    async def _audio(
        self, account: Account, message: Message, media: Media, read: ReadMessage
    ) -> ReadMessage:
        what = _audio_name(media)
        if message.meta.get("transcript"):  # transcribed by an earlier try of this turn
            return _add(read, ReadMessage(text=None, notes=(f"[{what}, transcribed:]",)))
        if not self._config.transcribe:
            return _add(read, _unheard(what, "you cannot listen to audio"))
        try:
            file = await self._fetch(account, media)
            transcript = await self._transcribe(file, media)
        except (MediaUnavailable, LLMError) as exc:
            log.warning("media.not_transcribed", kind=media.kind, reason=str(exc))
            why = _WHY.get(exc.reason, "") if isinstance(exc, MediaUnavailable) else ""
            return _add(read, _unheard(what, f"it could not be transcribed{why and ': ' + why}"))
        if not transcript:
            return _add(read, _unheard(what, "nothing could be made out in it"))
        await self._save(message, transcript)
        words = f"{read.text} {transcript}" if read.text else transcript
        return _add(read, ReadMessage(text=words, notes=(f"[{what}, transcribed:]",)))

    async def _fetch(self, account: Account, media: Media) -> Downloaded:
        async with self._slots:
            try:
                return await self._source.fetch_media(account, media)
            except MediaUnavailable as exc:
                log.warning("media.unavailable", kind=media.kind, reason=str(exc))
                raise

    async def _transcribe(self, file: Downloaded, media: Media) -> str:
        content_type = bare_type(file.content_type)
        extension = _EXTENSIONS.get(content_type, "ogg")
        async with self._slots:
            return await self._agent.transcribe(
                audio=file.data,
                filename=f"{media.kind}.{extension}",
                content_type=content_type,
                model=self._config.transcribe_model,
            )

    async def _save(self, message: Message, transcript: str) -> None:
        meta = {**message.meta, "transcript": {"model": self._config.transcribe_model}}
        async with self._sessions() as session:
            await save_transcript(session, message_id=message.id, text=transcript, meta=meta)
            await session.commit()
        log.info("media.transcribed", chars=len(transcript))


def _within_budget(reads: list[ReadMessage]) -> list[ReadMessage]:
    """The reads with the images past `MAX_IMAGE_CHARS_PER_TURN` described instead."""
    used = 0
    kept = []
    for read in reads:
        images = []
        notes = read.notes
        for url in read.images:
            if used + len(url) <= MAX_IMAGE_CHARS_PER_TURN:
                used += len(url)
                images.append(url)
            else:
                notes += (_described(Media("image"), "too many images at once").notes[0],)
        kept.append(replace(read, images=tuple(images), notes=notes))
    return kept


def _add(read: ReadMessage, more: ReadMessage) -> ReadMessage:
    return ReadMessage(
        text=more.text if more.text is not None else read.text,
        notes=read.notes + more.notes,
        images=read.images + more.images,
        unreadable=read.unreadable + more.unreadable,
    )


def _audio_name(media: Media) -> str:
    return "Voice note" if media.voice else "Audio file"


def _unheard(what: str, why: str) -> ReadMessage:
    return ReadMessage(
        text=None,
        notes=(f"[The customer sent a {what.lower()}; {why}.]",),
        unreadable=(f"a {what.lower()} ({why})",),
    )


def _described(media: Media, failure: str | None = None) -> ReadMessage:
    """A file the agent gets as words: what it is and, for an image, why it is not there."""
    kind = media.kind
    if kind == "image":
        return ReadMessage(
            text=None,
            notes=(f"[The customer sent an image, but it could not be loaded: {failure}.]",),
            unreadable=("an image that could not be loaded",),
        )
    if kind in ("document", "file"):
        content_type = bare_type(media.mime_type)
        name = media.filename or content_type
        if media.filename and content_type:
            name = f"{media.filename} ({content_type})"
        return ReadMessage(
            text=None,
            notes=(f"[The customer sent a {kind}{': ' + name if name else ''}.]",),
            unreadable=(f"a {kind} (you cannot open files)",),
        )
    if kind == "video":
        return ReadMessage(
            text=None,
            notes=("[The customer sent a video.]",),
            unreadable=("a video (you cannot watch videos)",),
        )
    if kind == "sticker":
        return ReadMessage(text=None, notes=("[The customer sent a sticker.]",))
    if kind == "share":
        return ReadMessage(
            text=None,
            notes=("[The customer shared a post.]",),
            unreadable=("a shared post (you cannot see it)",),
        )
    return ReadMessage(
        text=None, notes=(f"[The customer sent a {kind}.]",), unreadable=(f"a {kind}",)
    )
