"""Configuration: `config.yml`, with `${VAR:-default}` substitution, then environment overrides.

Precedence, highest first: `TOLLGATE_*` environment variables (nested with `__`, e.g.
`TOLLGATE_DEPENDENCIES__DATABASE__URL`), then the YAML file, then the defaults below.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


DEFAULT_CONFIG_PATH = Path("config.yml")
SHIPPED_MASTER_KEY = "changeme"

_SUBSTITUTION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the bad field."""


class _Section(BaseModel):
    # A misspelt key must fail loudly rather than silently fall back to a default.
    model_config = ConfigDict(extra="forbid")


class LoginSettings(_Section):
    max_failures: int = Field(default=10, ge=1, description="Failed logins allowed per window, per email and per client address.")
    window_seconds: int = Field(default=60, ge=1, le=86_400, description="Length of the login throttling window.")


class KeySettings(_Section):
    max_lifetime_days: int | None = Field(default=None, ge=1, description="Longest lifetime a user may give an API key; null = no maximum.")
    playground_lifetime_days: int = Field(default=7, ge=1, description="Lifetime of the key issued by POST /v1/auth/login.")


class GatewaySettings(_Section):
    max_attempts: int = Field(default=3, ge=1, le=10, description="Providers tried per request before giving up.")
    cooldown_seconds: float = Field(default=10.0, ge=0, le=3600, description="How long a failing provider is avoided.")
    health_check_seconds: float = Field(
        default=30.0, ge=0, le=3600,
        description="How often each process probes every provider (0: never); one that fails is cooled down until the next probe.",
    )
    health_check_timeout_seconds: float = Field(default=5.0, gt=0, le=120, description="Longest a provider's probe may take.")
    qos_wait_seconds: float = Field(default=10.0, ge=0, le=600, description="How long a request waits when every provider is at its QoS cap.")
    qos_poll_seconds: float = Field(default=0.05, gt=0, le=5, description="How often a waiting request looks for a free slot.")
    ttft_window_seconds: float = Field(
        default=60.0, gt=0, le=86_400,
        description="How long a provider's observed time to first token (its `ttft` QoS) is kept after its last call: "
                    "one passed over for being slow is tried again once it is forgotten.",
    )
    default_max_tokens: int = Field(
        default=4096, ge=1, le=1_000_000,
        description="Completion bound of calls that give no max_tokens: what budgets and token limits reserve (set upstream then).",
    )
    max_response_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Largest answer read from a provider, streamed or not: a larger one is cut off (502), never buffered whole.",
    )
    max_stream_seconds: float = Field(
        default=900.0, gt=0, le=86_400,
        description="Longest a streamed answer may last after its headers; then it ends with an error event (504).",
    )


class ResponseCacheSettings(_Section):
    """Bounds of the response cache (which routers cache, and how long: each router's settings)."""

    memory_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="What the in-process cache holds at most (without Redis); the least recently used go first.",
    )
    max_entry_bytes: int = Field(default=1024 * 1024, ge=0, description="A larger answer is not cached.")


DEFAULT_SEARCH_TEMPLATE = (
    "Answer the question using the documents below when they are relevant.\n\n"
    "Documents:\n{chunks}\n\nQuestion: {prompt}"
)


