"""Routes for pools, members, tokens and who-am-I. (Being built.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["identity"])
