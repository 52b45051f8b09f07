"""A real PostgreSQL server on loopback for tests/test_production.py, from the pgserver wheel's binaries.

pgserver (a dev dependency) ships PostgreSQL 16 inside its wheel. Its own API serves on a
unix socket only; Dagster's Postgres storage (infra/dagster.yaml) takes a host and a port,
as RDS gives them, so the server is run here with the wheel's initdb and pg_ctl on
127.0.0.1, a free port and a password. PostgreSQL refuses to run as root: as root, the
server runs as the unprivileged user pgserver creates for that purpose.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pgserver

BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"
SYSTEM_USER = "pgserver"


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    password: str
    db: str
    root: Path  # everything the server writes: data, log, socket
    system_user: str | None

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            subprocess.run([str(BIN / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"],
                           user=self.system_user, check=False, capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(port: int, db: str = "dagster", password: str = "dagster-test") -> Postgres:
    """initdb, start on 127.0.0.1:``port`` with password auth, create ``db``; the caller must ``stop()`` it."""
    import stat

    system_user = None
    root = Path(tempfile.mkdtemp(prefix="runs-fleet-pg-"))
    if os.geteuid() == 0:
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        system_user = SYSTEM_USER
        ensure_user_exists(system_user)
        ensure_prefix_permissions(BIN)
        ensure_folder_permissions(BIN, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(BIN.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        account = pwd.getpwnam(system_user)
        os.chown(root, account.pw_uid, account.pw_gid)
    server = Postgres("127.0.0.1", port, "postgres", password, db, root, system_user)
    try:
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if system_user:
            os.chown(pwfile, pwd.getpwnam(system_user).pw_uid, -1)
        subprocess.run([str(BIN / "initdb"), "-D", str(server.pgdata), "-U", server.user, "--encoding=utf8",
                        "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"],
                       user=system_user, check=True, capture_output=True, timeout=120)
        subprocess.run([str(BIN / "pg_ctl"), "-D", str(server.pgdata), "-w", "-t", "60", "-l", str(root / "postgres.log"),
                        "-o", f"-h 127.0.0.1 -p {port} -k {root}", "start"],
                       user=system_user, check=True, capture_output=True, timeout=90)
        subprocess.run([str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", server.user, "-d", "postgres",
                        "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {db}"],
                       env={**os.environ, "PGPASSWORD": password}, check=True, capture_output=True, timeout=60)
    except BaseException:
        server.stop()
        raise
    return server
