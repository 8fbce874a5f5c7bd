"""/v1/code: upload a job's code (a zip) once; a job spec then names it by `code: sha256:<hex>`.

Who may call: members and org admins (those who submit jobs). The body is the zip itself
(`Content-Type: application/zip`), at most `code_max_bytes` whether it has a Content-Length
(413 before it is read) or not (413 once more than that has come). Checks and storage are
`suanli.code.store`: a bad zip, an unsafe member path or too much unpacked data is 422 and
nothing is kept. Uploads are content-addressed, so uploading the same zip twice is harmless.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, SettingsDep
from suanli.code import CodeError, store
from suanli.errors import Kind, SuanliError, forbidden, invalid
from suanli.identity import Role

router = APIRouter(prefix="/v1/code", tags=["jobs"])


class CodeOut(BaseModel):
    code: str = Field(description="The id to put in a job spec's `code` (sha256:<hex> of the zip)")
    bytes: int
    files: int


@router.post("", response_model=CodeOut, status_code=201)
async def upload_code(request: Request, who: PrincipalDep, settings: SettingsDep) -> CodeOut:
    """Upload a job's code as a zip (the CLI makes it from `code: ./dir`)."""
    if who.role not in (Role.MEMBER, Role.ORG_ADMIN) or who.org_id is None:
        raise forbidden("only members of an org can upload job code")
    limit = settings.code_max_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # a body sent without Content-Length is capped here
        size += len(chunk)
        if size > limit:
            raise SuanliError("body_too_large", f"code uploads are limited to {limit} bytes", Kind.TOO_LARGE)
        chunks.append(chunk)
    data = b"".join(chunks)
    try:
        ref, files = await run_in_threadpool(store, data, settings.code_dir, limit)
    except CodeError as e:
        raise invalid("invalid_code", str(e)) from e
    return CodeOut(code=ref, bytes=len(data), files=files)
