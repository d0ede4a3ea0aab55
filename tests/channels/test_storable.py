"""`storable` and `segment`: what every door applies to text before the store, and to ids before
a Graph URL."""

from __future__ import annotations

import json

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from parley.channels.graph_path import segment
from parley.channels.messenger_platform.send import messages_url
from parley.channels.text import storable, storable_json, storable_tree

# Any code point, surrogates and NUL included.
_ANY = st.text(alphabet=st.characters(codec=None, min_codepoint=0), max_size=40)


@settings(max_examples=300, deadline=None)
@given(text=_ANY)
def test_storable_text_encodes_and_has_no_nul(text: str) -> None:
    clean = storable(text)
    assert "\x00" not in clean
    clean.encode()  # no lone surrogate left
    assert len(clean) == len(text)  # replaced one for one, never dropped
    assert storable(clean) == clean


def test_storable_text_is_returned_as_is() -> None:
    for text in ("", "plain", "naïve 😀", "日本語"):
        assert storable(text) is text


def test_storable_tree_cleans_keys_values_and_nested_lists_in_place() -> None:
    data = json.loads('{"a\\u0000": ["x\\ud800", {"k": "\\u0000"}], "n": 1, "e": "\\ud83d\\ude00"}')
    assert storable_tree(data) == {"a\ufffd": ["x\ufffd", {"k": "\ufffd"}], "n": 1, "e": "😀"}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _ANY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_ANY, inner, max_size=4),
    max_leaves=12,
)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


@settings(max_examples=400, deadline=None)
@given(value=_JSON, escaped=st.booleans())
@example(value="\x00", escaped=True)  # a body that is one string
def test_storable_json_is_the_parsed_body_walked(value: object, escaped: bool) -> None:
    """Bodies written with escapes (as Meta does) or as raw UTF-8 (surrogates as
    `surrogatepass` bytes): the same as parsing and walking every one, which is skipped only
    when nothing in the body can be unstorable."""
    body = json.dumps(value, ensure_ascii=escaped).encode("utf-8", "surrogatepass")
    parsed = storable_json(body)
    assert parsed == storable_tree(json.loads(body))
    for text in _strings(parsed):
        assert "\x00" not in text
        text.encode()


def test_storable_tree_walks_nesting_deeper_than_the_recursion_limit() -> None:
    deep: list[object] = ["\x00"]
    for _ in range(50_000):
        deep = [deep]
    storable_tree(deep)
    node: object = deep
    while isinstance(node, list) and node and isinstance(node[0], list):
        node = node[0]
    assert node == ["\ufffd"]


def test_a_segment_is_one_path_segment_whatever_it_holds() -> None:
    for odd in ("../../../v1/me", "..", ".", "me?x=1#y", "a%2Fb", "a b"):
        url = httpx.URL(messages_url("https://graph.example", "v21.0", odd))
        raw = url.raw_path  # as sent: still percent-encoded
        assert raw.startswith(b"/v21.0/") and raw.endswith(b"/messages"), url
        assert raw.count(b"/") == 3 and b"?" not in raw and not url.fragment, url
    assert segment("106540352242922") == "106540352242922"
    assert messages_url("https://graph.example/", "v21.0", "me").endswith("/v21.0/me/messages")
