"""A tool as a user would declare one in PARLEY_TOOLS (`tests.agent.sample_tools:order_status`)."""

from __future__ import annotations


def order_status(order_id: str) -> dict[str, str]:
    return {"order_id": order_id, "status": "shipped", "carrier": "CTT"}
