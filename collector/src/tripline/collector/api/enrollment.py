"""/enrollment-tokens: list (never the secrets), create (the secret shown once), revoke."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection
from starlette.responses import Response

from tripline.collector import apitokens, enrollment
from tripline.collector.api.auth import act_for
from tripline.collector.api.body import Body, IntField, TextField
from tripline.collector.api.encoding import Json
from tripline.collector.api.jsonschema import array_of, obj, or_null, ref
from tripline.collector.api.params import CUSTOMER, MAX_EXPIRES_IN, NAME, path_id
from tripline.collector.api.routing import Call, operation
from tripline.collector.enrollment import EnrollmentToken, EnrollmentTokenNotFound


def token_json(token: EnrollmentToken) -> dict[str, Any]:
    return asdict(token)


@operation(
    "GET",
    "/enrollment-tokens",
    "listEnrollmentTokens",
    "Enrollment tokens (never their secrets)",
    obj(("items",), items=array_of(ref("EnrollmentToken"))),
    query=(CUSTOMER,),
    errors=(403,),
)
async def list_enrollment_tokens(call: Call) -> Response:
    ctx, customer = call.ctx, call.query["customer"]
    rows = await ctx.read(lambda conn: enrollment.list_tokens(conn, customer))
    return Json({"items": [token_json(t) for t in rows if call.token.allows(t.customer)]})


@operation(
    "POST",
    "/enrollment-tokens",
    "createEnrollmentToken",
    "A new enrollment token; the secret is in the answer, once",
    ref("EnrollmentTokenCreated"),
    status=201,
    body=Body(
        {
            "customer": TextField(max_length=128, pattern=NAME, check=apitokens.check_name),
            "expires_in": IntField(
                low=1,
                high=MAX_EXPIRES_IN,
                nullable=True,
                description="seconds until it expires; none: never",
            ),
        },
        required=("customer",),
        needed=True,
    ),
    errors=(403,),
)
async def create_enrollment_token(call: Call) -> Response:
    data = await call.body()
    customer: str = data["customer"]
    act_for(call.token, customer)
    token, ctx = call.token, call.ctx
    expires_in = data.get("expires_in")
    now = ctx.clock()
    expires_at = None if expires_in is None else now + expires_in

    def work(conn: Connection) -> tuple[EnrollmentToken, str]:
        record, secret = enrollment.create_token(conn, customer, now, expires_at)
        apitokens.record(
            conn,
            actor=token.name,
            action="enrollment_token.create",
            target=f"enrollment_token/{record.id}",
            customer=customer,
            data={"expires_at": expires_at},
            now=now,
        )
        return record, secret

    record, secret = await ctx.write(work)
    return Json({**token_json(record), "token": secret}, status_code=201)


@operation(
    "POST",
    "/enrollment-tokens/{token_id}/revoke",
    "revokeEnrollmentToken",
    "Revoke an enrollment token; enrolled agents keep working",
    ref("EnrollmentToken"),
    path_params=(path_id("token_id", "enrollment token id"),),
    body=Body(),
    errors=(404,),
)
async def revoke_enrollment_token(call: Call) -> Response:
    await call.body()
    token_id = call.path("token_id")
    token, ctx = call.token, call.ctx
    now = ctx.clock()

    def work(conn: Connection) -> EnrollmentToken:
        found = [t for t in enrollment.list_tokens(conn) if t.id == token_id]
        if not found or not token.allows(found[0].customer):
            raise EnrollmentTokenNotFound(token_id)
        if found[0].revoked_at is None:
            enrollment.revoke_token(conn, token_id, now)
            apitokens.record(
                conn,
                actor=token.name,
                action="enrollment_token.revoke",
                target=f"enrollment_token/{token_id}",
                customer=found[0].customer,
                data={},
                now=now,
            )
        return next(t for t in enrollment.list_tokens(conn) if t.id == token_id)

    return Json(token_json(await ctx.write(work)))


OPERATIONS = (list_enrollment_tokens, create_enrollment_token, revoke_enrollment_token)


def _schemas() -> dict[str, Any]:
    when = or_null("number")
    token = obj(
        ("id", "customer", "created_at"),
        id={"type": "integer"},
        customer={"type": "string"},
        created_at={"type": "number"},
        expires_at=when,
        revoked_at=when,
    )
    secret = {"type": "string", "description": "the secret, shown once"}
    return {
        "EnrollmentToken": token,
        "EnrollmentTokenCreated": {
            "allOf": [ref("EnrollmentToken"), obj(("token",), token=secret)]
        },
    }


SCHEMAS = _schemas()
