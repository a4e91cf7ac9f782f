"""Two agents on one state directory would alert twice as fast and steal each other's
notices: the second `kanshi run` is refused and says who holds the store."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.wait import wait_for


def test_a_second_agent_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "kanshi.yaml"
    config.write_text("agent: {state_dir: state}\n"
                      "checks: [{name: disk, type: disk, include: [/]}]\n"
                      "notifiers: [{name: t, type: terminal}]\n", encoding="utf-8")
    argv = [sys.executable, "-m", "agent.cli", "run", "-c", str(config)]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "state" / "kanshi.lock").exists(), what="the first agent")
        time.sleep(0.5)
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 1
        assert f"another kanshi agent (pid {first.pid}) is using {tmp_path / 'state'}" in \
            second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None, "the first agent runs on undisturbed"
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(30) == 0
