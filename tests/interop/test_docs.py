"""The docs are executed: what they tell a user to type works, and prints what they
say it prints.

Conventions in docs/*.md (the first word of an info string is the language, so
GitHub still highlights these blocks):

- ```sh test``` / ```python test```: run, in order, against a running service; with
  `exit=N` the block must end with status N (default 0). stdout and stderr together
  (stdout alone with the word `stdout`, for `cargo run`, whose build messages and
  warnings go to stderr) must match the ```text output``` block that follows, if
  there is one: lines are compared after trimming trailing spaces, a line `...`
  stands for any number of lines, and `...` inside a line for any text.
- ```LANG file=PATH```: a file the reader writes (the tutorial's crate, the example
  config files).
- ```sh build``` / ```sh server```: build the doc's crate / start its server. In the
  tutorial the one `sh server` command is started and the test waits for its port. In
  docs/discovery.md and docs/cli.md each line of a `sh server` block (`greeter &`)
  starts one process in the background, in document order between the `test` blocks,
  and the test waits until each has registered a node; they all run until the doc's
  test ends.
- `127.0.0.1:9090` is replaced by the address of the service the test started (a free
  port), and `/path/to/micro` by this checkout.
- Every block and server runs with the private registry directory and the
  `MICRO_MDNS_INTERFACES=none` of conftest.py's autouse fixture, and with no other
  `MICRO_*` variable of the caller's environment.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, TARGET, free_port, wait_for_port

DOCS = ROOT / "docs"
DOC_ADDRESS = "127.0.0.1:9090"
DOC_ROOT = "/path/to/micro"
VENV_BIN = ROOT / ".venv" / "bin"
BLOCK_TIMEOUT = 60  # seconds for one block of commands
# The tutorial's crate is built against the workspace's target directory so that
# micro and its dependencies are reused; a first build on a cold cache may be slow.
SCRATCH_BUILD_TIMEOUT = 900


# ---------------------------------------------------------------------------
# Reading the docs


@dataclass
class Block:
    lang: str
    words: list
    attrs: dict
    body: str
    line: int
    output: "Block | None" = None

    def has(self, word):
        return word in self.words

    def where(self, doc):
        return f"{doc.name}:{self.line}"


FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks(path: Path) -> list:
    """The fenced blocks of a markdown file (indented ones excluded), each `test`
    block paired with the `text output` block right after it."""
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        info = m.group(1).split()
        lang = info[0] if info else ""
        words = [w for w in info[1:] if "=" not in w]
        attrs = dict(w.split("=", 1) for w in info[1:] if "=" in w)
        line = text.count("\n", 0, m.start()) + 1
        found.append(Block(lang, words, attrs, m.group(2), line))
    paired = []
    for b in found:
        if b.lang == "text" and b.has("output"):
            assert paired and paired[-1].has("test"), f"{path.name}:{b.line}: output block after no test block"
            assert paired[-1].output is None, f"{path.name}:{b.line}: two output blocks"
            paired[-1].output = b
        else:
            paired.append(b)
    return paired


def substitute(text: str, address: str) -> str:
    return text.replace(DOC_ADDRESS, address).replace(DOC_ROOT, str(ROOT))


# ---------------------------------------------------------------------------
# Comparing outputs


def normalise(text: str) -> list:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def line_pattern(line: str):
    return re.compile(".*".join(re.escape(part) for part in line.split("...")) + r"\Z", re.S)


def lines_match(expected: list, actual: list) -> bool:
    if not expected:
        return not actual
    head, rest = expected[0], expected[1:]
    if head == "...":
        return any(lines_match(rest, actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and bool(line_pattern(head).match(actual[0])) and lines_match(rest, actual[1:])


def check_output(doc: Path, block: Block, actual: str, address: str):
    if block.output is None:
        return
    expected = normalise(substitute(block.output.body, address))
    got = normalise(actual)
    assert lines_match(expected, got), (
        f"{block.where(doc)}: the output differs from the doc\n"
        f"--- doc says:\n" + "\n".join(expected) + "\n--- got:\n" + "\n".join(got)
    )


# ---------------------------------------------------------------------------
# Running blocks


def require_curl():
    if shutil.which("curl") is None:
        pytest.fail(
            "curl is not installed, and the docs' examples use it: install it "
            "(apt-get install -y curl) — scripts/test.sh should do so"
        )


# Set by conftest.py's autouse fixture to isolate each test: kept, so that what the
# docs start uses the test's private registry directory and never multicasts.
ISOLATION = ("MICRO_MDNS_INTERFACES", "MICRO_REGISTRY_ADDRESS")


def shell_env(extra=None) -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(TARGET), str(VENV_BIN), env.get("PATH", "")])
    env["CARGO_TARGET_DIR"] = str(TARGET.parent)
    for k in [k for k in env if k.startswith("MICRO_") and k not in ISOLATION]:
        del env[k]
    env.setdefault("MICRO_MDNS_INTERFACES", "none")
    env.update(extra or {})
    return env


def run_block(doc: Path, block: Block, cwd: Path, address: str, timeout=BLOCK_TIMEOUT) -> str:
    """Runs a `sh` or `python` block in `cwd`; checks its exit status and output."""
    body = substitute(block.body, address)
    if block.lang == "python":
        script = cwd / f"block_{block.line}.py"
        script.write_text(body)
        argv = [str(VENV_BIN / "python"), str(script)]
    else:
        argv = ["bash", "-o", "pipefail", "-c", body]
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=shell_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if block.has("stdout") else subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{block.where(doc)}: did not finish within {timeout}s; output so far:\n{e.output}")
    want = int(block.attrs.get("exit", "0"))
    assert proc.returncode == want, (
        f"{block.where(doc)}: exit status {proc.returncode}, the doc expects {want}\n"
        f"--- block:\n{body}\n--- output:\n{proc.stdout}{proc.stderr or ''}"
    )
    check_output(doc, block, proc.stdout, address)
    return proc.stdout


def run_doc_against(doc: Path, doc_address: str, address: str, cwd: Path, minimum: int) -> None:
    """Runs `doc`'s `sh test` blocks in order with `doc_address` (the default port
    the doc shows, e.g. 127.0.0.1:8081) replaced by a test's own `address`, and
    checks each one's `text output`; at least `minimum` blocks must run."""
    import dataclasses  # noqa: PLC0415

    def local(b):
        return dataclasses.replace(b, body=b.body.replace(doc_address, address))

    n = 0
    for block in blocks(doc):
        if block.has("test"):
            output = local(block.output) if block.output else None
            run_block(doc, dataclasses.replace(local(block), output=output), cwd, address)
            n += 1
    assert n >= minimum, f"only {n} executed blocks in {doc.name}"


