# Who is calling: turns a request's credentials into a Caller, in one of three modes.
# Invariants: a Caller is built only here and never changes; roles are lower-case; the mode
# and the token table are fixed when the Authenticator is built (nothing reads the
# environment or a file per request); a request that cannot be authenticated raises
# HTTPError(401) with WebOb's default explanation, as Glance's context middleware does.
#
# Modes (ServerConfig.auth):
# - "noauth": every request is admin with no project (Glance's unauthenticated context).
# - "trusted-headers": keystonemiddleware's headers from a token-validating proxy in front:
#   X-Identity-Status must be "Confirmed"; X-Roles (comma list), X-Project-Id (or the
#   legacy X-Tenant-Id), X-User-Id.
# - "tokens": a JSON file `{"<token>": {"project_id": "...", "user_id": "...",
#   "roles": ["member", "reader"]}, ...}`; the client sends X-Auth-Token. As Keystone
#   expands implied roles into a token, "admin" implies "member" and "member" implies
#   "reader" here.
# python-glanceclient percent-encodes every header value it sends (X-Roles "member,reader"
# arrives as "member%2Creader"); identity header values and tokens are therefore read
# percent-decoded (ids, role names and tokens never legitimately contain "%").
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from tessera.config import ConfigError
from tessera.http.errors import HTTPError
from tessera.http.message import Request

MODES = ("noauth", "trusted-headers", "tokens")
_IMPLIED = {"admin": ("member", "reader"), "member": ("reader",)}


@dataclass(frozen=True)
class Caller:
    project_id: str | None
    user_id: str | None
    roles: frozenset[str]
    is_admin: bool

    def has_role(self, role: str) -> bool:
        return role in self.roles


NOAUTH_CALLER = Caller(project_id=None, user_id=None, roles=frozenset(), is_admin=True)


def make_caller(project_id: str | None, user_id: str | None, roles: Iterable[str]) -> Caller:
    role_set = frozenset(r.strip().lower() for r in roles if r and r.strip())
    return Caller(project_id=project_id or None, user_id=user_id or None, roles=role_set,
                  is_admin="admin" in role_set)


class AuthConfigError(ConfigError):
    """The auth mode or the tokens file is unusable (raised at startup, never per request;
    the CLI reports configuration errors without a traceback)."""


def _unauthorized() -> HTTPError:
    return HTTPError(401)


def load_tokens(path: str | Path) -> dict[str, Caller]:
    """Read the tokens file into token -> Caller (implied roles expanded)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AuthConfigError(f"cannot read tokens file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise AuthConfigError(f"tokens file {path}: expected a JSON object")
    table: dict[str, Caller] = {}
    for token, entry in raw.items():
        if not token or not isinstance(entry, Mapping):
            raise AuthConfigError(f"tokens file {path}: bad entry for {token!r}")
        roles = entry.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthConfigError(f"tokens file {path}: roles of {token!r} must be strings")
        expanded = set(r.strip().lower() for r in roles)
        for role in list(expanded):
            expanded.update(_IMPLIED.get(role, ()))
        project, user = entry.get("project_id"), entry.get("user_id")
        if not all(v is None or isinstance(v, str) for v in (project, user)):
            raise AuthConfigError(f"tokens file {path}: ids of {token!r} must be strings")
        table[token] = make_caller(project, user, expanded)
    return table


class Authenticator:
    """`authenticate(request) -> Caller` for the configured mode."""

    def __init__(self, mode: str, tokens: Mapping[str, Caller] | None = None) -> None:
        if mode not in MODES:
            raise AuthConfigError(f"unknown auth mode {mode!r} (one of {', '.join(MODES)})")
        if mode == "tokens" and tokens is None:
            raise AuthConfigError("auth mode 'tokens' needs a tokens file")
        self.mode = mode
        self._tokens = dict(tokens or {})

    @classmethod
    def from_config(cls, mode: str, tokens_file: str | None) -> "Authenticator":
        tokens = load_tokens(tokens_file) if mode == "tokens" and tokens_file else None
        return cls(mode, tokens)

    def authenticate(self, request: Request) -> Caller:
        if self.mode == "noauth":
            return NOAUTH_CALLER
        headers = request.headers

        def header(name: str) -> str:
            return unquote(headers.get(name) or "")

        if self.mode == "trusted-headers":
            if header("x-identity-status") != "Confirmed":
                raise _unauthorized()
            project = header("x-project-id") or header("x-tenant-id")
            return make_caller(project, header("x-user-id"), header("x-roles").split(","))
        token = header("x-auth-token")
        caller = self._tokens.get(token) if token else None
        if caller is None:
            raise _unauthorized()
        return caller
