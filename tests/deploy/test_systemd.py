"""config/systemd/kanshi.service: systemd itself verifies it; the hardening is asserted
key by key, since systemd is not PID 1 here and the unit cannot be started."""

from __future__ import annotations

import subprocess
import sys
from configparser import ConfigParser
from pathlib import Path

import pytest

from tests.deploy.dockerfile import ROOT
from tests.support import needs

UNIT = ROOT / "config" / "systemd" / "kanshi.service"


def unit() -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT, encoding="utf-8")
    return parser


def service(key: str) -> str:
    return unit()["Service"][key]


def verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's kanshi (verify wants it to exist)."""
    kanshi = Path(sys.executable).with_name("kanshi")
    copy = tmp_path / "kanshi.service"
    copy.write_text(UNIT.read_text().replace("/opt/kanshi/bin/kanshi", str(kanshi)))
    return copy


@pytest.mark.real
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    analyze = needs.command("systemd-analyze", "systemd")
    done = subprocess.run([analyze, "verify", str(verifiable_copy(tmp_path))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr


@pytest.mark.real
def test_systemd_rates_the_exposure_ok(tmp_path: Path) -> None:
    analyze = needs.command("systemd-analyze", "systemd")
    done = subprocess.run([analyze, "security", "--offline=yes", "--threshold=30",
                           str(verifiable_copy(tmp_path))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout[-1500:]  # 3.0 of 10 or less ("OK")


def test_it_runs_as_its_own_user_with_state_and_config_directories() -> None:
    assert (service("User"), service("Group")) == ("kanshi", "kanshi")
    assert service("StateDirectory") == "kanshi"
    assert service("ConfigurationDirectory") == "kanshi"
    assert "/var/lib/kanshi" in service("Environment")
    assert service("ExecStart").split()[:2] == ["/opt/kanshi/bin/kanshi", "run"]
    sysusers = (ROOT / "config" / "systemd" / "kanshi.sysusers").read_text()
    assert "u kanshi - " in sysusers and "/var/lib/kanshi" in sysusers


def test_ping_gets_cap_net_raw_and_nothing_else() -> None:
    assert service("AmbientCapabilities") == "CAP_NET_RAW"
    assert service("CapabilityBoundingSet") == "CAP_NET_RAW"
    assert service("NoNewPrivileges") == "yes"


@pytest.mark.parametrize(("key", "value"), [
    ("ProtectSystem", "strict"),
    ("ProtectHome", "read-only"),  # disk checks still see /home's filesystem
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("SystemCallFilter", "@system-service"),
    ("SystemCallArchitectures", "native"),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"),
])
def test_hardening(key: str, value: str) -> None:
    assert service(key) == value


def test_it_restarts_on_failure_and_stops_gracefully() -> None:
    assert service("Restart") == "on-failure"
    assert service("KillMode") == "mixed"
    assert int(service("TimeoutStopSec").rstrip("s")) >= 60, \
        "room for running checks to finish and notices in flight to be sent"


def test_notify_type_comes_with_the_code_that_notifies() -> None:
    assert service("Type") == "notify" and service("NotifyAccess") == "main"
    assert service("WatchdogSec")
    assert (ROOT / "agent" / "sdnotify.py").is_file()


def test_the_unit_is_installed_where_the_docs_say() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    for step in ("/etc/systemd/system/kanshi.service", "/usr/lib/sysusers.d/kanshi.conf",
                 "systemd-sysusers", "systemctl enable --now kanshi"):
        assert step in docs
