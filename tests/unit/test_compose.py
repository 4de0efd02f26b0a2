"""docker-compose.yml cannot run here (no Docker engine), so its references are checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from workers.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]  # type: ignore[type-arg]
# Folders a user provides (their feeds and trained models); everything else must ship.
USER_DIRS = {"./feeds", "./models"}


def test_every_dependency_names_a_service() -> None:
    for name, service in SERVICES.items():
        for dep in service.get("depends_on", {}):
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"


def test_every_named_volume_is_declared_and_every_bind_source_exists() -> None:
    declared = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert source in USER_DIRS or (ROOT / source).exists(), f"{name}: {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_images_are_pinned_and_app_services_build_the_dockerfile() -> None:
    for name, service in SERVICES.items():
        image = service.get("image", "")
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), name
        if "build" in service:
            assert (ROOT / "Dockerfile").exists()


def test_host_ports_are_unique_and_bound_to_loopback() -> None:
    seen: set[str] = set()
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            host, host_port, _ = str(port).split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} on every interface"
            assert host_port not in seen
            seen.add(host_port)


def test_long_running_services_have_health_checks() -> None:
    for name in ("kafka", "postgres", "detector", "serve", "prometheus"):
        assert "healthcheck" in SERVICES[name], name


def test_app_services_reach_kafka_and_postgres_by_service_name() -> None:
    for name, service in SERVICES.items():
        if "build" not in service:
            continue
        env = service["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] in SERVICES, name
        assert "@postgres:5432/" in env["DATABASE_URL"], name
        assert "${POSTGRES_PASSWORD" in env["DATABASE_URL"], "password must come from the env"


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "build" in s])
def test_app_commands_are_real_logowatch_commands(name: str) -> None:
    parser = build_parser()
    try:
        parser.parse_args(SERVICES[name]["command"])
    except SystemExit as exc:  # argparse reports a bad command line this way
        pytest.fail(f"{name}: logowatch {' '.join(SERVICES[name]['command'])} is invalid ({exc})")


def test_prometheus_scrapes_services_that_exist() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        hosts = [t.split(":")[0] for sc in job.get("static_configs", []) for t in sc["targets"]]
        hosts += [n for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        for host in hosts:
            assert host in SERVICES, f"{job['job_name']} scrapes unknown host {host}"


def test_metrics_bind_every_interface_in_compose_and_prometheus_scrapes_their_port() -> None:
    from workers.metrics import DEFAULT_PORT

    env = SERVICES["detector"]["environment"]
    assert env["LOGOWATCH_METRICS_HOST"] == "0.0.0.0"  # the CLI's default is loopback
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert scraped["logowatch-detector"]["dns_sd_configs"][0]["port"] == DEFAULT_PORT
    for name in ("detector", "ingest"):
        command = SERVICES[name]["command"]
        assert command[command.index("--metrics-port") + 1] == str(DEFAULT_PORT), name


def test_the_scoring_api_takes_its_keys_from_the_environment_and_is_scraped() -> None:
    from workers.serve import DEFAULT_PORT

    serve = SERVICES["serve"]
    assert serve["environment"]["LOGOWATCH_API_KEYS"].startswith("${LOGOWATCH_API_KEYS")
    assert serve["environment"]["LOGOWATCH_SERVE_HOST"] == "0.0.0.0"
    command = serve["command"]
    assert command[command.index("--port") + 1] == str(DEFAULT_PORT)
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert scraped["logowatch-serve"]["static_configs"][0]["targets"] == [f"serve:{DEFAULT_PORT}"]
