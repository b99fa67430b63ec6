/**
 * Amounts (quantities, prices, money) cross the wire as decimal strings, exact in every
 * language. A JavaScript `number` is a binary float: `0.1 + 0.2` is 0.30000000000000004, and
 * protobuf's string encoder would quietly send that text and have it booked. So a number is
 * refused at the door, naming the field, before anything is sent.
 */

import { ScalarType } from "@bufbuild/protobuf";
import type { DescField, DescMessage } from "@bufbuild/protobuf";

/**
 * Anything with an exact plain-notation `toFixed()`, such as a decimal.js, big.js or
 * bignumber.js value (their `toFixed()` without arguments never uses an exponent).
 */
export interface DecimalLike {
  toFixed(): string;
}

/** What the typed layer takes as an amount: a decimal string, a bigint, or a decimal object. */
export type Amount = string | bigint | DecimalLike;

// The proto's notation: an optional '-', digits, and an optional '.' followed by digits.
const DECIMAL = /^-?[0-9]+(\.[0-9]+)?$/;

/**
 * The wire text of an amount. Throws a TypeError naming `field` for a number (or anything that
 * is not an amount) and for a string that is not plain decimal notation.
 */
export function toAmount(field: string, value: Amount): string {
  if (typeof value === "number") {
    throw new TypeError(
      `${field}: amounts are decimal strings, not numbers: got the number ${String(value)} ` +
        `(a binary float); pass a string such as "${exampleOf(value)}" or a decimal type`,
    );
  }
  let text: unknown;
  if (typeof value === "string") text = value;
  else if (typeof value === "bigint") text = value.toString();
  else if (typeof value === "object" && value !== null && typeof value.toFixed === "function")
    text = value.toFixed();
  if (typeof text !== "string") {
    throw new TypeError(`${field}: expected a decimal string, a bigint or a decimal object, got ${describe(value)}`);
  }
  if (!DECIMAL.test(text)) {
    throw new TypeError(
      `${field}: ${JSON.stringify(text)} is not a plain decimal (digits, an optional leading '-' ` +
        `and '.'; no exponent, grouping, NaN or Infinity)`,
    );
  }
  return text;
}

/** `toAmount` for a field the proto lets be empty ("" means "0" or "none"). */
export function toOptionalAmount(field: string, value: Amount | undefined): string {
  return value === undefined || value === "" ? "" : toAmount(field, value);
}

/**
 * Walks a request about to be sent and throws a TypeError at the first string field (an
 * amount, an id) that holds something other than a string: the generated code's types forbid
 * it, but JavaScript callers and `as any` do not. Used by the transport interceptor, so the raw
 * client's every RPC is covered too.
 */
export function refuseNonStrings(desc: DescMessage, message: unknown, path: string = desc.typeName): void {
  if (typeof message !== "object" || message === null) return;
  const fields = message as Record<string, unknown>;
  for (const member of desc.members) {
    if (member.kind === "oneof") {
      const chosen = fields[member.localName] as { case?: string; value?: unknown } | undefined;
      const field = member.fields.find((f) => f.localName === chosen?.case);
      if (field !== undefined) checkField(field, chosen?.value, `${path}.${field.name}`);
    } else {
      checkField(member, fields[member.localName], `${path}.${member.name}`);
    }
  }
}

function checkField(field: DescField, value: unknown, path: string): void {
  if (value === undefined || value === null) return;
  switch (field.fieldKind) {
    case "scalar":
      if (field.scalar === ScalarType.STRING) checkString(path, value);
      return;
    case "message":
      refuseNonStrings(field.message, value, path);
      return;
    case "list":
      if (!Array.isArray(value)) return;
      value.forEach((item: unknown, index: number) => {
        if (field.listKind === "message") refuseNonStrings(field.message, item, `${path}[${index}]`);
        else if (field.listKind === "scalar" && field.scalar === ScalarType.STRING) checkString(`${path}[${index}]`, item);
      });
      return;
    case "map":
      for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
        if (field.mapKind === "message") refuseNonStrings(field.message, item, `${path}[${key}]`);
        else if (field.mapKind === "scalar" && field.scalar === ScalarType.STRING) checkString(`${path}[${key}]`, item);
      }
      return;
    case "enum":
      return;
  }
}

function checkString(path: string, value: unknown): void {
  if (typeof value === "string") return;
  if (typeof value === "number") {
    throw new TypeError(
      `${path}: a string field, not a number: got ${String(value)} (an amount is a decimal ` +
        `string, exact where a number is a binary float: pass "${exampleOf(value)}")`,
    );
  }
  throw new TypeError(`${path}: a string field: got ${describe(value)}`);
}

function describe(value: unknown): string {
  return value === null ? "null" : `${typeof value} ${String(value)}`;
}

function exampleOf(value: number): string {
  // The shortest text that reads back as the same float is usually what the caller meant.
  const shortest = Number.isFinite(value) ? String(Number(value.toPrecision(15))) : "0";
  return /e/i.test(shortest) ? "0" : shortest;
}
