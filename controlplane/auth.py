"""Who is calling, and may they: client identity, roles, and a per-client stream limit.

Identity comes from the verified client certificate (its common name, else its first subject
alternative name) or, for service accounts on a connection without a client certificate, from
a bearer token (``authorization: Bearer <token>``) whose SHA-256 the roles file lists. Roles
come from the roles file (``--roles-file``)::

    identities:            # identity (shell patterns allowed) -> roles
      alice: [admin]
      ci-*: [submitter]
      node-*: [agent]
    tokens:                # service-account name -> sha256 hex of its token
      ci-bot: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

Roles: ``viewer`` reads; ``submitter`` reads, submits and cancels its own jobs; ``admin`` does
everything (cancel any job, cordon, drain); ``agent`` registers and heartbeats under its own
identity only (:func:`check_agent_name`: the name it registers is its certificate's, so one
node cannot take over another's jobs). Without TLS (``--insecure``) every caller is an
anonymous admin.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc
import yaml

from protocol.errors import InvalidArgument, PermissionDenied
from protocol.spec import MAX_MAP_ENTRIES, JobSpec
from runtime.identity import peer_common_name, peer_sans
from runtime.interceptors import guarded

log = logging.getLogger(__name__)

CLAIMED_TAG = "h2k.claimed_requested_by"
DEFAULT_MAX_STREAMS_PER_CLIENT = 32


class Role(StrEnum):
    VIEWER = "viewer"
    SUBMITTER = "submitter"
    ADMIN = "admin"
    AGENT = "agent"


_READ = frozenset({Role.VIEWER, Role.SUBMITTER, Role.ADMIN})
_ADMIN = frozenset({Role.ADMIN})
# Method -> the roles any one of which allows the call. A method missing here needs admin.
METHOD_ROLES: dict[str, frozenset[Role]] = {
    "JobService/SubmitJob": frozenset({Role.SUBMITTER, Role.ADMIN}),
    "JobService/SubmitJobs": frozenset({Role.SUBMITTER, Role.ADMIN}),
    "JobService/GetJob": _READ,
    "JobService/ListJobs": _READ,
    "JobService/WatchJob": _READ,
    "JobService/WatchJobBatches": _READ,
    "JobService/ListJobEvents": _READ,
    "JobService/CancelJob": frozenset({Role.SUBMITTER, Role.ADMIN}),  # submitter: own jobs
    "MigrationService/SubmitMigration": frozenset({Role.SUBMITTER, Role.ADMIN}),
    "MigrationService/SubmitMigrations": frozenset({Role.SUBMITTER, Role.ADMIN}),
    "MigrationService/GetMigration": _READ,
    "MigrationService/ListMigrations": _READ,
    "MigrationService/CancelMigration": frozenset({Role.SUBMITTER, Role.ADMIN}),  # own only
    "AgentRegistry/ListAgents": _READ,
    "AgentRegistry/CordonAgent": _ADMIN,
    "AgentRegistry/DrainAgent": _ADMIN,
    "AgentRegistry/RegisterAgent": frozenset({Role.AGENT, Role.ADMIN}),
    "AgentRegistry/Heartbeat": frozenset({Role.AGENT, Role.ADMIN}),
}
GUARDED_PREFIXES = ("/h2k.v1.JobService/", "/h2k.v1.AgentRegistry/", "/h2k.v1.MigrationService/")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    name: str
    roles: frozenset[Role]
    via: str  # "certificate", "token" or "insecure"

    def has(self, role: Role) -> bool:
        return role in self.roles

    @property
    def authenticated(self) -> bool:
        return self.via != "insecure"


ANONYMOUS_ADMIN = Principal("anonymous", frozenset(Role), "insecure")
_current: ContextVar[Principal] = ContextVar("h2k_principal", default=ANONYMOUS_ADMIN)


def current_principal() -> Principal:
    """The caller of the RPC being served (anonymous admin outside an authenticated call)."""
    return _current.get()


@dataclass(frozen=True)
class RoleBook:
    """The roles file: identity patterns to roles, token hashes to service-account names."""

    identities: Mapping[str, frozenset[Role]] = field(default_factory=dict)
    tokens: Mapping[str, str] = field(default_factory=dict)  # sha256 hex -> name

    @classmethod
    def load(cls, path: Path) -> RoleBook:
        """Read a roles file.

        Raises:
            ValueError: the file is not the documented shape (the message says where).
        """
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: must be a mapping with 'identities' and 'tokens'")
        identities: dict[str, frozenset[Role]] = {}
        for name, roles in (doc.get("identities") or {}).items():
            if not isinstance(roles, list):
                raise ValueError(f"{path}: identities.{name}: must be a list of roles")
            try:
                identities[str(name)] = frozenset(Role(str(r)) for r in roles)
            except ValueError:
                known = ", ".join(r.value for r in Role)
                raise ValueError(f"{path}: identities.{name}: roles are {known}") from None
        tokens = {}
        for name, digest in (doc.get("tokens") or {}).items():
            text = str(digest).strip().lower()
            if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
                raise ValueError(f"{path}: tokens.{name}: must be a sha256 hex digest")
            tokens[text] = str(name)
        return cls(identities=identities, tokens=tokens)

    def roles_of(self, names: Iterable[str]) -> frozenset[Role]:
        """Every role any of ``names`` is given by a matching pattern."""
        roles: set[Role] = set()
        for name in names:
            for pattern, granted in self.identities.items():
                if fnmatch.fnmatchcase(name, pattern):
                    roles |= granted
        return frozenset(roles)

    def token_name(self, token: str) -> str | None:
        """The service account a bearer token belongs to, or None."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        found = None
        for known, name in self.tokens.items():
            if hmac.compare_digest(known, digest):
                found = name
        return found