class RagSettings(_Section):
    vector_store_model: str | None = Field(
        default=None, description="The text-embeddings-inference router that embeds chunks and queries; null disables documents and search."
    )
    lexical_language: str = Field(
        default="english",
        description="Language of lexical search: its stop words are dropped and words reduced to their Snowball "
        "stem ('none': neither). Documents ingested under another language must be ingested again.",
    )
    qdrant_collection: str = Field(
        default="tollgate_chunks", pattern=r"^[A-Za-z0-9_-]{1,128}$",
        description="The Qdrant server's collection holding every chunk (and the name of an earlier version's local-mode data, copied into the embedded store on first start).",
    )
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description="Largest file POST /v1/documents accepts.")
    embedding_batch_size: int = Field(default=32, ge=1, le=2048, description="Chunks per embeddings call during ingestion.")
    embedding_concurrency: int = Field(
        default=4, ge=1, le=64,
        description="Embeddings calls one document's ingestion makes at once (each still waits for a slot under the provider's QoS cap).",
    )
    ingestion_concurrency: int = Field(default=2, ge=0, le=64, description="Documents ingested at once by this process (0: leave them to `tollgate worker`).")
    job_lease_seconds: float = Field(default=120.0, ge=5, description="How long an ingestion job is held without progress before another worker may take it over.")
    max_ingestion_attempts: int = Field(default=3, ge=1, le=100, description="Attempts before a document that keeps failing ingestion is marked failed.")
    ocr_model: str | None = Field(
        default=None, description="The image-to-text (or vision chat) router /v1/parse uses with force_ocr."
    )
    search_template: str = Field(
        default=DEFAULT_SEARCH_TEMPLATE, description="Prompt built by chat with search; {chunks} and {prompt} are replaced."
    )

    @field_validator("lexical_language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        import Stemmer  # Snowball's list, from the stemmer itself

        languages = ["none", *Stemmer.algorithms()]  # none: fold and split only (api.rag.lexical)
        if value not in languages:
            raise ValueError(f"unknown language {value!r}: one of {', '.join(languages)}")
        return value


class GeneralSettings(_Section):
    auth_master_key: str = Field(default=SHIPPED_MASTER_KEY, min_length=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one JSON object per line, with the request id; text: for a terminal."
    )
    access_log: bool = Field(default=True, description="Log one line per HTTP request.")
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry traces, metrics and logs of each HTTP request, sent to the "
        "global OpenTelemetry providers. Off, no request pays for it.",
    )
    usage_journal_path: str | None = Field(
        default="./data/usage-journal",
        description="Folder where each process keeps the usage records it answered until the database has them, so "
        "a killed process loses none (replayed by the next `tollgate serve` or by `tollgate worker`); null: off.",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, le=3600,
        description="On SIGTERM or SIGINT, how long requests and streams in flight may go on; then they are cut "
        "(and still accounted). New connections are refused from the first moment.",
    )
    usage_write_interval_seconds: float = Field(
        default=0.2, gt=0, le=60, description="How long usage records gather before they are written in one batch."
    )
    usage_drain_seconds: float = Field(
        default=10.0, ge=0, le=3600,
        description="At shutdown, how long the last usage records may take to be written when the usage journal is "
        "on; those the database has not taken by then stay in the journal. Without a journal, shutdown waits for them.",
    )
    usage_retention_days: int | None = Field(
        default=None, ge=1, le=36500,
        description="How long raw usage records (one per request) are kept: older ones are deleted, hourly, by every "
        "process; the daily roll-ups that reports read are kept. null: kept for ever.",
    )
    auth_cache_ttl_seconds: float = Field(default=1.0, ge=0, le=1.0, description="How soon a change to keys, users or roles reaches every process (checked twice per this time); bounded by 1 s so revocation is honoured within 1 s.")
    max_request_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    encryption_key: str | None = Field(
        default=None, min_length=16,
        description="Secret that encrypts provider keys at rest; null derives it from auth_master_key.",
    )
    models_refresh_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="How often each process re-reads routers and providers."
    )
    login: LoginSettings = LoginSettings()
    keys: KeySettings = KeySettings()
    gateway: GatewaySettings = GatewaySettings()
    response_cache: ResponseCacheSettings = ResponseCacheSettings()
    conversation_retention_days: int = Field(
        default=30, ge=1, le=36_500, description="Conversation records older than this are deleted (every hour).",
    )
    rag: RagSettings = RagSettings()


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///./data/tollgate.db"
    pool_size: int = Field(default=10, ge=1)
    echo: bool = False

    @model_validator(mode="after")
    def _async_driver(self) -> DatabaseSettings:
        if not (self.url.startswith("sqlite+aiosqlite://") or self.url.startswith("postgresql+asyncpg://")):
            raise ValueError("database.url must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return self


class RedisSettings(_Section):
    url: str
    key_prefix: str = Field(default="tollgate:", pattern=r"^\S*$",
                            description="Prefix of every key, so deployments can share a Redis. No whitespace.")
    max_connections: int = Field(default=50, ge=1, description="Connections per process; a burst beyond waits for one.")
    timeout_seconds: float = Field(default=5.0, gt=0, description="Connect, command and pool-wait timeout.")


class QdrantSettings(_Section):
    path: str | None = "./data/qdrant"
    url: str | None = None
    api_key: str | None = None
    open_shards: int = Field(
        default=64, ge=1,
        description="The embedded store keeps a shard per owner: how many may be open at once (each holds the memory maps of its files).",
    )

    @model_validator(mode="after")
    def _one_location(self) -> QdrantSettings:
        if (self.path is None) == (self.url is None):
            raise ValueError("qdrant needs exactly one of `path` (the embedded store) or `url` (a server)")
        return self


class Dependencies(_Section):
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings | None = None
    qdrant: QdrantSettings = QdrantSettings()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOLLGATE_", env_nested_delimiter="__", env_parse_none_str="null", extra="forbid"
    )

    settings: GeneralSettings = GeneralSettings()
    dependencies: Dependencies = Dependencies()
    # Routers and their providers, created or updated at start: each entry is read by the
    # catalog (`api.catalog.schemas.ModelsConfigEntry`: a router's fields and its `providers`).
    models: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment must win over it.
        return env_settings, init_settings

    @property
    def uses_default_master_key(self) -> bool:
        return self.settings.auth_master_key == SHIPPED_MASTER_KEY


def substitute_env(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of parsed YAML (not in comments)."""
    env = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {key: substitute_env(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute_env(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        value = env.get(match["name"])
        if value is None or value == "":
            if match["default"] is None:
                raise ConfigError(f"environment variable {match['name']} is not set and has no default")
            return match["default"]
        return value

    return _SUBSTITUTION.sub(replace, value)


def config_path_from_env() -> Path:
    return Path(os.environ.get("TOLLGATE_CONFIG", str(DEFAULT_CONFIG_PATH)))


def load_settings(path: Path | None = None) -> Settings:
    """Read the config file (absent file = all defaults) and apply the environment."""
    path = path or config_path_from_env()
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = substitute_env(loaded or {})
    elif path != DEFAULT_CONFIG_PATH:
        raise ConfigError(f"config file {path} does not exist")
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid configuration:\n{format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  - {field}: {error['msg']}")
    return "\n".join(lines)
