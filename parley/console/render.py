"""The console's Jinja2 templates and how a page is answered."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def iso_utc(moment: datetime | None) -> str:
    """A stored time as ISO 8601 in UTC, what `<time datetime>` carries (the page's script
    shows it in the viewer's zone)."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


templates.env.filters["iso_utc"] = iso_utc


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response: HTMLResponse = templates.TemplateResponse(
        request, name, context, status_code=status, headers={"cache-control": "no-store"}
    )
    return response
