"""deploy/: every compose file is validated by the real compose client, then checked.

``docker compose -f FILE config`` (or Debian's ``docker-compose`` 1.29) parses a file,
interpolates its variables and rejects unknown keys, all offline; nothing is started (no
Docker engine runs here). The checks then read the *resolved* configuration: the pinned
Qdrant image, the cluster wiring, the volumes, what is and is not published.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = ["qdrant.yml", "qdrant-cluster.yml", "dask.yml", "ilias.yml"]


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


COMPOSE = _compose_command()
needs_compose = pytest.mark.skipif(
    COMPOSE is None,
    reason="no compose client: neither 'docker compose' (the plugin) nor 'docker-compose' "
    "is installed (apt-get install -y docker-compose)",
)


def _config(*files: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    assert COMPOSE is not None
    args = [*COMPOSE]
    for name in files:
        args += ["-f", str(DEPLOY / name)]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "ILIAS_"))}
    environ.update(env or {})
    return subprocess.run(
        [*args, "config"], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=120
    )


def _resolved(*files: str, **env: str) -> dict:
    done = _config(*files, env={"QDRANT_API_KEY": "test-key", **env})
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def _ports(service: dict) -> list[tuple[str, str, str]]:
    """(host ip, published, target) of each published port, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append(
                (str(port.get("host_ip", "")), str(port.get("published", "")), str(port["target"]))
            )
        else:
            parts = str(port).split("/")[0].split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            out.append((host_ip, parts[-2] if len(parts) > 1 else "", parts[-1]))
    return out


def _volume_sources(service: dict) -> dict[str, str]:
    """target -> source of each mount, short or long syntax."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out[volume["target"]] = str(volume.get("source", ""))
        else:
            source, target = str(volume).split(":")[:2]
            out[target] = source
    return out


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


@needs_compose
@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_compose_file_is_valid(name):
    done = _config(name, env={"QDRANT_API_KEY": "test-key"})
    assert done.returncode == 0, f"{name}: {done.stderr}"


@needs_compose
def test_files_combine_on_one_network():
    config = _resolved("qdrant.yml", "dask.yml", "ilias.yml")
    assert {"qdrant", "dask-scheduler", "dask-worker", "ilias"} <= set(config["services"])
    assert _env(config["services"]["ilias"])["ILIAS_STORE"] == "http://qdrant:6333"
    cluster = _resolved("qdrant-cluster.yml", "dask.yml", "ilias.yml")
    assert {"qdrant-0", "qdrant-1", "qdrant-2", "dask-worker"} <= set(cluster["services"])


def _qdrant_images() -> set[str]:
    images = set()
    for name in ("qdrant.yml", "qdrant-cluster.yml"):
        for service in _resolved(name)["services"].values():
            images.add(service["image"])
    return images


@needs_compose
def test_qdrant_image_is_pinned_to_a_version_the_client_supports():
    (image,) = _qdrant_images()  # one version everywhere
    match = re.fullmatch(r"qdrant/qdrant:v(\d+)\.(\d+)\.(\d+)", image)
    assert match, f"{image} is not pinned to an exact release"
    client = importlib.metadata.version("qdrant-client").split(".")
    # qdrant-client's own rule (common/version_check.py): same major, minor within one.
    assert int(match.group(1)) == int(client[0])
    assert abs(int(match.group(2)) - int(client[1])) <= 1
    assert int(match.group(2)) >= 16  # collection metadata, where ilias keeps its recipe


@needs_compose
def test_single_node_persists_and_publishes_only_locally():
    (qdrant,) = _resolved("qdrant.yml")["services"].values()
    assert _volume_sources(qdrant)["/qdrant/storage"]  # a named volume, not the container
    assert sorted(_ports(qdrant)) == [("127.0.0.1", "6333", "6333"), ("127.0.0.1", "6334", "6334")]


@needs_compose
def test_cluster_nodes_bootstrap_from_node_0_with_own_volumes():
    services = _resolved("qdrant-cluster.yml")["services"]
    assert sorted(services) == ["qdrant-0", "qdrant-1", "qdrant-2"]
    storage = set()
    for name, service in services.items():
        env = _env(service)
        assert env["QDRANT__CLUSTER__ENABLED"] == "true"
        assert env["QDRANT__SERVICE__API_KEY"] == "test-key"
        command = service["command"]
        command = command if isinstance(command, list) else command.split()
        assert command[command.index("--uri") + 1] == f"http://{name}:6335"
        if name == "qdrant-0":
            assert "--bootstrap" not in command
        else:
            assert command[command.index("--bootstrap") + 1] == "http://qdrant-0:6335"
        assert all(target != "6335" for _, _, target in _ports(service))  # p2p stays inside
        storage.add(_volume_sources(service)["/qdrant/storage"])
    assert len(storage) == 3  # one volume per node


@needs_compose
def test_cluster_refuses_to_start_without_an_api_key():
    done = _config("qdrant-cluster.yml", env={})
    message = done.stderr + done.stdout
    assert done.returncode != 0 and "QDRANT_API_KEY" in message
    # The message is printed as written: no compose escape ($$) for the reader to undo.
    assert "openssl rand -hex 24" in message and "$$" not in message


@needs_compose
def test_single_node_and_cluster_are_alternatives_with_one_name():
    """Both publish 127.0.0.1:6333 (documented as alternatives in both files and in
    docs/deploy.md), and both answer as ``qdrant`` on the compose network, the address
    deploy/dask.yml and deploy/ilias.yml use."""
    single = _resolved("qdrant.yml")["services"]["qdrant"]
    node0 = _resolved("qdrant-cluster.yml")["services"]["qdrant-0"]
    assert ("127.0.0.1", "6333", "6333") in _ports(single)
    assert ("127.0.0.1", "6333", "6333") in _ports(node0)
    assert "qdrant" in node0["networks"]["default"]["aliases"]
    for name in ("qdrant.yml", "qdrant-cluster.yml"):
        assert "alternative" in (DEPLOY / name).read_text(), name
    assert "are alternatives, not companions" in (ROOT / "docs" / "deploy.md").read_text()
    cluster = _resolved("qdrant-cluster.yml", "dask.yml", "ilias.yml")["services"]
    assert _env(cluster["ilias"])["ILIAS_STORE"] == "http://qdrant:6333"


@needs_compose
def test_paths_are_the_same_in_every_container(tmp_path):
    """The dataset is /data for the CLI, the workers and the service; runs are /runs,
    written by the CLI container (eval run) and read by the service (--runs /runs)."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    services = _resolved(
        "qdrant.yml", "dask.yml", "ilias.yml", ILIAS_DATA=str(data), ILIAS_RUNS=str(runs)
    )["services"]
    for name in ("ilias", "ilias-serve", "dask-worker"):
        assert _volume_sources(services[name])["/data"] == str(data), name
    assert _volume_sources(services["ilias"])["/runs"] == str(runs)
    assert _volume_sources(services["ilias-serve"])["/runs"] == str(runs)
    writable = {_mount_target(v): _read_only(v) for v in services["ilias"]["volumes"]}
    served = {_mount_target(v): _read_only(v) for v in services["ilias-serve"]["volumes"]}
    assert writable["/runs"] is False and served["/runs"] is True
    command = services["ilias-serve"]["command"]
    assert command[command.index("--runs") + 1] == "/runs"