def run_tests(doc: Path, cwd: Path, address: str) -> int:
    """Runs every `test` block of `doc` in order; returns how many ran."""
    n = 0
    for block in blocks(doc):
        if block.has("test"):
            run_block(doc, block, cwd, address)
            n += 1
    return n


@contextmanager
def running(argv, port, cwd=None, env=None, timeout=20.0):
    """Starts a server process in its own process group; stops that group after."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc, timeout=timeout)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def binary(name: str) -> Path:
    path = TARGET / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build --workspace` first")
    return path


# ---------------------------------------------------------------------------
# README


def readme_commands() -> list:
    """The commands of the README's "Then, in another terminal" block, each with the
    output its `# ...` comment promises (or None)."""
    text = (ROOT / "README.md").read_text()
    marker = text.index("Then, in another terminal")
    m = FENCE.search(text, marker)
    assert m and m.group(1).strip() == "sh", "README: no sh block after 'Then, in another terminal'"
    commands = []
    for line in m.group(2).splitlines():
        if line.startswith("# ") and commands:
            commands[-1][1] = line[2:]
        elif line.strip():
            commands.append([line, None])
    return commands


def test_readme_quick_commands(greeter):
    require_curl()
    commands = readme_commands()
    assert len(commands) == 2, commands
    (curl, curl_says), (cli, _) = commands
    assert curl.startswith("curl ") and "micro-cli -- call " in cli
    assert curl_says == '{"message":"Hello John"}'
    env = shell_env()
    out = subprocess.run(
        ["bash", "-c", substitute(curl, greeter.address)],
        env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == curl_says
    # `cargo run -q -p micro-cli -- ARGS` is the built `micro ARGS`.
    args = substitute(cli, greeter.address).split("micro-cli -- ", 1)[1]
    out = subprocess.run(
        ["bash", "-c", f"{binary('micro')} {args}"],
        env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"message": "Hello John"}, out.stdout


# ---------------------------------------------------------------------------
# docs/wire.md


def test_wire_examples_run_against_the_greeter(greeter, tmp_path):
    require_curl()
    doc = DOCS / "wire.md"
    n = run_tests(doc, tmp_path, greeter.address)
    assert n >= 10, f"only {n} executed blocks in {doc.name}"


def test_wire_error_tables_match_the_code():
    """The two mapping tables of wire.md list exactly what errors.rs maps."""
    text = (DOCS / "wire.md").read_text()
    http_to_grpc = dict(re.findall(r"^\| (\d{3})[^|]*\| `([A-Z_]+)` \(\d+\) \|$", text, re.M))
    assert http_to_grpc == {
        "400": "INVALID_ARGUMENT", "401": "UNAUTHENTICATED", "403": "PERMISSION_DENIED",
        "404": "NOT_FOUND", "405": "INVALID_ARGUMENT", "408": "DEADLINE_EXCEEDED",
        "409": "ALREADY_EXISTS", "412": "FAILED_PRECONDITION", "413": "RESOURCE_EXHAUSTED",
        "415": "INVALID_ARGUMENT", "422": "INVALID_ARGUMENT", "429": "RESOURCE_EXHAUSTED",
        "499": "CANCELLED", "501": "UNIMPLEMENTED", "503": "UNAVAILABLE",
        "504": "DEADLINE_EXCEEDED", "500": "INTERNAL",
    }
    source = (ROOT / "crates/micro/src/errors.rs").read_text()
    for code, name in http_to_grpc.items():
        variant = "".join(w.capitalize() for w in name.split("_"))
        arm = re.search(rf"^\s*([\d |]*\b{code}\b[\d |]*) => {variant},$", source, re.M)
        if code == "500":
            assert re.search(r"_ => Internal,", source)
        else:
            assert arm, f"errors.rs does not map {code} to {variant}"
    grpc_to_http = dict(re.findall(r"^\| `([A-Z_]+)` \(\d+\) \| (\d{3}) \|$", text, re.M))
    assert len(grpc_to_http) == 16, grpc_to_http
    for name, code in grpc_to_http.items():
        variant = "".join(w.capitalize() for w in name.split("_"))
        to_http = source[source.index("pub fn to_http"):]
        arm = re.search(rf"^\s*([A-Za-z |]*\b{variant}\b[A-Za-z |]*) => (\d+),$", to_http, re.M)
        assert arm and arm.group(2) == code, f"errors.rs does not map {variant} back to {code}"


def test_wire_transport_headers_match_metadata_rs():
    text = (DOCS / "wire.md").read_text()
    section = text[text.index("## Metadata"):text.index("## Errors")]
    source = (ROOT / "crates/micro/src/metadata.rs").read_text()
    listed = source[source.index("fn is_transport_header"):]
    listed = listed[: listed.index("starts_with")]
    headers = re.findall(r'"([a-z-]+)"', listed)
    assert len(headers) >= 10, headers
    for header in headers:
        assert f"`{header}`" in section, f"wire.md does not list the transport header {header}"


# ---------------------------------------------------------------------------
# docs/options.md


def doc_files(doc: Path) -> dict:
    return {b.attrs["file"]: b.body for b in blocks(doc) if "file" in b.attrs}


def stats(address: str) -> dict:
    import urllib.request  # noqa: PLC0415

    req = urllib.request.Request(
        f"http://{address}/micro.debug.v1.Debug/Stats",
        data=b"{}",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as rsp:
        return json.load(rsp)


@pytest.mark.parametrize("name", ["greeter.yaml", "greeter.toml"])
def test_options_example_files_configure_the_greeter(name, tmp_path):
    files = doc_files(DOCS / "options.md")
    assert name in files, f"options.md has no {name} example"
    port = free_port()
    address = f"127.0.0.1:{port}"
    path = tmp_path / name
    path.write_text(substitute(files[name], address))
    greeter = str(binary("greeter"))
    env = shell_env()
    # file only; then env over file; then flag over env (the doc's three commands)
    for extra_env, extra_args, version in [
        ({}, [], "1.2.0"),
        ({"MICRO_SERVER_VERSION": "1.3.0"}, [], "1.3.0"),
        ({"MICRO_SERVER_VERSION": "1.3.0"}, ["--server_version", "2.0.0"], "2.0.0"),
    ]:
        with running([greeter, "--config_file", str(path), *extra_args], port, env={**env, **extra_env}):
            got = stats(address)
        assert (got["service"], got["version"]) == ("greeter", version), got


def test_options_unknown_key_in_file_is_an_error_with_a_suggestion(tmp_path):
    path = tmp_path / "greeter.yaml"
    path.write_text("micro:\n  server_adress: 127.0.0.1:1\n")
    out = subprocess.run(
        [str(binary("greeter")), "--config_file", str(path)],
        env=shell_env(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
    )
    assert out.returncode != 0
    assert "is not an option" in out.stderr and "did you mean" in out.stderr, out.stderr
    assert "server_address" in out.stderr


def test_options_table_lists_every_option_with_its_env_var():
    text = (DOCS / "options.md").read_text()
    source = (ROOT / "crates/micro/src/options/mod.rs").read_text()
    keys = source[source.index("const KEYS"):]
    keys = re.findall(r'"([a-z_]+)"', keys[: keys.index("];")])
    assert len(keys) >= 20
    for key in keys:
        # Wrapper settings have one variable per wrapper and key.
        var = "MICRO_WRAPPER_<NAME>_<KEY>" if key == "wrapper" else f"MICRO_{key.upper()}"
        row = re.search(rf"^\| `{key}` \| `{re.escape(var)}` \|", text, re.M)
        assert row, f"options.md has no table row for {key} / {var}"
    out = subprocess.run([str(binary("greeter")), "--help"], capture_output=True, text=True, timeout=30)
    # A password has no flag (a command line is visible to every user of the machine).
    no_flag = {"registry_password"}
    for key in keys:
        assert f"MICRO_{key.upper()}" in out.stdout, key
        assert (f"--{key} " in out.stdout) != (key in no_flag), key


# ---------------------------------------------------------------------------
# docs/tutorial-first-service.md


@pytest.fixture(scope="module")
def tutorial_crate(tmp_path_factory):
    """The tutorial's crate, written from the doc's `file=` blocks and built as the
    doc's `sh build` block says."""
    doc = DOCS / "tutorial-first-service.md"
    crate = tmp_path_factory.mktemp("tutorial") / "counter"
    crate.mkdir()
    files = doc_files(doc)
    for required in ["Cargo.toml", "build.rs", "src/main.rs"]:
        assert required in files, f"the tutorial has no {required}"
    for name, body in files.items():
        path = crate / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(substitute(body, DOC_ADDRESS))
    # The workspace's lock file pins the same dependency versions, so the build
    # reuses the workspace's compiled dependencies instead of resolving afresh.
    shutil.copy(ROOT / "Cargo.lock", crate / "Cargo.lock")
    build = [b for b in blocks(doc) if b.has("build")]
    assert len(build) == 1, "the tutorial needs exactly one `sh build` block"
    started = time.monotonic()
    run_block(doc, build[0], crate, DOC_ADDRESS, timeout=SCRATCH_BUILD_TIMEOUT)
    print(f"tutorial crate built in {time.monotonic() - started:.1f}s")
    return crate


