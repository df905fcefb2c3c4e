"""The one settings object of comfyfleet.

Everything configurable is read here, from the environment and `.env`, and nowhere else: the other
modules receive a `Settings` (or the few values they need) instead of reading `os.environ`. Secrets are
`SecretStr` so that printing a settings object, a log line or a traceback cannot leak them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import limits
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_WORKFLOWS_DIR = REPO_ROOT / "workflows"
PROVISIONING_DIR = REPO_ROOT / "provisioning"


class StaticEndpoint(BaseModel):
    """An existing ComfyUI that comfyfleet may use but never creates or destroys."""

    name: str
    url: str
    token: SecretStr | None = None
    basic_user: str | None = None
    basic_password: SecretStr | None = None
    ssh: str | None = None  # "root@host:port", for provisioning
    ssh_host_key: str | None = None  # "ssh-ed25519 AAAA..." to pin; learned on first use otherwise
    comfy_dir: str = "/workspace/ComfyUI"
    price_per_hour: float = 0.0


class ApiToken(BaseModel):
    """One inbound API token: a name (recorded on the jobs it submits), the secret, optional limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrictStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    token: SecretStr
    daily_spend_usd: StrictFloat | StrictInt | None = Field(
        None, gt=0, description="New jobs get 429 once this token's jobs of the UTC day cost this much"
    )
    rate: StrictStr | None = Field(None, description='Request rate, e.g. "60/minute", "5/second", "1000/day"')

    @field_validator("token")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < API_TOKEN_MIN_LENGTH:
            raise ValueError(f"must be at least {API_TOKEN_MIN_LENGTH} characters")
        return v

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            limits.parse(v)
        except ValueError:
            raise ValueError(
                'not a rate: write N/second, N/minute, N/hour or N/day (e.g. "60/minute")'
            ) from None
        return v


