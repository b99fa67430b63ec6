/**
 * Every RPC of portfolio.v1 and every `Query` branch through the SDK, against the real service
 * (tests/sdk/test_typescript.py starts it with the paper broker, reconciling on demand only).
 * The last test reads the list of RPCs and query branches from the generated descriptors and
 * fails if any one was not called here: a new RPC without a TypeScript test fails CI.
 *
 * The book (tests/client/test_whole_api.py's, with a market mark): paper account P (base USD,
 * 100,000 USD paid in), the future ESM4 (USD, multiplier 50) and the stock SAP (EUR); 5,000
 * EUR deposited; order 101 submitted; S1 buys 2 ESM4 at 5000.25 (4.50 USD commission), S2
 * sells 1 at 5001 (both legs of one trace, at CME); S1 buys 10 SAP at 180, marked at 181
 * later; one EUR is 1.1 USD. Live account L holds 3 ESM4 (for reconciliation). Account and
 * trace ids are unique to the run: the other test files share the service.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { isMessage } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Interceptor } from "@connectrpc/connect";

import {
  AccountKind,
  AssetClass,
  Code,
  EventResult,
  MarkSource,
  OptionRight,
  OrderStatus,
  PortfolioClient,
  PortfolioError,
  PortfolioManager,
  PortfolioQuerySchema,
  PortfolioResponseSchema,
  PositionLevel,
  ReconciliationStatus,
  ReservationStatus,
  Side,
  UpdateKind,
} from "../src/index.js";
import type { ExecutionEvent, MarkAck, MarkBatchSchema, PortfolioQueryInit, PortfolioUpdate } from "../src/index.js";
import { target, unique } from "./support.js";

const T0 = new Date("2024-03-01T14:30:00Z");
const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000);

const P = unique("P");
const L = unique("L");
const TRACE = unique("TR");
const SEQUENCE = new Map<string, bigint>();

/** The RPCs (by proto name) and query branches this file called. */
const calledRpcs = new Set<string>();
const calledQueries = new Set<string>();

const recorder: Interceptor = (next) => async (request) => {
  calledRpcs.add(request.method.name);
  if (!request.stream && isMessage(request.message, PortfolioQuerySchema) && request.message.query.case !== undefined) {
    calledQueries.add(request.message.query.case);
  }
  return next(request);
};

let pm: PortfolioClient;

async function code(call: Promise<unknown>): Promise<Code> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof PortfolioError, String(error));
    return error.code;
  }
  assert.fail("the call succeeded");
}

/** Answers compared without the point they were read at: the other files book meanwhile. */
function withoutReadPoint(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutReadPoint);
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return value;
  return Object.fromEntries(
    Object.entries(value).map(([key, field]) => [key, key === "asOfSequence" ? 0n : withoutReadPoint(field)]),
  );
}

/** One batch of marks through the StreamMarks stream, and its ack. */
async function sendMarks(batch: MessageInitShape<typeof MarkBatchSchema>): Promise<MarkAck> {
  const acks: MarkAck[] = [];
  const batches = async function* () {
    yield batch;
  };
  for await (const ack of pm.raw.streamMarks(batches())) acks.push(ack);
  assert.equal(acks.length, 1);
  return acks[0]!;
}

