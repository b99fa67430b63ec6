"""One function per command: it asks the service and returns what to print, as data (for
`--json`) and as a table (for people). Reads go through the SDK; orders and balances, which the
SDK does not cover yet, through the generated stubs on a channel of their own.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import (
    PortfolioClient,
    PortfolioSummary,
    PortfolioTotals,
    PortfolioUpdate,
    Position,
    PositionLevel,
)
from client.channel import channel_credentials
from client.errors import from_rpc_error
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from portfolio_cli.tables import enum_name, table

#: The health names the service sets ("" is its readiness; `broker` only with a broker, `exports`
#: only with --otlp-endpoint). A copy (the CLI imports nothing from `server`): tests/portfolio_cli
#: checks it against the service's.
HEALTH_NAMES = (
    "",
    pb.DESCRIPTOR.services_by_name["PortfolioManager"].full_name,
    "journal",
    "views",
    "books",
    "reconciliation",
    "broker",
    "ack_latency",
    "query_latency",
    "capacity",
    "exports",
)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


@dataclass(frozen=True, slots=True)
class Output:
    """What a command prints: `data` as JSON, `text` for people; `healthy` False exits 3."""

    data: Any
    text: str
    healthy: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """The service and the credentials to show it, as the SDK takes them: TLS with the
    service's CA (PEM), a client certificate for mutual TLS, a bearer token; none of them is a
    plaintext channel (a service on loopback)."""

    address: str
    timeout: float
    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    token: str | None = None

    def client(self) -> PortfolioClient:
        return PortfolioClient(
            self.address, timeout=self.timeout, root_certificates=self.root_certificates,
            private_key=self.private_key, certificate_chain=self.certificate_chain,
            token=self.token,
        )  # fmt: skip

    def channel(self) -> grpc.Channel:
        """For the stubs the SDK does not wrap (orders, balances, health): same credentials."""
        credentials = channel_credentials(
            root_certificates=self.root_certificates, private_key=self.private_key,
            certificate_chain=self.certificate_chain, token=self.token,
        )  # fmt: skip
        if credentials is None:
            return grpc.insecure_channel(self.address)
        return grpc.secure_channel(self.address, credentials)


def _raw(method: grpc.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req, timeout: float) -> _Resp:
    """A stub call with the SDK's error: PortfolioError carrying the status code."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error


POSITION_HEADERS = (
    "account", "strategy", "instrument", "level", "quantity", "avg_cost", "market_price",
    "realized", "unrealized", "fees", "net_pnl", "ccy",
)  # fmt: skip


def position_row(p: Position) -> list[Any]:
    return [
        p.account_id, p.strategy_id, p.instrument_id, p.level.name, p.quantity, p.avg_cost,
        p.market_price, p.realized_pnl, p.unrealized_pnl, p.fees, p.net_pnl, p.currency,
    ]  # fmt: skip


def positions(target: Target, args: argparse.Namespace) -> Output:
    with target.client() as pm:
        rows = list(
            pm.iter_positions(
                account_id=args.account, strategy_id=args.strategy,
                instrument_id=args.instrument, level=PositionLevel[args.level.upper()],
                include_flat=args.include_flat,
            )
        )  # fmt: skip
    return Output(rows, table(POSITION_HEADERS, [position_row(p) for p in rows]))


TOTALS_HEADERS = ("scope", "realized", "unrealized", "fees", "net_pnl", "gross_exp", "net_exp")


def _totals_rows(found: PortfolioSummary, prefix: str) -> list[tuple[str, PortfolioTotals]]:
    rows: list[tuple[str, PortfolioTotals]] = []
    if found.account_totals is not None:
        rows.append((f"{prefix}account {found.account_id or '(all)'}", found.account_totals))
    rows.extend(
        (f"{prefix}strategy {s.strategy_id}", s.totals) for s in found.strategies if s.totals
    )
    rows.extend((f"{prefix}currency {c.currency}", c.totals) for c in found.by_currency)
    if found.base_totals is not None:
        rows.append((f"{prefix}base {found.base_currency}", found.base_totals))
    return rows


def summary(target: Target, args: argparse.Namespace) -> Output:
    with target.client() as pm:
        found = pm.get_portfolio_summary(args.account)
    # Paper and live both present: each kind on its own rows, never added together.
    both = found.account_totals is None and len(found.by_account_kind) > 1
    parts = [(k, f"{k.account_kind.name} ") for k in found.by_account_kind] if both else []
    rows = [r for part, prefix in parts or [(found, "")] for r in _totals_rows(part, prefix)]
    lines = [
        [name, t.realized_pnl, t.unrealized_pnl, t.fees, t.net_pnl, t.gross_exposure,
         t.net_exposure]
        for name, t in rows
    ]  # fmt: skip
    text = table(TOTALS_HEADERS, lines) + f"\n\nas of sequence {found.as_of_sequence}"
    if found.missing_fx_rates:
        text += f"\nmissing FX rates: {', '.join(found.missing_fx_rates)}"
    return Output(found, text)


ORDER_HEADERS = (
    "account", "order", "strategy", "instrument", "side", "status", "filled", "remaining",
    "avg_price", "booked", "mismatch",
)  # fmt: skip


def _order_row(o: pb.Order) -> list[Any]:
    return [
        o.account_id, o.order_key, o.strategy_id, o.instrument_id,
        enum_name(pb.Side.DESCRIPTOR, o.side), enum_name(pb.OrderStatus.DESCRIPTOR, o.status),
        o.filled_quantity, o.remaining_quantity, o.avg_fill_price, o.booked_quantity,
        o.quantity_mismatch,
    ]  # fmt: skip


