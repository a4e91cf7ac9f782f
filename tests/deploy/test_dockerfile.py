"""The Dockerfile follows the deployment rules (issue 7) — read statically, as hadolint
would, because no Docker engine runs on these machines; built for real only where one does."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.dockerfile import ROOT, Instruction, ignored, instructions

DOCKERFILE = instructions()
RUNTIME = max(i.stage for i in DOCKERFILE)


def of(keyword: str, stage: int | None = None) -> list[Instruction]:
    return [i for i in DOCKERFILE if i.keyword == keyword and stage in (None, i.stage)]


def base_image() -> str:
    """The runtime's FROM, with a leading ARG default substituted."""
    image = of("FROM", RUNTIME)[0].words()[0]
    for arg in of("ARG", 0):
        name, _, default = arg.args.partition("=")
        image = image.replace(f"${{{name}}}", default).replace(f"${name}", default)
    return image


def test_it_is_multi_stage_and_the_runtime_takes_only_the_built_venv() -> None:
    froms = of("FROM")
    assert len(froms) >= 2
    assert froms[0].words()[-2:] == ["AS", "build"]
    copies = of("COPY", RUNTIME)
    assert [c.args for c in copies if "--from=" in c.args] == ["--from=build /opt/kanshi "
                                                               "/opt/kanshi"]
    assert not [c for c in copies if c.words()[0] in ("agent", "checks")], \
        "sources go through the wheel, not into the runtime image"


def test_the_base_image_is_a_pinned_slim_debian_python_311_or_newer() -> None:
    image = base_image()
    match = re.fullmatch(r"python:3\.(\d+)\.(\d+)-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?",
                         image)
    assert match, f"expected python:3.X.Y-slim-<debian> pinned to a patch release, got {image}"
    assert int(match.group(1)) >= 11
    assert {i.words()[0] for i in of("FROM")} == {of("FROM")[0].words()[0]}, \
        "build and runtime must be the same image (the venv is copied between them)"


def test_it_runs_as_a_non_root_user() -> None:
    users = of("USER")
    assert users, "no USER: the agent would run as root"
    user = users[-1].args.split(":")[0]
    assert users[-1].stage == RUNTIME and user not in ("root", "0")
    assert "useradd --system --uid " + user in " ".join(i.args for i in of("RUN", RUNTIME))


def test_nothing_is_fetched_with_add_and_apt_leaves_no_lists_behind() -> None:
    assert not of("ADD"), "ADD fetches URLs and unpacks archives; COPY says what it does"
    for run in of("RUN"):
        if "apt-get install" in run.args:
            assert "--no-install-recommends" in run.args
            assert "rm -rf /var/lib/apt/lists/*" in run.args
        if re.search(r"\bpip install\b", run.args) or "pip wheel" in run.args:
            assert "--no-cache-dir" in run.args


def test_the_aws_extra_is_installed_from_the_built_wheel() -> None:
    build = " ".join(i.args for i in of("RUN", 1))
    assert "pip wheel" in build and '"${wheel}[aws]"' in build
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert "aws" in extras


def test_every_package_the_wheel_needs_is_copied_into_the_build() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]
                ["include"]}
    copied = {word for c in of("COPY", 1) for word in c.words()[:-1]}
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= copied


def test_entrypoint_and_healthcheck_use_exec_form_and_kanshi_health() -> None:
    (entry,) = of("ENTRYPOINT")
    assert entry.exec_form is not None and entry.exec_form[-1] == "kanshi"
    assert entry.exec_form[0] in ("/usr/bin/tini", "/usr/bin/dumb-init"), \
        "PID 1 must forward SIGTERM and reap the processes plugins start"
    assert of("CMD")[-1].exec_form == ["run"]
    (health,) = of("HEALTHCHECK")
    command = health.args.split("CMD", 1)[1].strip()
    assert command.startswith("[") and command.strip("[] ").split(", ")[:2] == [
        '"kanshi"', '"health"']
    assert "--interval=" in health.args and "--start-period=" in health.args


def test_config_state_port_and_environment() -> None:
    assert of("VOLUME")[-1].exec_form == ["/var/lib/kanshi"]
    assert of("EXPOSE")[-1].args == "9731"
    env = " ".join(i.args for i in of("ENV", RUNTIME))
    assert "KANSHI_CONFIG=/etc/kanshi/kanshi.yaml" in env
    assert "KANSHI_STATE_DIR=/var/lib/kanshi" in env
    assert not re.search(r"(SECRET|PASSWORD|TOKEN|AWS_ACCESS_KEY_ID)\w*=", env), \
        "secrets come from the environment at run time, never from the image"
    assert any(c.words() == ["config/", "/etc/kanshi/"] for c in of("COPY", RUNTIME))
    assert (ROOT / "config" / "kanshi.yaml").is_file()
    assert (ROOT / "config" / "container.yaml").is_file()


def test_the_build_context_holds_what_is_copied_and_nothing_local() -> None:
    for copy in of("COPY"):
        if "--from=" in copy.args:
            continue
        for source in copy.words()[:-1]:
            assert (ROOT / source).exists(), source
            assert not ignored(source.rstrip("/")), f"{source} is left out by .dockerignore"
            assert not ignored(source.rstrip("/") + "/x.py") or source.endswith(".toml") \
                or source.endswith(".md")
    for local in (".venv/bin/python", ".git/config", "var/kanshi.db", "tests/conftest.py",
                  "agent/__pycache__/service.cpython-311.pyc", "kanshi.egg-info/PKG-INFO",
                  ".ci/run"):
        assert ignored(local), f"{local} would be sent to the Docker daemon"


def _engine() -> str:
    for name in ("docker", "podman"):
        path = shutil.which(name)
        if path and subprocess.run([path, "info"], capture_output=True, timeout=20,
                                   check=False).returncode == 0:
            return path
    pytest.skip("no container engine runs here (`docker info` and `podman info` fail): "
                "the image itself is not built; the static tests above and "
                "tests/deploy/test_image_install.py run its steps without it")


def test_the_image_builds_and_reports_healthy(tmp_path: Path) -> None:
    engine = _engine()
    tag = "kanshi-test:latest"
    subprocess.run([engine, "build", "-t", tag, str(ROOT)], check=True, timeout=1200)
    done = subprocess.run([engine, "run", "--rm", tag, "config", "check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
