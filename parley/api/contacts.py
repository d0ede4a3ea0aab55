"""The admin API of customers' erasure (admin bearer token): `DELETE /admin/contacts/{id}`
removes one customer everywhere, here and upstream (see `store.queries.erasure`), and
`GET /admin/erasures` lists the audit records, which hold no personal data."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel

from parley.api.admin import AdminDep, require_admin
from parley.api.errors import ADMIN_ERRORS
from parley.deps import RowId, RuntimeDep, SessionDep
from parley.errors import AlreadyErased, ContactNotFound, ErasureRefused
from parley.store.queries.erasure import erase_contact, recent_erasures

log = structlog.get_logger(__name__)
router = APIRouter(
    prefix="/admin",
    tags=["contacts"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_ERRORS,
)


class ErasurePublic(BaseModel):
    id: int
    contact_id: int
    account_id: int
    channel: str
    erased_at: datetime
    requested_by: str
    conversations: int
    messages: int
    outbox: int
    responses: int
    inbox: int
    upstream: int
    """Upstream objects (OpenAI conversations, stored responses) queued for deletion."""

    model_config = {"from_attributes": True}


@router.delete("/contacts/{contact_id}")
async def erase(
    contact_id: RowId, admin: AdminDep, session: SessionDep, runtime: RuntimeDep
) -> ErasurePublic:
    """Erase the customer: their conversations, messages, outbox, response records and inbox
    rows here, their OpenAI conversations and stored responses upstream (queued, retried until
    done); usage sums stay, and an audit record says who asked and how much went."""
    try:
        report = await erase_contact(
            session,
            contact_id=contact_id,
            requested_by=admin,
            key=runtime.settings.identity_key,
        )
    except AlreadyErased as exc:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"{exc} at {exc.erased_at.isoformat()}"
        ) from exc
    except ContactNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ErasureRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    await session.commit()
    log.info(
        "contact.erased",
        contact_id=report.contact_id,
        requested_by=report.requested_by,
        conversations=report.conversations,
        messages=report.messages,
        upstream=report.upstream,
    )
    runtime.upstream_deleter.wake()
    return ErasurePublic.model_validate(report)


@router.get("/erasures")
async def list_erasures(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[ErasurePublic]:
    """The erasures' audit records, newest first."""
    return [ErasurePublic.model_validate(r) for r in await recent_erasures(session, limit=limit)]
