"""`GET /openapi.json` of `micro api`: the real gateway and a real greeter on
loopback ports. The document must pass a standard OpenAPI validator
(openapi-spec-validator), describe the greeter's endpoints with the JSON Schemas of
its registry record, and follow the registry as services come and go."""

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import TARGET, Greeter, free_port, wait_for_port

WAIT = 15.0  # seconds for the gateway to see a registry change over loopback


def validator():
    """openapi-spec-validator's validate (tests/requirements.txt); fails without it
    in CI, skips (saying why) elsewhere."""
    try:
        from openapi_spec_validator import validate  # noqa: PLC0415
        from openapi_spec_validator.validation import OpenAPIV31SpecValidator  # noqa: PLC0415
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("openapi-spec-validator is not installed (CI is set): pip install -r tests/requirements.txt")
        pytest.skip("openapi-spec-validator is not installed: pip install -r tests/requirements.txt")
    return lambda doc: validate(doc, cls=OpenAPIV31SpecValidator)


class Gateway:
    """One `micro api` process on a free port."""

    def __init__(self, proc, port, log):
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def get(self, path, accept=None):
        req = urllib.request.Request(self.url + path)
        if accept:
            req.add_header("Accept", accept)
        return urllib.request.urlopen(req, timeout=WAIT)

    def document(self):
        with self.get("/openapi.json") as rsp:
            assert rsp.status == 200
            assert rsp.headers["Content-Type"].startswith("application/json")
            return json.loads(rsp.read())

    def document_when(self, condition, what):
        """The document once `condition(doc)` holds; fails after WAIT seconds."""
        deadline = time.monotonic() + WAIT
        while True:
            doc = self.document()
            if condition(doc):
                return doc
            if time.monotonic() > deadline:
                pytest.fail(f"/openapi.json never {what}:\n{json.dumps(doc, indent=1)[:4000]}")
            time.sleep(0.1)


@pytest.fixture
def gateway(tmp_path):
    binary = TARGET / "micro"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build -p micro-cli` first")
    port = free_port()
    log = tmp_path / "micro-api.log"
    proc = subprocess.Popen(
        [str(binary), "api", "--address", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        text=True,
    )
    try:
        try:
            wait_for_port(port, proc)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{log.read_text()}") from None
        yield Gateway(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_greeter():
    """A greeter on a free port (the private registry of the test, as the
    `greeter` fixture of conftest.py)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(TARGET / "greeter"), "--server_address", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    g = Greeter(proc, port)
    try:
        wait_for_port(port, proc)
    except BaseException:
        g.stop()
        raise
    return g


def resolve(doc, schema):
    """A schema with its `$ref` followed (references are local: `#/...`)."""
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for token in ref[2:].split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        schema = node
    return schema


def has_greeter(doc):
    return "/greeter/hello" in doc.get("paths", {})


def test_the_document_describes_the_greeter(gateway, greeter):
    validate = validator()
    doc = gateway.document_when(has_greeter, "listed the greeter")
    validate(doc)

    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] == "micro api"
    assert {"name": "greeter"}.items() <= doc["tags"][0].items()

    hello = doc["paths"]["/greeter/hello"]
    post = hello["post"]
    assert post["operationId"] == "greeter.Greeter.Hello"
    assert post["tags"] == ["greeter"]
    assert post["summary"] == "Greeter.Hello"
    request = resolve(doc, post["requestBody"]["content"]["application/json"]["schema"])
    assert request["type"] == "object"
    assert request["properties"]["name"]["type"] == "string"
    response = resolve(doc, post["responses"]["200"]["content"]["application/json"]["schema"])
    assert response["properties"]["message"]["type"] == "string"
    for code in ("400", "404", "408", "429", "500", "503"):
        error = resolve(doc, post["responses"][code])
        schema = resolve(doc, error["content"]["application/json"]["schema"])
        assert set(schema["properties"]) == {"id", "code", "detail", "status"}

    # The flat request is documented as query parameters too.
    get = hello["get"]
    assert [(p["name"], p["in"]) for p in get["parameters"]] == [("name", "query")]

    # The server-streaming endpoint answers server-sent events.
    stream = doc["paths"]["/greeter/stream"]["post"]
    assert stream["operationId"] == "greeter.Greeter.Stream"
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    item = resolve(doc, stream["responses"]["200"]["content"]["text/event-stream"]["x-micro-message"])
    assert set(item["properties"]) == {"message", "sequence"}

    # What the document says works: the same paths answer as documented.
    req = urllib.request.Request(
        gateway.url + "/greeter/hello",
        data=json.dumps({"name": "John"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=WAIT) as rsp:
        assert json.loads(rsp.read()) == {"message": "Hello John"}
    with gateway.get("/greeter/hello?" + urllib.parse.urlencode({"name": "Jane"})) as rsp:
        assert json.loads(rsp.read()) == {"message": "Hello Jane"}
    with pytest.raises(urllib.error.HTTPError) as e:
        gateway.get("/greeter/hello?name=")
    assert e.value.code == 400
    assert set(json.loads(e.value.read())) == {"id", "code", "detail", "status"}

    # The same registry gives the same document (it can be cached and diffed).
    assert gateway.document() == doc


def test_the_document_follows_the_registry(gateway):
    validate = validator()
    empty = gateway.document()
    validate(empty)
    assert not has_greeter(empty)

    greeter = start_greeter()
    try:
        doc = gateway.document_when(has_greeter, "listed the greeter once it started")
        validate(doc)
    finally:
        # A graceful stop deregisters the greeter.
        assert greeter.stop() == 0, greeter.proc.stderr.read()

    doc = gateway.document_when(lambda d: not has_greeter(d), "dropped the greeter once it stopped")
    validate(doc)
    assert "/greeter/stream" not in doc["paths"]
    assert all(tag["name"] != "greeter" for tag in doc.get("tags", []))
    assert not any(name.startswith("greeter.") for name in doc["components"]["schemas"])
