"""gRPC adapter of KeyService (meshsearch.api.v1): messages in and out; KeyAdmin decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_api.auth.admin import KeyAdmin
from meshsearch_api.auth.key_store import StoredKey
from meshsearch_api.auth.principal import Role
from meshsearch_common.errors import InvalidArgument, enum_member
from meshsearch_common.readiness import Readiness

ROLES_IN: dict[int, Role] = {pb.ROLE_READ: Role.READ, pb.ROLE_WRITE: Role.WRITE, pb.ROLE_ADMIN: Role.ADMIN}
_FAR_S = 400 * 365 * 86_400  # protobuf's own range is years 1-9999; anything this far is refused as such


def _time_in(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    if abs(value.seconds) > _FAR_S or not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgument(f"{field} is not a valid time", field=field)
    return value.ToDatetime(tzinfo=UTC)


def _duration_in(value: duration_pb2.Duration, field: str) -> timedelta:
    if abs(value.seconds) > _FAR_S or abs(value.nanos) >= 1_000_000_000:
        raise InvalidArgument(f"{field} is not a valid duration", field=field)
    return value.ToTimedelta()


def api_key_out(key: StoredKey) -> pb.ApiKey:
    message = pb.ApiKey(
        key_id=key.key_id,
        tenant=key.tenant,
        roles=sorted(getattr(pb, f"ROLE_{role.name}") for role in key.roles),
        name=key.name,
        read_per_s=key.read_per_s,
        write_per_s=key.write_per_s,
    )
    if key.create_time is not None:
        message.create_time.FromDatetime(key.create_time)
    if key.revoke_time is not None:
        message.revoke_time.FromDatetime(key.revoke_time)
    if key.expire_time is not None:
        message.expire_time.FromDatetime(key.expire_time)
    return message


class KeyServicer(pb_grpc.KeyServiceServicer):
    def __init__(self, admin: Readiness[KeyAdmin]) -> None:
        self._admin = admin

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateApiKeyResponse:
        roles = [enum_member(ROLES_IN, int(role), "roles") for role in request.roles]
        expiration = request.WhichOneof("expiration")
        key, secret = await self._admin.get().create(
            request.tenant,
            roles,
            request.name,
            request.read_per_s,
            request.write_per_s,
            expire_time=_time_in(request.expire_time, "expire_time") if expiration == "expire_time" else None,
            ttl=_duration_in(request.ttl, "ttl") if expiration == "ttl" else None,
        )
        return pb.CreateApiKeyResponse(api_key=api_key_out(key), secret=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListApiKeysResponse:
        found, token = await self._admin.get().list(request.tenant, request.page_size, request.page_token)
        return pb.ListApiKeysResponse(api_keys=[api_key_out(key) for key in found], next_page_token=token)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RevokeApiKeyResponse:
        return pb.RevokeApiKeyResponse(api_key=api_key_out(await self._admin.get().revoke(request.key_id)))
