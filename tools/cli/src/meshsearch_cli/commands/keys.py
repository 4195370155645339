"""`meshsearch keys create|list|revoke`: API keys (an admin key, or the bootstrap key, in
MESHSEARCH_API_KEY)."""

from __future__ import annotations

import re
from datetime import timedelta

import typer
from rich.table import Table

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch_cli.console import TargetOption, connect, err, every_page, out, run_async

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
ROLES = {"read": pb.ROLE_READ, "write": pb.ROLE_WRITE, "admin": pb.ROLE_ADMIN}
TenantOption = typer.Option("", "--tenant", help="Tenant (default: the calling key's own).")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def lifetime(text: str) -> timedelta | None:
    """'90d', '12h', '30m' or '3600s' as a duration; '' as None (the key does not expire)."""
    if not text:
        return None
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 90d, 12h, 30m or 3600s", param_hint="--expires-in")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def _roles(key: pb.ApiKey) -> str:
    return ",".join(pb.Role.Name(role).removeprefix("ROLE_").lower() for role in key.roles)


def _table(keys: list[pb.ApiKey]) -> Table:
    table = Table("key id", "tenant", "roles", "name", "read/s", "write/s", "created", "expires", "revoked")
    for key in keys:
        table.add_row(
            key.key_id,
            key.tenant,
            _roles(key),
            key.name,
            f"{key.read_per_s:g}" if key.read_per_s else "default",
            f"{key.write_per_s:g}" if key.write_per_s else "default",
            key.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M"),
            key.expire_time.ToDatetime().strftime("%Y-%m-%d %H:%M") if key.HasField("expire_time") else "never",
            key.revoke_time.ToDatetime().strftime("%Y-%m-%d %H:%M") if key.HasField("revoke_time") else "",
        )
    return table


@app.command()
@run_async
async def create(
    role: list[str] = typer.Option(["read", "write"], "--role", help="read, write or admin; repeat for several."),
    tenant: str = TenantOption,
    name: str = typer.Option("", "--name", help="A label: which team or program holds the key."),
    read_per_s: float = typer.Option(0, "--read-per-s", help="Reads per second (0: the server's default)."),
    write_per_s: float = typer.Option(0, "--write-per-s", help="Writes per second (0: the server's default)."),
    expires_in: str = typer.Option(
        "", "--expires-in", help="The key stops working after this long: 90d, 12h, 30m or 3600s (default: never)."
    ),
    target: str = TargetOption,
) -> None:
    """Make a key and print its secret, once: store it now, the server cannot show it again."""
    unknown = sorted(set(role) - set(ROLES))
    if unknown:
        raise typer.BadParameter(f"unknown role {', '.join(unknown)}; use read, write or admin", param_hint="--role")
    request = pb.CreateApiKeyRequest(
        tenant=tenant, roles=[ROLES[r] for r in role], name=name, read_per_s=read_per_s, write_per_s=write_per_s
    )
    ttl = lifetime(expires_in)
    if ttl is not None:
        request.ttl.FromTimedelta(ttl)
    async with connect(target) as api:
        answer = await api.keys.CreateApiKey(request, timeout=30)
    expires = (
        f", expires {answer.api_key.expire_time.ToDatetime():%Y-%m-%d %H:%M} UTC"
        if answer.api_key.HasField("expire_time")
        else ""
    )
    err.print(
        f"created key {answer.api_key.key_id} of tenant {answer.api_key.tenant} ({_roles(answer.api_key)}{expires}); "
        "its secret follows, shown once:"
    )
    print(answer.secret)  # alone on stdout, so that `KEY=$(meshsearch keys create ...)` works


@app.command("list")
@run_async
async def list_(tenant: str = TenantOption, target: str = TargetOption) -> None:
    """List a tenant's keys, revoked ones included (never their secrets)."""
    async with connect(target) as api:
        stub = api.keys
        found = await every_page(
            lambda token: stub.ListApiKeys(pb.ListApiKeysRequest(tenant=tenant, page_token=token), timeout=30),
            lambda page: page.api_keys,
        )
    out.print(_table(found) if found else "no keys")


@app.command()
@run_async
async def revoke(
    key_id: str = typer.Argument(..., help="The key's id (from `keys list`)."), target: str = TargetOption
) -> None:
    """Revoke a key for good; every api replica refuses it within seconds."""
    async with connect(target) as api:
        answer = await api.keys.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=key_id), timeout=30)
    out.print(f"revoked key {answer.api_key.key_id} of tenant {answer.api_key.tenant}")
