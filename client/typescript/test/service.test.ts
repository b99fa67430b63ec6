/**
 * The SDK against the real service (started by tests/sdk/test_typescript.py, LMDB in a tmp
 * folder); a TCP proxy in front of it cuts connections the way a network failure would.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  Backoff,
  Code,
  EventResult,
  PortfolioClient,
  PortfolioError,
  ResyncRequired,
  UpdateKind,
} from "../src/index.js";
import type { ExecutionEvent, FillEvent, PortfolioUpdate } from "../src/index.js";
import { CuttableProxy, replayCapacity, target, unique } from "./support.js";

const FAST = new Backoff(10, 50);
let direct: PortfolioClient;

before(() => {
  direct = new PortfolioClient({ target: target() });
});

after(async () => {
  await direct.close();
});

function fills(count: number, init: { accountId: string; strategyId: string; instrumentId: string }): FillEvent[] {
  const prefix = unique("fill");
  return Array.from({ length: count }, (_, i) => ({
    kind: "fill" as const,
    fillId: `${prefix}-${i}`,
    ...init,
    side: "BUY" as const,
    quantity: "1.5",
    price: "100.25",
    timestamp: new Date(),
  }));
}

async function withProxy<T>(body: (proxy: CuttableProxy, client: PortfolioClient) => Promise<T>): Promise<T> {
  const proxy = await CuttableProxy.start(target());
  const client = new PortfolioClient({ target: proxy.address, backoff: FAST });
  try {
    return await body(proxy, client);
  } finally {
    await client.close();
    await proxy.close();
  }
}

test("ingest resends the unacked events after a killed stream, each booked once", async () => {
  const row = { accountId: unique("acct"), strategyId: "momentum", instrumentId: "AAPL" };
  const events = fills(40, row);
  const attemptsSeen = new Set<string>();
  const acks = await withProxy(async (proxy, client) => {
    let cut = false;
    const acks = await client.ingest(events, {
      batchSize: 4,
      onBatchAcked: (batch) => {
        attemptsSeen.add(batch.batchId.split("-").at(-2)!); // <session>-<attempt>-<n>
        if (!cut) {
          cut = true;
          proxy.cut(); // the other nine batches were written; their acks are lost
        }
      },
    });
    assert.ok(proxy.connections >= 2, `one stream only (${proxy.connections} connections)`);
    return acks;
  });
  assert.deepEqual([...attemptsSeen].sort(), ["1", "2"]);
  assert.deepEqual(acks.map((a) => a.eventId), events.map((e) => e.fillId));
  for (const ack of acks) assert.ok([EventResult.ACCEPTED, EventResult.DUPLICATE].includes(ack.result), ack.reason);
  const sequences = new Set(acks.map((a) => a.sequence));
  assert.equal(sequences.size, 40, "an event booked twice");

  const position = await direct.getPosition({ ...row });
  assert.equal(position.quantity, "60"); // 40 x 1.5, each fill once
  assert.equal(position.tradeCount, 40);

  // Sending them all again changes nothing: every one is a DUPLICATE with its sequence.
  const again = await direct.ingest(events, { batchSize: 100 });
  assert.ok(again.every((a) => a.result === EventResult.DUPLICATE));
  assert.deepEqual(again.map((a) => a.sequence), acks.map((a) => a.sequence));
});

test("GetPosition and a Query branch answer with decimal strings", async () => {
  const row = { accountId: unique("acct"), strategyId: "carry", instrumentId: "MSFT" };
  const [ack] = await direct.ingest(fills(1, row));
  assert.equal(ack?.result, EventResult.ACCEPTED);

  const strategyRow = await direct.getPosition(row);
  assert.equal(strategyRow.quantity, "1.5");
  assert.equal(strategyRow.avgCost, "100.25");
  assert.equal(strategyRow.lastSequence, ack?.sequence);
  const accountRow = await direct.getPosition({ accountId: row.accountId, instrumentId: row.instrumentId });
  assert.equal(accountRow.strategyId, "");

  const answer = await direct.query({
    query: { case: "getStrategyPortfolio", value: { accountId: row.accountId, strategyId: row.strategyId } },
  });
  assert.equal(answer.response.case, "strategyPortfolio");
  if (answer.response.case !== "strategyPortfolio") return;
  assert.deepEqual(answer.response.value.positions.map((p) => [p.instrumentId, p.quantity]), [["MSFT", "1.5"]]);
});

test("a subscription cut mid-stream resumes from the last sequence, each update once", async () => {
  const row = { accountId: unique("acct"), strategyId: "mean-rev", instrumentId: "IBM" };
  const events = fills(3, row);
  const [first] = await direct.ingest(events.slice(0, 1));
  const resumedFrom: bigint[] = [];
  const seen: PortfolioUpdate[] = [];
  await withProxy(async (proxy, client) => {
    const updates = client.subscribe(
      { accountId: row.accountId },
      { fromSequence: first!.sequence, onReconnect: (from) => resumedFrom.push(from) },
    );
    const next = async () => {
      const result = await updates.next();
      assert.ok(!result.done);
      seen.push(result.value);
    };
    await next(); // the first fill's strategy row (replayed)
    await next(); // and its account-level row
    proxy.cut();
    await direct.ingest(events.slice(1));
    for (let i = 0; i < 4; i += 1) await next();
    await updates.return();
  });
  assert.ok(resumedFrom.length >= 1 && resumedFrom[0]! >= first!.sequence, `resumed from ${resumedFrom}`);
  const keys = seen.map((u) => `${u.eventId}/${u.position?.strategyId ?? "?"}`);
  assert.equal(new Set(keys).size, 6, `an update delivered twice: ${keys}`);
  assert.deepEqual(
    seen.map((u) => u.eventId),
    events.flatMap((e) => [e.fillId, e.fillId]),
  );
  assert.ok(seen.every((u) => [UpdateKind.POSITION_OPENED, UpdateKind.POSITION_MODIFIED].includes(u.kind)));
  assert.deepEqual(seen.slice(-2).map((u) => u.position?.quantity), ["4.5", "4.5"]);
});

test("resuming from a sequence the replay buffer no longer holds is ResyncRequired", async () => {
  const row = { accountId: unique("acct"), strategyId: "s", instrumentId: "AAPL" };
  // Two updates a fill (the strategy's row and the account's): more than the buffer holds.
  const acks = await direct.ingest(fills(replayCapacity() / 2 + 10, row), { batchSize: 500 });
  const updates = direct.subscribe({ accountId: row.accountId }, { fromSequence: acks[0]!.sequence });
  await assert.rejects(updates.next(), (error: unknown) => {
    assert.ok(error instanceof ResyncRequired, String(error));
    assert.equal(error.code, Code.OutOfRange);
    return true;
  });
});

test("a subscription ends when its signal aborts or its client closes, without retrying", async () => {
  const client = new PortfolioClient({ target: target(), backoff: FAST });
  const reconnects: unknown[] = [];
  const stop = new AbortController();
  const live = client.subscribe({ accountId: unique("acct") }, { signal: stop.signal, onReconnect: (_, why) => reconnects.push(why) });
  const pending = live.next();
  setTimeout(() => stop.abort(), 100);
  assert.deepEqual(await pending, { done: true, value: undefined });

  const other = client.subscribe({ accountId: unique("acct") }, { onReconnect: (_, why) => reconnects.push(why) });
  const waiting = other.next();
  setTimeout(() => void client.close(), 100);
  assert.deepEqual(await waiting, { done: true, value: undefined });
  assert.deepEqual(reconnects, []);
});

test("an invalid request fails with INVALID_ARGUMENT and the BadRequest field", async () => {
  await assert.rejects(direct.getPosition({ accountId: "", instrumentId: "AAPL" }), (error: unknown) => {
    assert.ok(error instanceof PortfolioError);
    assert.equal(error.code, Code.InvalidArgument);
    assert.deepEqual(error.fieldViolations, [{ field: "account_id", description: "is required" }]);
    return true;
  });
});

test("a number as an amount is refused and nothing is sent", async () => {
  await withProxy(async (proxy, client) => {
    const row = { accountId: unique("acct"), strategyId: "s", instrumentId: "AAPL" };
    const [good, bad] = fills(2, row);
    const broken = { ...bad!, quantity: 0.1 + 0.2 } as unknown as ExecutionEvent;
    await assert.rejects(client.ingest([good!, broken]), {
      name: "TypeError",
      message: new RegExp(`^fill "${bad!.fillId}": quantity: amounts are decimal strings, not numbers: got the number 0.30000000000000004`),
    });
    // The raw client's every RPC has the same door.
    const raw = { accountId: row.accountId, currency: "USD", amount: 0.1 + 0.2 } as unknown as { accountId: string };
    await assert.rejects(client.raw.reserveCash(raw), {
      name: "TypeError",
      message: /^portfolio\.v1\.ReserveCashRequest\.amount: a string field, not a number: got 0\.30000000000000004 \(an amount is a decimal string/,
    });
    assert.equal(proxy.bytesFromClient, 0);
    // A stream's message is checked as it is written: the call fails with the TypeError.
    const marks = async function* () {
      yield { batchId: "b1", marks: [{ instrumentId: "AAPL", mark: 1.5 as unknown as string }] };
    };
    await assert.rejects(
      (async () => {
        for await (const ack of client.raw.streamMarks(marks())) assert.fail(`answered ${ack.batchId}`);
      })(),
      { name: "TypeError", message: /^portfolio\.v1\.MarkBatch\.marks\[0\]\.mark: a string field, not a number/ },
    );
    await assert.rejects(direct.getPosition(row), (e: unknown) => e instanceof PortfolioError && e.code === Code.NotFound);
  });
});

test("every call has a deadline", async () => {
  await withProxy(async (proxy, client) => {
    proxy.blackhole = true;
    const started = Date.now();
    await assert.rejects(
      client.getPosition({ accountId: "A", instrumentId: "AAPL" }, { timeoutMs: 300 }),
      (e: unknown) => e instanceof PortfolioError && e.code === Code.DeadlineExceeded,
    );
    assert.ok(Date.now() - started < 4_000);
  });
});
