/** The quick start of docs/sdks.md runs as written. */

import assert from "node:assert/strict";
import { test } from "node:test";

import { quickstart } from "../examples/quickstart.js";
import { target, unique } from "./support.js";

test("the quick start runs against the service", async () => {
  assert.equal(await quickstart(target(), unique("quickstart")), "60");
});
