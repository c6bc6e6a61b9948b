"""Typed ORM models. Every table is created by the Alembic migrations in `migrations/`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, Double, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.db.base import Base, TimestampMixin, UTCDateTime, utcnow

# SQLite otherwise gives a deleted row's id to the next row made: for the tables whose ids key
# what is kept outside the row (live budgets, rate windows, vector shards, caches), a new row
# would inherit a deleted one's. PostgreSQL's sequences never give an id twice. Migration 0013.
NEVER_REUSED_IDS = {"sqlite_autoincrement": True}


class BudgetColumns:
    """A budget: one-off (what is left, lowered by each call's cost, raised by recharges), or a
    periodic allowance (`allowance_nanos` per `budget_period`, what is left of the period in
    `budget_nanos`, which is set back to the allowance when a new period starts). Nanos:
    billionths of the currency unit (as usage costs), exact, never a float."""

    budget_nanos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # None: unlimited
    allowance_nanos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    budget_period: Mapped[str | None] = mapped_column(String(8), nullable=True)  # day, week, month
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Organization(TimestampMixin, BudgetColumns, Base):
    __tablename__ = "organizations"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    # Names or aliases of the only models its users may use (None: what their roles allow).
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    keep_conversations: Mapped[bool] = mapped_column(Boolean, default=False)  # api.conversations


class Role(TimestampMixin, Base):
    __tablename__ = "roles"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    keep_conversations: Mapped[bool] = mapped_column(Boolean, default=False)  # api.conversations
    limits: Mapped[list[RoleLimit]] = relationship(
        back_populates="role", cascade="all, delete-orphan", lazy="selectin", order_by="RoleLimit.id"
    )


class RoleLimit(Base):
    """A role's limit on one router. Having a row is what lets the role reach that router."""

    __tablename__ = "role_limits"
    __table_args__ = (UniqueConstraint("role_id", "router_id", "type", name="uq_role_limits_role_router_type"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), index=True)
    router_id: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(8))
    value: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    role: Mapped[Role] = relationship(back_populates="limits")


class User(TimestampMixin, BudgetColumns, Base):
    __tablename__ = "users"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="RESTRICT"), index=True)
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)


class ApiKey(BudgetColumns, Base):
    """An API key. Only its SHA-256 is stored: the key itself is shown once, at creation."""

    __tablename__ = "api_keys"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Enough of the key to recognise it in a list, never enough to use it.
    hint: Mapped[str] = mapped_column(String(32))
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Its own rate limits, on every model together: {"rpm": 10, "tph": 50000, ...}.
    limits: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # names or aliases; None: any
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    revoked: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # refused from then on
    revoked_reason: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    use_cache: Mapped[bool] = mapped_column(Boolean, default=True)  # False: never answered from the cache
    keep_conversations: Mapped[bool] = mapped_column(Boolean, default=False)  # api.conversations


class IdentityChange(Base):
    """One row: a token every change to keys, users or roles replaces, so that each process
    can tell, with one small read, whether its cached keys may still be used."""

    __tablename__ = "identity_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
    changed: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Router(TimestampMixin, Base):
    """A model alias users call, served by one or more providers of the same type."""

    __tablename__ = "routers"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    load_balancing_strategy: Mapped[str] = mapped_column(String(32), default="shuffle")
    # Prices per million tokens, in millionths of the budget's currency unit.
    cost_prompt_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_completion_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # The response cache (api.calls.caching): off when null; a hit's price, in millionths of a unit.
    cache_ttl_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cache_any_temperature: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_cache_hit_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    aliases: Mapped[list[RouterAlias]] = relationship(
        back_populates="router", cascade="all, delete-orphan", lazy="selectin", order_by="RouterAlias.id"
    )
    providers: Mapped[list[Provider]] = relationship(
        back_populates="router", cascade="all, delete-orphan", lazy="selectin", order_by="Provider.id"
    )


class RouterAlias(Base):
    """One more name of a router; unique across all routers so a name always means one router."""

    __tablename__ = "router_aliases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(255), unique=True)
    router: Mapped[Router] = relationship(back_populates="aliases")


