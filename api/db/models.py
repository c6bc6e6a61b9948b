"""Typed ORM models. Every table is created by the Alembic migrations in `migrations/`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from api.db.base import Base, TimestampMixin, UTCDateTime, utcnow


class Organization(TimestampMixin, Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)


class Role(TimestampMixin, Base):
    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    limits: Mapped[list[RoleLimit]] = relationship(
        back_populates="role", cascade="all, delete-orphan", lazy="selectin", order_by="RoleLimit.id"
    )


class RoleLimit(Base):
    """A role's limit on one router. Having a row is what lets the role reach that router."""

    __tablename__ = "role_limits"
    __table_args__ = (UniqueConstraint("role_id", "router_id", "type", name="uq_role_limits_role_router_type"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), index=True)
    router_id: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(8))
    value: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    role: Mapped[Role] = relationship(back_populates="limits")


class User(TimestampMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="RESTRICT"), index=True)
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    # Money is exact: millionths of the budget's currency unit, never a float.
    budget_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)


class ApiKey(Base):
    """An API key. Only its SHA-256 is stored: the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Enough of the key to recognise it in a list, never enough to use it.
    hint: Mapped[str] = mapped_column(String(32))
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
