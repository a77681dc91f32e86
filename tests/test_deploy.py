"""The container image and the compose/Envoy example, checked without a container engine.

The Dockerfile, ``.dockerignore``, ``deploy/compose.yaml`` and ``deploy/envoy.yaml``
are read as data and held against what they configure: the real command line,
pyproject.toml, the Makefile, the server's defaults, and each other. The image's
HEALTHCHECK command runs here, as a local process, against real servers started
with the image's settings.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
import warnings
from argparse import ArgumentParser, Namespace, _SubParsersAction
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from packaging.specifiers import SpecifierSet

from peer_grpc.cli.main import build_parser
from peer_grpc.server import ServerConfig
from peer_grpc.server.task_worker import WORKER_SERVICE, WorkerConfig
from peer_grpc.wire.contract import SERVICE_NAME
from tests.certs import Pki
from tests.cli.test_cli import ServeProcess, start_serve
from tests.conftest import shared_redis
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ENV_PREFIX = "PEER_GRPC_"

# --- the Dockerfile, as data -----------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [each for each in self.instructions if each.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        (found,) = self.all(keyword)
        return found

    @property
    def env(self) -> dict[str, str]:
        """Every ENV of the stage, later ones winning."""
        variables: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.arguments)
            if "=" in words[0]:
                for word in words:
                    name, _, value = word.partition("=")
                    variables[name] = value
            else:  # the legacy form: ENV NAME VALUE
                variables[words[0]] = " ".join(words[1:])
        return variables

    @property
    def build_args(self) -> dict[str, str]:
        """The stage's ARGs and their defaults."""
        found = {}
        for instruction in self.all("ARG"):
            name, _, default = shlex.split(instruction.arguments)[0].partition("=")
            found[name] = default
        return found

    @property
    def run_commands(self) -> str:
        return "\n".join(each.arguments for each in self.all("RUN"))


@dataclass
class Copy:
    sources: list[str]
    destination: str
    options: dict[str, str]


def read_dockerfile(path: Path) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments dropped, the
    global ARG defaults substituted into FROM."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.strip().partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "ARG" and not stages:
            name, _, default = arguments.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            words = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m[1] or m[2]], arguments
            ).split()
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], stage_name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, arguments))
    return stages


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form instruction (a shell form fails here)."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"not the exec form: {arguments}"
    assert all(isinstance(word, str) for word in parsed)
    return parsed


def copy_of(instruction: Instruction) -> Copy:
    words = shlex.split(instruction.arguments)
    options = dict(word[2:].split("=", 1) for word in words if word.startswith("--"))
    paths = [word for word in words if not word.startswith("--")]
    return Copy(paths[:-1], paths[-1], options)


@dataclass
class Healthcheck:
    options: dict[str, str]
    command: list[str]


def healthcheck_of(stage: Stage) -> Healthcheck:
    match = re.fullmatch(r"((?:--[\w-]+=\S+\s+)*)CMD\s+(.+)", stage.one("HEALTHCHECK").arguments)
    assert match, "HEALTHCHECK must be OPTIONS CMD [exec form]"
    options = dict(word[2:].split("=", 1) for word in match[1].split())
    return Healthcheck(options, exec_form(match[2]))


def seconds(duration: str) -> float:
    """A Docker or protobuf duration such as ``5s``, ``1m30s``, ``0.5s``."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    assert parts, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


STAGES = read_dockerfile(ROOT / "Dockerfile")
#: The stage `docker build` produces: the last.
RUNTIME = STAGES[-1]
IMAGE_ENV = RUNTIME.env
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
ENVOY: dict[str, Any] = yaml.safe_load((DEPLOY / "envoy.yaml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# --- compose and Envoy, as data -------------------------------------------------------------


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(name): str(value) for name, value in raw.items()}


def replica_names() -> list[str]:
    """The compose services built from the repository's Dockerfile."""
    names = []
    for name, service in COMPOSE["services"].items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (DEPLOY / build["context"]).resolve()
        if context == ROOT and (context / build.get("dockerfile", "Dockerfile")).resolve() == (
            ROOT / "Dockerfile"
        ):
            names.append(name)
    return names


REPLICAS = replica_names()


def replica_env(name: str) -> dict[str, str]:
    """A replica's settings: the image's, with the service's environment over them."""
    return {**IMAGE_ENV, **service_environment(COMPOSE["services"][name])}


