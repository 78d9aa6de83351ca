"""compose.yaml and the Dockerfile agree with how SkyTwin really listens.

Docker cannot run on the test machine, so this checks the file's content: the
reference system's compose health check probed the wrong port.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from skytwin.config import parse_bind

ROOT = Path(__file__).resolve().parent.parent


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def test_health_check_probes_the_port_skytwin_binds() -> None:
    skytwin = load_compose()["services"]["skytwin"]
    host, port = parse_bind(skytwin["environment"]["SKYTWIN_BIND"])
    assert host == "0.0.0.0"  # reachable from the published port
    probe = " ".join(skytwin["healthcheck"]["test"])
    urls = re.findall(r"http://([\w.]+):(\d+)(/[\w/]+)", probe)
    assert urls == [("127.0.0.1", str(port), "/api/health/live")]
    published = [p.split(":") for p in skytwin["ports"]]
    assert [int(p[-1]) for p in published] == [port]


def test_restart_policies_and_database_dependency() -> None:
    services = load_compose()["services"]
    assert services["skytwin"]["restart"] == "unless-stopped"
    assert services["postgres"]["restart"] == "unless-stopped"
    assert services["skytwin"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    pg_check = " ".join(services["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in pg_check
    major = int(services["postgres"]["image"].split(":")[1].split(".")[0])
    assert major >= 16
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "pgdata" in load_compose()["volumes"]


def test_database_url_points_at_the_postgres_service() -> None:
    compose = load_compose()
    url = compose["services"]["skytwin"]["environment"]["SKYTWIN_DATABASE_URL"]
    pg_env = compose["services"]["postgres"]["environment"]
    assert url.startswith(f"postgresql://{pg_env['POSTGRES_USER']}:")
    assert url.endswith(f"@postgres:5432/{pg_env['POSTGRES_DB']}")


def test_stop_grace_period_covers_skytwin_shutdown() -> None:
    from skytwin.app import SHUTDOWN_DEADLINE_S

    grace = load_compose()["services"]["skytwin"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > SHUTDOWN_DEADLINE_S


def test_dockerfile_runs_the_service_on_the_same_port() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "skytwin", "run"]' in dockerfile
    assert "SKYTWIN_BIND=0.0.0.0:8080" in dockerfile
    assert "EXPOSE 8080" in dockerfile
