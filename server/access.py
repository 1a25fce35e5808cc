"""Who a call comes from and whether it may go on: its API key, the key's scopes, its rate.

The key travels as `authorization: Bearer <key>` metadata. Health checking and reflection are
open: probes must work without secrets, and the contract reflection serves is public (it ships
in the client package). Without authentication (loopback by default, or `--auth none`) every
call is allowed, and a caller is its peer address for limits.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from server.service.api_keys import INVALID_KEY, Caller, KeyRing, Scope
from server.service.errors import Unauthenticated
from server.service.rate_limits import RateLimiter

if TYPE_CHECKING:
    import grpc

    Context = grpc.aio.ServicerContext[Any, Any]

_CALLER: ContextVar[Caller | None] = ContextVar("caller", default=None)
_LOCAL = Caller("local", None)
"""The caller of handlers called directly, past the boundary (servicer tests)."""
_CHARGED: ContextVar[Scope | None] = ContextVar("charged_scope", default=None)
"""The rate-limit bucket of the current call: its method's scope (admin keys too)."""


def current_caller() -> Caller:
    """The caller of the call being handled (set by the call boundary before the handler runs)."""
    return _CALLER.get() or _LOCAL


@dataclass(frozen=True, slots=True)
class MethodAccess:
    """What a method asks of its caller."""

    open: bool
    """Needs no key (health checking, reflection)."""
    scope: Scope | None
    """The scope a key needs; None on a method that is not open closes it to every key."""


OPEN = MethodAccess(open=True, scope=None)


class Access:
    """Authenticates calls against this server's key ring and charges their rate limits."""

    def __init__(self, key_ring: KeyRing | None, rate_limiter: RateLimiter) -> None:
        """`key_ring` None: no authentication."""
        self._key_ring = key_ring
        self._rate_limiter = rate_limiter

    def identify(self, context: Context, caller_address: str, method: MethodAccess) -> Caller:
        """The call's caller, who may call the method; raises Unauthenticated or
        PermissionDenied. Must run inside the call (it reads the context)."""
        if self._key_ring is None or method.open:
            caller = Caller(caller_address, None)
        else:
            caller = self._key_ring.authenticate(
                bearer_token(context.invocation_metadata()), partial(client_identities, context)
            )
            caller.require(method.scope)
        _CALLER.set(caller)
        _CHARGED.set(None if method.open else method.scope)
        return caller

    def charge(self, items: int) -> None:
        """Charge the current call's caller for `items`, from the bucket of the method's scope;
        raises ResourceExhausted over the rate limit."""
        self._rate_limiter.take(current_caller().name, _CHARGED.get(), items)

    def wait_seconds(self, items: int) -> float:
        """Like charge(), but say how long to wait instead of raising (for streams that slow
        down rather than fail)."""
        return self._rate_limiter.wait_seconds(current_caller().name, _CHARGED.get(), items)


def bearer_token(metadata: Any) -> str | None:
    """The token of the `authorization: Bearer <token>` metadata, None if there is none;
    raises Unauthenticated for an authorization that is not a bearer token."""
    for key, value in metadata or ():
        if key == "authorization":
            token = value[7:] if value.startswith("Bearer ") else ""
            if token and " " not in token:
                return str(token)  # the common spelling, without the general parsing below
            scheme, _, token = str(value).strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    INVALID_KEY, "the authorization metadata must read `Bearer <key>`"
                )
            return token.strip()
    return None


def client_identities(context: Context) -> frozenset[str]:
    """The TLS client certificate's names: its common name and subject alternative names."""
    auth = context.auth_context()
    values = [*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ())]
    return frozenset(value.decode() if isinstance(value, bytes) else str(value) for value in values)