def test_tutorial_runs_end_to_end(tutorial_crate):
    require_curl()
    doc = DOCS / "tutorial-first-service.md"
    server = [b for b in blocks(doc) if b.has("server")]
    assert len(server) == 1, "the tutorial needs exactly one `sh server` block"
    port = free_port()
    address = f"127.0.0.1:{port}"
    command = substitute(server[0].body.strip(), address)
    assert command.startswith("cargo run"), command
    with running(["bash", "-c", command], port, cwd=tutorial_crate, env=shell_env(), timeout=120):
        n = run_tests(doc, tutorial_crate, address)
    assert n >= 10, f"only {n} executed blocks in {doc.name}"


# ---------------------------------------------------------------------------
# docs/discovery.md, docs/cli.md and the README's Discovery section: several real
# processes that find each other through the (test's private) registry directory

REGISTER_WAIT = 20.0  # seconds for the servers of one block to register


def registered_nodes(env: dict) -> int:
    """How many nodes `micro list services` sees; -1 if it fails."""
    out = subprocess.run(
        [str(binary("micro")), "list", "services", "-o", "json"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
    )
    if out.returncode != 0:
        return -1
    return sum(len(s["nodes"]) for s in json.loads(out.stdout))


def background_commands(body: str) -> list:
    """The commands of a block of background processes: one per line, each ending in
    `&` (dropped); blank lines and `# comments` left out."""
    commands = []
    for line in body.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        assert line.endswith("&"), f"a server line must end in `&`: {line!r}"
        commands.append(line[:-1].strip())
    return commands


class Servers:
    """Processes a doc starts in the background, each in its own process group,
    all stopped when the doc's test ends."""

    def __init__(self, logs: Path, cwd: Path, env: dict):
        self.logs, self.cwd, self.env = logs, cwd, env
        self.procs = []

    def start(self, where: str, commands: list):
        """Starts `commands` and waits until each has registered one more node."""
        before = registered_nodes(self.env)
        assert before >= 0, f"{where}: `micro list services` fails before starting servers"
        for command in commands:
            log = self.logs / f"server-{len(self.procs)}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    ["bash", "-c", f"exec {command}"],
                    cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
            self.procs.append((proc, command, log))
        want = before + len(commands)
        deadline = time.monotonic() + REGISTER_WAIT
        while (have := registered_nodes(self.env)) != want:
            for proc, command, log in self.procs:
                if proc.poll() is not None:
                    pytest.fail(f"{where}: `{command}` exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{where}: {want} nodes expected within {REGISTER_WAIT}s, {have} registered")
            time.sleep(0.05)

    def stop(self):
        for proc, _, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, _, _ in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_doc_with_servers(doc: Path, tmp_path: Path) -> int:
    """Writes the doc's `file=` blocks into a fresh crate directory, then runs its
    `sh server`, `sh build` and `sh test` blocks in document order, all in that
    directory; returns how many test blocks ran."""
    address = f"127.0.0.1:{free_port()}"
    work, logs = tmp_path / "work", tmp_path / "logs"
    work.mkdir()
    logs.mkdir()
    files = doc_files(doc)
    for name, body in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(substitute(body, address))
    if "Cargo.toml" in files:
        # The workspace's lock file pins the same versions: the workspace's compiled
        # dependencies are reused.
        shutil.copy(ROOT / "Cargo.lock", work / "Cargo.lock")
    servers = Servers(logs, work, shell_env())
    n = 0
    try:
        for block in blocks(doc):
            if block.has("server"):
                servers.start(block.where(doc), background_commands(substitute(block.body, address)))
            elif block.has("build"):
                run_block(doc, block, work, address, timeout=SCRATCH_BUILD_TIMEOUT)
            elif block.has("test"):
                run_block(doc, block, work, address)
                n += 1
    finally:
        servers.stop()
    return n


def test_discovery_examples_run_against_real_processes(tmp_path):
    doc = DOCS / "discovery.md"
    started = time.monotonic()
    n = run_doc_with_servers(doc, tmp_path)
    print(f"{doc.name}: {n} blocks in {time.monotonic() - started:.1f}s")
    assert n >= 9, f"only {n} executed blocks in {doc.name}"


def test_cli_examples_run_against_real_processes(tmp_path):
    doc = DOCS / "cli.md"
    started = time.monotonic()
    n = run_doc_with_servers(doc, tmp_path)
    print(f"{doc.name}: {n} blocks in {time.monotonic() - started:.1f}s")
    assert n >= 18, f"only {n} executed blocks in {doc.name}"


def test_config_examples_run_against_etcd_and_the_greeter(etcd, tmp_path):
    """docs/config.md's `sh test` blocks, with the test's etcd for 127.0.0.1:2379."""
    require_curl()
    run_doc_against_etcd("config.md", etcd, tmp_path, at_least=4)


def run_doc_against_etcd(name, etcd, tmp_path, at_least):
    """Runs the `sh test` blocks of docs/NAME in order, with the test's etcd
    address for 127.0.0.1:2379; at least `at_least` of them."""
    doc = DOCS / name
    address = f"127.0.0.1:{free_port()}"
    n = 0
    for block in blocks(doc):
        if block.has("test"):
            block.body = block.body.replace("127.0.0.1:2379", etcd)
            run_block(doc, block, tmp_path, address)
            n += 1
    assert n >= at_least, f"only {n} executed blocks in {doc.name}"


def test_wrappers_examples_run_against_real_processes(tmp_path):
    doc = DOCS / "wrappers.md"
    n = run_doc_with_servers(doc, tmp_path)
    assert n >= 5, f"only {n} executed blocks in {doc.name}"


def test_wrappers_doc_describes_every_builtin_and_setting():
    """Each built-in wrapper has its section in wrappers.md and each of its settings
    (as `greeter --help` lists them) is mentioned there."""
    text = (DOCS / "wrappers.md").read_text()
    out = subprocess.run([str(binary("greeter")), "--help"], capture_output=True, text=True, timeout=30)
    listing = out.stdout[out.stdout.index("Wrappers (--wrappers"):]
    names = re.findall(r"^  ([a-z]+): ", listing, re.M)
    assert len(names) >= 10, names
    for name in names:
        assert f"### {name}\n" in text, f"wrappers.md has no section for {name}"
    settings = re.findall(r"^      ([a-z]+\.[a-z_]+)  ", listing, re.M)
    assert len(settings) >= 40, settings
    for setting in settings:
        assert f"`{setting}`" in text, f"wrappers.md does not mention {setting}"


CLI_VERBS = [
    "call", "stream", "list services", "get service", "health", "stats",
    "register service", "deregister service", "publish", "subscribe",
    "config get", "config set", "config del", "config watch",
    "server", "api", "proxy",
]


def test_etcd_examples_run_against_etcd_and_the_greeter(etcd, tmp_path):
    """docs/etcd.md's `sh test` blocks, with the test's etcd for 127.0.0.1:2379."""
    run_doc_against_etcd("etcd.md", etcd, tmp_path, at_least=2)


def test_cli_doc_lists_every_verb_and_flag():
    """Each verb has its section, and each flag its `micro <verb> --help` shows is in
    docs/cli.md; each section names a real verb."""
    text = (DOCS / "cli.md").read_text()
    sections = re.findall(r"^## micro (.+)$", text, re.M)
    assert sorted(sections) == sorted(CLI_VERBS), sections
    for verb in CLI_VERBS:
        out = subprocess.run(
            [str(binary("micro")), *verb.split(), "--help"],
            capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
        )
        assert out.returncode == 0, out.stderr
        assert f"micro {verb} [OPTIONS]" in out.stdout and f"micro {verb} [OPTIONS]" in text, verb
        flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z_]+)", out.stdout, re.M)) - {"--help", "--version"}
        # The config verbs take only their store's flags and -o.
        assert len(flags) >= (3 if verb.startswith("config ") else 11), (verb, flags)
        for flag in sorted(flags):
            assert f"`{flag}" in text, f"cli.md does not mention {flag} of micro {verb}"


