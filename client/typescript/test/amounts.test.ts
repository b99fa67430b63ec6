/** The door, without a service: what counts as an amount, and the resume cursor's rules. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { ResumeCursor, encodeEvent, toAmount } from "../src/index.js";

test("a number is refused as an amount, naming the field", () => {
  assert.throws(() => toAmount("quantity", 0.1 + 0.2 as unknown as string), {
    name: "TypeError",
    message: /^quantity: amounts are decimal strings, not numbers: got the number 0\.30000000000000004/,
  });
  assert.throws(() => toAmount("price", 1 as unknown as string), TypeError);
});

test("strings in plain decimal notation, bigints and decimal objects are amounts", () => {
  assert.equal(toAmount("q", "-10.25"), "-10.25");
  assert.equal(toAmount("q", 12n), "12");
  assert.equal(toAmount("q", { toFixed: () => "0.3" }), "0.3");
  for (const bad of ["1e3", "1,000", "NaN", "", " 1", ".5", "1."]) {
    assert.throws(() => toAmount("price", bad), { name: "TypeError", message: /^price: / }, bad);
  }
});

test("an event with a number names the event and the field", () => {
  const fill = {
    kind: "fill" as const,
    fillId: "F-1",
    accountId: "A",
    strategyId: "S",
    instrumentId: "I",
    side: "BUY" as const,
    quantity: "1",
    price: 0.1 + 0.2 as unknown as string,
    timestamp: new Date(),
  };
  assert.throws(() => encodeEvent(fill), { name: "TypeError", message: /^fill "F-1": price: / });
});

test("the cursor resumes from the last sequence seen and drops what it delivered", () => {
  const cursor = new ResumeCursor(5n);
  cursor.newStream();
  assert.deepEqual([cursor.admit(5n, false), cursor.admit(6n, false)], [true, true]);
  assert.equal(cursor.fromSequence, 6n);
  // The stream broke after the first of sequence 6's two updates: the replay repeats it.
  cursor.newStream();
  assert.deepEqual([cursor.admit(6n, false), cursor.admit(6n, false), cursor.admit(7n, false)], [false, true, true]);
  assert.equal(cursor.admit(9n, true), true);
  assert.equal(cursor.fromSequence, 10n);
});
