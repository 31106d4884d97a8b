// The committed generated code (src/gen) is what scripts/generate.sh makes from
// the protos now: a changed proto without regenerating fails here.

import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { test } from "node:test";
import { PACKAGE_DIR, run } from "./harness.js";

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

test("src/gen matches the protos (run scripts/generate.sh to update)", async () => {
  const out = mkdtempSync(join(tmpdir(), "micro-ts-gen-"));
  try {
    const { code, stderr } = await run("bash", [join(PACKAGE_DIR, "scripts/generate.sh"), out]);
    assert.equal(code, 0, stderr);
    const committed = join(PACKAGE_DIR, "src/gen");
    const want = files(out).map((f) => relative(out, f)).sort();
    const have = files(committed).map((f) => relative(committed, f)).sort();
    assert.deepEqual(have, want, "the generated files differ in name");
    assert.ok(want.includes(join("micro", "v1", "client.ts")), `unexpected output: ${want.join(", ")}`);
    for (const name of want) {
      assert.equal(readFileSync(join(committed, name), "utf8"), readFileSync(join(out, name), "utf8"), `${name} is stale: run scripts/generate.sh`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