before(async () => {
  pm = new PortfolioClient({ target: target(), interceptors: [recorder] });
  const paper = await pm.raw.defineAccount({
    account: { accountId: P, kind: AccountKind.PAPER, baseCurrency: "USD", initialCash: "100000" },
  });
  assert.deepEqual([paper.kind, paper.defined, paper.initialCash], [AccountKind.PAPER, true, "100000"]);
  await pm.raw.defineAccount({ account: { accountId: L, kind: AccountKind.LIVE, baseCurrency: "USD" } });
  const future = await pm.raw.defineInstrument({
    instrument: {
      instrumentId: "ESM4", currency: "USD", symbol: "ES", assetClass: AssetClass.FUTURE,
      multiplier: "50", underlying: "ES", expiry: "2024-06",
    },
  });
  assert.deepEqual([future.multiplier, future.provisional], ["50", false]);
  await pm.raw.defineInstrument({ instrument: { instrumentId: "SAP", currency: "EUR", assetClass: AssetClass.EQUITY } });

  const events: ExecutionEvent[] = [
    { kind: "transfer", transferId: `${P}-T1`, accountId: P, currency: "EUR", amount: "5000", timestamp: T0 },
    {
      kind: "status", updateId: `${P}-U1`, accountId: P, strategyId: "S1", instrumentId: "ESM4", orderId: "101",
      status: OrderStatus.SUBMITTED, remainingQuantity: "3", side: "BUY", timestamp: T0,
    },
    {
      kind: "fill", fillId: `${P}-F1`, accountId: P, strategyId: "S1", instrumentId: "ESM4", side: "BUY", quantity: "2",
      price: "5000.25", commission: "4.5", commissionCurrency: "USD", timestamp: at(1), orderId: "101", traceId: TRACE, venue: "CME",
    },
    {
      kind: "fill", fillId: `${P}-F2`, accountId: P, strategyId: "S2", instrumentId: "ESM4", side: "SELL", quantity: "1",
      price: "5001", timestamp: at(2), traceId: TRACE, venue: "CME",
    },
    { kind: "fill", fillId: `${P}-F3`, accountId: P, strategyId: "S1", instrumentId: "SAP", side: "BUY", quantity: "10", price: "180", timestamp: at(3) },
    { kind: "fill", fillId: `${L}-F1`, accountId: L, strategyId: "S1", instrumentId: "ESM4", side: "BUY", quantity: "3", price: "5000", timestamp: at(1) },
  ];
  const acks = await pm.ingest(events);
  assert.ok(acks.every((ack) => ack.result === EventResult.ACCEPTED), JSON.stringify(acks.map((a) => a.reason)));
  for (const ack of acks) SEQUENCE.set(ack.eventId, ack.sequence);

  const marked = await sendMarks({
    batchId: "marks-1",
    marks: [{ instrumentId: "SAP", mark: "181", timestamp: timestampFromDate(at(4)) }],
    fxRates: [{ baseCurrency: "EUR", quoteCurrency: "USD", rate: "1.1", timestamp: timestampFromDate(T0) }],
  });
  assert.deepEqual(
    [marked.batchId, marked.marksApplied, marked.fxRatesApplied, marked.marksStale, marked.batchRejectedReason],
    ["marks-1", 1, 1, 0, ""],
  );
});

after(async () => {
  await pm.close();
});

// ---------------------------------------------------------------------------------------------
// Marks, positions and the book

test("StreamMarks: a mark older than the one held is stale and changes nothing", async () => {
  const stale = await sendMarks({
    batchId: "marks-stale",
    marks: [{ instrumentId: "SAP", mark: "170", timestamp: timestampFromDate(at(3.5)) }],
  });
  assert.deepEqual([stale.batchId, stale.marksApplied, stale.marksStale], ["marks-stale", 0, 1]);
  assert.equal((await pm.getPosition({ accountId: P, strategyId: "S1", instrumentId: "SAP" })).marketPrice, "181");
});

test("GetPosition: a marked row in its currency and the base currency; the account's book row", async () => {
  const row = await pm.getPosition({ accountId: P, strategyId: "S1", instrumentId: "SAP" });
  assert.deepEqual(
    [row.quantity, row.avgCost, row.marketPrice, row.marketValue, row.unrealizedPnl, row.currency],
    ["10", "180", "181", "1810", "10", "EUR"],
  );
  assert.deepEqual([row.baseCurrency, row.fxRate, row.marketValueBase, row.unrealizedPnlBase], ["USD", "1.1", "1991", "11"]);
  assert.equal(row.markSource, MarkSource.MARKET);
  assert.equal(row.markedAt?.seconds, BigInt(at(4).getTime() / 1000));
  const book = await pm.getPosition({ accountId: P, instrumentId: "ESM4" });
  assert.equal(book.level, PositionLevel.ACCOUNT);
  assert.deepEqual(
    [book.quantity, book.realizedPnl, book.unrealizedPnl, book.fees, book.netPnl, book.markSource],
    ["1", "37.5", "37.5", "4.5", "70.5", MarkSource.LAST_FILL],
  );
});

