"""FastAPI dependencies: settings, database, current principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import principal_from_request
from suanli.db.engine import Database
from suanli.identity import Principal
from suanli.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def get_principal(request: Request, db: Annotated[Database, Depends(get_db)]) -> Principal:
    return principal_from_request(request, db)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
