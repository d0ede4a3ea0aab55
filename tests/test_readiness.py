"""The start-up rules as data: which upstreams may go without a key, and which channels need
their secret given the environment and the accounts added (as the webhook door checks them)."""

from __future__ import annotations

import pytest

from parley.config import Settings
from parley.readiness import channel_states, is_local_url, shown_redis_url, upstream_problem
from parley.store.queries.account_directory import Credentials, Directory


def settings(**values: str) -> Settings:
    return Settings.model_validate(values)  # from these values alone, not the environment


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://localhost:11434/v1",
        "http://[::1]:8000/v1",
        "http://10.0.3.7/v1",
        "http://192.168.1.20:8000/v1",
        "http://172.20.0.5/v1",
        "http://ollama:11434/v1",
        "http://vllm.internal/v1",
        "http://gpu-box.local:8000/v1",
    ],
)
def test_local_upstreams_need_no_key(url: str) -> None:
    assert is_local_url(url)
    assert upstream_problem(settings(openai_base_url=url)) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "https://my-resource.openai.azure.com/openai/v1",
        "http://8.8.8.8/v1",
        "https://localhost.example.com/v1",
    ],
)
def test_public_upstreams_need_a_key(url: str) -> None:
    assert not is_local_url(url)
    problem = upstream_problem(settings(openai_base_url=url))
    assert problem is not None and problem.startswith("OPENAI_API_KEY is not set")
    assert upstream_problem(settings(openai_base_url=url, openai_api_key="sk-x")) is None


def account(
    channel: str, *, own_secret: bool, enabled: bool = True, removed: bool = False
) -> Credentials:
    return Credentials(
        account_id=1,
        channel=channel,
        external_id="1",
        enabled=enabled,
        removed=removed,
        own_app_secret=own_secret,
        app_secret="own" if own_secret else None,
    )


def test_a_channel_answers_when_its_token_is_set() -> None:
    states = channel_states(settings(whatsapp_access_token="t"), Directory())
    assert states["messenger"] == "off" and states["instagram"] == "off"
    assert states["whatsapp"].startswith("META_APP_SECRET is not set")
    assert "WHATSAPP_ACCESS_TOKEN is set" in states["whatsapp"]
    assert (
        channel_states(settings(whatsapp_access_token="t", meta_app_secret="s"), Directory())[
            "whatsapp"
        ]
        == "ok"
    )


def test_instagram_takes_its_own_app_secret_or_meta_s() -> None:
    assert channel_states(settings(instagram_access_token="t"), Directory())[
        "instagram"
    ].startswith("INSTAGRAM_APP_SECRET (or META_APP_SECRET) is not set")
    for secret in ("instagram_app_secret", "meta_app_secret"):
        values = {"instagram_access_token": "t", secret: "s"}
        assert channel_states(settings(**values), Directory())["instagram"] == "ok"


def test_added_accounts_decide_once_a_channel_has_them() -> None:
    # Every account signs with its own secret: the environment's token needs no default one.
    own = Directory([account("whatsapp", own_secret=True)])
    assert channel_states(settings(whatsapp_access_token="t"), own)["whatsapp"] == "off"
    # One enabled account without: the default secret is needed, with or without a token.
    mixed = Directory([account("messenger", own_secret=False)])
    assert "1 enabled account(s)" in channel_states(settings(), mixed)["messenger"]
    # Disabled or removed accounts answer nobody.
    idle = Directory(
        [
            account("messenger", own_secret=False, enabled=False),
            account("instagram", own_secret=False, removed=True),
        ]
    )
    assert channel_states(settings(), idle) == {
        "instagram": "off",
        "messenger": "off",
        "whatsapp": "off",
    }


def test_redis_passwords_are_masked() -> None:
    assert shown_redis_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert shown_redis_url("rediss://user:pw@h/1") == "rediss://user:***@h/1"
    assert shown_redis_url("redis://h:6379/0") == "redis://h:6379/0"
