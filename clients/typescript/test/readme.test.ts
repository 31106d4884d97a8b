// The examples of README.md, type-checked and run as a user would: the
// quickstart against micro server + greeter (its output must match the README),
// the service example called from Rust with `micro call`.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { binary, freePort, PACKAGE_DIR, run, startStack, type Stack } from "./harness.js";

/** The code block after `<!-- example: NAME`, and the text block after it when there is one. */
function example(name: string): { code: string; output: string | undefined } {
  const readme = readFileSync(join(PACKAGE_DIR, "README.md"), "utf8");
  const at = readme.indexOf(`<!-- example: ${name}`);
  assert.ok(at >= 0, `README.md has no example ${name}`);
  const blocks = [...readme.slice(at).matchAll(/```(\w+)\n([\s\S]*?)```/g)];
  const code = blocks[0];
  assert.equal(code?.[1], "ts");
  const next = blocks[1];
  return { code: code?.[2] ?? "", output: next?.[1] === "text" ? next[2] : undefined };
}

// Inside the package, so that `@micro/client` resolves to it (a self-reference).
const dir = join(PACKAGE_DIR, "build", "readme");
let stack: Stack;

before(async () => {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "src"), { recursive: true });
  for (const name of ["quickstart", "service"]) writeFileSync(join(dir, "src", `${name}.ts`), example(name).code);
  // Type-checked with strict settings, as a user's project would.
  const tsc = join(PACKAGE_DIR, "node_modules", "typescript", "bin", "tsc");
  const { code, stdout, stderr } = await run(process.execPath, [
    tsc, "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext",
    "--types", "node", "--skipLibCheck", "--rootDir", join(dir, "src"), "--outDir", join(dir, "out"),
    join(dir, "src", "quickstart.ts"), join(dir, "src", "service.ts"),
  ]);
  assert.equal(code, 0, `the README examples do not compile:\n${stdout}${stderr}`);
  stack = await startStack();
});

after(async () => {
  await stack?.stop();
});

test("the quickstart prints what the README says", async () => {
  const { code, stdout, stderr } = await run(process.execPath, [join(dir, "out", "quickstart.js")], {
    env: { ...stack.env, MICRO_PROXY: stack.proxy },
  });
  assert.equal(code, 0, stderr);
  assert.equal(stdout, example("quickstart").output);
});

test("the service example is called by micro call and stops on SIGTERM", async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [join(dir, "out", "service.js")], {
    env: { ...stack.env, MICRO_PROXY: stack.proxy, MICRO_SERVER_ADDRESS: `127.0.0.1:${port}` },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<NodeJS.Signals | null>((res) => child.once("exit", (_code, signal) => res(signal)));
  try {
    let out = "";
    await new Promise<void>((res, rej) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        if (out.includes("serving on")) res();
      });
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      void exited.then(() => rej(new Error(`the service exited: ${out}`)));
    });
    assert.match(out, new RegExp(`tsworker serving on 127\\.0\\.0\\.1:${port}`));
    const ok = await run(binary("micro"), ["call", "--proxy", stack.proxy, "-o", "json", "tsworker", "Worker.Run", '{"job":"build"}'], { env: stack.env });
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout), { done: "build" });
    const bad = await run(binary("micro"), ["call", "--proxy", stack.proxy, "tsworker", "Worker.Run", "{}"], { env: stack.env });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /job is required \(400 Bad Request\)/);
  } finally {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, "SIGTERM");
  }
  assert.equal(await exited, "SIGTERM");
  const gone = await run(binary("micro"), ["call", "--proxy", stack.proxy, "tsworker", "Worker.Run", '{"job":"x"}'], { env: stack.env });
  assert.match(gone.stderr, /404/);
});
