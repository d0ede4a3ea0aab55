"""Schemathesis against Parley's own OpenAPI document, on both backends: every operation of
`/v1`, `/admin` and `/webhooks`, called with the admin token, with a token nobody holds and
with none, must answer without a 5xx, with a status its operation declares and a body that
matches the schema declared for that status.

Bounded for CI (`FUZZ_EXAMPLES` cases an operation with the admin token, a few without),
derandomized so that a failure comes back on the next run, and not shrunk: the failing case is
reported as generated, with a curl command to reproduce it. `PARLEY_FUZZ_EXAMPLES` raises the
bound for a longer run (see docs/security.md).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from pydantic import SecretStr
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.test_users import ADMIN
from tests.conftest import ADMIN_TOKEN, MakeParley

FUZZ_EXAMPLES = int(os.environ.get("PARLEY_FUZZ_EXAMPLES", "8"))
"""Generated cases per operation with the admin token, in each generation mode."""
REFUSED_EXAMPLES = max(2, FUZZ_EXAMPLES // 4)
"""Cases per operation without a valid token: every one of them stops at the token check."""
DOORS = r"^/(v1|admin|webhooks)(/|$)"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class Caller:
    name: str
    token: str | None
    modes: tuple[GenerationMode, ...]
    examples: int
    documented_examples: bool = False
    """Whether the schema's own examples are sent too (once each)."""


CALLERS = (
    Caller("no token", None, (GenerationMode.POSITIVE,), REFUSED_EXAMPLES),
    Caller(
        "unknown token", "sk-parley-nobody-holds-this", (GenerationMode.POSITIVE,), REFUSED_EXAMPLES
    ),
    # Last, since its writes (users, tokens, accounts) change what later calls find. The
    # examples are the one way to a successful `POST /v1/responses` (a generated `model`
    # names no profile), streamed and not.
    Caller("admin token", ADMIN_TOKEN, tuple(GenerationMode), FUZZ_EXAMPLES, True),
)


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    answers: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    """(operation, caller, status) → how many answers."""


def fuzz(base_url: str) -> Report:
    """Every operation under `DOORS`, as each caller; the failures as readable reports."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json").include(path_regex=DOORS)
    # Each run sends its caller's token; the generator must not send or negate one of its own.
    schema.config.generation.update(with_security_parameters=False)
    report = Report()
    with requests.Session() as session:
        for caller in CALLERS:
            for result in schema.get_all_operations():
                operation = result.ok()
                runs: list[tuple[str, SearchStrategy[Case], int]] = []
                if caller.documented_examples:
                    for strategy in schema.get_strategies_from_examples(operation):
                        runs.append(("example", strategy, 1))
                for mode in caller.modes:
                    strategy = operation.as_strategy(generation_mode=mode)
                    runs.append((mode, strategy, caller.examples))
                for kind, strategy, examples in runs:
                    run = _one_run(operation, strategy, caller, base_url, session, report, examples)
                    label = f"{operation.label} ({caller.name}, {kind})"
                    _record(report, label, run, may_be_empty=kind == GenerationMode.NEGATIVE)
    return report


def _record(report: Report, label: str, run: Callable[[], None], *, may_be_empty: bool) -> None:
    """Run `run`, its failure reported and not raised, so that the other runs go on."""
    try:
        run()
    except Unsatisfiable as exc:
        # An operation may have no negative case: nothing a value can break (no inputs, or
        # only a path's free string).
        if not may_be_empty:
            report.failures.append(f"{label}: {exc}")
    # Schemathesis raises its findings as a BaseExceptionGroup.
    except (Exception, BaseExceptionGroup) as exc:
        report.failures.append(f"{label}: {exc}")


def _one_run(
    operation: Any,
    strategy: SearchStrategy[Case],
    caller: Caller,
    base_url: str,
    session: requests.Session,
    report: Report,
    examples: int,
) -> Callable[[], None]:
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Case) -> None:
        headers = {"Authorization": f"Bearer {caller.token}"} if caller.token else {}
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        report.answers[operation.label, caller.name, response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)

    return run


async def test_every_operation_answers_as_its_schema_declares(make_parley: MakeParley) -> None:
    # No lock-out and no rate limit: with them, the unknown token's calls would lock the
    # address and the rest of the run would see nothing but 429s. A secret key, so that
    # secrets and accounts' tokens can be stored rather than all refused.
    parley = make_parley(
        parley_auth_failure_limit=0,
        parley_api_rate_limit=0,
        parley_secret_key=SecretStr("fuzz-secret-key-for-tests-0123456789"),
    )
    report = await asyncio.to_thread(fuzz, parley.server.url)
    assert not report.failures, "\n\n".join(report.failures)

    statuses: dict[tuple[str, str], set[int]] = {}
    for (label, caller, status), _ in report.answers.items():
        statuses.setdefault((label, caller), set()).add(status)
    guarded = {label for label, _ in statuses if not label.split(" ")[1].startswith("/webhooks/")}
    assert len(guarded) > 40
    for label in guarded:
        # Without a valid token nothing gets past the token check (a NUL in the path is
        # refused ahead of it)...
        for refused in ("no token", "unknown token"):
            seen = statuses[label, refused]
            assert 401 in seen and seen <= {400, 401}, (label, refused, seen)
        # ...and with the admin token every operation was reached, not locked out.
        assert statuses[label, "admin token"] - {401, 403, 429}, label
    # The documented examples got a whole answer, the streamed one included.
    assert 200 in statuses["POST /v1/responses", "admin token"]
    # The built-in `_admin` survived whatever the admin token's calls deleted or suspended.
    async with httpx.AsyncClient(base_url=parley.server.url) as client:
        answer = await client.get("/admin/users", headers=ADMIN)
    assert answer.status_code == 200, answer.text


pytestmark = pytest.mark.timeout(600)