API_TOKEN_MIN_LENGTH = 16
DEFAULT_TOKEN_NAME = "default"  # the name API_TOKEN's token is recorded under


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            return json.loads(value)
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- general ---------------------------------------------------------------------------------
    deployment: str = Field(
        "default", description="Name in every instance label: comfyfleet-<deployment>-<id>"
    )
    data_dir: Path = Field(
        Path("./data"), description="Job database, local result store, SSH keys, sim world"
    )
    log_level: str = "INFO"
    provider: Literal["auto", "vast", "static", "sim"] = Field(
        "auto", description="auto = vast when VAST_API_KEY is set, else the simulated world"
    )
    database_url: str | None = Field(
        None,
        description="postgresql+asyncpg://user:password@host/db (or postgresql://...); default SQLite under "
        "data_dir",
    )

    # --- Vast.ai ---------------------------------------------------------------------------------
    vast_api_key: SecretStr | None = None
    vast_api_url: str = "https://console.vast.ai"
    vast_image: str = Field(
        "vastai/comfyui:v0.22.0-cuda-12.9-py312",
        description="Vast's ComfyUI image, pinned to a concrete tag (base-image ADR-0011); see README",
    )
    vast_min_gpu_ram_gb: float = 24.0
    vast_min_cuda: float = 12.4
    vast_min_reliability: float = 0.98
    vast_min_inet_down_mbps: float = 200.0
    vast_verified_only: bool = True
    vast_max_price_per_hour: float = 1.00
    vast_gpu_names: Annotated[list[str], NoDecode] = Field(default_factory=list)
    vast_regions: Annotated[list[str], NoDecode] = Field(default_factory=list)
    vast_interruptible: bool = False
    vast_bid_margin: float = Field(1.10, description="Interruptible bid = min_bid x margin")
    vast_disk_headroom_gb: float = 15.0
    comfy_access: Literal["tunnel", "direct"] = Field(
        "tunnel", description="tunnel = SSH port forward to ComfyUI on the instance's loopback"
    )
    instance_ready_timeout_s: float = 1800.0
    vast_request_timeout_s: float = 30.0

    # --- SSH and provisioning --------------------------------------------------------------------
    ssh_key_path: Path | None = Field(
        None, description="Private key; default <data_dir>/ssh/id_ed25519 (made)"
    )
    comfy_dir: str = "/workspace/ComfyUI"
    comfy_internal_port: int = 18188
    hf_token: SecretStr | None = None
    model_mirror_url: str | None = None
    provision_parallel: int = 4
    provision_timeout_s: float = 3600.0
    comfy_python: str = Field(
        "/venv/main/bin/python",
        description="ComfyUI's own Python on the instance (Vast's image: /venv/main); custom-node "
        "requirements are installed with it, keeping its torch family",
    )
    comfy_boot_marker: str = Field(
        "/.provisioning", description="File Vast's image holds until its boot steps are done"
    )
    comfy_log_path: str = Field(
        "/var/log/portal/comfyui.log",
        description="ComfyUI's log on the instance (shown when it never starts)",
    )
    comfy_boot_timeout_s: float = Field(
        600.0,
        description="Wait this long for the image's boot (main.py there, marker gone) after SSH answers",
    )
    comfy_warmup: bool = Field(
        True,
        description="After provisioning, run the workflow's graph once at its smallest size so the first "
        "job pays no model loading (its time is the instance's, not a job's)",
    )
    host_slow_factor: float = Field(
        2.0,
        description="A host measured this many times slower (s/step) than its GPU model's median is "
        "excluded from ranking and, when idle, replaced",
    )
    comfy_start_timeout_s: float = Field(
        300.0,
        description="ComfyUI must answer this long after provisioning finished, else the instance is "
        "marked bad, destroyed, and the job retried once on another machine",
    )
    provision_connections_per_file: int = Field(
        8, ge=1, description="Connections one model file is downloaded over (byte ranges); 1 = one per file"
    )
    provision_connections_total: int = Field(
        16, ge=1, description="Connections all the downloads of one provisioning run share"
    )
    provision_segment_mb: int = Field(64, ge=1, description="Size of one download segment (MiB)")
    model_r2_mirror: bool = Field(
        True,
        description="Download models from the R2 model mirror (`comfyfleet models mirror`) when R2 is "
        "configured and holds the file; its usual source stays the fallback per file",
    )
    model_r2_prefix: str = Field("models/", description="Key prefix of the model mirror in the R2 bucket")
    custom_node_sources: dict[str, tuple[str, str]] = Field(
        default_factory=dict,
        description='JSON {"<node dir>": ["<git url>", "<commit>"]}: take custom nodes from elsewhere '
        "(a fork, a local mirror; the simulated world's local repos)",
    )

    # --- workflows -------------------------------------------------------------------------------
    workflows_dir: Path | None = Field(None, description="Extra folder of user workflows (graph + manifest)")
    default_workflow: str = "wan22_i2v_lightx2v_gguf"

    # --- result store ----------------------------------------------------------------------------
    store_backend: Literal["auto", "local", "r2"] = Field(
        "auto", description="auto = r2 when R2_BUCKET is set"
    )
    r2_account_id: str | None = None
    r2_access_key_id: SecretStr | None = None
    r2_secret_access_key: SecretStr | None = None
    r2_bucket: str | None = None
    r2_public_base_url: str | None = None
    r2_presign_expiry_s: int = 3600
    r2_endpoint_url: str | None = None
    store_put_timeout_s: float = Field(
        600.0, gt=0, description="One upload of a result that takes longer fails (and is retried)"
    )
    store_retry_s: float = Field(
        60.0,
        ge=0,
        description="How long a result's upload is retried after 5xx/timeouts before the job fails",
    )

    # --- HTTP API --------------------------------------------------------------------------------
    api_token: SecretStr | None = Field(
        None, description='Bearer token required by the API (health excluded); named "default" on jobs'
    )
    api_tokens: SecretStr | None = Field(
        None,
        description='JSON list of tokens: [{"name": "ci", "token": "...", "daily_spend_usd": 5, '
        '"rate": "60/minute"}] (limits optional); used beside API_TOKEN',
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Let `serve` listen on a non-loopback address without any API token while a real "
        "provider (Vast.ai, static endpoints) is configured",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(
        None,
        validation_alias=AliasChoices("public_base_url", "public_url"),
        description="PUBLIC_BASE_URL (or PUBLIC_URL): how clients reach this server, used for every URL it "
        "gives out (status_url, video_url, story and batch URLs); default: the base URL each request came in "
        "on (http://host:port outside a request)",
    )
    webhook_secret: SecretStr | None = None
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    max_audio_bytes: int = Field(50 * 1024 * 1024, description="Largest audio input (audio_url/audio_base64)")
    max_audio_seconds: float = Field(120.0, gt=0, description="Longest audio input, measured by decoding it")
    pool_workflows: str = Field(
        "",
        description="Comma-separated workflows every new instance is provisioned for (disk sized for all; "
        "an idle instance gets the ones it lacks while its disk has room)",
    )
    # enhance_prompt: local rules unless PROMPT_ENHANCER_URL names an OpenAI-compatible chat endpoint
    prompt_enhancer_url: str | None = Field(
        None, description="OpenAI-compatible chat completions URL for enhance_prompt (default: local rules)"
    )
    prompt_enhancer_key: SecretStr | None = None
    prompt_enhancer_model: str = "gpt-4o-mini"
    prompt_enhancer_timeout_s: float = Field(10.0, gt=0, le=120)
    allow_loopback_urls: bool = Field(
        False, description="image_url/webhook_url may reach loopback (tests, local use); never private"
    )
    story_max_segments: int = Field(24, description="Most segments one story may hold")
    batch_max_requests: int = Field(100, description="Most requests one batch may hold")

    # --- client (the CLI's --server mode) --------------------------------------------------------
    comfyfleet_server: str | None = Field(
        None, description="The server `--server` commands use when the option is not given"
    )
    comfyfleet_token: SecretStr | None = Field(
        None, description="API token for --server commands (instead of --token, which shells record)"
    )

    # --- pool, spend, cleanup --------------------------------------------------------------------
    pool_max_instances: int = 2
    idle_ttl_s: float = 600.0
    spend_cap_usd: float = Field(20.0, description="Upper bound on the money all live instances may cost")
    job_timeout_s: float = 1800.0
    cleanup_interval_s: float = 60.0
    static_endpoints: Annotated[list[StaticEndpoint], NoDecode] = Field(default_factory=list)

    # --- replicas (several `comfyfleet serve` on one PostgreSQL; app.jobs.claims) ----------------------
    replicas: Literal["off", "auto", "on"] = Field(
        "auto", description="auto = on with PostgreSQL, off with SQLite (one process per SQLite file)"
    )
    replica_id: str | None = Field(None, description="This replica's name (default: host-pid-random)")
    replica_lease_s: float = Field(30.0, description="How long a replica's claim on a job holds unrenewed")
    replica_heartbeat_s: float = Field(5.0, description="How often a replica renews its claims and leases")
    replica_poll_s: float = Field(
        1.0, description="How often waits and SSE streams re-read jobs another replica runs"
    )

    # --- simulated world -------------------------------------------------------------------------
    sim_step_delay_s: float = Field(0.25, description="Emulated seconds per sampler step")
    sim_model_load_s: float = Field(
        1.0, description="Simulated ComfyUI: the first run after a start loads the models this long"
    )
    sim_slow_host_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="Simulated market: the share of machines that are slow hosts"
    )
    sim_slow_host_factor: float = Field(
        3.0, ge=1.0, description="Simulated market: how many times slower a slow host samples"
    )
    sim_workspace_sync_delay_s: float = Field(
        0.2,
        description="Simulated image: its first-boot steps take this long after SSH answers before ComfyUI "
        "is copied into the workspace",
    )
    sim_time_scale: float = Field(
        0.05, description="Emulated Vast.ai boot time multiplier (1 = as slow as the real thing, 0 = instant)"
    )
    sim_keep_world: bool = Field(
        False, description="Keep a simulated world's folder (data/sim/world-<pid>) when the world stops"
    )

    @field_validator("vast_gpu_names", "vast_regions", mode="before")
    @classmethod
    def _csv(cls, v: Any) -> Any:
        return _split_csv(v)

    @field_validator("static_endpoints", mode="before")
    @classmethod
    def _static(cls, v: Any) -> Any:
        if isinstance(v, str):
            return json.loads(v) if v.strip() else []
        return v

    # --- derived values --------------------------------------------------------------------------
    @property
    def effective_provider(self) -> Literal["vast", "static", "sim"]:
        if self.provider != "auto":
            return self.provider
        if self.vast_api_key is not None and self.vast_api_key.get_secret_value():
            return "vast"
        if self.static_endpoints:
            return "static"
        return "sim"

    @property
    def simulated(self) -> bool:
        return self.effective_provider == "sim"

    @property
    def effective_store_backend(self) -> Literal["local", "r2"]:
        if self.store_backend != "auto":
            return self.store_backend
        return "r2" if self.r2_bucket else "local"

    @property
    def replicas_enabled(self) -> bool:
        if self.replicas == "auto":
            return self.effective_database_url.startswith("postgresql")
        return self.replicas == "on"

    @property
    def effective_database_url(self) -> str:
        """The SQLAlchemy async URL to use: DATABASE_URL with its driver made explicit (postgresql:// means
        asyncpg, sqlite:// means aiosqlite), else SQLite under DATA_DIR. ConfigError for anything else."""
        if self.database_url and self.database_url.strip():
            return normalize_database_url(self.database_url.strip())
        return f"sqlite+aiosqlite:///{(self.data_dir / 'comfyfleet.db').resolve()}"

    def api_token_list(self) -> list[ApiToken]:
        """Every accepted inbound token: API_TOKEN as "default", then API_TOKENS. ConfigError (naming the
        entry and the field, never a token) when API_TOKENS is malformed or names/tokens repeat."""
        out: list[ApiToken] = []
        if self.api_token is not None and self.api_token.get_secret_value():
            out.append(ApiToken.model_construct(name=DEFAULT_TOKEN_NAME, token=self.api_token))
        raw = self.api_tokens.get_secret_value().strip() if self.api_tokens else ""
        if raw:
            try:
                entries = json.loads(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"API_TOKENS is not valid JSON (line {exc.lineno}, column {exc.colno})"
                ) from None
            if not isinstance(entries, list):
                raise ConfigError('API_TOKENS must be a JSON list: [{"name": "...", "token": "..."}, ...]')
            for i, entry in enumerate(entries):
                try:
                    out.append(ApiToken.model_validate(entry))
                except PydanticValidationError as exc:
                    problems = "; ".join(
                        f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}"
                        for e in exc.errors(include_input=False, include_url=False)
                    )
                    label = (
                        entry.get("name")
                        if isinstance(entry, dict) and isinstance(entry.get("name"), str)
                        else None
                    )
                    raise ConfigError(
                        f"API_TOKENS entry {i}{f' ({label!r})' if label else ''}: {problems}"
                    ) from None
        names = [t.name for t in out]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            hint = f" ({DEFAULT_TOKEN_NAME!r} is API_TOKEN's)" if DEFAULT_TOKEN_NAME in dup else ""
            raise ConfigError(f"API_TOKENS: the name {', '.join(map(repr, dup))} is used twice{hint}")
        secrets = [t.token.get_secret_value() for t in out]
        if len(set(secrets)) != len(secrets):
            raise ConfigError("API_TOKENS: two tokens are the same secret; give every token its own")
        return out

    @property
    def effective_ssh_key_path(self) -> Path:
        return self.ssh_key_path or (self.data_dir / "ssh" / "id_ed25519")

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def pool_workflow_names(self) -> list[str]:
        """POOL_WORKFLOWS as a list of names (order kept, duplicates dropped)."""
        return list(dict.fromkeys(n.strip() for n in self.pool_workflows.split(",") if n.strip()))

    def secret_values(self) -> list[str]:
        """Every secret currently configured, for redaction at the edges (logs, errors, job records)."""
        out: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                out.append(value.get_secret_value())
        try:
            out.extend(t.token.get_secret_value() for t in self.api_token_list())
        except ConfigError:
            pass  # reported where the tokens are used; the raw API_TOKENS value is a secret already
        for ep in self.static_endpoints:
            for s in (ep.token, ep.basic_password):
                if s is not None and s.get_secret_value():
                    out.append(s.get_secret_value())
        # Credentials written into a URL (user:password@host) are secrets too.
        urls = [self.database_url, self.model_mirror_url, self.r2_endpoint_url, self.vast_api_url]
        for url in [*urls, *(ep.url for ep in self.static_endpoints)]:
            out.extend(_url_passwords(url))
        return out


_DRIVERS = {
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite": "sqlite+aiosqlite",
}


def normalize_database_url(url: str) -> str:
    """`postgresql://` and `postgres://` become `postgresql+asyncpg://`, `sqlite://` becomes
    `sqlite+aiosqlite://`; any other scheme (a sync driver, another database) is a ConfigError that shows
    the scheme only, never the rest of the URL (it may hold a password)."""
    scheme, sep, rest = url.partition("://")
    driver = _DRIVERS.get(scheme.lower()) if sep else None
    if driver is None:
        shown = scheme if sep else "(none)"
        raise ConfigError(
            f"DATABASE_URL: unsupported scheme {shown!r}; use "
            "postgresql+asyncpg://user:password@host:5432/db (or postgresql://...) or "
            "sqlite+aiosqlite:////absolute/path/comfyfleet.db"
        )
    return f"{driver}://{rest}"


def _url_passwords(url: str | None) -> list[str]:
    """The password in a URL's user info, as written and percent-decoded."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return list(dict.fromkeys((password, unquote(password)))) if password else []


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
