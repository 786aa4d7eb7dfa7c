"""The payment channel's callback receiver: the bank POSTs `{"payment_id": ...}` when it has an answer.

The body is signed with HMAC-SHA256 under a secret shared with the bank (header `X-Bank-Signature:
sha256=<hex>`); an unsigned or badly signed callback is refused and signals nothing. A good one signals the
household's workflow (`payment_result`), whose id is derived from the payment id alone. The signal is only a
wake-up: the workflow asks the channel for the status before it records anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from models.finance import PaymentNotice
from models.household import workflow_id_for

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Bank-Signature"
CALLBACK_PATH = "/api/channel/callback"
# CODE-A<allocation>-T<tranche>-<attempt> (workflows/household.py _payment_id)
PAYMENT_ID = re.compile(r"^(?P<code>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})-A\d+-T\d+-\d+$")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verified(secret: str, body: bytes, signature: str | None) -> bool:
    return bool(secret) and signature is not None and hmac.compare_digest(sign(secret, body), signature)


def workflow_id_of(payment_id: str) -> str | None:
    m = PAYMENT_ID.match(payment_id)
    return workflow_id_for(m.group("code")) if m else None


def router(secret: str | Callable[[], str], client_of: Callable[[Request], Client]) -> APIRouter:
    """The route `POST /api/channel/callback`; `client_of(request)` is the Temporal client to signal with."""
    r = APIRouter(tags=["payment channel"])

    @r.post(CALLBACK_PATH, status_code=202)
    async def callback(request: Request):
        body = await request.body()
        key = secret() if callable(secret) else secret
        if not verified(key, body, request.headers.get(SIGNATURE_HEADER)):
            log.warning(
                "payment_callback_refused", reason="bad signature", client=request.client and request.client.host
            )
            return JSONResponse(status_code=401, content={"detail": "bad or missing signature"})
        try:
            payment_id = json.loads(body)["payment_id"]
            assert isinstance(payment_id, str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return JSONResponse(status_code=422, content={"detail": 'the body must be {"payment_id": "..."}'})
        workflow_id = workflow_id_of(payment_id)
        if workflow_id is None:
            return JSONResponse(status_code=422, content={"detail": f"not a payment id: {payment_id!r}"})
        from workflows.household import HouseholdWorkflow

        try:
            await (
                client_of(request)
                .get_workflow_handle(workflow_id)
                .signal(HouseholdWorkflow.payment_result, PaymentNotice(payment_id=payment_id))
            )
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return JSONResponse(status_code=404, content={"detail": f"no open workflow {workflow_id}"})
            log.warning("payment_callback_signal_failed", payment_id=payment_id, error=str(err))
            return JSONResponse(status_code=503, content={"detail": "could not signal the workflow; retry"})
        log.info("payment_callback", payment_id=payment_id, workflow_id=workflow_id)
        return {"payment_id": payment_id}

    return r


def create_app(client: Client, secret: str) -> FastAPI:
    """The receiver on its own (the tests' workers; a deployment mounts the router in the web app)."""
    app = FastAPI(title="Payment channel callbacks")
    app.include_router(router(secret, lambda request: client))
    return app