def _mount_target(volume) -> str:
    return volume["target"] if isinstance(volume, dict) else str(volume).split(":")[1]


def _read_only(volume) -> bool:
    if isinstance(volume, dict):
        return bool(volume.get("read_only"))
    return str(volume).split(":")[2:] == ["ro"]


def test_the_walkthrough_run_reads_data_and_writes_where_the_service_looks():
    """docs/deploy.md's run description, parsed as `ilias eval run /runs/ilias.toml` reads
    it inside the container: the dataset under /data, the results folder under /runs."""
    from ilias.runs import parse_run_config

    text = (ROOT / "docs" / "deploy.md").read_text()
    match = re.search(r"cat > \"\$ILIAS_RUNS/ilias\.toml\" <<'TOML'\n(.*?)\nTOML\n", text, re.S)
    assert match, "docs/deploy.md lost the walk-through's run description"
    config = parse_run_config(tomllib.loads(match.group(1)), base=Path("/runs"))
    assert config.dataset == Path("/data/ilias_core")
    assert config.distractors == "/data/distractors"
    assert config.output.parent == Path("/runs")  # one folder ilias-serve --runs /runs lists
    assert config.store == "http://qdrant:6333" and config.collection == "ilias"
    assert "docker compose run --rm ilias eval run /runs/ilias.toml" in text


def test_ilias_home_is_a_folder_the_image_user_owns():
    """The named volume ilias-home mounts at ILIAS_HOME; Docker copies the owner of the
    image's folder into a new volume, so the Dockerfile creates it as uid 1000."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    home = re.search(r"ILIAS_HOME=(\S+)", dockerfile).group(1)
    user_at = dockerfile.index("USER 1000:1000")
    made_at = dockerfile.index(f"RUN mkdir -p {home}")
    assert made_at > user_at  # made by the ilias user, not by root
    compose = yaml.safe_load((DEPLOY / "ilias.yml").read_text())
    for name in ("ilias", "ilias-serve"):
        assert f"ilias-home:{home}" in compose["services"][name]["volumes"], name
    assert "-c constraints.txt" in dockerfile  # the tested torch pair, as CI installs it


@needs_compose
def test_dask_services_run_the_ilias_image_built_from_this_repo(tmp_path):
    services = _resolved("dask.yml", ILIAS_DATA=str(tmp_path))["services"]
    for name in ("dask-scheduler", "dask-worker"):
        build = services[name]["build"]
        assert Path(build["context"]).resolve() == ROOT
        assert build["dockerfile"] == "deploy/Dockerfile"
    worker = services["dask-worker"]
    assert worker["entrypoint"] == ["dask", "worker"]
    assert worker["command"][0] == "tcp://dask-scheduler:8786"
    assert _volume_sources(worker)["/data"] == str(tmp_path)  # same path as the driver's
    assert "QDRANT_API_KEY" in _env(worker)  # workers upload to Qdrant themselves
    assert ("127.0.0.1", "8786", "8786") in _ports(services["dask-scheduler"])


def test_dockerfile_copies_what_exists_and_dockerignore_keeps_context_small():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    sources = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            sources += [s for s in line.split()[1:-1] if not s.startswith("--")]
    assert sources and all((ROOT / s).exists() for s in sources), sources
    assert 'ENTRYPOINT ["ilias"]' in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests"} <= set(ignored)
    assert not set(sources) & set(ignored)


def test_image_dask_config_unsets_the_nannys_malloc_trim(tmp_path):
    """deploy/dask.yaml, read by real dask the way the image's workers read it."""
    (tmp_path / "ilias.yaml").write_text((DEPLOY / "dask.yaml").read_text())
    code = (
        "import json; from distributed.nanny import _get_env_variables as g;"
        "print(json.dumps(sorted(g('distributed.nanny.pre-spawn-environ'))))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    environ["DASK_CONFIG"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True
    )
    names = json.loads(done.stdout)
    assert "MALLOC_TRIM_THRESHOLD_" not in names and "OMP_NUM_THREADS" in names
