// dist/ is committed, so that installing the package needs no build: it must be
// what src/ builds to now (run `npm run build` after changing src/).

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

test("dist/ is what src/ builds to (run `npm run build` to update)", async () => {
  const out = mkdtempSync(join(tmpdir(), "micro-ts-dist-"));
  try {
    const tsc = join(PACKAGE_DIR, "node_modules", "typescript", "bin", "tsc");
    const { code, stdout, stderr } = await run(process.execPath, [tsc, "-p", join(PACKAGE_DIR, "tsconfig.json"), "--outDir", out]);
    assert.equal(code, 0, stdout + stderr);
    const dist = join(PACKAGE_DIR, "dist");
    const want = files(out).map((f) => relative(out, f)).sort();
    assert.deepEqual(files(dist).map((f) => relative(dist, f)).sort(), want, "dist/ has other files than the build");
    assert.ok(want.includes("index.d.ts"));
    for (const name of want) {
      assert.equal(readFileSync(join(dist, name), "utf8"), readFileSync(join(out, name), "utf8"), `dist/${name} is stale: run npm run build`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