def orders(target: Target, args: argparse.Namespace) -> Output:
    with target.channel() as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        if args.order_id:
            request = pb.GetOrderRequest(account_id=args.account, order_id=args.order_id)
            order = _raw(stub.GetOrder, request, target.timeout)
            history = [
                [t.sequence, enum_name(pb.OrderStatus.DESCRIPTOR, t.update.status),
                 t.update.update_id, t.update.filled_quantity, t.update.remaining_quantity,
                 t.flag]
                for t in order.history
            ]  # fmt: skip
            text = (
                table(ORDER_HEADERS, [_order_row(order)])
                + "\n\n"
                + table(("sequence", "status", "update", "filled", "remaining", "flag"), history)
            )
            return Output(order, text)
        found: list[pb.Order] = []
        token = ""
        while True:
            request_page = pb.ListOpenOrdersRequest(
                account_id=args.account, strategy_id=args.strategy, page_token=token
            )
            page = _raw(stub.ListOpenOrders, request_page, target.timeout)
            found.extend(page.orders)
            token = page.next_page_token
            if not token:
                break
    return Output(found, table(ORDER_HEADERS, [_order_row(o) for o in found]))


def balances(target: Target, args: argparse.Namespace) -> Output:
    with target.channel() as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        request = pb.GetBalancesRequest(account_id=args.account)
        found = _raw(stub.GetBalances, request, target.timeout)
    rows = [[b.currency, b.chain_id, b.cash, b.reserved, b.available] for b in found.balances]
    text = table(("currency", "chain", "cash", "reserved", "available"), rows)
    if found.reservations:
        text += f"\n\n{len(found.reservations)} reservation(s) holding cash"
    return Output(found, text)


def pnl(target: Target, args: argparse.Namespace) -> Output:
    with target.client() as pm:
        history = pm.get_pnl_history(
            args.account, args.strategy, from_date=args.from_date, to_date=args.to_date
        )
    rows = [
        [d.trading_date, d.sequence, d.late, d.realized_pnl_base, d.unrealized_pnl_base,
         d.fees_base, d.net_pnl_base, d.gross_exposure_base]
        for d in history.days
    ]  # fmt: skip
    headers = ("date", "sequence", "late", "realized", "unrealized", "fees", "net_pnl", "gross")
    text = table(headers, rows) + f"\n\nin {history.base_currency or 'base currency'}"
    return Output(history, text)


def _reconciliation_text(runs: list[Any]) -> str:
    rows = [
        [r.account_id, r.snapshot_id, r.sequence, r.reconciled_at, r.broker_positions, r.matched,
         r.discrepancies, r.clean]
        for r in runs
    ]  # fmt: skip
    headers = ("account", "snapshot", "sequence", "reconciled_at", "broker", "matched",
               "discrepancies", "clean")  # fmt: skip
    text = table(headers, rows)
    lines = [
        [line.instrument_id, line.status.name, line.broker_quantity, line.attributed_quantity,
         line.residual_quantity, line.note]
        for r in runs[:1] for line in r.lines if line.discrepancy
    ]  # fmt: skip
    if lines:
        text += "\n\n" + table(
            ("instrument", "status", "broker", "attributed", "residual", "note"), lines
        )
    return text


def reconcile(target: Target, args: argparse.Namespace) -> Output:
    with target.client() as pm:
        run = pm.reconcile(args.account)
    return Output(run, _reconciliation_text([run]))


def reconciliations(target: Target, args: argparse.Namespace) -> Output:
    with target.client() as pm:
        page = pm.list_reconciliations(args.account, page_size=args.limit)
    runs = list(page.reconciliations)
    return Output(runs, _reconciliation_text(runs))


def update_line(update: PortfolioUpdate) -> str:
    """One update on one line, for a person watching the tail."""
    words = [str(update.sequence), update.kind.name, update.event_id]
    if update.position is not None:
        p = update.position
        words += [
            p.account_id, p.strategy_id or "-", p.instrument_id, p.level.name,
            f"qty={p.quantity}", f"avg={p.avg_cost}", f"net={p.net_pnl}",
        ]  # fmt: skip
    if update.order_status is not None:
        s = update.order_status
        words += [s.account_id, s.instrument_id, s.status.name, f"filled={s.filled_quantity}"]
    return " ".join(words)


def subscribe(target: Target, args: argparse.Namespace) -> Iterator[PortfolioUpdate]:
    """Updates until `--count` of them (or forever); the caller prints and stops."""
    with target.client() as pm:
        stream = pm.subscribe(
            account_id=args.account, strategy_id=args.strategy, instrument_id=args.instrument,
            from_sequence=args.from_sequence, reconnect=not args.no_reconnect,
        )  # fmt: skip
        try:
            for count, update in enumerate(stream, start=1):
                yield update
                if args.count and count >= args.count:
                    return
        finally:
            stream.close()


def health(target: Target, args: argparse.Namespace) -> Output:
    """Each name's status; a name the service does not know (no broker) is left out unless
    asked for by --name, where it counts as not serving."""
    names = args.name or list(HEALTH_NAMES)
    found: dict[str, str] = {}
    with target.channel() as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in names:
            try:
                # The typeshed stub declares no methods on HealthStub.
                answer = stub.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(service=name), timeout=target.timeout
                )
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    if args.name:
                        found[name] = "UNKNOWN"
                    continue
                raise from_rpc_error(error) from error
            found[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    text = table(("name", "status"), [[name or "(overall)", s] for name, s in found.items()])
    return Output(found, text, healthy=all(s == "SERVING" for s in found.values()))


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
