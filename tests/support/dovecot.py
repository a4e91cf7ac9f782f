"""A real Dovecot (Debian ``dovecot-imapd``, ``dovecot-pop3d``) on 127.0.0.1 for tests.

::

    with Dovecot() as mail:
        ...POP3 on mail.pop3 (STLS too) and mail.pop3s (implicit TLS),
        IMAP on mail.imap (STARTTLS too) and mail.imaps; trust mail.ca_file;
        log in as Dovecot.USER / Dovecot.PASSWORD...

It runs in the foreground (``dovecot -F``) with its own configuration, state
and log in a temporary directory — never /etc/dovecot — on free high ports,
with one passwd-file user, and is stopped with SIGTERM afterwards. Dovecot
drops privileges to its own users, so it needs root (tests skip otherwise).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.http_server import HOST, LoopbackTLS, free_port
from tests.support.wait import wait_for

DH_FILE = Path("/usr/share/dovecot/dh.pem")  # shipped by dovecot-core

_CONFIG = """\
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = kanshi-test-{pop3}
log_path = {dir}/dovecot.log
protocols = imap pop3
listen = {host}
ssl = yes
ssl_cert = <{dir}/cert.pem
ssl_key = <{dir}/key.pem
ssl_dh = <{dh}
# The checks log in over plain loopback sessions too; real servers should not.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/home/%u
}}
# A failed login would delay the next ones from 127.0.0.1 by 2-15 s ("auth penalty");
# a listener nobody may open switches it off (Dovecot docs, Authentication/Penalty).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
    ssl = yes
  }}
}}
"""


def dovecot_binary() -> str:
    """The dovecot master, or skip saying which packages and rights are missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root: dovecot drops privileges to its own users; run ./test as root")
    path = shutil.which("dovecot") or "/usr/sbin/dovecot"
    needed = (Path(path), Path("/usr/lib/dovecot/imap"), Path("/usr/lib/dovecot/pop3"), DH_FILE)
    if not all(p.exists() for p in needed):
        pytest.skip("needs dovecot (Debian packages dovecot-imapd dovecot-pop3d); "
                    "./test installs them as root")
    return path


class Dovecot:
    """Dovecot with POP3, POP3S, IMAP and IMAPS listeners and one user."""

    USER = "kanshi-mail"
    PASSWORD = "d0vecot-Secret-Pass"

    def __init__(self, tls: LoopbackTLS | None = None) -> None:
        self.binary = dovecot_binary()
        self._own_tls = tls is None
        self.tls = tls or LoopbackTLS()
        self.host = HOST
        self.pop3, self.pop3s, self.imap, self.imaps = (free_port() for _ in range(4))
        self._dir = Path(tempfile.mkdtemp(prefix="kanshi-dovecot-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def log(self) -> str:
        path = self._dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_files(self) -> None:
        self._dir.chmod(0o755)  # mail processes run as nobody and need to reach home/
        cert = self.tls.server_cert
        cert.private_key_pem.write_to_path(str(self._dir / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self._dir / "cert.pem"))
        (self._dir / "users").write_text(f"{self.USER}:{{PLAIN}}{self.PASSWORD}::::::\n")
        home = self._dir / "home"
        home.mkdir(exist_ok=True)
        shutil.chown(home, "nobody")
        (self._dir / "dovecot.conf").write_text(_CONFIG.format(
            dir=self._dir, host=self.host, dh=DH_FILE, pop3=self.pop3, pop3s=self.pop3s,
            imap=self.imap, imaps=self.imaps))

    def start(self) -> Dovecot:
        self._write_files()
        self._process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self._dir / "dovecot.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(self._listening, timeout=15, what="dovecot to listen")
        except AssertionError:
            self.stop()
            raise AssertionError(f"dovecot did not start; its log:\n{self.log}") from None
        return self

    def _listening(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"dovecot exited with {self._process.returncode}: "
                                 f"{self._stderr()}\n{self.log}")
        # Wait for greetings, not just open ports: a SIGTERM while the login processes
        # still start up keeps the master waiting 6 s for them (measured here).
        try:
            for port in (self.pop3, self.imap):
                with socket.create_connection((self.host, port), timeout=1) as probe:
                    if not probe.recv(512).startswith((b"+OK", b"* OK")):
                        return False
        except OSError:
            return False
        return True

    def _stderr(self) -> str:
        if self._process is None or self._process.stderr is None:
            return ""
        return self._process.stderr.read().decode(errors="replace")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._own_tls:
            self.tls.cleanup()
