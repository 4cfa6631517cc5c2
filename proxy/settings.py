"""Configuration: one frozen, validated object built at the edge (CLI or tests)."""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from proxy.errors import ConfigError

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_UPSTREAM",
    "Mode",
    "Settings",
    "mask_url",
    "normalize_db_url",
    "normalize_upstream",
    "parse_duration",
    "parse_size",
]

DEFAULT_UPSTREAM = "https://api.openai.com"
DEFAULT_DB = "sqlite+aiosqlite:///streamproxy.db"


class Mode(enum.Enum):
    RECORD = "record"
    REPLAY = "replay"
    AUTO = "auto"
    PASSTHROUGH = "passthrough"

    @classmethod
    def parse(cls, value: str | Mode) -> Mode:
        if isinstance(value, Mode):
            return value
        try:
            return cls(value.strip().lower())
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ConfigError(f"unknown mode {value!r} (choose one of: {choices})") from None

    @property
    def forwards(self) -> bool:
        return self is not Mode.REPLAY

    @property
    def records(self) -> bool:
        return self is not Mode.PASSTHROUGH

    @property
    def replays(self) -> bool:
        return self in (Mode.REPLAY, Mode.AUTO)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_size(value: str | int) -> int:
    """``64M`` -> bytes. Suffixes K, M, G are powers of 1024."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if not m:
        raise ConfigError(f"not a size: {value!r} (use bytes with an optional K, M or G suffix)")
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def parse_duration(value: str | float) -> float:
    """``15m`` -> seconds; a bare number is seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ConfigError(f"not a duration: {value!r} (use seconds, or a number with ms/s/m/h/d/w)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def normalize_upstream(value: str) -> str:
    """The upstream's base URL without a trailing ``/`` or ``/v1``."""
    try:
        url = URL(value.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"unparseable upstream URL {value!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"unparseable upstream URL {value!r}: need http:// or https:// and a host")
    if url.query_string or url.fragment:
        raise ConfigError(f"upstream URL {value!r} must not have a query or fragment")
    if url.user or url.password:
        # A credential in the URL would be logged and would clash with the Authorization sent upstream.
        raise ConfigError(
            "the upstream URL must not carry credentials (user:password@); "
            "callers' keys pass through, or use --client-keys with --upstream-key"
        )
    base = str(url).rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base


def normalize_db_url(value: str) -> str:
    """Accept the async drivers' URLs, and map plain ``sqlite://`` / ``postgresql://`` to them."""
    v = value.strip()
    if v.startswith("sqlite:///"):
        v = "sqlite+aiosqlite:///" + v[len("sqlite:///") :]
    elif v.startswith(("postgresql://", "postgres://")):
        v = "postgresql+asyncpg://" + v.split("://", 1)[1]
    if not v.startswith(("sqlite+aiosqlite:///", "postgresql+asyncpg://")):
        raise ConfigError(
            f"unsupported database URL {mask_url(value)!r} "
            "(use sqlite+aiosqlite:///FILE or postgresql+asyncpg://USER@HOST/DB)"
        )
    return v


def mask_url(value: str) -> str:
    """The URL with any password replaced, for messages and logs.

    The password is read the way SQLAlchemy reads it (up to the last ``@`` before the host), and a
    ``password=`` query parameter, which asyncpg also accepts, is masked too.
    """
    masked = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", value)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", masked, flags=re.IGNORECASE)


def sqlite_path(db_url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other backends and in-memory databases."""
    if not db_url.startswith("sqlite"):
        return None
    path = db_url.partition(":///")[2].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the proxy is configured with. Built once, then passed down."""

    host: str = "127.0.0.1"
    port: int = 8080
    upstream: str = DEFAULT_UPSTREAM
    db: str = field(default=DEFAULT_DB, repr=False)  # may hold a password
    mode: Mode = Mode.RECORD
    replay_speed: float = 1.0
    match_ignore: tuple[str, ...] = ()
    max_body: int = 64 * 1024**2
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    shutdown_grace: float = 30.0
    spool_dir: Path | None = None
    client_keys: frozenset[str] = field(default_factory=frozenset, repr=False)
    upstream_key: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    buffer_bytes: int = 32 * 1024**2
    # Recordings a transaction at most. 100, not 200: the assembly worker's peak RSS at 500 streams
    # 2 MB lower (a batch is what it holds at once), CPU a request within noise (alternating pairs).
    batch_size: int = 100
    # Processes that assemble replies beside the relay; 0 assembles in the serving process.
    # ``serve`` defaults to 1; an embedded proxy (tests, the pytest plugin) records too little to need one.
    assembly_workers: int = 0
    access_log: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "upstream", normalize_upstream(self.upstream))
        object.__setattr__(self, "db", normalize_db_url(self.db))
        object.__setattr__(self, "mode", Mode.parse(self.mode))
        if self.replay_speed < 0:
            raise ConfigError("replay speed must be 0 (no pauses) or more")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} out of range")
        if self.assembly_workers < 0:
            raise ConfigError("assembly workers must be 0 (assemble in the serving process) or more")
        for name in ("connect_timeout", "read_timeout", "shutdown_grace"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')} must be more than 0 seconds")
        if self.client_keys and not self.upstream_key and self.mode.forwards:
            raise ConfigError("--client-keys needs --upstream-key (or OPENAI_API_KEY) to call upstream with")

    @property
    def resolved_spool_dir(self) -> Path:
        """Beside the SQLite file, else ./streamproxy-spool."""
        if self.spool_dir is not None:
            return self.spool_dir
        path = sqlite_path(self.db)
        if path is not None:
            return path.parent / (path.name + "-spool")
        return Path("streamproxy-spool")
