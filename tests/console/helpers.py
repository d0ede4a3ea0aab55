"""What the console's tests share: users with tokens, customers writing in, the CSRF token of
a page."""

from __future__ import annotations

import re

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.factories import body_bytes, signed_headers, whatsapp_texts

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def new_user(client: httpx.AsyncClient, name: str, *, is_admin: bool) -> tuple[int, str]:
    """A user made on the admin API: their id and token."""
    response = await client.post(
        "/admin/users", json={"name": name, "is_admin": is_admin}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    user = response.json()
    return int(user["id"]), str(user["token"]["token"])


async def say(client: httpx.AsyncClient, phone: str, text: str, name: str = "Ana") -> None:
    """A customer's WhatsApp message, as Meta posts it (signed)."""
    body = body_bytes(whatsapp_texts(phone, [text], name=name))
    response = await client.post("/webhooks/whatsapp", content=body, headers=signed_headers(body))
    assert response.status_code == 200


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)