class Provider(TimestampMixin, Base):
    """An upstream serving a router's model: where it is, how to call it, what it costs the planet."""

    __tablename__ = "providers"
    __table_args__ = (UniqueConstraint("router_id", "url", "model_name", name="uq_providers_router_url_model"), NEVER_REUSED_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    # Fernet token of the provider's API key: never stored or returned in clear.
    key_encrypted: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    timeout: Mapped[int] = mapped_column(Integer, default=300)
    model_name: Mapped[str] = mapped_column(String(255))
    model_hosting_zone: Mapped[str] = mapped_column(String(3), default="WOR")
    # Billions of parameters, in fractions: a 270M model is 0.27.
    model_total_params: Mapped[float] = mapped_column(Double, default=0.0)
    model_active_params: Mapped[float] = mapped_column(Double, default=0.0)
    qos_metric: Mapped[str | None] = mapped_column(String(32), nullable=True)
    qos_limit: Mapped[float | None] = mapped_column(nullable=True)
    vector_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_context_length: Mapped[int | None] = mapped_column(Integer, nullable=True)
    region: Mapped[str | None] = mapped_column(String(32), nullable=True)  # bedrock: the AWS region
    api_version: Mapped[str | None] = mapped_column(String(32), nullable=True)  # azure: the calls' api-version
    router: Mapped[Router] = relationship(back_populates="providers")


class Usage(Base):
    """One record per request to a model endpoint, success or failure."""

    __tablename__ = "usage"
    # A user's or a key's newest records first, page by page, without sorting the rest of theirs.
    __table_args__ = (
        Index("ix_usage_user_id_created", "user_id", "created", "id"),
        Index("ix_usage_key_id_created", "key_id", "created", "id"),
        # The failed calls, few among the rest: found without reading the others (PostgreSQL).
        Index("ix_usage_errors", "status", "created", postgresql_where=text("status >= 400"), sqlite_where=text("status >= 400")),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    organization_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    router_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    provider_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    status: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # Billionths of the budget's currency unit: exact sums, no float drift.
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    kwh_min: Mapped[float] = mapped_column(default=0.0)
    kwh_max: Mapped[float] = mapped_column(default=0.0)
    kgco2eq_min: Mapped[float] = mapped_column(default=0.0)
    kgco2eq_max: Mapped[float] = mapped_column(default=0.0)
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)  # answered from the response cache
    # What data policies found, never the text: "email:redact:2,payment_card:block:1".
    policies: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # What the caller said of the call: its tag (`X-Tollgate-Tag`, or the body's metadata.tag)
    # and its own end user (the body's OpenAI `user`). See docs/api.md.
    tag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    end_user: Mapped[str | None] = mapped_column(String(255), nullable=True)


class UsageDaily(Base):
    """The usage records summed per UTC day, per user, key, organisation or router (`dimension`,
    `group_id`), and per tag. The usage writer adds each batch of records here in the
    transaction that inserts them, so reports over whole days read these rows, never the raw
    records, and keep working once those are purged (`usage_retention_days`).

    No NULLs in the key: a NULL never equals another in a unique index, so ON CONFLICT would
    not find the row; no user, key... is `group_id` 0, no tag is ''."""

    __tablename__ = "usage_daily"
    # The primary key serves reports of one dimension over a range of days; the index serves
    # one group's days (a user's count of records, one key's report).
    __table_args__ = (Index("ix_usage_daily_group", "dimension", "group_id", "day"),)

    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    group_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    kwh_min: Mapped[float] = mapped_column(default=0.0)
    kwh_max: Mapped[float] = mapped_column(default=0.0)
    kgco2eq_min: Mapped[float] = mapped_column(default=0.0)
    kgco2eq_max: Mapped[float] = mapped_column(default=0.0)


class BudgetChange(Base):
    """The ledger of budget changes made by administrators: who, when, how much, why."""

    __tablename__ = "budget_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Whose budget: a user's, a key's or an organisation's (one of the three).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=True, index=True)
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), nullable=True, index=True
    )
    actor_user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # null: the master key or a reset
    # "recharge" (relative), "set" (absolute), "reset" (a new period of an allowance)
    kind: Mapped[str] = mapped_column(String(16))
    amount_nanos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    balance_nanos: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # after the change (database view)
    reason: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotentRequest(Base):
    """The answer given to a balance-changing request sent with an Idempotency-Key: a retry with
    the same key and body gets it again instead of applying the change twice. Written in the
    change's own transaction, so a key is remembered exactly when its change was committed."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotent_requests_scope_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(32))  # whose key: "user:<id>", or "master"
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the method, path and body
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[str | None] = mapped_column(Text, nullable=True)  # the JSON body, if any
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Policy(TimestampMixin, Base):
    """A data policy: detectors and what to do when one fires, attached to organizations, roles
    and keys (`api.policies`)."""

    __tablename__ = "policies"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{detector, action, name?, pattern?}]
    organization_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    role_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    key_ids: Mapped[list[int]] = mapped_column(JSON, default=list)


class ConversationSession(TimestampMixin, Base):
    """Calls of one user grouped as a conversation: named by the client, or one per thread."""

    __tablename__ = "conversation_sessions"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)


class ConversationTurn(Base):
    """One call's request and answer, encrypted (the provider keys' key): `api.conversations`."""

    __tablename__ = "conversation_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("conversation_sessions.id", ondelete="CASCADE"), index=True)
    thread: Mapped[int] = mapped_column(Integer)  # threads are numbered from 1 within a session
    request_id: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request: Mapped[str] = mapped_column(Text)  # encrypted JSON
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)  # encrypted JSON
    # The history this turn leads to (its messages and its answer), hashed: the next call of the
    # thread sends it back, with one more message.
    leads_to: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Collection(TimestampMixin, Base):
    """A set of documents searched together. Private: its owner's; public: readable by all."""

    __tablename__ = "collections"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    visibility: Mapped[str] = mapped_column(String(16), default="private")


class Document(TimestampMixin, Base):
    """A document of a collection. Its chunks and their vectors live in Qdrant; an uploaded
    file is ingested by a job (status `processing`) and is searchable only once `ready`."""

    __tablename__ = "documents"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="ready", index=True)
    error: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    next_chunk_id: Mapped[int] = mapped_column(Integer, default=1)
    pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    content_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # How to split it, and the metadata given to every chunk (ingestion reads them).
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # An ingestion job holds the document until then; past it, another worker may take it.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class DocumentFile(Base):
    """An uploaded file waiting for (or in) ingestion; removed once the document is ready."""

    __tablename__ = "document_files"

    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    content: Mapped[bytes] = mapped_column(LargeBinary)