def test_discovery_numbers_match_the_code():
    """The constants discovery.md quotes are the code's, and the measurements are
    bench/registry's."""
    text = " ".join((DOCS / "discovery.md").read_text().split())
    src = ROOT / "crates/micro/src"

    def const(path, name):
        m = re.search(rf"const {name}: [^=]+= ([^;]+);", (src / path).read_text())
        assert m, f"{path}: no constant {name}"
        return " ".join(m.group(1).split())

    assert const("registry/local.rs", "DEFAULT_POLL_INTERVAL") == "Duration::from_millis(200)"
    assert "every **200 ms**" in text
    assert const("registry/mdns/mod.rs", "DEFAULT_WARMUP") == "Duration::from_millis(300)"
    assert "first 300 ms" in text
    assert const("registry/mdns/txt.rs", "TXT_BUDGET") == "1300"
    assert const("registry/mdns/txt.rs", "CHUNK") == "250"
    assert "**1300 bytes**" in text and "250-byte strings" in text
    assert const("selector/mark.rs", "DEFAULT_BACKOFF_INITIAL") == "Duration::from_secs(1)"
    assert const("selector/mark.rs", "DEFAULT_BACKOFF_MAX") == "Duration::from_secs(30)"
    assert "1 s, doubling with each failure in a row up to 30 s" in text
    assert const("selector/cache.rs", "DEFAULT_IDLE_TIMEOUT") == "Duration::from_secs(10 * 60)"
    assert "for 10 minutes" in text
    options = (src / "options/mod.rs").read_text()
    assert "register_ttl: Duration::from_secs(90)," in options and "default **90 s**" in text
    assert "register_interval: Duration::from_secs(30)," in options and "default **30 s**" in text
    for name in ["random", "roundrobin", "leastconn", "mdns", "local", "memory"]:
        assert f"| `{name}`" in text, name
    bench = (ROOT / "bench/registry/README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (\d+) \|", bench, re.M))
    assert f"{rows['1']} ns with 1 service" in text and f"{rows['100']} ns with 100" in text
    local = re.search(r"^\| local \(temp dir\) \| ([\d.]+ ms) \| ([\d.]+ ms) \|", bench, re.M)
    assert local and f"{local.group(1)} median and {local.group(2)}" in text