test("GetStrategyPortfolio keeps currencies apart and totals in the base currency", async () => {
  const portfolio = await pm.raw.getStrategyPortfolio({ strategyId: "S1", accountId: P });
  assert.deepEqual(portfolio.positions.map((p) => p.instrumentId).sort(), ["ESM4", "SAP"]);
  assert.equal(portfolio.totals, undefined); // two currencies: no single-currency total
  const byCurrency = new Map(portfolio.byCurrency.map((c) => [c.currency, c]));
  assert.equal(byCurrency.get("EUR")?.fxRate, "1.1");
  assert.equal(byCurrency.get("USD")?.totals?.unrealizedPnl, "75");
  assert.deepEqual([portfolio.baseCurrency, portfolio.accountKind], ["USD", AccountKind.PAPER]);
  // 75 - 4.50 on ESM4, 10 EUR = 11 USD on SAP; 2 x 5001 x 50 long, and 1991.
  assert.deepEqual([portfolio.baseTotals?.netPnl, portfolio.baseTotals?.longExposure], ["81.5", "502091"]);
});

test("GetPortfolioSummary has each strategy", async () => {
  const summary = await pm.raw.getPortfolioSummary({ accountId: P });
  assert.deepEqual([summary.accountKind, summary.baseCurrency], [AccountKind.PAPER, "USD"]);
  const s2 = summary.strategies.find((s) => s.strategyId === "S2");
  assert.equal(s2?.totals?.netExposure, "-250050");
  assert.equal(summary.baseTotals?.grossExposure, "252041"); // 250050 + 1991
});

test("ListPositions pages the account rows, and reads as of a past sequence", async () => {
  const first = await pm.raw.listPositions({ accountId: P, level: PositionLevel.ACCOUNT, pageSize: 1 });
  assert.deepEqual(first.positions.map((p) => p.instrumentId), ["ESM4"]);
  const second = await pm.raw.listPositions({ accountId: P, level: PositionLevel.ACCOUNT, pageToken: first.nextPageToken });
  assert.deepEqual(second.positions.map((p) => [p.instrumentId, p.quantity]), [["SAP", "10"]]);
  assert.equal(second.nextPageToken, "");
  const past = await pm.raw.listPositions({
    accountId: P, level: PositionLevel.ACCOUNT, asOf: { point: { case: "sequence", value: SEQUENCE.get(`${P}-F1`)! } },
  });
  assert.deepEqual(past.positions.map((p) => [p.instrumentId, p.quantity]), [["ESM4", "2"]]);
  assert.equal(past.asOfSequence, SEQUENCE.get(`${P}-F1`));
});

test("GetTracePosition nets the legs", async () => {
  const trace = await pm.raw.getTracePosition({ traceId: TRACE });
  assert.deepEqual(trace.legs.map((l) => [l.fillId, l.side, l.quantity]), [[`${P}-F1`, Side.BUY, "2"], [`${P}-F2`, Side.SELL, "1"]]);
  assert.deepEqual(trace.net.map((n) => [n.instrumentId, n.quantity, n.cashFlow]), [["ESM4", "1", "-249975"]]);
});

test("GetConsolidatedPosition sets the rows side by side", async () => {
  const consolidated = await pm.raw.getConsolidatedPosition({ accountId: P, instrumentId: "ESM4" });
  assert.equal(consolidated.accountPosition?.quantity, "1");
  assert.deepEqual(consolidated.strategyPositions.map((p) => [p.strategyId, p.quantity]).sort(), [["S1", "2"], ["S2", "-1"]]);
  assert.deepEqual([consolidated.attributedQuantity, consolidated.unattributedQuantity], ["1", "0"]);
  assert.equal(consolidated.brokerQuantity, ""); // never reconciled
});

// ---------------------------------------------------------------------------------------------
// Orders and cash

test("GetOrder has its history; ListOpenOrders lists it", async () => {
  const order = await pm.raw.getOrder({ accountId: P, orderId: "101" });
  assert.deepEqual([order.orderKey, order.status, order.isOpen], ["id:101", OrderStatus.SUBMITTED, true]);
  assert.deepEqual([order.remainingQuantity, order.bookedQuantity, order.bookedFills, order.avgFillPrice], ["3", "2", 1, ""]);
  assert.deepEqual(order.history.map((t) => t.update?.updateId), [`${P}-U1`]);
  const open = await pm.raw.listOpenOrders({ accountId: P });
  assert.deepEqual(open.orders.map((o) => o.orderId), ["101"]);
  assert.equal(open.nextPageToken, "");
});

