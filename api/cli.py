"""The `tollgate` command: serve, worker, db upgrade, admin create-user."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

from api.errors import DomainError
from api.logs import logging_config
from api.settings import ConfigError, Settings, config_path_from_env, load_settings

logger = logging.getLogger("tollgate")


def _load(config: str | None) -> Settings:
    if config is not None:
        # Worker processes started by uvicorn re-read the config through this variable.
        os.environ["TOLLGATE_CONFIG"] = config
    settings = load_settings(Path(config) if config else config_path_from_env())
    _check_models(settings)
    return settings


def _check_models(settings: Settings) -> None:
    """The `models:` section is the catalog's to read; a bad entry is reported before anything starts."""
    from pydantic import ValidationError

    from api.catalog.schemas import ModelsConfigEntry

    for raw in settings.models:
        try:
            ModelsConfigEntry.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"models: router {raw.get('name', '?')!r} is invalid: {exc}") from exc


def _logging_config(settings: Settings) -> dict[str, Any]:
    return logging_config(settings.settings.log_level, settings.settings.log_format)


def _configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(_logging_config(settings))


def _migrate(logging_config: dict[str, Any], database_url: str) -> None:
    """`serve`'s migrations, in a process of their own (below)."""
    from api.db.migrate import upgrade_database

    logging.config.dictConfig(logging_config)
    upgrade_database(database_url)


def _migrate_in_child_process(settings: Settings) -> bool:
    # Alembic, and what it loads (Mako, Rich, Pygments), would otherwise stay for the server's
    # whole life in the process that ran the migrations: ~35 MB in uvicorn's supervisor, ~10 MB
    # in a single-process server. The URL goes through a pipe, never onto a command line.
    child = multiprocessing.get_context("spawn").Process(
        target=_migrate, args=(_logging_config(settings), settings.dependencies.database.url), name="tollgate-migrations"
    )
    child.start()
    child.join()
    return child.exitcode == 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _load(args.config)
    _configure_logging(settings)
    if args.workers > 1 and settings.dependencies.redis is None:
        print(
            "error: --workers > 1 needs dependencies.redis: without Redis each process would keep its own "
            "limits, throttles and caches, and every limit would be multiplied by the number of workers.",
            file=sys.stderr,
        )
        return 2
    documents = settings.settings.rag.vector_store_model is not None
    if args.workers > 1 and documents and settings.dependencies.qdrant.url is None:
        print(
            "error: --workers > 1 with documents on needs a Qdrant server (dependencies.qdrant.url): a local "
            "Qdrant folder (dependencies.qdrant.path) can be opened by one process only",
            file=sys.stderr,
        )
        return 2
    if not _migrate_in_child_process(settings):
        print("error: the database migrations failed (above); not serving", file=sys.stderr)
        return 1
    options: dict[str, Any] = dict(
        factory=True,
        host=args.host,
        port=args.port,
        log_level=settings.settings.log_level.lower(),
        log_config=_logging_config(settings),
        access_log=settings.settings.access_log,
        timeout_graceful_shutdown=settings.settings.shutdown_grace_seconds,
        proxy_headers=True,
        http="httptools",
        # No websocket endpoint: uvicorn would otherwise import a websockets implementation.
        ws="none",
        # No `server: uvicorn` on every answer: it tells a scanner what to try, and nothing
        # else reads it.
        server_header=False,
    )
    if args.workers == 1:
        uvicorn.run("api.http.serving:create_served_app", **options)
        return 0
    # Not uvicorn's own multi-process mode: its supervisor keeps accepting during a drain.
    from api.http.supervisor import Supervisor

    return Supervisor(uvicorn.Config("api.http.serving:create_served_app", workers=args.workers, **options), args.workers).run()


def worker(args: argparse.Namespace) -> int:
    from api.db.migrate import upgrade_database
    from workers.ingestion import run_worker

    settings = _load(args.config)
    _configure_logging(settings)
    if settings.settings.rag.vector_store_model is None and settings.settings.usage_journal_path is None:
        print("error: a worker ingests documents (settings.rag.vector_store_model) and writes the usage journals "
              "of dead processes (settings.usage_journal_path): neither is set", file=sys.stderr)
        return 2
    if settings.settings.rag.vector_store_model is not None and settings.dependencies.qdrant.url is None:
        print("error: a worker needs a Qdrant server (dependencies.qdrant.url): a local Qdrant folder "
              "can be opened by one process only, the API's", file=sys.stderr)
        return 2
    upgrade_database(settings.dependencies.database.url)
    asyncio.run(run_worker(settings, args.concurrency))
    return 0


def db_upgrade(args: argparse.Namespace) -> int:
    from api.db.migrate import upgrade_database

    settings = _load(args.config)
    _configure_logging(settings)
    upgrade_database(settings.dependencies.database.url, args.revision)
    print(f"database upgraded to {args.revision}")
    return 0


def admin_create_user(args: argparse.Namespace) -> int:
    from api.db.migrate import upgrade_database
    from api.identity.bootstrap import create_user_with_role

    settings = _load(args.config)
    _configure_logging(settings)
    upgrade_database(settings.dependencies.database.url)
    user_id, role_created = asyncio.run(
        create_user_with_role(settings, args.email, args.password, args.role_name, args.permission, args.name)
    )
    if role_created:
        print(f"created role '{args.role_name}' with permissions {sorted(set(args.permission))}")
    print(f"created user {user_id} ({args.email.strip().lower()}) with role '{args.role_name}'")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate", description="Tollgate LLM gateway")
    parser.add_argument("--config", help="config file (default: $TOLLGATE_CONFIG or ./config.yml)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="apply migrations, then serve the API")
    serve_parser.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--workers", type=int, default=1, help="processes; more than 1 needs Redis")
    serve_parser.set_defaults(handler=serve)

    worker_parser = commands.add_parser(
        "worker", help="ingest documents, and write the usage journals of dead API processes, in a process of its own"
    )
    worker_parser.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    worker_parser.add_argument("--concurrency", type=int, default=2, help="documents ingested at once")
    worker_parser.set_defaults(handler=worker)

    db_parser = commands.add_parser("db", help="database maintenance")
    db_commands = db_parser.add_subparsers(dest="db_command", required=True)
    upgrade_parser = db_commands.add_parser("upgrade", help="apply migrations")
    upgrade_parser.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    upgrade_parser.add_argument("revision", nargs="?", default="head")
    upgrade_parser.set_defaults(handler=db_upgrade)

    admin_parser = commands.add_parser("admin", help="administration without the API")
    admin_commands = admin_parser.add_subparsers(dest="admin_command", required=True)
    create_user_parser = admin_commands.add_parser("create-user", help="create a user (and its role if missing)")
    create_user_parser.add_argument("--config", default=argparse.SUPPRESS, help="config file")
    create_user_parser.add_argument("--email", required=True)
    create_user_parser.add_argument("--password", required=True)
    create_user_parser.add_argument("--name")
    create_user_parser.add_argument("--role-name", required=True)
    create_user_parser.add_argument(
        "--permission", action="append", default=[],
        choices=["admin", "create_public_collection", "read_metric", "provide_models"],
        help="permission of the role when it is created (repeatable); ignored for an existing role",
    )
    create_user_parser.set_defaults(handler=admin_create_user)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not hasattr(args, "config"):
        args.config = None
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
