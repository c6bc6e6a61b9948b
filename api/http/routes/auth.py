"""POST /v1/auth/login: email and password in, a fresh playground key out."""

from __future__ import annotations

from fastapi import APIRouter

from api.common.schemas import error_responses
from api.http.deps import AuthenticatorDep, ClientAddress, HasherDep, LoginThrottleDep, Session, SettingsDep
from api.identity import login as login_service
from api.identity.schemas import LoginRequest, LoginResult

# Wrong credentials (401), too many failures for this email or address (429), the database
# or Redis out of reach (503).
routes = APIRouter(prefix="/v1/auth", tags=["auth"], responses=error_responses(400, 401, 413, 429, 503))


@routes.post("/login")
async def login(
    body: LoginRequest, session: Session, hasher: HasherDep, login_throttle: LoginThrottleDep, authenticator:
    AuthenticatorDep, settings: SettingsDep, client: ClientAddress
) -> LoginResult:
    key_id, secret = await login_service.login(
        session,
        hasher,
        login_throttle,
        authenticator,
        settings.settings.keys.playground_lifetime_days,
        body.email,
        body.password,
        client,
    )
    return LoginResult(id=key_id, key=secret)