test("GetBalances after a transfer and fills", async () => {
  const balances = await pm.raw.getBalances({ accountId: P });
  const cash = new Map(balances.balances.map((b) => [b.currency, b]));
  assert.deepEqual([cash.get("EUR")?.cash, cash.get("EUR")?.available], ["3200", "3200"]); // 5000 - 10 x 180
  assert.equal(cash.get("USD")?.cash, "-149979.5"); // 100,000 - 2 x 5000.25 x 50 - 4.50 + 5001 x 50
  assert.deepEqual([balances.accountKind, balances.baseCurrency], [AccountKind.PAPER, "USD"]);
});

test("ReserveCash sets cash aside (more than is available is refused); ReleaseReservation gives it back", async () => {
  const account = unique("R");
  await pm.raw.defineAccount({ account: { accountId: account, kind: AccountKind.PAPER, baseCurrency: "USD", initialCash: "1000" } });
  const reservation = await pm.raw.reserveCash({ reservationId: `${account}-R1`, accountId: account, currency: "USD", amount: "600.25", orderId: "201" });
  assert.deepEqual([reservation.remaining, reservation.status, reservation.orderKey], ["600.25", ReservationStatus.ACTIVE, "id:201"]);
  const usd = async () => (await pm.raw.getBalances({ accountId: account })).balances[0]!;
  assert.deepEqual(
    [(await usd()).cash, (await usd()).reserved, (await usd()).available],
    ["1000", "600.25", "399.75"],
  );
  assert.equal(await code(pm.raw.reserveCash({ reservationId: `${account}-R2`, accountId: account, currency: "USD", amount: "400" })), Code.FailedPrecondition);
  assert.equal((await usd()).reserved, "600.25");

  const part = await pm.raw.releaseReservation({ releaseId: `${account}-L1`, accountId: account, reservationId: `${account}-R1`, amount: "200" });
  assert.deepEqual([part.remaining, part.released, part.status], ["400.25", "200", ReservationStatus.ACTIVE]);
  const rest = await pm.raw.releaseReservation({ releaseId: `${account}-L2`, accountId: account, reservationId: `${account}-R1` });
  assert.deepEqual([rest.remaining, rest.released, rest.status], ["0", "600.25", ReservationStatus.RELEASED]);
  assert.deepEqual([(await usd()).reserved, (await usd()).available], ["0", "1000"]);
});

// ---------------------------------------------------------------------------------------------
// Reference data

test("DefineInstrument, GetInstrument and ListInstruments", async () => {
  const option = {
    instrumentId: unique("AAPL-C"), currency: "USD", symbol: "AAPL", assetClass: AssetClass.OPTION, multiplier: "100",
    underlying: "AAPL", strike: "190.5", expiry: "2024-06-21", right: OptionRight.CALL, tickSize: "0.01",
  };
  const defined = await pm.raw.defineInstrument({ instrument: option });
  assert.deepEqual(
    [defined.instrumentId, defined.strike, defined.right, defined.tickSize, defined.provisional],
    [option.instrumentId, "190.5", OptionRight.CALL, "0.01", false],
  );
  assert.deepEqual(await pm.raw.defineInstrument({ instrument: option }), defined); // the same again: no change
  assert.deepEqual(await pm.raw.getInstrument({ instrumentId: option.instrumentId }), defined);
  const listed = (await pm.raw.listInstruments({ pageSize: 1000 })).instruments;
  assert.ok(listed.some((i) => i.instrumentId === option.instrumentId));
  assert.ok(["ESM4", "SAP"].every((id) => listed.some((i) => i.instrumentId === id)));
  assert.equal(await code(pm.raw.getInstrument({ instrumentId: unique("nothing") })), Code.NotFound);
});

test("DefineAccount and ListAccounts", async () => {
  const accountId = unique("E");
  const defined = await pm.raw.defineAccount({ account: { accountId, kind: AccountKind.PAPER, baseCurrency: "EUR", initialCash: "2500.50" } });
  // Decimal strings come back normalised: 2500.50 is "2500.5".
  assert.deepEqual([defined.baseCurrency, defined.initialCash, defined.defined], ["EUR", "2500.5", true]);
  const accounts = (await pm.raw.listAccounts({})).accounts;
  assert.deepEqual(accounts.find((a) => a.accountId === accountId), defined);
  assert.ok(accounts.some((a) => a.accountId === P && a.kind === AccountKind.PAPER));
  const [eur] = (await pm.raw.getBalances({ accountId })).balances;
  assert.deepEqual([eur?.currency, eur?.cash], ["EUR", "2500.5"]);
});

