"""Routes for statements per org and month, and program reports for the funder. (Being built.)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["reports"])
