"""Settings shared by every service, read from environment variables.

Each service subclasses `ServiceSettings` with its own prefix (MESHSEARCH_API_,
MESHSEARCH_EMBEDDER_, MESHSEARCH_SEARCH_); `docs/configuration.md` lists every variable.
Settings are frozen and validated once at start-up so a typo fails fast, not mid-request.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshsearch_common.callers import CallerPolicy
from meshsearch_common.tls import ServerTls
from meshsearch_common.tracing import TracingSettings


class UpstreamPolicy(BaseModel, frozen=True):
    """How one service calls another: deadline, retries and circuit breaker.

    Inside an inbound RPC a call's deadline is that RPC's remaining time less a reserve (see
    `meshsearch_common.deadlines`); `timeout_s` only bounds calls made outside any RPC.
    """

    timeout_s: float = Field(
        5.0, gt=0, description="Deadline of a call made outside any inbound RPC (start-up, background work)."
    )
    deadline_reserve_s: float = Field(
        0.1,
        ge=0,
        description="Time kept back from the caller's remaining time (at most a quarter of it), so a "
        "timed-out upstream still leaves time to answer the caller with a precise status.",
    )
    retry_max_attempts: int = Field(4, ge=1, le=5, description="Attempts per idempotent call.")
    retry_initial_backoff_s: float = Field(0.05, gt=0)
    retry_max_backoff_s: float = Field(1.0, gt=0)
    breaker_fail_max: int = Field(5, ge=1, description="Consecutive failures that open the breaker.")
    breaker_reset_timeout_s: float = Field(10.0, gt=0, description="Open time before a trial call.")
    breaker_min_budget_s: float = Field(
        0.25,
        ge=0,
        description="An upstream timeout counts against the breaker only if the call had at least this "
        "long: a caller's tiny deadline says nothing about the upstream's health.",
    )


class ServiceSettings(BaseSettings):
    """Listening address, metrics port, shutdown grace and log level of one service."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_nested_delimiter="__")

    host: str = Field("127.0.0.1", description="Interface the gRPC server binds to.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 picks one.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="Time in-flight RPCs get after SIGTERM.")
    log_level: str = Field("info", description="debug, info, warning or error.")
    read_deadline_s: float = Field(
        10.0, gt=0, description="Deadline given to an inbound unary read (NO_SIDE_EFFECTS) sent without one."
    )
    write_deadline_s: float = Field(
        120.0, gt=0, description="Deadline given to any other inbound unary call sent without one."
    )
    max_connection_age_s: float = Field(
        300.0,
        ge=0,
        description="Clients are asked to reconnect after this long (gRPC GOAWAY), so that balancing "
        "clients find new replicas (gRFC A9); calls in flight finish first. 0: never.",
    )
    max_concurrent_rpcs: int = Field(
        1024,
        ge=0,
        description="Calls (streams included) this server runs at once; more are refused RESOURCE_EXHAUSTED "
        "before their messages are read, which bounds the memory a flood can make it hold. 0: no bound.",
    )
    stream_idle_timeout_s: float = Field(
        60.0,
        ge=0,
        description="A request stream (an upload, an estimate) whose caller sends nothing for this long is ended "
        "DEADLINE_EXCEEDED (STREAM_IDLE), so an idle stream cannot keep its share of the read budget. 0: never.",
    )
    max_request_bytes_in_flight: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="Bytes of requests the server may be reading at once: each read in progress and each open "
        "client stream holds the largest request message it may receive. Past it a call waits up to a second, "
        "then is refused RESOURCE_EXHAUSTED (SERVER_BUSY). 0: no bound.",
    )
    tls: ServerTls = Field(default_factory=ServerTls)
    callers: CallerPolicy = Field(default_factory=CallerPolicy)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    @model_validator(mode="after")
    def _identities_need_mutual_tls(self) -> ServiceSettings:
        if self.callers.identities and not self.tls.client_ca_file:
            raise ValueError("callers.identities are read from client certificates: set tls.client_ca_file too")
        return self


def env_name(settings: type[BaseSettings], field: str) -> str:
    """The environment variable that sets `field` of `settings`: its prefix + the field's name.
    Launchers use this instead of spelling variable names again."""
    if field not in settings.model_fields:
        raise KeyError(f"{settings.__name__} has no setting {field!r}")
    return f"{settings.model_config.get('env_prefix', '')}{field}".upper()
