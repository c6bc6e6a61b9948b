"""Create the first users without the API (used by `tollgate admin create-user`)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from pydantic import ValidationError
from sqlalchemy import select

from api.db.engine import build_engine, build_session_factory
from api.db.tables import Role, User
from api.errors import ConflictError, InvalidRequestError
from api.identity.roles import create_role
from api.identity.schemas import RoleCreate, UserCreate
from api.identity.secrets import PasswordHasher
from api.identity.users import create_user
from api.settings import Settings, format_validation_error


async def create_user_with_role(
    settings: Settings, email: str, password: str, role_name: str, permissions: list[str], name: str | None
) -> tuple[int, bool]:
    """Create the user; create `role_name` first if no role has that name. Returns (user id, role created)."""
    async with AsyncExitStack() as stack:
        engine = build_engine(settings.dependencies.database)
        stack.push_async_callback(engine.dispose)
        async with build_session_factory(engine)() as session:
            if (await session.execute(select(User.id).where(User.email == email.strip().lower()))).first():
                raise ConflictError(f"A user with email '{email}' already exists")
            role_id = (await session.execute(select(Role.id).where(Role.name == role_name))).scalar_one_or_none()
            role_created = role_id is None
            try:
                if role_id is None:
                    role_id = await create_role(session, RoleCreate(name=role_name, permissions=permissions))
                body = UserCreate(email=email, password=password, name=name, role=role_id)
                return await create_user(session, PasswordHasher(), body), role_created
            except ValidationError as exc:
                raise InvalidRequestError(format_validation_error(exc)) from exc