// ---------------------------------------------------------------------------------------------
// Reconciliation (the paper broker reports the service's own account-level book)

test("Reconcile: a paper account is FAILED_PRECONDITION; a live one gets a clean report, kept and listed", async () => {
  assert.equal(await code(pm.raw.reconcile({ accountId: P })), Code.FailedPrecondition);
  assert.equal(await code(pm.raw.getReconciliation({ accountId: L })), Code.NotFound);
  assert.deepEqual((await pm.raw.listReconciliations({ accountId: L })).reconciliations, []);

  const run = await pm.raw.reconcile({ accountId: L });
  assert.deepEqual([run.accountId, run.clean, run.brokerPositions, run.matched, run.discrepancies], [L, true, 1, 1, 0]);
  assert.deepEqual(run.lines.map((l) => [l.instrumentId, l.status, l.brokerQuantity, l.accountQuantity]), [["ESM4", ReconciliationStatus.MATCHED, "3", "3"]]);
  const latest = await pm.raw.getReconciliation({ accountId: L });
  assert.deepEqual([latest.snapshotId, latest.sequence, latest.clean], [run.snapshotId, run.sequence, true]);
  const listed = await pm.raw.listReconciliations({ accountId: L });
  assert.deepEqual(listed.reconciliations.map((r) => r.snapshotId), [run.snapshotId]);
  const consolidated = await pm.raw.getConsolidatedPosition({ accountId: L, instrumentId: "ESM4" });
  assert.deepEqual([consolidated.brokerQuantity, consolidated.reconciliationStatus], ["3", ReconciliationStatus.MATCHED]);
});

// ---------------------------------------------------------------------------------------------
// P&L history, performance, risk

test("GetPnlHistory without a close has no day", async () => {
  const history = await pm.raw.getPnlHistory({ accountId: P });
  assert.deepEqual([history.accountId, history.baseCurrency, history.days], [P, "USD", []]);
});

test("GetPerformance per currency, venue and trace", async () => {
  const performance = await pm.raw.getPerformance({ accountId: P });
  const usd = performance.byCurrency.find((c) => c.currency === "USD");
  assert.deepEqual([usd?.tradeCount, usd?.grossPnl, usd?.fees, usd?.netPnl, usd?.realizedPnl], [2n, "75", "4.5", "70.5", "37.5"]);
  const cme = performance.venues.find((v) => v.venue === "CME" && v.currency === "USD");
  assert.equal(cme?.volume, "750075"); // 2 x 5000.25 x 50 + 5001 x 50
  assert.deepEqual(
    performance.traceVenues.map((t) => [t.venue, t.steps, t.averageStepLatency?.seconds]),
    [["CME", 1n, 1n]],
  );
});

test("GetRiskMetrics: exposure in the base currency, value at risk at the levels asked", async () => {
  const risk = await pm.raw.getRiskMetrics({ accountId: P, confidenceLevels: ["0.9"] });
  assert.deepEqual([risk.total?.long, risk.total?.short, risk.largestInstrument], ["252041", "0", "ESM4"]);
  assert.deepEqual(risk.valueAtRisk.map((v) => v.confidence), ["0.9"]);
});

// ---------------------------------------------------------------------------------------------
// Every Query branch answers as its own RPC does

type Direct = () => Promise<unknown>;