def _bearer_token(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ").strip()
    return None


def identify(book: RoleBook, context: Any) -> Principal | None:
    """The caller of ``context``: certificate first, then bearer token; None if neither."""
    sans = peer_sans(context)
    common_name = peer_common_name(context)
    if sans or common_name:
        name = common_name or sans[0]
        return Principal(name, book.roles_of([name, *sans]), "certificate")
    token = _bearer_token(context)
    if token:
        account = book.token_name(token)
        if account is not None:
            return Principal(account, book.roles_of([account]), "token")
    return None


def _roles_text(roles: Iterable[Role]) -> str:
    return ", ".join(sorted(r.value for r in roles)) or "none"


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, authorises and limits concurrent streams of every JobService and
    AgentRegistry call; ``book`` None means --insecure (anonymous admin)."""

    def __init__(self, book: RoleBook | None, max_streams_per_client: int) -> None:
        self._book = book
        self._max_streams = max_streams_per_client
        self._streams: dict[str, int] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(GUARDED_PREFIXES):
            return handler
        name = method.removeprefix("/h2k.v1.")
        around = self._around_stream if handler.response_streaming else self._around
        return guarded(name, handler, around)

    async def _authorize(self, method: str, context: Any) -> Principal:
        if self._book is None:
            return ANONYMOUS_ADMIN
        principal = identify(self._book, context)
        if principal is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "no client certificate and no valid bearer token",
            )
            raise AssertionError("abort returned")
        needed = METHOD_ROLES.get(method, _ADMIN)
        if not principal.roles & needed:
            log.info("rpc denied method=%s caller=%s", method, principal.name)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs role {' or '.join(sorted(r.value for r in needed))}; "
                f"{principal.name} has roles: {_roles_text(principal.roles)}",
            )
        return principal

    @contextlib.asynccontextmanager
    async def _around(self, method: str, context: Any) -> AsyncIterator[None]:
        principal = await self._authorize(method, context)
        token = _current.set(principal)
        try:
            yield
        finally:
            _current.reset(token)

    @contextlib.asynccontextmanager
    async def _around_stream(self, method: str, context: Any) -> AsyncIterator[None]:
        principal = await self._authorize(method, context)
        # Without authentication every caller is "anonymous": count per connection instead.
        client = principal.name if principal.authenticated else context.peer()
        if self._streams.get(client, 0) >= self._max_streams:
            log.info("stream refused method=%s client=%s", method, client)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{principal.name} already has {self._max_streams} open streams "
                "(the limit per client); close one first",
            )
        self._streams[client] = self._streams.get(client, 0) + 1
        token = _current.set(principal)
        try:
            yield
        finally:
            _current.reset(token)
            left = self._streams[client] - 1
            if left:
                self._streams[client] = left
            else:
                del self._streams[client]


def attribute_submission(spec: JobSpec, principal: Principal) -> JobSpec:
    """Record the authenticated submitter as ``audit.requested_by``.

    The client's own claim stays beside it in ``audit.tags["h2k.claimed_requested_by"]``.
    Unauthenticated (--insecure) submissions are kept as sent.

    Raises:
        InvalidArgument: the tags are full, so the claim would not fit.
    """
    if not principal.authenticated:
        return spec
    tags = {**spec.audit.tags, CLAIMED_TAG: spec.audit.requested_by}
    if len(tags) > MAX_MAP_ENTRIES:
        raise InvalidArgument(
            f"audit.tags: at most {MAX_MAP_ENTRIES - 1} entries (the control plane adds "
            f"{CLAIMED_TAG})"
        )
    audit = spec.audit.model_copy(update={"requested_by": principal.name, "tags": tags})
    return spec.model_copy(update={"audit": audit})


def check_agent_name(name: str, principal: Principal, method: str) -> None:
    """An agent registers and heartbeats only under its own identity (its certificate's
    common name, else its first SAN; a service account's name); admins and --insecure
    callers under any name.

    Raises:
        PermissionDenied: ``name`` is not the caller's identity.
    """
    if not principal.authenticated or principal.has(Role.ADMIN) or name == principal.name:
        return
    log.info("agent name refused method=%s caller=%s name=%s", method, principal.name, name)
    raise PermissionDenied(
        f"AgentRegistry/{method}: name {name!r} is not the caller's identity: "
        f"{principal.name} may register and heartbeat only as {principal.name!r} (the name "
        "in its certificate)"
    )


def check_may_cancel(spec: JobSpec, principal: Principal) -> None:
    """Submitters may cancel their own jobs only; admins any.

    Raises:
        PermissionDenied: naming the role that is missing.
    """
    if principal.has(Role.ADMIN) or spec.audit.requested_by == principal.name:
        return
    raise PermissionDenied(
        f"JobService/CancelJob of job {spec.job_id} (submitted by {spec.audit.requested_by}) "
        f"needs role admin; {principal.name} has roles: {_roles_text(principal.roles)}"
    )
