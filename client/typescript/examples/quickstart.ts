// The TypeScript quick start (docs/sdks.md shows this file; test/quickstart.test.ts runs it).
//   npm ci && npm run build && node dist/examples/quickstart.js 127.0.0.1:50051
import { Code, EventResult, PortfolioClient, PortfolioError } from "../src/index.js";

export async function quickstart(target: string, accountId = "ACC-1"): Promise<string> {
  const client = new PortfolioClient({ target, timeoutMs: 5_000 });
  try {
    // Amounts are decimal strings (or bigint, or a decimal.js/big.js value): never a number.
    const acks = await client.ingest([
      { kind: "fill", fillId: `${accountId}-F1`, accountId, strategyId: "momentum", instrumentId: "AAPL",
        side: "BUY", quantity: "100", price: "189.25", commission: "1.00", timestamp: new Date() },
      { kind: "fill", fillId: `${accountId}-F2`, accountId, strategyId: "momentum", instrumentId: "AAPL",
        side: "SELL", quantity: "40", price: "190.10", timestamp: new Date() },
    ]);
    for (const ack of acks) {
      if (ack.result === EventResult.REJECTED) throw new Error(`${ack.eventId}: ${ack.reason}`);
    }

    const row = await client.getPosition({ accountId, strategyId: "momentum", instrumentId: "AAPL" });
    console.log(`${row.instrumentId}: ${row.quantity} @ ${row.avgCost} ${row.currency}, realized ${row.realizedPnl}`);

    // Any read through the typed query protocol: the answer comes in the matching branch.
    const answer = await client.query({ query: { case: "getPortfolioSummary", value: { accountId } } });
    if (answer.response.case === "portfolioSummary") console.log("as of sequence", answer.response.value.asOfSequence);

    // Live updates from a sequence on; a broken stream resumes where it stopped, each update once.
    const stop = new AbortController();
    for await (const update of client.subscribe({ accountId }, { fromSequence: acks[0]!.sequence, signal: stop.signal })) {
      console.log(`update ${update.sequence}: ${update.eventId} -> ${update.position?.quantity}`);
      if (update.eventId === `${accountId}-F2`) stop.abort();
    }

    // Errors carry their code and the fields at fault (google.rpc.BadRequest).
    try {
      await client.getPosition({ accountId: "", instrumentId: "AAPL" });
    } catch (error) {
      if (!(error instanceof PortfolioError) || error.code !== Code.InvalidArgument) throw error;
      console.log(error.fieldViolations); // [{ field: "account_id", description: "is required" }]
    }
    return row.quantity;
  } finally {
    await client.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await quickstart(process.argv[2] ?? "127.0.0.1:50051");
}
