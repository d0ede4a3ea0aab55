"""A webhook fuzzer (both backends): real samples from fixtures/payloads, one place in them
mutated (NUL, lone surrogates, deep nesting, huge strings, wrong types), signed and posted
beside a well-formed entry. Never a 5xx, and the well-formed entry is always filed: one bad
item never costs the others."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Parley
from tests.factories import messaging_text, sample, signed_headers, whatsapp_texts

SAMPLES = {
    "whatsapp": ["whatsapp/text.json", "whatsapp/image.json", "whatsapp/status_delivered.json"],
    "messenger": ["messenger/text.json", "messenger/quick_reply.json"],
}
_serial = itertools.count(1)

Path = tuple[str | int, ...]


def paths(node: Any, here: Path = ()) -> list[Path]:
    """Every place in `node` (not the root): each key of each dict, each index of each list."""
    found: list[Path] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found += [(*here, key), *paths(value, (*here, key))]
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += [(*here, index), *paths(value, (*here, index))]
    return found


def get(node: Any, path: Path) -> Any:
    for part in path:
        node = node[part]
    return node


def put(node: Any, path: Path, value: Any) -> None:
    get(node, path[:-1])[path[-1]] = value


ODD_TEXT = st.sampled_from(["\x00", "\ud800", "\udfff", "a\x00b\ud83d", "\x00" * 3])
WRONG = st.sampled_from([None, 0, -1, 1.5, True, [], {}, [None], {"id": None}, "", "x"])


@st.composite
def mutation(draw: st.DrawFn, leaf: Any) -> Any:
    """What replaces `leaf`: the same text with odd characters in it, a huge string, a wrong
    type, or the leaf buried deep."""
    kind = draw(st.sampled_from(["odd", "huge", "wrong", "deep"]))
    if kind == "odd":
        text = leaf if isinstance(leaf, str) else json.dumps(leaf)
        at = draw(st.integers(min_value=0, max_value=len(text)))
        return text[:at] + draw(ODD_TEXT) + text[at:]
    if kind == "huge":
        return draw(st.sampled_from(["x", "\x00", "\ud800", "é"])) * 20_000
    if kind == "wrong":
        return draw(WRONG)
    depth = draw(st.integers(min_value=10, max_value=400))
    return json.loads("[" * depth + json.dumps(leaf) + "]" * depth)


def good_entry(channel: str, text: str) -> dict[str, Any]:
    serial = next(_serial)
    if channel == "whatsapp":
        payload = whatsapp_texts(f"3469{serial:07d}", [text])
    else:
        payload = messaging_text("messenger", "1234567890", f"7{serial:06d}", text)
    entry: dict[str, Any] = payload["entry"][0]
    return entry


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_mutated_samples_never_fail_and_never_cost_their_neighbours(
    parley: Parley, data: st.DataObject
) -> None:
    channel = data.draw(st.sampled_from(sorted(SAMPLES)))
    payload = sample(data.draw(st.sampled_from(SAMPLES[channel])))
    entry = payload["entry"][0]
    where = data.draw(st.sampled_from(paths(entry)))
    put(entry, where, data.draw(mutation(get(entry, where))))
    good = f"well-formed {next(_serial)}"
    payload["entry"].append(good_entry(channel, good))
    body = json.dumps(payload).encode()  # ASCII, as Meta writes: NUL as \u0000 and so on

    response = await parley.client.post(
        f"/webhooks/{channel}", content=body, headers=signed_headers(body)
    )

    assert response.status_code == 200, (where, response.text)
    await parley.wait_filed()
    assert await parley.rows("SELECT count(*) FROM messages WHERE text = ?", good) == [(1,)]