const branches = (): [NonNullable<PortfolioQueryInit["query"]>, Direct][] => [
  [{ case: "getPosition", value: { accountId: P, instrumentId: "SAP", strategyId: "S1" } },
    () => pm.raw.getPosition({ accountId: P, instrumentId: "SAP", strategyId: "S1" })],
  [{ case: "getStrategyPortfolio", value: { strategyId: "S1", accountId: P } },
    () => pm.raw.getStrategyPortfolio({ strategyId: "S1", accountId: P })],
  [{ case: "getPortfolioSummary", value: { accountId: P } }, () => pm.raw.getPortfolioSummary({ accountId: P })],
  [{ case: "listPositions", value: { accountId: P, level: PositionLevel.ACCOUNT } },
    () => pm.raw.listPositions({ accountId: P, level: PositionLevel.ACCOUNT })],
  [{ case: "getTracePosition", value: { traceId: TRACE } }, () => pm.raw.getTracePosition({ traceId: TRACE })],
  [{ case: "getOrder", value: { accountId: P, orderId: "101" } }, () => pm.raw.getOrder({ accountId: P, orderId: "101" })],
  [{ case: "listOpenOrders", value: { accountId: P } }, () => pm.raw.listOpenOrders({ accountId: P })],
  [{ case: "getBalances", value: { accountId: P } }, () => pm.raw.getBalances({ accountId: P })],
  [{ case: "getConsolidatedPosition", value: { accountId: L, instrumentId: "ESM4" } },
    () => pm.raw.getConsolidatedPosition({ accountId: L, instrumentId: "ESM4" })],
  [{ case: "getInstrument", value: { instrumentId: "ESM4" } }, () => pm.raw.getInstrument({ instrumentId: "ESM4" })],
  [{ case: "getReconciliation", value: { accountId: L } }, () => pm.raw.getReconciliation({ accountId: L })],
  [{ case: "getPnlHistory", value: { accountId: P } }, () => pm.raw.getPnlHistory({ accountId: P })],
  [{ case: "getPerformance", value: { accountId: P } }, () => pm.raw.getPerformance({ accountId: P })],
  [{ case: "getRiskMetrics", value: { accountId: P, lookbackDays: 20 } }, () => pm.raw.getRiskMetrics({ accountId: P, lookbackDays: 20 })],
];

test("every Query branch answers in its branch what its RPC answers", async () => {
  for (const [query, direct] of branches()) {
    const answer = await pm.query({ query });
    const name = query.case!;
    // The answer's branch has the number of the question's (position 1 for get_position, ...).
    assert.equal(PortfolioResponseSchema.field[answer.response.case!]?.number, PortfolioQuerySchema.field[name]?.number, name);
    assert.deepEqual(withoutReadPoint(answer.response.value), withoutReadPoint(await direct()), name);
  }
});

test("a Query branch fails as its RPC does", async () => {
  assert.equal(await code(pm.query({ query: { case: "getReconciliation", value: { accountId: P } } })), Code.NotFound);
  assert.equal(await code(pm.query({ query: { case: "getPosition", value: { accountId: "", instrumentId: "SAP" } } })), Code.InvalidArgument);
});

// ---------------------------------------------------------------------------------------------
// Subscriptions carry orders and (opt-in) balances

async function take(count: number, filter: Parameters<PortfolioClient["subscribe"]>[0], fromSequence: bigint): Promise<PortfolioUpdate[]> {
  const taken: PortfolioUpdate[] = [];
  const stop = new AbortController();
  for await (const update of pm.subscribe(filter, { fromSequence, signal: stop.signal })) {
    taken.push(update);
    if (taken.length === count) stop.abort();
  }
  return taken;
}

test("SubscribeUpdates carries balances when asked, and orders", async () => {
  const [balance, order] = await take(2, { accountId: P, includeBalances: true }, SEQUENCE.get(`${P}-T1`)!);
  assert.equal(balance?.kind, UpdateKind.BALANCE);
  assert.deepEqual([balance?.balance?.currency, balance?.balance?.cash], ["EUR", "5000"]);
  assert.equal(order?.kind, UpdateKind.ORDER_STATUS);
  assert.deepEqual([order?.order?.orderKey, order?.order?.status], ["id:101", OrderStatus.SUBMITTED]);
  const [first] = await take(1, { accountId: P }, SEQUENCE.get(`${P}-T1`)!);
  assert.equal(first?.kind, UpdateKind.ORDER_STATUS);
});

// ---------------------------------------------------------------------------------------------
// Coverage: the generated descriptors name what must have been called

test("every RPC of the service and every Query branch was called by this file", () => {
  const rpcs = PortfolioManager.methods.map((m) => m.name);
  assert.equal(rpcs.length, Object.keys(PortfolioManager.method).length);
  const branchNames = PortfolioQuerySchema.oneofs.find((o) => o.name === "query")!.fields.map((f) => f.localName);
  assert.deepEqual(rpcs.filter((rpc) => !calledRpcs.has(rpc)), [], "RPCs without a TypeScript test");
  assert.deepEqual(branchNames.filter((branch) => !calledQueries.has(branch)), [], "Query branches without a TypeScript test");
  assert.ok(rpcs.length >= 26 && branchNames.length >= 14);
});
