"""`tollgate serve` logs one JSON object per line, whatever is switched on: SQLAlchemy's
statements (`database.echo: true`) go through the same JSON logging as everything else."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from test_cli import free_port


def test_sql_echo_is_logged_as_json_lines(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "settings:\n  auth_master_key: echo-test-master\n  log_format: json\n  log_level: WARNING\n"
        f"dependencies:\n  database:\n    url: sqlite+aiosqlite:///{tmp_path}/db/tollgate.db\n    echo: true\n"
        f"  qdrant:\n    path: {tmp_path}/qdrant\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "--config", str(config), "serve", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        users = httpx.get(f"http://127.0.0.1:{port}/v1/admin/users", headers={"Authorization": "Bearer echo-test-master"})
        assert users.status_code == 200
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    lines = [line for line in output.splitlines() if line.strip()]
    not_json = [line for line in lines if not line.startswith("{")]
    assert not not_json, not_json[:5]
    entries = [json.loads(line) for line in lines]
    # echo is what asked for the statements, whatever log_level says.
    statements = [e for e in entries if e["logger"].startswith("sqlalchemy.engine") and "FROM users" in e["message"]]
    assert statements and all(e["level"] == "INFO" for e in statements), [e["message"] for e in entries][:20]
