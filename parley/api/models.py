"""`/v1/models`: the agent profiles, listed as OpenAI lists models.

Many clients (and tools such as Open WebUI) call this first to learn what `model` they may
send; on Parley a model is an agent profile, `default` or one with a prompt bound to it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from parley.api.auth import CallerDep
from parley.api.errors import V1_ERRORS, APIError
from parley.api.responses.objects import FastJSON
from parley.deps import SessionDep
from parley.store.queries.profiles import Profile, list_profiles

router = APIRouter(prefix="/v1", tags=["models"], responses=V1_ERRORS)

OWNER = "parley"


def _model(profile: Profile) -> dict[str, Any]:
    created = int(profile.since.timestamp()) if profile.since is not None else 0
    return {"id": profile.name, "object": "model", "created": created, "owned_by": OWNER}


@router.get("/models")
async def list_models(caller: CallerDep, session: SessionDep) -> Response:
    """List the models (agent profiles) this Parley answers as (OpenAI's `GET /v1/models`)."""
    profiles = await list_profiles(session)
    return FastJSON({"object": "list", "data": [_model(p) for p in profiles]})


@router.get("/models/{model}")
async def retrieve_model(model: str, caller: CallerDep, session: SessionDep) -> Response:
    """One model (agent profile), or OpenAI's 404 for a name that answers nothing."""
    for profile in await list_profiles(session):
        if profile.name == model:
            return FastJSON(_model(profile))
    raise APIError(
        404, f"The model '{model}' does not exist.", param="model", code="model_not_found"
    )
