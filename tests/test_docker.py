"""docker-compose.yml and Dockerfile, checked as far as can be without a Docker engine."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from proxy.cli import every_command
from proxy.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == "-" else ""

    return _VAR.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_postgres_service_has_a_health_check(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert pg["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])


def test_proxy_waits_for_a_healthy_postgres_and_is_configured_for_it(compose: dict[str, Any]) -> None:
    pg_env = compose["services"]["postgres"]["environment"]
    proxy = compose["services"]["proxy"]
    assert proxy["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert proxy["build"] == "."

    env = {k: interpolate(str(v), {"STREAMPROXY_ADMIN_TOKEN": "t0ken"}) for k, v in proxy["environment"].items()}
    user, password, db = (interpolate(pg_env[k], {}) for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"))
    assert env["STREAMPROXY_DB"] == f"postgresql+asyncpg://{user}:{password}@postgres:5432/{db}"
    with pytest.raises(KeyError, match="STREAMPROXY_ADMIN_TOKEN"):
        interpolate(proxy["environment"]["STREAMPROXY_ADMIN_TOKEN"], {})  # compose refuses to start without it

    # Every variable is one that `serve` reads, and together they make a valid configuration.
    serve_vars = {e for p in every_command()["serve"].params if isinstance(p, click.Option) for e in _envvars(p)}
    assert set(env) <= serve_vars, set(env) - serve_vars
    settings = Settings(
        db=env["STREAMPROXY_DB"], upstream=env["STREAMPROXY_UPSTREAM"], host=env["STREAMPROXY_HOST"],
        port=int(env["STREAMPROXY_PORT"]), admin_token=env["STREAMPROXY_ADMIN_TOKEN"],
        spool_dir=Path(env["STREAMPROXY_SPOOL_DIR"]),
    )
    assert settings.db.startswith("postgresql+asyncpg://")

    published = [str(p).rsplit(":", 1) for p in proxy["ports"]]
    assert all(container == env["STREAMPROXY_PORT"] for _, container in published)
    assert all(host.startswith("127.0.0.1:") for host, _ in published)  # not open to the network by default
    assert any(v.endswith(":" + env["STREAMPROXY_SPOOL_DIR"]) for v in proxy["volumes"])
    assert set(compose["volumes"]) == {"pgdata", "spool"}


def _envvars(option: click.Option) -> list[str]:
    ev = option.envvar
    return [ev] if isinstance(ev, str) else list(ev or [])


def _dockerfile() -> list[str]:
    """Instructions, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_installs_with_the_readme_command_and_serves() -> None:
    lines = _dockerfile()
    installs = [line.removeprefix("RUN ").strip() for line in lines if line.startswith("RUN pip install")]
    readme_installs = re.findall(r"^(pip install [^&\n]*?)\s*(?:&&|$)", (ROOT / "README.md").read_text(), re.M)
    assert installs and readme_installs
    assert installs[0] == readme_installs[0], (installs, readme_installs)

    copied = {src for line in lines if line.startswith("COPY") for src in shlex.split(line)[1:-1]}
    assert {"pyproject.toml", "setup.py", "README.md", "proxy", "migrations"} <= copied  # what pip install -e . needs
    assert lines[-1] == 'CMD ["streamproxy", "serve"]'
    env = dict(re.findall(r"(STREAMPROXY_\w+)=(\S+)", " ".join(line for line in lines if line.startswith("ENV"))))
    assert f"EXPOSE {env['STREAMPROXY_PORT']}" in lines and env["STREAMPROXY_HOST"] == "0.0.0.0"
