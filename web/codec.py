"""The remote codec for the Temporal Web UI and `temporal workflow show`: POST /codec/decode and /codec/encode.

Payloads in Temporal are sealed by the engine's codec (core/codec.py); the Web UI and the CLI show them only
through a codec server. This is one, inside the web app, with the keys of the app's own Temporal client (so
exactly the ring the engine seals with), in the remote-codec wire format: request and answer are
`temporal.api.common.v1.Payloads` as protobuf JSON, `{"payloads": [{"metadata": {...}, "data": "<base64>"}]}`.

Only auditors and administrators may decode, only administrators encode (seal under the engine's key):
decoding shows the head of household's name and CCCD of every household, with no jurisdiction to narrow it
(a payload does not say whose it is). Every use is logged
(`codec_decode` / `codec_encode`: who, role, namespace, how many payloads, refused or not), never the contents.

    temporal workflow show -w household-… --codec-endpoint http://localhost:8000/codec --codec-auth "Bearer $TOKEN"

Cross-origin (CORS) answers are given on these routes only, to the origins in `settings.codec_origins`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog
from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import DataConverter

from core.codec import PayloadKeyError, for_reading
from core.errors import Refusal
from core.settings import Settings
from db import policy as policy_db
from operations import access
from web.problems import Problem, response

log = structlog.get_logger("codec")

PREFIX = "/codec"
MAX_PAYLOADS = 1000
MAX_BYTES = 4 * 1024 * 1024  # a Temporal blob is at most 2 MiB by default; base64 and JSON add about a third
ALLOW_METHODS = "POST, OPTIONS"
ALLOW_HEADERS = "Content-Type, X-Namespace, Authorization"

SignedInDependency = Callable[[Request], Awaitable[access.SignedIn]]
Apply = Callable[[DataConverter, Sequence[Payload]], Awaitable[tuple[list[Payload], int]]]  # -> out, not opened


def router(settings: Settings, signed_in: SignedInDependency, cookie: str) -> APIRouter:
    """The codec routes; `signed_in` and `cookie` are the web app's (web/app.py), so sign-in is the app's own."""
    origins = frozenset(settings.codec_origins)
    r = APIRouter(prefix=PREFIX, tags=["audit"])

    def cors(request: Request, resp: Response, *, preflight: bool = False) -> Response:
        origin = request.headers.get("origin")
        resp.headers["Vary"] = "Origin"
        if origin in origins:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Credentials"] = "true"
            if preflight:
                resp.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
                resp.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
                resp.headers["Access-Control-Max-Age"] = "600"
        return resp

    async def who_is(request: Request) -> access.SignedIn:
        # An API token (`Authorization: Bearer …`: the CLI's `--codec-auth "Bearer $TOKEN"`, or the Web UI
        # passing one) is the app's usual machine sign-in: no cookie is involved, so no CSRF. A session cookie
        # is the Web UI's way (TEMPORAL_CODEC_INCLUDE_CREDENTIALS), and the Web UI cannot send the session's
        # CSRF token. A cookie alone is accepted when the request's Origin is one of `codec_origins`: browsers
        # always send Origin on a cross-origin POST and no page can set it, the cookie is SameSite=Strict (never
        # attached from another site), and these origins are the very ones CORS lets read the answer. Any other
        # cookie request (no Origin, another origin) goes through the app's CSRF check, as every unsafe request
        # does. Neither route changes any state; the check keeps another page from running the codec under an
        # auditor's name.
        auth = request.headers.get("authorization", "")
        token = request.cookies.get(cookie)
        if not auth.lower().startswith("bearer ") and token and request.headers.get("origin") in origins:
            async with request.app.state.sessions() as s, s.begin():
                who = await access.session_user(s, token)
            if who is None:
                raise Problem("NotSignedIn", "sign in first (session cookie or API token)")
            return who
        return await signed_in(request)

    async def read_payloads(request: Request) -> list[Payload]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BYTES:
            raise Problem("PayloadsTooLarge", f"at most {MAX_BYTES} bytes per request")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BYTES:
                raise Problem("PayloadsTooLarge", f"at most {MAX_BYTES} bytes per request")
        try:
            found = json_format.Parse(bytes(body), Payloads(), ignore_unknown_fields=True).payloads
        except (json_format.ParseError, UnicodeDecodeError, RecursionError) as e:
            # The remote-codec protocol answers a body it cannot read with 400.
            raise Problem("InvalidInput", f"not Payloads as protobuf JSON: {e}", status=400) from None
        if len(found) > MAX_PAYLOADS:
            raise Problem("PayloadsTooLarge", f"at most {MAX_PAYLOADS} payloads per request, not {len(found)}")
        return list(found)

    async def serve(request: Request, event: str, apply: Apply) -> Response:
        fields: dict = {"namespace": request.headers.get("x-namespace"), "origin": request.headers.get("origin")}
        try:
            who = await who_is(request)
            fields |= {"user": who.user.user_id, "role": who.user.role, "via": who.via}
            # Who may open and who may seal is the policy's (codec_roles, codec_encode_roles): sealing under the
            # engine's key is an operator's act (the Web UI encodes what an operator sends a workflow), and an
            # auditor reads and never writes.
            async with request.app.state.sessions() as s:
                policy = await policy_db.policy_today(s)
            if who.user.role not in policy.codec_roles:
                raise Problem("RoleNotAllowed", f"only {', '.join(policy.codec_roles)} may read the sealed payloads")
            if apply is encode and who.user.role not in policy.codec_encode_roles:
                raise Problem(
                    "RoleNotAllowed",
                    f"only {', '.join(policy.codec_encode_roles)} may seal payloads under the engine key",
                )
            payloads = await read_payloads(request)
            fields["payloads"] = len(payloads)
            out, unopened = await apply(request.app.state.client.data_converter, payloads)
        except (Problem, Refusal) as err:  # a refusal from below (no policy in force, say) answers the same way
            p = err if isinstance(err, Problem) else Problem.of(err)
            log.info(event, refused=True, rule=p.rule, status=p.status, **fields)
            return cors(request, response(p))
        log.info(event, refused=False, unopened=unopened, **fields)
        body = json_format.MessageToJson(Payloads(payloads=out), indent=None)
        return cors(request, Response(body, media_type="application/json"))

    async def decode(converter: DataConverter, payloads: Sequence[Payload]) -> tuple[list[Payload], int]:
        # The readers' side of the client's codec (the auditors' tools use the same): plain payloads (written
        # before encryption) pass unchanged; one under a key the ring lacks, or altered, is handed back as it
        # came, still sealed, and counted.
        reader = for_reading(converter).payload_codec
        if reader is None:
            return list(payloads), 0
        out, unopened = [], 0
        for p in payloads:
            try:
                out += await reader.decode([p])
            except (PayloadKeyError, ValueError, UnicodeDecodeError):  # no key, altered, or not ours at all
                out.append(p)
                unopened += 1
        return out, unopened

    async def encode(converter: DataConverter, payloads: Sequence[Payload]) -> tuple[list[Payload], int]:
        codec = converter.payload_codec  # the engine's: sealed under the active key
        return (await codec.encode(payloads) if codec else list(payloads)), 0

    @r.post("/decode", summary="Decode payloads (auditors, administrators)")
    async def decode_route(request: Request) -> Response:
        return await serve(request, "codec_decode", decode)

    @r.post("/encode", summary="Encode payloads (administrators)")
    async def encode_route(request: Request) -> Response:
        return await serve(request, "codec_encode", encode)

    @r.options("/{op}", include_in_schema=False)
    async def preflight(op: str, request: Request) -> Response:
        origin = request.headers.get("origin")
        if op not in ("decode", "encode"):
            return Response(status_code=404)
        if origin not in origins:
            return cors(request, Response("origin not allowed", status_code=400, media_type="text/plain"))
        return cors(request, Response(status_code=204), preflight=True)

    return r
