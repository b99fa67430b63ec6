/**
 * TLS and mutual TLS through `nodeOptions`, against a service started by
 * tests/sdk/test_typescript.py with --tls-cert, --tls-key and --tls-client-ca (certificates it
 * made; their paths in PORTFOLIO_TLS_*). That service has no broker.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { Code, EventResult, PortfolioClient, PortfolioError } from "../src/index.js";
import { unique } from "./support.js";

function setting(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these through tests/sdk/test_typescript.py`);
  return value;
}

const url = () => `https://${setting("PORTFOLIO_TLS_TARGET")}`;
const pem = (name: string) => readFileSync(setting(name));

/** A client of the mutual-TLS service, trusting its CA, with the options given. */
function client(options: { cert?: Buffer; key?: Buffer; ca?: Buffer | null } = {}): PortfolioClient {
  const { ca = pem("PORTFOLIO_TLS_CA"), ...certificate } = options;
  return new PortfolioClient({ target: url(), timeoutMs: 5_000, nodeOptions: { ...(ca === null ? {} : { ca }), ...certificate } });
}

async function failure(call: Promise<unknown>): Promise<PortfolioError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof PortfolioError, String(error));
    return error;
  }
  assert.fail("the call succeeded");
}

test("with the client certificate of the service's CA, a fill is booked and its position read over TLS", async () => {
  const pm = client({ cert: pem("PORTFOLIO_TLS_CERT"), key: pem("PORTFOLIO_TLS_KEY") });
  try {
    const row = { accountId: unique("tls"), strategyId: "s", instrumentId: "AAPL" };
    const [ack] = await pm.ingest([
      { kind: "fill", fillId: unique("fill"), ...row, side: "BUY", quantity: "7", price: "189.5", timestamp: new Date() },
    ]);
    assert.equal(ack?.result, EventResult.ACCEPTED, ack?.reason);
    const position = await pm.getPosition(row);
    assert.deepEqual([position.quantity, position.avgCost, position.lastSequence], ["7", "189.5", ack?.sequence]);
    // This service has no broker: Reconcile answers UNAVAILABLE, as documented.
    assert.equal((await failure(pm.raw.reconcile({ accountId: row.accountId }))).code, Code.Unavailable);
  } finally {
    await pm.close();
  }
});

test("without a client certificate, or with one of another CA, the handshake fails: UNAVAILABLE", async () => {
  const question = { accountId: "ACC-1", instrumentId: "AAPL" };
  for (const pm of [client(), client({ cert: pem("PORTFOLIO_TLS_STRANGER_CERT"), key: pem("PORTFOLIO_TLS_STRANGER_KEY") })]) {
    try {
      const refused = await failure(pm.getPosition(question));
      assert.equal(refused.code, Code.Unavailable, refused.message);
      assert.match(refused.message, /client certificate/);
    } finally {
      await pm.close();
    }
  }
});

test("a client that does not trust the service's certificate, or speaks plaintext to it: UNAVAILABLE", async () => {
  const untrusting = client({ ca: null, cert: pem("PORTFOLIO_TLS_CERT"), key: pem("PORTFOLIO_TLS_KEY") });
  const plaintext = new PortfolioClient({ target: setting("PORTFOLIO_TLS_TARGET"), timeoutMs: 5_000 });
  try {
    const refused = await failure(untrusting.getPosition({ accountId: "ACC-1", instrumentId: "AAPL" }));
    assert.equal(refused.code, Code.Unavailable, refused.message);
    assert.match(refused.message, /^\[UNAVAILABLE\] TLS handshake failed: /);
    const closed = await failure(plaintext.getPosition({ accountId: "ACC-1", instrumentId: "AAPL" }));
    assert.equal(closed.code, Code.Unavailable, closed.message);
  } finally {
    await Promise.all([untrusting.close(), plaintext.close()]);
  }
});

test("a call its caller aborts stays CANCELED", async () => {
  const pm = client({ cert: pem("PORTFOLIO_TLS_CERT"), key: pem("PORTFOLIO_TLS_KEY") });
  try {
    const stop = new AbortController();
    const call = pm.getPosition({ accountId: "ACC-1", instrumentId: "AAPL" }, { signal: stop.signal });
    stop.abort();
    assert.equal((await failure(call)).code, Code.Canceled);
  } finally {
    await pm.close();
  }
});
