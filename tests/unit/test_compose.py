"""docker-compose.yml cannot run here (no Docker engine), so its references are checked, and
its effective configuration (variables interpolated, anchors merged, every profile on) is
rendered by compose-go, the library behind `docker compose config`, and checked too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from logowatch.cli import build_parser
from logowatch.migrate import ROLE_PASSWORDS
from logowatch.services import KAFKA_VERSION

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


# Each password holds every character a URL reserves, and differs from the others.
SECRETS = {variable: f"{variable[10:14].lower()}@/:#%?&pw" for variable in ROLE_PASSWORDS.values()}
SECRETS |= {"POSTGRES_PASSWORD": "owner@/:#%?&pw", "GRAFANA_ADMIN_PASSWORD": "admin"}
# Which role each app command connects as; the owner only migrates.
ROLES = {"migrate": "logowatch", "detect": "logowatch_worker", "ingest": "logowatch_ingest",
         "watchdog": "logowatch_watchdog"}


@pytest.fixture(scope="module")
def effective() -> dict:  # type: ignore[type-arg]
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs the Go toolchain (compose-go renders the configuration)")
    done = subprocess.run([go, "run", ".", str(ROOT / "docker-compose.yml")],
                          cwd=ROOT / "deploy" / "composeconfig", env={**os.environ, **SECRETS},
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["services"]


def test_app_services_connect_as_their_own_role_with_a_password_kept_out_of_the_url(
    effective: dict,  # type: ignore[type-arg]
) -> None:
    owner_secrets = {*ROLE_PASSWORDS.values()}
    for name, service in effective.items():
        if "build" not in service:
            continue
        env = service["environment"]
        if service["command"][0] not in ROLES:  # serve scores images, it reads no database
            assert not {"DATABASE_URL", "PGPASSWORD"} & set(env), name
            continue
        url = make_url(env["DATABASE_URL"])
        assert (url.host, url.port, url.password) == ("postgres", 5432, None), name
        assert env["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] in effective, name
        role = ROLES[service["command"][0]]
        assert url.username == role, name
        variable = {"logowatch": "POSTGRES_PASSWORD", **ROLE_PASSWORDS}[role]
        assert env["PGPASSWORD"] == SECRETS[variable], name
        # Only migrate sees the roles' passwords (to set them).
        assert (owner_secrets & set(env)) == (owner_secrets if role == "logowatch" else set())


def test_every_detector_is_scraped_by_prometheus(effective: dict) -> None:  # type: ignore[type-arg]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    scraped = {name for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", [])
               for name in sd["names"]}
    detectors = {n for n, s in effective.items() if (s.get("command") or [""])[0] == "detect"}
    assert detectors == {"detector", "detector-gpu"}
    assert detectors <= scraped


def test_postgres_is_healthy_only_when_it_answers_over_tcp(
    effective: dict,  # type: ignore[type-arg]
) -> None:
    check = " ".join(effective["postgres"]["healthcheck"]["test"])
    assert re.search(r"pg_isready .*-h 127\.0\.0\.1", check), check


def test_kafka_is_the_version_the_local_runner_uses(effective: dict) -> None:  # type: ignore[type-arg]
    assert effective["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_the_build_context_leaves_out_secrets_and_data() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".env.*", "feeds", "models", "bench/results"} <= ignored


def test_the_image_bakes_every_downloadable_backbone_weights_source() -> None:
    """A detector starts air-gapped whatever its bundle records: the build imports nsfwjs and
    fetches Keras's ImageNet file into KERAS_HOME, both readable by the runtime user."""
    from detector.weights import IMPORTED

    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in IMPORTED:
        assert f"logowatch weights import {source}" in dockerfile
    assert re.search(r"ENV KERAS_HOME=(\S+)\nRUN .*weights='imagenet'.*\n.*chmod -R a\+rX \1",
                     dockerfile), "the ImageNet file is not baked into KERAS_HOME"


def test_the_scoring_api_takes_its_keys_from_the_environment_and_is_scraped() -> None:
    from logowatch.serve import DEFAULT_PORT

    serve = SERVICES["serve"]
    assert serve["environment"]["LOGOWATCH_API_KEYS"].startswith("${LOGOWATCH_API_KEYS")
    assert serve["environment"]["LOGOWATCH_SERVE_HOST"] == "0.0.0.0"
    command = serve["command"]
    assert command[command.index("--port") + 1] == str(DEFAULT_PORT)
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert scraped["logowatch-serve"]["static_configs"][0]["targets"] == [f"serve:{DEFAULT_PORT}"]
