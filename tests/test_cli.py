"""The `tollgate` command as an operator runs it."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import Backend, _empty_tables


def tollgate(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )


def sqlite_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.yml"
    path.write_text(
        "settings:\n  auth_master_key: cli-test-master\n"
        f"dependencies:\n  database:\n    url: sqlite+aiosqlite:///{tmp_path}/db/tollgate.db\n"
        f"  qdrant:\n    path: {tmp_path}/qdrant\n{extra}"
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bad_config_fails_with_the_field_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yml"
    config.write_text("settings:\n  login:\n    max_failures: -3\n")
    for command in (["db", "upgrade"], ["serve"]):
        result = tollgate("--config", str(config), *command)
        assert result.returncode == 2
        assert "settings.login.max_failures" in result.stderr and "Traceback" not in result.stderr


def test_config_from_tollgate_config_variable(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.yml"
    config.write_text("settings:\n  log_level: LOUD\n")
    result = tollgate("db", "upgrade", env={"TOLLGATE_CONFIG": str(config)})
    assert result.returncode == 2 and "settings.log_level" in result.stderr


async def test_upgrade_then_create_user_then_log_in(tmp_path: Path, backend: Backend, app_factory) -> None:
    # The backend's tables emptied without an app running: the CLI is what a platform team runs
    # before the first start (a running app's own writes are another test's subject).
    await _empty_tables(backend.database_url)
    env = {"TOLLGATE_DEPENDENCIES__DATABASE__URL": backend.database_url}
    config = sqlite_config(tmp_path)
    assert tollgate("--config", str(config), "db", "upgrade", env=env).returncode == 0
    created = tollgate("--config", str(config), "admin", "create-user", "--email", "Root@Example.com",
                       "--password", "bootstrap-pass", "--role-name", "platform", "--permission", "admin", env=env)
    assert created.returncode == 0, created.stderr
    assert "created role 'platform'" in created.stdout and "root@example.com" in created.stdout

    again = tollgate("--config", str(config), "admin", "create-user", "--email", "root@example.com",
                     "--password", "bootstrap-pass", "--role-name", "other-role", env=env)
    assert again.returncode == 1 and "already exists" in again.stderr

    weak = tollgate("--config", str(config), "admin", "create-user", "--email", "second@example.com",
                    "--password", "short", "--role-name", "platform", env=env)
    assert weak.returncode == 1 and "password" in weak.stderr

    client = await app_factory(empty=False)
    key = (await client.post("/v1/auth/login", json={"email": "root@example.com", "password": "bootstrap-pass"})).json()["key"]
    roles = (await client.get("/v1/admin/roles", headers={"Authorization": f"Bearer {key}"})).json()
    assert [(r["name"], r["permissions"], r["users"]) for r in roles["data"]] == [("platform", ["admin"], 1)]


def test_serve_applies_migrations_and_answers_health(tmp_path: Path) -> None:
    port = free_port()
    config = sqlite_config(tmp_path)
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert health.json() == {"status": "ok"}
        assert "server" not in health.headers  # nothing told to a scanner about what serves it
        users = httpx.get(f"http://127.0.0.1:{port}/v1/admin/users", headers={"Authorization": "Bearer cli-test-master"})
        assert users.status_code == 200 and users.json()["total"] == 0
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert (tmp_path / "db" / "tollgate.db").exists()
    assert "changeme" not in output  # a non-default master key brings no warning


def test_serve_stops_when_its_migrations_fail(tmp_path: Path) -> None:
    """Migrations run in a process of their own: their failure still stops `serve`."""
    config = tmp_path / "config.yml"
    config.write_text("settings:\n  auth_master_key: cli-test-master\n"
                      f"dependencies:\n  database:\n    url: postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none\n")
    result = tollgate("--config", str(config), "serve", "--port", str(free_port()))
    assert result.returncode == 1
    assert "Connect call failed" in result.stderr and "the database migrations failed" in result.stderr


def test_serve_warns_about_the_default_master_key(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(f"dependencies:\n  database:\n    url: sqlite+aiosqlite:///{tmp_path}/t.db\n  qdrant:\n    path: {tmp_path}/q\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert "auth_master_key is the shipped default" in output


def test_several_workers_without_redis_refuse_to_start(tmp_path: Path) -> None:
    result = tollgate("--config", str(sqlite_config(tmp_path)), "serve", "--workers", "2")
    assert result.returncode == 2 and "needs dependencies.redis" in result.stderr


def test_several_workers_on_a_local_qdrant_folder_refuse_to_start(tmp_path: Path) -> None:
    """One process only can open a local Qdrant folder: the others would answer 500."""
    config = tmp_path / "rag.yml"
    config.write_text(
        "settings:\n  rag:\n    vector_store_model: embeddings\n"
        f"dependencies:\n  database:\n    url: sqlite+aiosqlite:///{tmp_path}/t.db\n  qdrant:\n    path: {tmp_path}/q\n"
        "  redis:\n    url: redis://127.0.0.1:6379/0\n"
    )
    result = tollgate("--config", str(config), "serve", "--workers", "2")
    assert result.returncode == 2 and "needs a Qdrant server" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "q").exists()  # refused before anything opened it


def test_worker_explains_what_it_needs(tmp_path: Path) -> None:
    nothing = tmp_path / "nothing.yml"
    nothing.write_text(
        f"settings:\n  usage_journal_path: null\ndependencies:\n  database:\n    url: sqlite+aiosqlite:///{tmp_path}/t.db\n"
    )
    idle = tollgate("--config", str(nothing), "worker")
    assert idle.returncode == 2 and "vector_store_model" in idle.stderr and "usage_journal_path" in idle.stderr
    config = tmp_path / "rag.yml"
    config.write_text(
        "settings:\n  rag:\n    vector_store_model: embeddings\n"
        f"dependencies:\n  database:\n    url: sqlite+aiosqlite:///{tmp_path}/t.db\n  qdrant:\n    path: {tmp_path}/q\n"
    )
    local = tollgate("--config", str(config), "worker")
    assert local.returncode == 2 and "Qdrant server" in local.stderr and "Traceback" not in local.stderr
