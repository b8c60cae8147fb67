"""tuneops' own PostgreSQL for the Prefect server (``tuneops up --postgres``): initialised once
under $TUNEOPS_HOME, started on 127.0.0.1 behind a password, stopped in full by ``down``. The real
server is started here (a few seconds); the whole stack on it runs in
tests/e2e/test_postgres_stack.py."""

from __future__ import annotations

import os
import pwd
import stat

import psutil
import pytest

from tuneops.components.errors import ConfigError
from tuneops.components.stack import postgres, supervisor
from tuneops.components.stack.records import read_record
from tests.e2e.helpers import reachable_home
from tests.e2e.stack_helpers import postgres_fetch


@pytest.fixture
def home(monkeypatch):
    with reachable_home() as folder:
        monkeypatch.setenv("TUNEOPS_HOME", str(folder))
        monkeypatch.delenv(supervisor.DATABASE_URL_ENV, raising=False)
        yield folder


def _connect(port: int, password: str, database: str = "prefect") -> str:
    return postgres_fetch(port, password, "SHOW server_version", database=database)[0]["server_version"]


def test_own_postgres_listens_on_loopback_behind_a_password_and_down_stops_all_of_it(home):
    said: list[str] = []
    started: list = []
    options = supervisor.StackOptions(serving_port=0, postgres=True)
    url = supervisor.postgres_database_url(options, started, said.append)

    record = read_record("postgres")
    assert [entry.name for entry in started] == ["postgres"] and record is not None
    assert any(line.startswith(f"postgres: started (pid {record.pid}, 127.0.0.1:") for line in said), said
    port = int(record.extra["port"])
    cluster = postgres.home_cluster()
    assert url == f"postgresql+asyncpg://tuneops:{cluster.password()}@127.0.0.1:{port}/prefect"
    assert stat.S_IMODE(os.stat(cluster.password_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cluster.root).st_mode) == 0o700
    # The Prefect database exists; the server listens on loopback only, without a Unix socket.
    assert _connect(port, cluster.password())
    listening = {(entry.laddr.ip, entry.laddr.port) for entry in psutil.Process(record.pid).net_connections("inet")
                 if entry.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", port)}
    assert not list(home.rglob(".s.PGSQL.*"))
    import asyncpg

    with pytest.raises(asyncpg.InvalidPasswordError):
        _connect(port, "not-the-password")
    if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as Debian's postgres account
        assert psutil.Process(record.pid).username() == "postgres"
    # The postmaster and its checkpointer, writers and launchers (their titles overwrite the
    # environment's memory, so only the postmaster shows the stack's marker: they are its children).
    postmaster = psutil.Process(record.pid)
    family = [postmaster, *postmaster.children(recursive=True)]
    assert len(family) >= 4, family

    # A second call finds it running: nothing new is started, the database is the same.
    again: list = []
    assert supervisor.postgres_database_url(options, again, said.append) == url and again == []

    assert supervisor.down(said.append) == ["postgres"]
    assert f"postgres: stopped (pid {record.pid})" in said
    assert not any(process.is_running() for process in family)
    assert not (cluster.data_dir / "postmaster.pid").exists()  # a clean shutdown removes it
    log = (home / "stack" / "logs" / "postgres.log").read_text()
    assert "database system is shut down" in log

    # Started again, it is the same cluster: initialised once, same password, data kept.
    password = cluster.password()
    supervisor.postgres_database_url(options, [], said.append)
    assert cluster.password() == password
    assert _connect(int(read_record("postgres").extra["port"]), password)
    assert supervisor.down(said.append) == ["postgres"]


def test_a_folder_the_server_account_may_not_enter_is_named_in_one_line():
    nobody = pwd.getpwnam("nobody")
    with reachable_home() as folder:
        private = folder / "private"
        (private / "home").mkdir(parents=True)
        private.chmod(0o700)
        with pytest.raises(ConfigError, match=rf"'nobody' \(it refuses root\), who may not enter {private}: "
                                              rf".*chmod o\+x {private}\)$"):
            postgres.check_reachable(private / "home" / "postgres", nobody)
        private.chmod(0o711)
        postgres.check_reachable(private / "home" / "postgres", nobody)


def test_postgresql_not_installed_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postgres, "DEBIAN_BINARIES", tmp_path / "none")
    with pytest.raises(ConfigError, match=r"^PostgreSQL is not installed .*: run `bash infra/setup.sh --postgres`"):
        postgres.prepare_cluster()
