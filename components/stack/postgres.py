"""A PostgreSQL server of tuneops' own for the Prefect server (``tuneops up --postgres``).

The cluster lives under ``$TUNEOPS_HOME/postgres``: ``data/``, initialised once by ``initdb`` in a
staging folder that is renamed into place (a half-initialised cluster is never started), and
``password``, the ``tuneops`` role's, random. The server listens on 127.0.0.1 only, with no Unix
socket, and asks every client for that password (scram-sha-256), so another user of the machine
can neither read nor change Prefect's state.

PostgreSQL refuses to run as root. Started by root, tuneops runs ``initdb`` and the server as the
``postgres`` account that Debian's package creates; that account then owns the cluster's folder,
and every folder above it must let it through.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tuneops.components.errors import ConfigError, StageError
from tuneops.components.files import atomic_write_text
from tuneops.components.paths import tuneops_home
from tuneops.components.stack.processes import as_account

ROLE = "tuneops"
DATABASE = "prefect"
HOST = "127.0.0.1"
# The account Debian's postgresql package creates; the server runs as it when tuneops runs as root.
SERVER_ACCOUNT = "postgres"
DEBIAN_BINARIES = Path("/usr/lib/postgresql")  # <version>/bin/{initdb,postgres}, not on PATH there


@dataclass(frozen=True)
class Cluster:
    """Where a tuneops PostgreSQL cluster lives, its programs, and whom it runs as."""

    root: Path
    bindir: Path
    account: pwd.struct_passwd | None  # None: this process's own user

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def password(self) -> str:
        return self.password_file.read_text().strip()

    def server_command(self, port: int) -> list[str]:
        """The postmaster on ``port`` of 127.0.0.1, in the foreground (the stack supervises it)."""
        return [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(port),
                "-c", f"listen_addresses={HOST}", "-c", "unix_socket_directories="]

    def connection_url(self, port: int) -> str:
        """The SQLAlchemy URL the Prefect server reads from PREFECT_API_DATABASE_CONNECTION_URL."""
        return f"postgresql+asyncpg://{ROLE}:{quote(self.password(), safe='')}@{HOST}:{port}/{DATABASE}"


def cluster_root() -> Path:
    return tuneops_home() / "postgres"


def initialised() -> bool:
    """Whether ``$TUNEOPS_HOME`` holds an initialised cluster (``initdb`` completed)."""
    return (cluster_root() / "data" / "PG_VERSION").is_file()


def home_cluster() -> Cluster:
    """The cluster of ``$TUNEOPS_HOME``, initialised or not; ConfigError when PostgreSQL is missing."""
    return Cluster(cluster_root(), find_bindir(), server_account())


def prepare_cluster() -> Cluster:
    """The cluster under ``$TUNEOPS_HOME/postgres``, initialised on first use; ConfigError when
    PostgreSQL is missing or, run by root, its account cannot reach the folder; StageError when
    initdb fails."""
    cluster = home_cluster()
    if initialised():
        return cluster
    root = cluster.root
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # before the password is written into it
    if cluster.account is not None:
        check_reachable(root, cluster.account)
        os.chown(root, cluster.account.pw_uid, cluster.account.pw_gid)
    atomic_write_text(cluster.password_file, secrets.token_urlsafe(24) + "\n")
    os.chmod(cluster.password_file, 0o600)
    if cluster.account is not None:
        os.chown(cluster.password_file, cluster.account.pw_uid, cluster.account.pw_gid)
    staging = root / "data.partial"
    shutil.rmtree(staging, ignore_errors=True)
    # The password comes from a file: a command line is visible to every user in `ps`.
    result = subprocess.run(
        [str(cluster.bindir / "initdb"), "-D", str(staging), "-U", ROLE, "--pwfile", str(cluster.password_file),
         "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions"],
        cwd=root, capture_output=True, text=True, timeout=300, **as_account(cluster.account),
    )
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or [f"exit {result.returncode}"]
        raise StageError(f"postgres: initdb failed: {lines[-1]}")
    os.rename(staging, cluster.data_dir)
    return cluster


def find_bindir() -> Path:
    """The folder with ``initdb`` and ``postgres``: the one of PATH's initdb, else Debian's newest."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = [folder for folder in DEBIAN_BINARIES.glob("*/bin") if folder.parent.name.isdigit()]
    candidates += sorted(versions, key=lambda folder: int(folder.parent.name), reverse=True)
    for folder in candidates:
        if all(os.access(folder / program, os.X_OK) for program in ("initdb", "postgres")):
            return folder
    raise ConfigError(f"PostgreSQL is not installed (no initdb and postgres found on PATH or in {DEBIAN_BINARIES}): "
                      "run `bash infra/setup.sh --postgres`, or name a server with PREFECT_API_DATABASE_CONNECTION_URL")


def server_account() -> pwd.struct_passwd | None:
    """Whom the server runs as: this user, or the ``postgres`` account when this user is root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        raise ConfigError(f"PostgreSQL refuses to run as root and there is no '{SERVER_ACCOUNT}' account to run "
                          "it as: install Debian's postgresql package (bash infra/setup.sh --postgres)") from None


def check_reachable(folder: Path, account: pwd.struct_passwd) -> None:
    """ConfigError naming the first folder above ``folder`` that ``account`` may not enter."""
    groups = {account.pw_gid} | set(os.getgrouplist(account.pw_name, account.pw_gid))
    for parent in reversed(folder.resolve().parents):
        mode = os.stat(parent)
        if mode.st_uid == account.pw_uid:
            allowed = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid in groups:
            allowed = mode.st_mode & stat.S_IXGRP
        else:
            allowed = mode.st_mode & stat.S_IXOTH
        if not allowed:
            raise ConfigError(
                f"PostgreSQL runs as '{account.pw_name}' (it refuses root), who may not enter {parent}: "
                f"put TUNEOPS_HOME where that account can reach it, or allow it through (chmod o+x {parent})")


def accepting(cluster: Cluster, port: int) -> bool:
    """Whether the server on ``port`` accepts the tuneops role's connections (not only listens:
    a starting or recovering server refuses them)."""
    return asyncio.run(_accepting(cluster, port))


def ensure_database(cluster: Cluster, port: int) -> None:
    """Create the Prefect database on first use (the Prefect server creates its tables itself)."""
    asyncio.run(_ensure_database(cluster, port))


async def _connect(cluster: Cluster, port: int, timeout_s: float):
    import asyncpg

    return await asyncpg.connect(host=HOST, port=port, user=ROLE, password=cluster.password(),
                                 database="postgres", timeout=timeout_s)


async def _accepting(cluster: Cluster, port: int) -> bool:
    import asyncpg

    try:
        connection = await _connect(cluster, port, timeout_s=3)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    await connection.close()
    return True


async def _ensure_database(cluster: Cluster, port: int) -> None:
    connection = await _connect(cluster, port, timeout_s=10)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            # An identifier, not a value: it cannot be a bind parameter; DATABASE is a constant.
            await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()
