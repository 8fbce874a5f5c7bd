"""The expected-access table of the API: who may call which operation.

`RULES` maps every operation of the OpenAPI document, (METHOD, PATH TEMPLATE), to a rule;
`OUTCOMES` gives, per rule, what each role gets. tests/integration/test_authz_matrix.py calls
every operation as every role and fails on any difference, and on any operation of the
document that has no entry here (a new route must be given its rule, from the issue's
Security section) or any entry that is no longer in the document.

Roles (the objects in paths belong to org A):
- anonymous: no token;
- member: a member of org A (the owner of org A's job and of the token being revoked);
- foreign: a member of another org, B;
- org_admin: an org admin of org A;
- center_admin: a center admin;
- agent: a node agent's token, bound to the node in the path (`node:<name>`).

Outcomes: ALLOWED means the request got past authorization and visibility: the status is
below 500 and is none of 401, 403, 404 (a 409 or 422 about the request itself still counts
as allowed); 401, 403 and 404 must be exactly that status. A foreign org's objects are 404,
never 403, so their existence does not leak; center-admin routes are 403 for every other
signed-in role, whatever the object.
"""

from __future__ import annotations

ROLES = ("anonymous", "member", "foreign", "org_admin", "center_admin", "agent")
ALLOWED = "allowed"


def _row(anonymous: object, member: object, foreign: object, org_admin: object, center_admin: object,
         agent: object) -> dict[str, object]:
    return dict(zip(ROLES, (anonymous, member, foreign, org_admin, center_admin, agent)))


A = ALLOWED
OUTCOMES: dict[str, dict[str, object]] = {
    # Probes and scraping: no token (and never rate limited).
    "public": _row(A, A, A, A, A, A),
    # Any valid token; what it shows is scoped to the caller (own jobs, own tokens, …).
    "signed-in": _row(401, A, A, A, A, A),
    # Members and org admins, acting in their own org (a foreign member submits into B).
    "org-user": _row(401, A, A, A, 403, 403),
    # Members of an org (their org's data) and center admins (all); agents have no org.
    "org-user-or-center-admin": _row(401, A, A, A, A, 403),
    # Objects of org A: its users and center admins; everyone else 404.
    "own-org": _row(401, A, 404, A, A, 404),
    # A job of org A: its owner, an org admin of A, a center admin; other orgs 404.
    "job-owner-or-admins": _row(401, A, 404, A, A, 404),
    # Managing org A's members: org admins of A and center admins; A's members 403.
    "org-admin-own-org": _row(401, 403, 404, A, A, 404),
    # A token of a member of A: its owner, an org admin of A, a center admin; others 404.
    "token-owner-or-admins": _row(401, A, 404, A, A, 404),
    # Quotas, vouchers, prices, programs, orgs, pools, drains, requeue, top-ups, audit.
    "center-admin": _row(401, 403, 403, 403, A, 403),
    # Registering and heartbeating a server: its agent, or a center admin.
    "agent-or-admin": _row(401, 403, 403, 403, A, A),
}

RULES: dict[tuple[str, str], str] = {
    # ops
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    ("GET", "/metrics"): "public",
    # jobs
    ("POST", "/v1/jobs"): "org-user",
    ("POST", "/v1/code"): "org-user",
    ("GET", "/v1/jobs"): "signed-in",
    ("GET", "/v1/jobs/{job_id}"): "own-org",
    ("GET", "/v1/jobs/{job_id}/events"): "own-org",
    ("GET", "/v1/jobs/{job_id}/logs"): "own-org",
    ("POST", "/v1/jobs/{job_id}/cancel"): "own-org",
    ("POST", "/v1/jobs/{job_id}/hold"): "job-owner-or-admins",
    ("POST", "/v1/jobs/{job_id}/release"): "job-owner-or-admins",
    ("POST", "/v1/jobs/{job_id}/requeue"): "center-admin",
    # nodes and cluster
    ("GET", "/v1/nodes"): "signed-in",
    ("GET", "/v1/nodes/{name}"): "signed-in",
    ("GET", "/v1/nodes/{name}/events"): "signed-in",
    ("PUT", "/v1/nodes/{name}/heartbeat"): "agent-or-admin",
    ("POST", "/v1/admin/nodes/{name}/drain"): "center-admin",
    ("POST", "/v1/admin/nodes/{name}/undrain"): "center-admin",
    ("POST", "/v1/admin/nodes/{name}/token"): "center-admin",
    ("GET", "/v1/queue"): "signed-in",
    ("GET", "/v1/usage"): "org-user-or-center-admin",
    # identity
    ("GET", "/v1/me"): "signed-in",
    ("POST", "/v1/tokens"): "signed-in",
    ("GET", "/v1/tokens"): "signed-in",
    ("DELETE", "/v1/tokens/{token_id}"): "token-owner-or-admins",
    ("GET", "/v1/orgs/{org}/members"): "own-org",
    ("POST", "/v1/orgs/{org}/members"): "org-admin-own-org",
    ("PATCH", "/v1/orgs/{org}/members/{user}"): "org-admin-own-org",
    ("DELETE", "/v1/orgs/{org}/members/{user}"): "org-admin-own-org",
    ("GET", "/v1/pools"): "signed-in",
    ("POST", "/v1/admin/pools"): "center-admin",
    # billing, statements
    ("GET", "/v1/balance"): "own-org",  # called with ?org=<org A>
    ("POST", "/v1/orgs/{org}/topups"): "center-admin",
    ("GET", "/v1/orgs/{org}/statements/{month}"): "own-org",
    ("GET", "/v1/prices"): "signed-in",
    ("GET", "/v1/priority-classes"): "signed-in",
    # center administration
    ("POST", "/v1/admin/orgs"): "center-admin",
    ("GET", "/v1/admin/orgs"): "center-admin",
    ("POST", "/v1/admin/orgs/{org}/status"): "center-admin",
    ("PUT", "/v1/admin/orgs/{org}/credit-limit"): "center-admin",
    ("PUT", "/v1/admin/prices/{accelerator_type}"): "center-admin",
    ("GET", "/v1/admin/audit"): "center-admin",
    ("PUT", "/v1/admin/quotas/{scope}/{name}/{accelerator_type}"): "center-admin",
    ("DELETE", "/v1/admin/quotas/{scope}/{name}/{accelerator_type}"): "center-admin",
    ("GET", "/v1/admin/quotas"): "center-admin",
    ("PUT", "/v1/admin/shares/{kind}/{name}"): "center-admin",
    ("GET", "/v1/admin/shares"): "center-admin",
    ("PUT", "/v1/admin/priority-classes/{name}"): "center-admin",
    ("POST", "/v1/admin/projects"): "center-admin",
    ("POST", "/v1/admin/programs"): "center-admin",
    ("GET", "/v1/admin/programs"): "center-admin",
    ("GET", "/v1/admin/programs/{name}"): "center-admin",
    ("POST", "/v1/admin/programs/{name}/vouchers"): "center-admin",
    ("GET", "/v1/admin/programs/{name}/report"): "center-admin",
    ("GET", "/v1/admin/vouchers"): "center-admin",
    ("POST", "/v1/admin/vouchers/{voucher_id}/revoke"): "center-admin",
}
