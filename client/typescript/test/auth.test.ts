/** The `token` option: sent as `authorization: Bearer <token>` to a service with an auth file. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { Code, PortfolioClient, PortfolioError } from "../src/index.js";

function guardedService(): { target: string; token: string } {
  const target = process.env.PORTFOLIO_AUTH_TARGET;
  const token = process.env.PORTFOLIO_TOKEN;
  if (!target || !token) throw new Error("PORTFOLIO_AUTH_TARGET and PORTFOLIO_TOKEN are not set");
  return { target, token };
}

const question = { accountId: "ACC-1", instrumentId: "AAPL" };

test("without a token the service answers UNAUTHENTICATED; with it, the call goes through", async () => {
  const { target, token } = guardedService();
  const anonymous = new PortfolioClient({ target });
  const known = new PortfolioClient({ target, token });
  try {
    await assert.rejects(anonymous.getPosition(question), (e: unknown) => e instanceof PortfolioError && e.code === Code.Unauthenticated);
    // Past authentication and authorization: the row simply does not exist.
    await assert.rejects(known.getPosition(question), (e: unknown) => e instanceof PortfolioError && e.code === Code.NotFound);
  } finally {
    await Promise.all([anonymous.close(), known.close()]);
  }
});
