"""The payment channel's callback receiver, and the signatures both directions carry.

Every message between the engine and the bank (an instruction it submits, a callback it receives) is signed
with HMAC-SHA256 under a shared secret over `<unix time>.<body>` (headers `X-Bank-Timestamp` and
`X-Bank-Signature: sha256=<hex>`), and refused unsigned, badly signed, or more than `MAX_SKEW_SECONDS` old, so
a copied message cannot be sent again later. A good callback signals the household's workflow
(`payment_result`), whose id is derived from the payment id alone. The signal is only a wake-up: the
workflow asks the channel for the status before it records anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from models.finance import PaymentNotice
from models.household import workflow_id_for

log = structlog.get_logger(__name__)

SIGNATURE_HEADER = "X-Bank-Signature"
TIMESTAMP_HEADER = "X-Bank-Timestamp"
MAX_SKEW_SECONDS = 300
CALLBACK_PATH = "/api/channel/callback"
# CODE-A<allocation>-T<tranche>-<attempt> (workflows/household.py _payment_id)
PAYMENT_SIGNAL = "payment_result"  # HouseholdWorkflow.payment_result, by name: the bank need not import workflows
PAYMENT_ID = re.compile(r"^(?P<code>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})-A\d+-T\d+-\d+$")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    """The headers that sign `body` now."""
    now = int(time.time())
    return {"content-type": "application/json", TIMESTAMP_HEADER: str(now), SIGNATURE_HEADER: sign(secret, body, now)}


def verified(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Signed with `secret`, and recently: no secret, no signature, or an old message, and it is refused."""
    signature, stamp = headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER, "")
    if not secret or signature is None or not stamp.isdigit():
        return False
    fresh = abs(time.time() - int(stamp)) <= MAX_SKEW_SECONDS
    return fresh and hmac.compare_digest(sign(secret, body, int(stamp)), signature)


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
        if not verified(key, body, request.headers):
            log.warning(
                "payment_callback_refused", reason="bad signature", client=request.client and request.client.host
            )
            return JSONResponse(status_code=401, content={"detail": "bad, missing or stale signature"})
        try:
            payment_id = json.loads(body)["payment_id"]
            assert isinstance(payment_id, str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return JSONResponse(status_code=422, content={"detail": 'the body must be {"payment_id": "..."}'})
        workflow_id = workflow_id_of(payment_id)
        if workflow_id is None:
            return JSONResponse(status_code=422, content={"detail": f"not a payment id: {payment_id!r}"})
        try:
            await (
                client_of(request)
                .get_workflow_handle(workflow_id)
                .signal(PAYMENT_SIGNAL, PaymentNotice(payment_id=payment_id))
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