def readme_discovery_block() -> list:
    """The commands of the README's Discovery block, comments dropped."""
    text = (ROOT / "README.md").read_text()
    m = FENCE.search(text, text.index("\n## Discovery"))
    assert m and m.group(1).strip() == "sh", "README: no sh block in the Discovery section"
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in m.group(2).splitlines()]
    return [line for line in lines if line]


def test_readme_discovery_commands(tmp_path):
    """Two greeters with no flags, then `micro call`, `list services` and `health`
    with no flags either, as the README shows."""
    lines = readme_discovery_block()
    assert lines[0].startswith("cargo build"), lines[0]  # the test uses the built binaries
    servers = [line for line in lines[1:] if line.endswith("&")]
    commands = [line for line in lines[1:] if not line.endswith("&")]
    assert servers == ["greeter &", "greeter &"], servers
    assert [c.split()[:2] for c in commands] == [["micro", "call"], ["micro", "list"], ["micro", "health"]]
    assert "--address" not in " ".join(commands)
    env = shell_env()
    running_servers = Servers(tmp_path, tmp_path, env)
    try:
        running_servers.start("README", background_commands("\n".join(servers)))
        outputs = []
        for command in commands:
            out = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=env,
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
            )
            assert out.returncode == 0, f"README: `{command}` failed:\n{out.stderr}"
            outputs.append(out.stdout)
    finally:
        running_servers.stop()
    call, listed, health = outputs
    assert json.loads(call) == {"message": "Hello John"}
    assert normalise(listed) == ["SERVICE  VERSION  NODES  ENDPOINTS", "greeter  latest   2      2"], listed
    assert [line.split()[2] for line in normalise(health)[1:]] == ["ok", "ok"], health