def published(service: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(host address, container port) of each port a compose service publishes."""
    ports = []
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].split(":")
        host = parts[0] if len(parts) == 3 else "0.0.0.0"
        ports.append((host, int(parts[-1])))
    return ports


def envoy_cluster(name: str) -> dict[str, Any]:
    clusters: list[dict[str, Any]] = ENVOY["static_resources"]["clusters"]
    (cluster,) = [c for c in clusters if c["name"] == name]
    return cluster


def envoy_connection_manager() -> dict[str, Any]:
    (listener,) = ENVOY["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    assert manager["name"] == "envoy.filters.network.http_connection_manager"
    typed: dict[str, Any] = manager["typed_config"]
    return typed


def envoy_routes() -> list[dict[str, Any]]:
    (virtual_host,) = envoy_connection_manager()["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = virtual_host["routes"]
    return routes


def envoy_route_for(path: str) -> dict[str, Any]:
    """The route Envoy picks for a gRPC call to ``path``: the first that matches."""
    for route in envoy_routes():
        match = route["match"]
        if match.get("path") == path or path.startswith(match.get("prefix", "\0")):
            action: dict[str, Any] = route["route"]
            return action
    raise AssertionError(f"no Envoy route for {path}")


def upstream_http2_options(cluster: Mapping[str, Any]) -> dict[str, Any]:
    protocol = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    options: dict[str, Any] = protocol["explicit_http_config"]["http2_protocol_options"]
    return options


# --- the command line -----------------------------------------------------------------------


def serve_parser() -> ArgumentParser:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, _SubParsersAction)]
    serve: ArgumentParser = commands.choices["serve"]
    return serve


def parse_serve(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: Mapping[str, str]
) -> Namespace:
    """``peer-grpc serve ARGS`` as the CLI parses it with exactly ``env`` for PEER_GRPC_*."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return build_parser().parse_args(["serve", *args])


def flag_of(variable: str) -> str:
    """PEER_GRPC_FOO_BAR -> --foo-bar, as the CLI names them."""
    return "--" + variable.removeprefix(ENV_PREFIX).lower().replace("_", "-")


def image_command() -> list[str]:
    return exec_form(RUNTIME.one("ENTRYPOINT").arguments) + exec_form(RUNTIME.one("CMD").arguments)


def settings_given_to_serve() -> list[tuple[str, str, str]]:
    """(where, variable, value) of every PEER_GRPC_* the image and compose set."""
    found = [("Dockerfile", n, v) for n, v in IMAGE_ENV.items() if n.startswith(ENV_PREFIX)]
    for name in REPLICAS:
        environment = service_environment(COMPOSE["services"][name])
        found += [(f"compose {name}", n, v) for n, v in environment.items()]
    return found


@pytest.mark.parametrize(
    ("where", "variable", "value"),
    settings_given_to_serve(),
    ids=[f"{where}:{variable}" for where, variable, _ in settings_given_to_serve()],
)
def test_every_variable_the_image_and_compose_set_is_a_serve_option(
    monkeypatch: pytest.MonkeyPatch, where: str, variable: str, value: str
):
    assert variable.startswith(ENV_PREFIX), f"{where}: {variable} is not a serve variable"
    flag = flag_of(variable)
    options = serve_parser()._option_string_actions
    assert flag in options, f"{where} sets {variable}, but `peer-grpc serve` has no {flag}"
    destination = options[flag].dest

    from_variable = parse_serve(monkeypatch, [], {variable: value})
    from_flag = parse_serve(monkeypatch, [flag, value], {})

    # The variable means what the flag means (and its value is one the flag takes).
    assert getattr(from_variable, destination) == getattr(from_flag, destination)


def test_the_image_runs_peer_grpc_serve_as_make_serve_does(monkeypatch: pytest.MonkeyPatch):
    makefile = (ROOT / "Makefile").read_text().splitlines()
    start = makefile.index(next(line for line in makefile if line.startswith("serve:")))
    recipe = [line.strip() for line in makefile[start + 1 :] if line.startswith("\t")][:1]
    (make_serve,) = [shlex.split(line) for line in recipe]
    command = image_command()

    assert PurePosixPath(make_serve[0]).name == command[0] == "peer-grpc"
    assert make_serve[1:] == command[1:2] == ["serve"]
    assert PYPROJECT["project"]["scripts"]["peer-grpc"] == "peer_grpc.cli:main"
    parse_serve(monkeypatch, command[2:], {})  # whatever else CMD says, serve accepts


def test_the_python_of_the_image_satisfies_requires_python():
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    versions = set()
    for stage in STAGES:
        match = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?", stage.base)
        assert match, f"not an official slim Python image: {stage.base}"
        versions.add(match[1])

    (version,) = versions  # the wheel is built and installed by the same Python
    assert requires.contains(version), f"python {version} does not satisfy {requires}"


def test_the_builder_builds_the_wheel_from_pyproject():
    builder = STAGES[0]
    copied = {source for c in map(copy_of, builder.all("COPY")) for source in c.sources}
    package_root = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"][0]

    assert len(STAGES) >= 2, "multi-stage: the builder's tools stay out of the image"
    assert {"pyproject.toml", PYPROJECT["project"]["readme"], package_root} <= copied
    assert re.search(r"python -m build\b|pip wheel\b", builder.run_commands)


def test_the_runtime_stage_installs_the_wheel_alone_as_a_non_root_user():
    copies = [copy_of(each) for each in RUNTIME.all("COPY")]
    from_builder = [c for c in copies if c.options.get("from") in (STAGES[0].name, "0")]
    wheel_name = PYPROJECT["project"]["name"].replace("-", "_")
    install = RUNTIME.run_commands
    user = RUNTIME.all("USER")[-1].arguments.split(":")[0]

    assert from_builder, "the runtime stage takes the wheel from the builder"
    assert f"/{wheel_name}-*.whl" in install
    assert "pip install --only-binary=:all:" in install  # wheels only: no compiler needed
    # No dev extras by default (EXTRAS is for runtime ones such as otel), nothing editable,
    # no compiler.
    assert RUNTIME.build_args.get("EXTRAS", "") == ""
    assert not re.search(r"\[dev\]|\s-e\s|--editable|apt-get|apk add|gcc|build-essential", install)
    assert user not in ("root", "0")


def test_the_build_context_has_what_the_dockerfile_copies_and_no_workspace():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    copied = [
        source
        for stage in STAGES
        for c in map(copy_of, stage.all("COPY"))
        if "from" not in c.options
        for source in c.sources
    ]

    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not ignored(source, patterns), f"COPY {source}: .dockerignore leaves it out"
    assert not ignored("src/peer_grpc/cli.py", patterns)
    assert not ignored("src/peer_grpc/_proto/peer/v1/peer_pb2.py", patterns)
    for workspace in (
        ".venv/bin/python",
        "node_modules/.bin/buf",
        ".git/HEAD",
        "tests/test_deploy.py",
        "benchmarks/__main__.py",
        "BENCHMARKS.md",
        ".pytest_cache/README.md",
        ".mypy_cache/3.11/x.json",
        ".hypothesis/examples/x",
        "src/peer_grpc/__pycache__/cli.cpython-311.pyc",
        "src/peer_grpc.egg-info/PKG-INFO",
    ):
        assert ignored(workspace, patterns), f"{workspace} is sent to the build"


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's patterns leave ``path`` out of the build context: the last
    pattern matching the path or one of its parent directories decides (``!`` lets in)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]
    result = False
    for raw in patterns:
        allow = raw.startswith("!")
        regex = _dockerignore_regex(raw.removeprefix("!").strip().strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not allow
    return result


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax, with ``**`` for any number of directories."""
    out, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out, index = out + "[" + pattern[index + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


def test_the_exposed_ports_are_the_ones_the_image_serves_on():
    exposed = {
        int(word.split("/")[0]) for e in RUNTIME.all("EXPOSE") for word in e.arguments.split()
    }

    assert exposed == {int(IMAGE_ENV["PEER_GRPC_PORT"]), int(IMAGE_ENV["PEER_GRPC_METRICS_PORT"])}
    assert exposed == {50051, 9090}
    for name in REPLICAS:
        for _, port in published(COMPOSE["services"][name]):
            assert port in exposed, f"compose {name} publishes {port}, which the image does not"


# --- compose ----------------------------------------------------------------------------------


def test_compose_runs_two_replicas_of_the_image_on_one_redis():
    services = COMPOSE["services"]
    redis_services = {
        n for n, s in services.items() if str(s.get("image", "")).startswith("redis:")
    }
    stores = {replica_env(name)["PEER_GRPC_STORE"] for name in REPLICAS}
    prefixes = {
        replica_env(name).get("PEER_GRPC_REDIS_KEY_PREFIX", ServerConfig().redis_key_prefix)
        for name in REPLICAS
    }

    assert len(REPLICAS) >= 2
    assert len({services[name].get("image") for name in REPLICAS}) == 1, "one image for all"
    # One Redis, one key prefix: the replicas see the same sessions.
    (store,) = stores
    (_,) = prefixes
    url = urlsplit(store)
    assert url.scheme == "redis"
    assert url.hostname in redis_services
    assert (url.port or 6379) == 6379
    assert "--port" not in services[url.hostname].get("command", [])
    ServerConfig(store=store)  # a store URL the server takes
    for name in REPLICAS:
        assert url.hostname in services[name].get("depends_on", {})


def test_compose_gives_replicas_longer_to_stop_than_their_shutdown_grace():
    for name in REPLICAS:
        grace = float(
            replica_env(name).get("PEER_GRPC_SHUTDOWN_GRACE", ServerConfig().shutdown_grace)
        )
        stop_period = seconds(COMPOSE["services"][name].get("stop_grace_period", "10s"))
        assert stop_period > grace, f"{name} is killed before its calls drain"


def test_compose_publishes_on_loopback_only():
    for name, service in COMPOSE["services"].items():
        for host, port in published(service):
            assert host == "127.0.0.1", f"{name} publishes {port} on {host} (plaintext)"


def worker_names() -> list[str]:
    """The compose services that run ``peer-grpc worker``."""
    return [
        name
        for name, service in COMPOSE["services"].items()
        if service.get("command", [])[:2] == ["peer-grpc", "worker"]
    ]


def test_compose_runs_a_task_worker_of_the_image_on_the_replicas_redis():
    (worker,) = worker_names()
    service = COMPOSE["services"][worker]
    replica = COMPOSE["services"][REPLICAS[0]]
    environment = service_environment(service)

    assert service["image"] == replica["image"]
    assert environment["PEER_GRPC_STORE"] == replica_env(REPLICAS[0])["PEER_GRPC_STORE"]
    assert "redis" in service["depends_on"]


def test_every_variable_compose_gives_the_worker_is_a_worker_option(
    monkeypatch: pytest.MonkeyPatch,
):
    (worker,) = worker_names()
    environment = service_environment(COMPOSE["services"][worker])
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    parsed = build_parser().parse_args(["worker"])

    for variable, value in environment.items():
        destination = flag_of(variable).removeprefix("--").replace("-", "_")
        assert str(getattr(parsed, destination)) == value, f"worker ignores {variable}"


def test_the_worker_healthcheck_asks_the_worker_health_service_where_it_listens():
    (worker,) = worker_names()
    service = COMPOSE["services"][worker]
    test = service["healthcheck"]["test"]
    address = service_environment(service)["PEER_GRPC_HEALTH_ADDRESS"]

    assert test[:3] == ["CMD", "python", "/usr/local/bin/peer-grpc-healthcheck"]
    assert test[3:] == [address, WORKER_SERVICE]
    grace = WorkerConfig(store="redis://redis").shutdown_grace
    assert seconds(service["stop_grace_period"]) > grace


# --- Envoy ------------------------------------------------------------------------------------


def test_envoy_balances_over_the_compose_replicas_on_their_grpc_port():
    routed = {route["route"]["cluster"] for route in envoy_routes()}
    (cluster_name,) = routed
    cluster = envoy_cluster(cluster_name)
    endpoints = {
        (e["endpoint"]["address"]["socket_address"]["address"], port_value(e))
        for group in cluster["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    }

    assert endpoints == {(name, int(replica_env(name)["PEER_GRPC_PORT"])) for name in REPLICAS}
    assert cluster["type"] == "STRICT_DNS"
    # gRPC to the replicas is HTTP/2.
    assert isinstance(upstream_http2_options(cluster), dict)


def port_value(endpoint: Mapping[str, Any]) -> int:
    return int(endpoint["endpoint"]["address"]["socket_address"]["port_value"])


def test_envoy_health_checks_the_service_the_server_registers():
    (check,) = envoy_cluster("peer_grpc")["health_checks"]

    # The server sets "" and the PeerService's name (PeerServer.start); a live server
    # answers for it in test_the_compose_replica_configuration_serves_on_redis.
    assert check["grpc_health_check"]["service_name"] in ("", SERVICE_NAME)


@pytest.mark.parametrize(
    "method",
    [
        "/peer.v1.PeerService/WatchTask",
        "/peer.v1.PeerService/DelegateTask",
        "/grpc.health.v1.Health/Watch",
    ],
)
def test_envoy_never_times_out_calls_that_last_as_long_as_a_task(method: str):
    route = envoy_route_for(method)

    assert seconds(route["timeout"]) == 0, "the route timeout would end the call"
    assert seconds(route["idle_timeout"]) == 0, "a quiet stream would be ended"
    # The client's own deadline (grpc-timeout) still ends it.
    assert seconds(route["max_stream_duration"]["grpc_timeout_header_max"]) == 0


def test_envoy_honours_the_deadline_of_short_calls():
    route = envoy_route_for("/peer.v1.PeerService/Ping")

    assert seconds(route["timeout"]) > 0
    assert seconds(route["max_stream_duration"]["grpc_timeout_header_max"]) == 0


def test_envoy_stays_within_the_server_transport_limits():
    options = upstream_http2_options(envoy_cluster("peer_grpc"))
    defaults = ServerConfig()

    # Faster pings than the server allows get the connection closed (too_many_pings).
    keepalive = seconds(options["connection_keepalive"]["interval"])
    assert keepalive >= defaults.min_client_ping_interval
    assert options["max_concurrent_streams"] <= defaults.max_concurrent_streams


def test_envoy_listens_where_compose_publishes_it_and_keeps_admin_on_loopback():
    envoy = COMPOSE["services"]["envoy"]
    (listener,) = ENVOY["static_resources"]["listeners"]
    admin = ENVOY["admin"]["address"]["socket_address"]
    command = envoy["command"]
    config_path = command[command.index("--config-path") + 1]
    mounts = {
        (DEPLOY / source).resolve(): target
        for source, target, *_ in (str(volume).split(":") for volume in envoy["volumes"])
    }

    assert listener["address"]["socket_address"]["port_value"] in {p for _, p in published(envoy)}
    assert mounts[DEPLOY / "envoy.yaml"] == config_path
    assert admin["address"] == "127.0.0.1"
    assert admin["port_value"] not in {p for _, p in published(envoy)}


def docs_envoy_snippet() -> dict[str, Any]:
    """The Envoy listener and cluster that docs/deploy.md gives for TLS pass-through."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    (snippet,) = [block for block in blocks if "tcp_proxy" in block]
    resources: dict[str, Any] = yaml.safe_load(snippet)
    return {"static_resources": resources}


@pytest.mark.parametrize(
    "config",
    [pytest.param(ENVOY, id="deploy/envoy.yaml"), pytest.param(docs_envoy_snippet(), id="docs")],
)
def test_envoy_configs_are_valid_against_envoys_api(config: dict[str, Any]):
    """Field names, enum values, durations and typed configs, by Envoy's own protos
    (the envoy-data-plane package, a dev dependency)."""
    bootstrap = envoy_module("envoy.config.bootstrap.v3")
    for type_url in type_urls(config):
        # type.googleapis.com/envoy.a.b.v3.Message: its module registers the message.
        envoy_module(type_url.rpartition("/")[2].rpartition(".")[0])

    bootstrap.Bootstrap.from_dict(config)  # raises on anything Envoy would not parse


def envoy_module(package: str) -> Any:
    """The envoy-data-plane module of an Envoy proto package.

    Its generated code uses a pydantic API that pydantic deprecates: a warning of
    the package's, not of this project's, which the suite would otherwise fail on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(f"envoy_data_plane.{package}")


def type_urls(config: Any) -> set[str]:
    """The ``@type`` of every typed config in ``config``."""
    if isinstance(config, dict):
        found = {config["@type"]} if "@type" in config else set()
        return found.union(*(type_urls(value) for value in config.values()))
    if isinstance(config, list):
        return set().union(*(type_urls(item) for item in config))
    return set()


# --- the HEALTHCHECK, run -----------------------------------------------------------------------


def healthcheck_command() -> list[str]:
    """The image's HEALTHCHECK command, with the files it names taken from the repository."""
    command = healthcheck_of(RUNTIME).command
    sources = {
        c.destination: c.sources[0]
        for c in map(copy_of, RUNTIME.all("COPY"))
        if "from" not in c.options and len(c.sources) == 1
    }
    assert command[0] == "python"
    assert command[1] in sources, f"HEALTHCHECK runs {command[1]}, which no COPY puts there"
    return [sys.executable, str(ROOT / sources[command[1]]), *command[2:]]


def run_healthcheck(port: int, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the HEALTHCHECK command as the image would, for a server on ``port``."""
    started = time.monotonic()
    done = subprocess.run(
        healthcheck_command(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **{n: v for n, v in IMAGE_ENV.items() if n.startswith(ENV_PREFIX)}}
        | {"PEER_GRPC_PORT": str(port), **env},
    )
    return done, time.monotonic() - started


@dataclass
class ImageServer:
    served: ServeProcess
    port: int
    metrics_port: int

    def stop(self) -> tuple[int, str]:
        return self.served.stop(signal.SIGTERM)


def serve_as_the_image(extra: Mapping[str, str] | None = None) -> ImageServer:
    """``peer-grpc serve`` with the image's CMD and settings (and ``extra`` over them), on
    loopback ports of its own instead of 0.0.0.0:50051 and 9090."""
    port, metrics_port = free_port(), free_port()
    env = {n: v for n, v in IMAGE_ENV.items() if n.startswith(ENV_PREFIX)} | dict(extra or {})
    env |= {
        "PEER_GRPC_HOST": "127.0.0.1",
        "PEER_GRPC_PORT": str(port),
        "PEER_GRPC_METRICS_PORT": str(metrics_port),
    }
    command = image_command()
    assert command[:2] == ["peer-grpc", "serve"]
    return ImageServer(start_serve(*command[2:], env=env), port, metrics_port)


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = serve_as_the_image()
    try:
        yield server
    finally:
        if server.served.process.poll() is None:
            server.served.process.kill()
            server.served.process.communicate(timeout=15)


def test_the_healthcheck_passes_on_a_server_with_the_image_settings(image_server: ImageServer):
    done, _ = run_healthcheck(image_server.port)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SERVICE_NAME} is SERVING" in done.stdout


def test_the_image_settings_serve_prometheus_metrics(image_server: ImageServer):
    url = f"http://127.0.0.1:{image_server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()

    assert response.status == 200
    assert "# TYPE grpc_server_handled_total counter" in body
    assert "peer_grpc_sessions{" in body


def test_the_image_settings_log_json_and_stop_gracefully_on_sigterm(image_server: ImageServer):
    code, log = image_server.stop()
    events = [json.loads(line) for line in log.splitlines()]

    assert code == 0, log
    assert any("serving on" in event["message"] for event in events)
    assert events[-1]["message"] == "peer-grpc stopped"


def test_the_healthcheck_fails_within_its_timeout_when_nothing_listens():
    limit = seconds(healthcheck_of(RUNTIME).options["timeout"])

    done, took = run_healthcheck(free_port())

    assert done.returncode != 0
    assert "UNAVAILABLE" in done.stdout
    assert took < limit


def test_the_healthcheck_fails_while_the_store_does_not_answer():
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    server = serve_as_the_image({"PEER_GRPC_STORE": nobody, "PEER_GRPC_REDIS_TIMEOUT": "0.2"})
    try:
        deadline = time.monotonic() + 20
        done, _ = run_healthcheck(server.port)
        while done.returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            done, _ = run_healthcheck(server.port)
    finally:
        code, log = server.stop()

    assert done.returncode == 1
    assert "NOT_SERVING" in done.stdout
    assert code == 0, log


def test_the_compose_replica_configuration_serves_on_redis():
    (name, *_) = REPLICAS
    settings = service_environment(COMPOSE["services"][name])
    # The compose service's settings, with this machine's Redis for the `redis` service.
    settings |= {
        "PEER_GRPC_STORE": shared_redis().url,
        "PEER_GRPC_REDIS_KEY_PREFIX": f"deploy-{uuid.uuid4().hex[:8]}",
    }
    server = serve_as_the_image(settings)
    try:
        done, _ = run_healthcheck(server.port)
        (check,) = envoy_cluster("peer_grpc")["health_checks"]
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            envoy_asks = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=check["grpc_health_check"]["service_name"]),
                timeout=5,
            )
    finally:
        code, log = server.stop()

    assert done.returncode == 0, done.stdout + done.stderr
    assert envoy_asks.status == health_pb2.HealthCheckResponse.SERVING
    assert code == 0, log


def test_the_healthcheck_under_tls_checks_that_the_port_accepts_connections(tmp_path: Path):
    pki = Pki(tmp_path)
    certificate = pki.issue("localhost", "127.0.0.1")
    tls = {"PEER_GRPC_TLS_CERT": certificate.cert, "PEER_GRPC_TLS_KEY": certificate.key}
    server = serve_as_the_image(tls)
    try:
        done, _ = run_healthcheck(server.port, **tls)
    finally:
        server.stop()
    nothing, _ = run_healthcheck(free_port(), **tls)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepts connections" in done.stdout
    assert nothing.returncode == 1
