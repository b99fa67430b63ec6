"""Authentication and authorization of every call: who is calling (a bearer token, or the subject
CN of a verified client certificate) and whether their role and accounts allow the call.

Checked before the servicer sees the call: UNAUTHENTICATED when no credential or an unknown one
is presented, PERMISSION_DENIED naming the role or the account missing. A call that names no
single account (a summary across accounts, ListAccounts, a trace) needs every account ("*").

Ingest is checked per event, not per stream: an event of an account the relay may not book is
REJECTED (REJECT_CODE_FAILED_PRECONDITION, the reason naming the principal and the account) and
the rest of its batch goes through, as with any other bad event.

Health is open (probes carry no credentials); reflection needs any known principal.

The principal of every write is named for the journal (the audit trail, server.domain.booker):
the caller of a write RPC books as its principal's name and role; with no auth configured the
Authorizer checks nothing and names the caller `anonymous@<client address>` (role "").
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import grpc
from google.protobuf.message import Message

from server.api.handlers import HandlerRewrite, behaviour_of, rebuilt
from server.api.malformed import _client_of as client_of
from server.application.writes import booking_as
from server.auth_config import Principal, Principals
from server.domain.booker import Booker, booker
from server.log_limit import LogLimiter

if TYPE_CHECKING:
    from server.api.handlers import Handler

    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

SERVICE = "/portfolio.v1.PortfolioManager/"
OPEN_SERVICES = ("/grpc.health.v1.Health/",)

READ = frozenset({"reader", "operator"})
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
LOG_INTERVAL_SECONDS = 10.0
MAX_BOOKERS = 10_000

log = logging.getLogger("portfolio.api")


@dataclass(frozen=True, slots=True)
class Rule:
    roles: frozenset[str]
    # "account": the request's account (empty: every account); "all": needs "*"; "none".
    scope: str


def _rule(roles: frozenset[str] | str, scope: str = "account") -> Rule:
    return Rule(frozenset({roles}) if isinstance(roles, str) else roles, scope)


RULES: dict[str, Rule] = {
    "Ingest": _rule("relay", "none"),  # per event: see booking_refusal
    "StreamMarks": _rule("marks", "none"),
    "DefineAccount": _rule("operator"),
    # The relay defines a derivative from its broker contract before its first fill (else it
    # would be booked at multiplier 1), and reads whether the service holds one already.
    "DefineInstrument": _rule(frozenset({"operator", "relay"}), "none"),
    "ReserveCash": _rule("operator"),
    "ReleaseReservation": _rule("operator"),
    "Reconcile": _rule("operator"),
    "GetPosition": _rule(READ),
    "GetStrategyPortfolio": _rule(READ),
    "GetPortfolioSummary": _rule(READ),
    # The marks feed reads which instruments the book holds (account level, every account).
    "ListPositions": _rule(READ | {"marks"}),
    "GetTracePosition": _rule(READ, "all"),
    "Query": _rule(READ),  # and the rule of the query it carries
    "SubscribeUpdates": _rule(READ),
    "GetOrder": _rule(READ),
    "ListOpenOrders": _rule(READ),
    "GetInstrument": _rule(READ | {"relay"}, "none"),
    "ListInstruments": _rule(READ, "none"),
    "ListAccounts": _rule(READ, "all"),
    "GetBalances": _rule(READ),
    "GetConsolidatedPosition": _rule(READ),
    "GetReconciliation": _rule(READ),
    "ListReconciliations": _rule(READ),
    "GetPnlHistory": _rule(READ),
    "GetPerformance": _rule(READ),
    "GetRiskMetrics": _rule(READ),
}
"""Each RPC of the PortfolioManager service -> who may call it. An RPC not here is refused."""

WRITES = frozenset(
    {"Ingest", "StreamMarks", "DefineAccount", "DefineInstrument", "ReserveCash",
     "ReleaseReservation", "Reconcile"}
)  # fmt: skip
"""The RPCs that journal events, booked in their caller's name (marks are not journaled, but
the FX fixings a marks stream carries are)."""

_booking: ContextVar[Principal | None] = ContextVar("booking_principal", default=None)


def booking_refusal(account_id: str) -> str:
    """Why the caller of the current Ingest may not book for `account_id` ("" if it may, or if
    no principals are configured)."""
    principal = _booking.get()
    if principal is None or principal.may_use(account_id):
        return ""
    return (
        f"account_id: principal {principal.name!r} (role {principal.role}) may not book for "
        f"account {account_id!r} (its accounts: {principal.describe_accounts()})"
    )


def account_of(request: Message) -> str:
    """The one account a request is about ("" if it names none: all of them)."""
    fields = request.DESCRIPTOR.fields_by_name
    if "account_id" in fields:
        return str(request.account_id)  # type: ignore[attr-defined]
    if "account" in fields:  # DefineAccount
        return str(request.account.account_id)  # type: ignore[attr-defined]
    return ""


def carried(request: Message) -> tuple[Rule, Message] | None:
    """The rule and request of the query a `Query` carries (GetPosition for get_position)."""
    chosen = request.WhichOneof("query") if "query" in request.DESCRIPTOR.oneofs_by_name else None
    if not chosen:
        return None
    rule = RULES.get("".join(part.title() for part in chosen.split("_")))
    return (rule, getattr(request, chosen)) if rule is not None else None


class Authorizer(HandlerRewrite):
    """Installed first on the server: a call is refused before anything else reads it.
    Without principals (no auth configured) it only names the callers of writes."""

    def __init__(
        self, principals: Principals | None, log_interval: float = LOG_INTERVAL_SECONDS
    ) -> None:
        super().__init__()
        self.principals = principals
        self.limiter = LogLimiter(log, log_interval)
        self._bookers: dict[tuple[str, str], Booker] = {}  # one per principal or client

    def rewrite(self, method: str, handler: Handler) -> Handler:
        if method.startswith(OPEN_SERVICES):
            return handler
        behaviour = behaviour_of(handler)
        if behaviour is None:
            return handler
        name = method.removeprefix(SERVICE) if method.startswith(SERVICE) else ""
        rule = RULES.get(name) if name else None
        if self.principals is None:
            if name not in WRITES:
                return handler  # reads pay nothing
            check = self._name_anonymous
        else:
            check = self._checker(method, name, rule)
        wrapped: Callable[..., Any]
        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
                await check(request, context)
                async for response in behaviour(request, context):
                    yield response

            wrapped = streaming
        else:

            async def unary(request: Any, context: Context) -> Any:
                await check(request, context)
                return await behaviour(request, context)

            wrapped = unary
        return rebuilt(handler, wrapped, handler.request_deserializer, handler.response_serializer)

    def _checker(self, method: str, name: str, rule: Rule | None) -> Callable[..., Any]:
        async def check(request: Any, context: Context) -> None:
            principal = await self.authenticate(context, method)
            if not name:  # another service (reflection): any known principal
                return
            if rule is None:
                await self.refuse(context, DENIED, method, f"{method} is not open to any role")
            if principal.role not in rule.roles:
                needed = " or ".join(sorted(rule.roles))
                await self.refuse(
                    context,
                    DENIED,
                    method,
                    f"principal {principal.name!r} has role {principal.role}; {name} needs "
                    f"role {needed}",
                )
            if name == "Ingest":
                _booking.set(principal)  # this call's task; its events are checked one by one
            if name in WRITES:
                booking_as(self._booker(principal.name, principal.role))
            if not isinstance(request, Message):
                return  # a stream, or a malformed request (answered by the guard)
            scope = rule.scope
            if name == "Query":
                inner = carried(request)
                if inner is None:
                    return  # no query set: the servicer says so
                scope, request = inner[0].scope, inner[1]
            if scope == "none":
                return
            account = "" if scope == "all" else account_of(request)
            if principal.accounts is None or (account and account in principal.accounts):
                return
            what = f"account {account!r}" if account else "every account (no account_id given)"
            await self.refuse(
                context,
                DENIED,
                method,
                f"principal {principal.name!r} (role {principal.role}) may not use {what}; its "
                f"accounts: {principal.describe_accounts()}",
            )

        return check

    async def _name_anonymous(self, request: Any, context: Context) -> None:
        client = client_of(context.peer())  # ipv4:127.0.0.1 (no port: one client)
        kind, _, host = client.partition(":")
        booking_as(self._booker(f"anonymous@{host if kind in ('ipv4', 'ipv6') else client}", ""))

    def _booker(self, name: str, role: str) -> Booker:
        """The same Booker for every call of a principal (or anonymous client)."""
        found = self._bookers.get((name, role))
        if found is None:
            if len(self._bookers) >= MAX_BOOKERS:  # anonymous clients come and go
                self._bookers.clear()
            found = self._bookers[name, role] = booker(name, role)
        return found

    async def authenticate(self, context: Context, method: str) -> Principal:
        """The caller, by bearer token if one is sent, else by client certificate."""
        principals = self.principals
        assert principals is not None  # checked only when principals are configured
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, token = text.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    await self.refuse(
                        context, UNAUTHENTICATED, method, "authorization must be 'Bearer <token>'"
                    )
                token = token.strip()
                break
        if token:
            principal = principals.with_token(token)
            if principal is None:
                await self.refuse(
                    context, UNAUTHENTICATED, method, "the bearer token is not a principal's"
                )
            return principal
        names = list((context.auth_context() or {}).get("x509_common_name", []))
        if names:
            common_name = names[0].decode()
            principal = principals.with_certificate(common_name)
            if principal is None:
                await self.refuse(
                    context,
                    UNAUTHENTICATED,
                    method,
                    f"client certificate CN={common_name!r} is not a principal's",
                )
            return principal
        return await self.refuse(
            context,
            UNAUTHENTICATED,
            method,
            "no credentials: send 'authorization: Bearer <token>' or a client certificate",
        )

    async def refuse(
        self, context: Context, code: grpc.StatusCode, method: str, why: str
    ) -> NoReturn:
        """Ends the call with `code`; logged at most once per client per interval (a client
        retrying with a revoked token must not fill the log)."""
        peer = context.peer()
        self.limiter.log(
            logging.WARNING, client_of(peer), "%s %s from %s: %s", code.name, method, peer, why
        )
        await context.abort(code, why)
        raise AssertionError("abort returned")  # pragma: no cover
