"""The server's routes beside generation: `/health`, `/v1/models`, `/metrics` (Prometheus) and
`/aios/state` (the serving view's JSON, which `aios top --url` draws)."""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from .state import Server

router = APIRouter()


@router.get("/health")
async def health(srv: Server):
    if srv.loop.error:
        return JSONResponse({"status": "error", "error": srv.loop.error}, status_code=500)
    return {"status": "ok" if srv.loop.accepting else "stopping"}


@router.get("/v1/models")
async def models(srv: Server):
    return {"object": "list", "data": [{"id": srv.model_name, "object": "model", "created": srv.created,
                                        "owned_by": "aios", "max_model_len": srv.cfg.max_position_embeddings}]}


@router.get("/metrics")
async def prom(srv: Server):
    if srv.metrics is None:
        return Response("", media_type="text/plain")
    body, ctype = srv.metrics.render()
    return Response(body, media_type=ctype)


@router.get("/aios/state")
async def state(srv: Server):
    return srv.loop.view().to_json()
