"""What bounds the turns waiting on the model: the upstream's concurrency cap, not the worker."""

from __future__ import annotations

from parley.testing import OpenAISimulator
from tests.conftest import MakeParley
from tests.delivery.test_send_discipline import post
from tests.factories import whatsapp_batch

MODEL_CALLS = ("/v1/conversations", "/v1/responses")


async def test_the_upstream_cap_is_filled_when_more_customers_wait(
    make_parley: MakeParley, openai_sim: OpenAISimulator
) -> None:
    # Above the 16 conversations a worker answered at once before its default followed the cap.
    cap = 20
    openai_sim.latency = 3.0  # each call held long enough for all the others to start
    parley = make_parley(openai_max_concurrency=cap)
    assert parley.settings.parley_worker_concurrency is None  # the default, as users run it
    phones = [f"3461300{n:04d}" for n in range(cap + 5)]
    await post(parley, whatsapp_batch(phones, [f"hello {n}" for n in range(len(phones))]))

    def in_flight() -> list[object]:
        return [r for r in openai_sim.requests if r.path in MODEL_CALLS and r.status is None]

    await openai_sim.wait_until(in_flight, cap, timeout=10.0, what="model calls in flight")
    # Never more than the cap: the calls past it wait for a slot. The first calls are held
    # for three seconds, so a call over the cap would be in flight with them now.
    assert len(in_flight()) == cap
