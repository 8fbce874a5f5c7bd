"""FastAPI dependencies: settings, database, current principal.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in the thread pool,
one hop per dependency per request, which cost more than these lookups. The principal comes
from the token cache without blocking; only a cache miss goes to the database, in the pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.auth import cached_principal, principal_from_request
from suanli.db.engine import Database
from suanli.identity import Principal
from suanli.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def get_principal(request: Request, db: Annotated[Database, Depends(get_db)]) -> Principal:
    cached = cached_principal(request, db)
    if cached is not None:
        return cached
    return await run_in_threadpool(principal_from_request, request, db)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
