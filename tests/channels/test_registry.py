"""The channel registry, and `render_text` looking channels up in it."""

from __future__ import annotations

import pytest

from parley.channels import registry
from parley.channels.registry import Registry, discover
from parley.channels.render import DEFAULT_LIMIT, render_text
from parley.channels.whatsapp import WhatsAppChannel
from parley.errors import ParleyError, UnknownChannel
from tests.channels.echochat import NAME, EchoChat


def test_whatsapp_is_found_in_its_package() -> None:
    assert "whatsapp" in registry.names()
    assert isinstance(registry.get("whatsapp"), WhatsAppChannel)
    found = Registry()
    discover(found)
    assert found.names() == registry.names()


@pytest.mark.parametrize("name", ["telegram", "", "WhatsApp", "whatsapp "])
def test_an_unknown_channel_is_a_parley_error(name: str) -> None:
    with pytest.raises(UnknownChannel) as caught:
        registry.get(name)
    assert isinstance(caught.value, ParleyError)


def test_register_then_unregister() -> None:
    channels = Registry()
    echochat = EchoChat()
    assert channels.register(echochat) is echochat
    assert channels.get(NAME) is echochat
    assert NAME in channels and channels.names() == [NAME]
    channels.unregister(NAME)
    assert NAME not in channels and channels.names() == []
    with pytest.raises(UnknownChannel):
        channels.get(NAME)
    with pytest.raises(UnknownChannel):
        channels.unregister(NAME)


def test_a_taken_name_is_not_replaced() -> None:
    channels = Registry()
    first = channels.register(EchoChat())
    with pytest.raises(ValueError, match="already registered"):
        channels.register(EchoChat())
    assert channels.get(NAME) is first


@pytest.mark.parametrize("name", ["", "Echo", "echo-chat", "echo/chat", "1echo", "x" * 33])
def test_a_name_that_cannot_be_a_path_or_setting_is_refused(name: str) -> None:
    class Misnamed(EchoChat):
        pass

    Misnamed.name = name
    with pytest.raises(ValueError, match="must match"):
        Registry().register(Misnamed())


def test_registered_lasts_for_the_block_even_when_it_fails() -> None:
    with pytest.raises(RuntimeError), registry.registered(EchoChat()) as echochat:
        assert registry.get(NAME) is echochat
        raise RuntimeError("the test failed")
    assert NAME not in registry.names()
    assert "whatsapp" in registry.names()


def test_render_text_uses_the_registered_channel() -> None:
    assert render_text("whatsapp", "**Hi** there") == ["*Hi* there"]
    answer = "**Très** " + "é" * 600  # 600 characters, 1,200 bytes
    with registry.registered(EchoChat()):
        assert render_text(NAME, answer) == ["Très", "é" * 500, "é" * 100]


def test_render_text_for_an_unregistered_channel_splits_plain_text() -> None:
    answer = "**plain** " + "word " * 400
    parts = render_text("carrier_pigeon", answer)
    assert parts[0].startswith("**plain**")
    assert all(len(part) <= DEFAULT_LIMIT for part in parts)
