import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Status } from "../core/status.ts";
import { ErrorCode } from "../http2/frame.ts";
import { decideAfterReset, type ResetFacts } from "./call-decision.ts";

const base: ResetFacts = {
  code: ErrorCode.CANCEL,
  connectionLost: false,
  neverConnected: false,
  uncommitted: true,
  buffered: true,
  attempts: 1,
  maxAttempts: 5,
  idempotent: false,
  budgetAllows: true,
  path: "/pkg.S/M",
  backend: "b1",
};

/** "retry", "retry*" (transparent), "fail CODE: message" or "reset CODE→STATUS". */
function decide(f: Partial<ResetFacts>): string {
  const d = decideAfterReset({ ...base, ...f });
  if (d.kind === "retry") return d.transparent ? "retry*" : "retry";
  if (d.kind === "pass-reset") return `reset ${d.code}→${d.status}`;
  return `fail ${d.status.code}: ${d.status.message}`;
}

describe("what a call does when its backend stream ends without a response", () => {
  const rows: [string, Partial<ResetFacts>, string | RegExp][] = [
    ["REFUSED_STREAM, uncommitted: transparent retry", { code: ErrorCode.REFUSED_STREAM }, "retry*"],
    [
      "never connected (no SETTINGS): transparent retry",
      { connectionLost: true, neverConnected: true },
      "retry*",
    ],
    [
      "refused but the request outgrew the buffer",
      { code: ErrorCode.REFUSED_STREAM, buffered: false },
      /^fail 14: .*refused the stream; not retried: the request was larger than the retry buffer/,
    ],
    [
      "refused on the last attempt",
      { code: ErrorCode.REFUSED_STREAM, attempts: 5 },
      /^fail 14: .*not retried: all 5 attempts failed/,
    ],
    ["connection lost, idempotent, budget left: retry", { connectionLost: true, idempotent: true }, "retry"],
    [
      "connection lost, not idempotent",
      { connectionLost: true },
      /^fail 14: .*was lost during the call .*\/pkg\.S\/M is not marked idempotent/,
    ],
    [
      "connection lost, idempotent, budget spent",
      { connectionLost: true, idempotent: true, budgetAllows: false },
      /^fail 14: .*the retry budget is spent/,
    ],
    [
      "connection lost after the response began",
      { connectionLost: true, idempotent: true, uncommitted: false },
      /^fail 14: .*the response had already begun/,
    ],
    [
      "refused after the response began is not retried",
      { code: ErrorCode.REFUSED_STREAM, uncommitted: false },
      `reset ${ErrorCode.REFUSED_STREAM}→${Status.UNAVAILABLE}`,
    ],
    [
      "a real RST (INTERNAL_ERROR) is passed on",
      { code: ErrorCode.INTERNAL_ERROR },
      `reset 2→${Status.INTERNAL}`,
    ],
    [
      "ENHANCE_YOUR_CALM is passed on",
      { code: ErrorCode.ENHANCE_YOUR_CALM },
      `reset 11→${Status.RESOURCE_EXHAUSTED}`,
    ],
    [
      "CANCEL from the backend fails CANCELLED",
      { code: ErrorCode.CANCEL },
      /^fail 1: roster: backend b1 closed the stream \(code 8\)/,
    ],
    ["NO_ERROR without a response fails INTERNAL", { code: ErrorCode.NO_ERROR }, /^fail 13: /],
  ];
  for (const [name, facts, expected] of rows) {
    it(name, () => {
      const got = decide(facts);
      if (typeof expected === "string") assert.equal(got, expected);
      else assert.match(got, expected);
    });
  }
});
