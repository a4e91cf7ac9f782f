"""The image's install steps, without Docker: the Dockerfile's build stage (wheel, then a
fresh venv with kanshi[aws]) and its runtime layout (config in an etc folder, state in
its own), then the commands the container runs — `config check`, `check --all` on
config/container.yaml against AWS APIs served by moto on loopback, `run` with the
HEALTHCHECK's `kanshi health`, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.dockerfile import ROOT, instructions
from tests.support.wait import wait_for

pytestmark = pytest.mark.real


@dataclass(frozen=True)
class Image:
    wheel: Path
    venv: Path
    etc: Path       # what COPY config/ /etc/kanshi/ holds
    home: Path      # a working folder outside the repository

    def env(self, state: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "KANSHI_", "VIRTUAL_ENV", "PYTHON"))}
        env.update({"PATH": f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
                    "KANSHI_CONFIG": str(self.etc / "kanshi.yaml"),
                    "KANSHI_STATE_DIR": str(state), "PYTHONDONTWRITEBYTECODE": "1", **extra})
        return env

    def kanshi(self, *args: str, env: dict[str, str],
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.venv / "bin" / "kanshi"), *args], env=env,
                              cwd=self.home, capture_output=True, text=True, timeout=timeout,
                              check=False)


def _step(args: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        pytest.skip(f"{what} failed (no package index with setuptools and kanshi's "
                    f"dependencies reachable?): {' | '.join(tail)}")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    base = tmp_path_factory.mktemp("image")
    src = base / "src"
    src.mkdir()
    for copy in (i for i in instructions() if i.stage == 1 and i.keyword == "COPY"):
        for source in copy.words()[:-1]:  # exactly what the build stage copies
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, src / source,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, src / source)
    python = sys.executable
    _step([python, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps", "--wheel-dir",
           str(base / "dist"), "."], src, "pip wheel")
    (wheel,) = (base / "dist").glob("kanshi-*.whl")
    _step([python, "-m", "venv", str(base / "venv")], base, "python -m venv")
    _step([str(base / "venv" / "bin" / "pip"), "install", "--no-cache-dir",
           f"{wheel}[aws]"], base, "pip install kanshi[aws]")
    etc = base / "etc-kanshi"
    shutil.copytree(ROOT / "config", etc)
    home = base / "home"
    home.mkdir()
    return Image(wheel, base / "venv", etc, home)


def test_the_wheel_carries_every_data_file_of_the_packages(image: Image) -> None:
    names = set(zipfile.ZipFile(image.wheel).namelist())
    missing = []
    for package in ("agent", "checks", "notifiers", "runbooks"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and path.suffix not in (".py", ".pyc") and \
                    "__pycache__" not in path.parts:
                relative = path.relative_to(ROOT).as_posix()
                if relative not in names:
                    missing.append(relative)
    assert not missing, ("not in the wheel (add them to [tool.setuptools.package-data]): "
                         + ", ".join(sorted(missing)[:20]))


def test_the_installed_kanshi_runs_from_the_venv_not_the_repository(image: Image,
                                                                   tmp_path: Path) -> None:
    python = image.venv / "bin" / "python"
    done = subprocess.run([str(python), "-c", "import agent, boto3; print(agent.__file__)"],
                          cwd=image.home, env=image.env(tmp_path), capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.startswith(str(image.venv))


@pytest.mark.parametrize("config", ["kanshi.yaml", "container.yaml"])
def test_the_shipped_configs_load_in_the_installed_image(image: Image, tmp_path: Path,
                                                         config: str) -> None:
    done = image.kanshi("config", "check", str(image.etc / config), env=image.env(tmp_path))
    assert done.returncode == 0, done.stderr


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_check_all_on_the_container_config_watches_a_tagged_instance(
        image: Image, tmp_path: Path, moto_endpoint: str) -> None:
    import boto3

    aws = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    ec2 = boto3.client("ec2", region_name="ap-northeast-1", endpoint_url=moto_endpoint,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                      TagSpecifications=[{"ResourceType": "instance",
                                          "Tags": [{"Key": "Monitor", "Value": "kanshi"}]}])
    env = image.env(tmp_path / "state", KANSHI_AWS_ACCOUNT="customer-a",
                    AWS_REGION="ap-northeast-1", **aws)
    done = image.kanshi("check", "--all", "--json", "-c", str(image.etc / "container.yaml"),
                        env=env)
    import json

    results = json.loads(done.stdout)
    checks = {r["check"] for r in results}
    assert checks == {"aws", "ec2-status", "ec2-events"}, done.stderr
    status = {r["check"]: r for r in results if r["check"] == "ec2-status"}["ec2-status"]
    assert status["status"] == "OK" and "customer-a" in status["target"], results


def test_run_is_healthy_then_stops_cleanly_on_sigterm(image: Image, tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "kanshi.yaml"  # the image's default, with the API on a free port
    config.write_text(f"include: [{image.etc / 'kanshi.yaml'}]\napi: {{port: 0}}\n")
    env = image.env(state, KANSHI_CONFIG=str(config))
    health = image.kanshi("health", env=env)
    assert "invalid choice" not in health.stderr, \
        "`kanshi health` (the HEALTHCHECK) is not wired: see agent/cli/health.py"
    assert health.returncode == 1
    agent = subprocess.Popen([str(image.venv / "bin" / "kanshi"), "run"], env=env,
                             cwd=image.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        wait_for(lambda: agent.poll() is not None or
                 image.kanshi("health", env=env).returncode == 0, timeout=60,
                 what="kanshi health to report the running agent healthy")
        assert agent.poll() is None, agent.communicate()[1][-2000:]
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=90)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, stderr[-2000:]
    assert "kanshi stopped" in stderr
    after = image.kanshi("health", env=env)
    assert after.returncode == 1 and "stopped" in after.stdout
