"""`parley demo`: Parley end to end with nothing but this machine.

It starts the bundled OpenAI and Graph API simulators on loopback, runs Parley on a temporary
SQLite file against them, plays a short WhatsApp conversation as signed webhooks, and prints
what the customer would see on their phone; a customer then writes to the same business on
Messenger. Then a program talks to the same agent through
Parley's Responses API with the official `openai` SDK, streaming, in a two-turn thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI
from rich.console import Console

from parley.app import create_app
from parley.channels.signature import sign
from parley.config import Settings
from parley.testing import GraphSimulator, OpenAISimulator, ServerThread
from parley.testing.openai_sim import SimTurn

SECRET = "demo-app-secret"
ADMIN_TOKEN = "demo-admin-token"
PHONE_NUMBER_ID = "106540352242922"
CUSTOMER = ("16505551234", "Sheena")
SCRIPT = [
    "Hi! My name is Sheena.",
    "Do you ship to Lisbon?",
    "Great. And do you remember my name?",
]
PAGE_ID = "109029271668032"
MESSENGER_CUSTOMER = ("4714860478621687", "Ravi")
MESSENGER_TEXT = "Hi! Do you ship to Lisbon too?"
API_SCRIPT = ["Hello from the web shop. My name is Ana.", "Do you remember my name?"]


def demo_agent(turn: SimTurn) -> str:
    """A stand-in model that shows the conversation's memory: it recalls the customer's name
    from earlier turns, which only the server-side conversation holds."""
    said = turn.user_texts[-1] if turn.user_texts else ""
    history = " ".join(turn.history_texts)
    name = re.search(r"[Mm]y name is (\w+)", history + " " + said)
    if "remember" in said.lower():
        return f"Of course, **{name.group(1)}**! How else can I help?" if name else "Sorry, no."
    if "ship" in said.lower():
        return "Yes, we ship to Lisbon in 2-4 working days. Shipping is free over 50 EUR."
    if name:
        return f"Nice to meet you, {name.group(1)}! What can I do for you?"
    return "Hello! How can I help?"


def _webhook(text: str) -> bytes:
    phone, name = CUSTOMER
    payload: dict[str, Any] = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            "contacts": [{"profile": {"name": name}, "wa_id": phone}],
                            "messages": [
                                {
                                    "from": phone,
                                    "id": f"wamid.demo{uuid.uuid4().hex}",
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload).encode()


async def run_demo(*, latency: float = 0.2) -> None:
    console = Console()
    openai_sim = OpenAISimulator(latency=latency, reply=demo_agent)
    graph_sim = GraphSimulator(messenger_pages=[PAGE_ID])
    with (
        ServerThread(openai_sim.app) as openai_server,
        ServerThread(graph_sim.app) as graph_server,
        tempfile.TemporaryDirectory() as folder,
    ):
        # Validated from this dict alone: the user's environment must not leak into the demo.
        settings = Settings.model_validate(
            {
                "database_url": f"sqlite+aiosqlite:///{Path(folder) / 'demo.db'}",
                "openai_api_key": "sk-demo",
                "openai_base_url": f"{openai_server.url}/v1",
                "graph_api_base_url": graph_server.url,
                "meta_app_secret": SECRET,
                "whatsapp_access_token": "demo-token",
                "messenger_access_token": "demo-page-token",
                "parley_admin_token": ADMIN_TOKEN,
                "parley_log_level": "WARNING",
                "redis_url": None,
            }
        )
        with ServerThread(create_app(settings, "serve"), lifespan="on") as parley:
            console.print(
                "[bold]Parley demo[/]: WhatsApp, offline (simulated OpenAI and Graph API)"
            )
            console.print(f"Parley on {parley.url}, data in a temporary SQLite file\n")
            async with httpx.AsyncClient(base_url=parley.url, timeout=30) as client:
                for number, text in enumerate(SCRIPT, start=1):
                    await _say(client, console, text)
                    await graph_sim.wait_for_sends(number, timeout=30)
                    reply = graph_sim.sends[number - 1].json or {}
                    console.print(f"[green]Shop  ›[/] {reply.get('text', {}).get('body')}\n")
                await _on_messenger(client, console, graph_sim)
                await _over_the_api(client, console, parley.url)
            usage = sum(1 for r in openai_sim.requests if r.path == "/v1/responses")
            console.print(f"[dim]{usage} model calls, {len(graph_sim.sends)} replies sent.[/]")


async def _on_messenger(
    client: httpx.AsyncClient, console: Console, graph_sim: GraphSimulator
) -> None:
    """The same business's Facebook page: a Messenger webhook in, the Send API out."""
    console.print("[bold]Messenger[/], the same agent on the business's Facebook page")
    user, name = MESSENGER_CUSTOMER
    console.print(f"[cyan]{name} ›[/] {MESSENGER_TEXT}")
    item = {
        "sender": {"id": user},
        "recipient": {"id": PAGE_ID},
        "timestamp": int(time.time() * 1000),
        "message": {"mid": f"m_demo{uuid.uuid4().hex}", "text": MESSENGER_TEXT},
    }
    entry = {"id": PAGE_ID, "time": int(time.time() * 1000), "messaging": [item]}
    before = len(graph_sim.sends)
    await _post(client, "messenger", {"object": "page", "entry": [entry]})
    sends = await graph_sim.wait_for_sends(before + 1, timeout=30)
    reply = (sends[-1].json or {}).get("message", {})
    console.print(f"[green]Shop ›[/] {reply.get('text')}\n")


async def _over_the_api(client: httpx.AsyncClient, console: Console, url: str) -> None:
    """A program's view: a user made through the admin API, then the SDK, streaming."""
    console.print("[bold]The same agent over /v1/responses[/] (official openai SDK, streaming)")
    created = await client.post(
        "/admin/users",
        json={"name": "web-shop"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    created.raise_for_status()
    token = created.json()["token"]["token"]
    previous = None
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key=token) as sdk:
        for text in API_SCRIPT:
            console.print(f"[cyan]web-shop ›[/] {text}")
            console.print("[green]Shop     ›[/] ", end="")
            async with sdk.responses.stream(
                model="default", input=text, previous_response_id=previous
            ) as stream:
                async for event in stream:
                    if event.type == "response.output_text.delta":
                        console.print(event.delta, end="", markup=False)
                final = await stream.get_final_response()
            previous = final.id
            console.print(
                f"\n[dim]{final.id}, {final.usage.total_tokens if final.usage else 0} tokens[/]\n"
            )


async def _say(client: httpx.AsyncClient, console: Console, text: str) -> None:
    console.print(f"[cyan]{CUSTOMER[1]} ›[/] {text}")
    await _post(client, "whatsapp", json.loads(_webhook(text)))


async def _post(client: httpx.AsyncClient, channel: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    response = await client.post(
        f"/webhooks/{channel}",
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)},
    )
    response.raise_for_status()


if __name__ == "__main__":
    asyncio.run(run_demo())
