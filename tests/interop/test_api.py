"""`micro api` end to end: the gateway of a real `micro server` in front of a real
greeter, driven with plain HTTP (urllib and curl), and docs/api.md executed."""

import gzip
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, TARGET, free_port, wait_for_port
from test_server import MicroServer

WAIT = 10.0


@pytest.fixture
def server(tmp_path):
    s = MicroServer(tmp_path / "data")
    s.start()
    wait_for_port(s.api_port, s.proc)
    s.api = f"127.0.0.1:{s.api_port}"
    try:
        yield s
    finally:
        s.stop()


def request(url, body=None, method=None, headers=None):
    """(status, headers, body bytes) of one request."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as rsp:
            return rsp.status, rsp.headers, rsp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_routable(server, path="/greeter/hello"):
    deadline = time.monotonic() + WAIT
    while True:
        status, _, body = request(f"http://{server.api}{path}", {"name": "x"})
        if status == 200:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never became routable: {status} {body!r}")
        time.sleep(0.1)


def test_zero_config_calls_and_errors(server, greeter):
    wait_routable(server)
    base = f"http://{server.api}"
    assert json.loads(request(f"{base}/greeter/hello", {"name": "John"})[2]) == {"message": "Hello John"}
    assert json.loads(request(f"{base}/greeter/greeter/hello", {"name": "J"})[2]) == {"message": "Hello J"}
    assert json.loads(request(f"{base}/greeter/hello?name=Q%20R")[2]) == {"message": "Hello Q R"}

    status, headers, body = request(f"{base}/nope/hello", {})
    err = json.loads(body)
    assert status == 404 and err["id"] == "micro.api" and "greeter" in err["detail"], err
    assert headers["Content-Type"] == "application/json"
    status, _, body = request(f"{base}/greeter/nope", {})
    assert status == 404 and "Greeter.Hello" in json.loads(body)["detail"]
    status, _, body = request(f"{base}/greeter/hello", b'{"name":')
    assert status == 400 and "malformed JSON" in json.loads(body)["detail"]
    # The greeter's own error keeps its code and id.
    status, _, body = request(f"{base}/greeter/hello", {"name": ""})
    assert status == 400 and json.loads(body)["id"] == "greeter"
    status, headers, _ = request(f"{base}/greeter/hello", {"name": "x"}, method="DELETE")
    assert status == 405
    # A body over the limit (4 MiB) is refused from its Content-Length, before it
    # is read: the answer comes while the client has sent only the head.
    with socket.create_connection(("127.0.0.1", server.api_port), timeout=WAIT) as s:
        s.sendall(b"POST /greeter/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5242880\r\n\r\n")
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 413"), head
    status, _, _ = request(f"{base}/greeter/hello?{'a=1&' * 3000}", {})
    assert status == 414
    # /rpc is off unless --enable_rpc.
    status, _, _ = request(f"{base}/rpc", {"service": "greeter", "endpoint": "Greeter.Hello"})
    assert status == 404


def test_streams_request_ids_gzip_and_metrics(server, greeter):
    wait_routable(server)
    base = f"http://{server.api}"
    status, headers, body = request(f"{base}/greeter/stream", {"name": "S", "count": 3})
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    events = [json.loads(line[len("data: "):]) for line in body.decode().splitlines() if line.startswith("data: ")]
    assert [e["sequence"] for e in events] == [1, 2, 3]

    status, headers, _ = request(f"{base}/greeter/hello", {"name": "id"}, headers={"X-Request-Id": "req-42"})
    assert headers["X-Request-Id"] == "req-42"
    _, headers, _ = request(f"{base}/greeter/hello", {"name": "id"})
    assert len(headers["X-Request-Id"]) == 36

    # A large answer (the 404 listing is small; ask the greeter for a long name) is gzipped.
    name = "n" * 4000
    status, headers, body = request(f"{base}/greeter/hello", {"name": name}, headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == {"message": f"Hello {name}"}

    status, _, body = request(f"{base}/metrics")
    text = body.decode()
    assert 'micro_api_requests_total{route="greeter Greeter.Hello",handler="rpc",code="200"}' in text, text
    assert 'handler="stream"' in text


def test_enable_rpc_cors_and_event_routes_by_flag(tmp_path, greeter):
    """`micro api` alone, with /rpc and CORS switched on by flags."""
    port = free_port()
    proc = subprocess.Popen(
        [str(TARGET / "micro"), "api", "--address", f"127.0.0.1:{port}", "--enable_rpc",
         "--cors_origins", "https://app.example.com"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT
        while True:
            status, _, body = request(f"{base}/rpc", {"service": "greeter", "endpoint": "Greeter.Hello", "request": {"name": "R"}})
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200 and json.loads(body) == {"message": "Hello R"}, body

        pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
        status, headers, _ = request(f"{base}/greeter/hello", method="OPTIONS", headers=pre)
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        status, _, _ = request(f"{base}/greeter/hello", method="OPTIONS", headers={**pre, "Origin": "https://evil.example"})
        assert status == 403
        _, headers, _ = request(f"{base}/greeter/hello", {"name": "c"}, headers={"Origin": "https://app.example.com"})
        assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0, proc.stderr.read()


def test_api_doc_examples(server, greeter, tmp_path):
    """docs/api.md's `sh test` blocks, in order, against this test's gateway."""
    from test_docs import require_curl, run_doc_against  # noqa: PLC0415

    require_curl()
    wait_routable(server)
    work = tmp_path / "work"
    work.mkdir()
    run_doc_against(ROOT / "docs" / "api.md", "127.0.0.1:8080", server.api, work, minimum=5)


def test_https_with_certificate_files(tmp_path, greeter):
    """`micro api --tls_cert_file --tls_key_file` serves HTTPS (HTTP/2 and
    HTTP/1.1); a client that trusts the certificate calls the greeter."""
    import ssl  # noqa: PLC0415

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(TARGET / "micro"), "api", "--address", f"127.0.0.1:{port}",
         "--tls_cert_file", str(cert), "--tls_key_file", str(key)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port, proc)
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + WAIT
        while True:
            req = urllib.request.Request(
                f"https://127.0.0.1:{port}/greeter/hello", data=b'{"name":"TLS"}', method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=WAIT, context=context) as rsp:
                    assert json.loads(rsp.read()) == {"message": "Hello TLS"}
                    break
            except urllib.error.HTTPError as e:
                if time.monotonic() > deadline:
                    raise AssertionError(e.read()) from None
                time.sleep(0.1)
        # HTTP/2 by ALPN, with curl when it is there.
        out = subprocess.run(
            ["curl", "-s", "--http2", "--cacert", str(cert), "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             "-d", '{"name":"h2"}', f"https://127.0.0.1:{port}/greeter/hello"],
            capture_output=True, text=True, timeout=WAIT,
        )
        assert out.stdout == "2 200", out
        # Plain HTTP to the TLS port gets no answer (the handshake fails).
        with pytest.raises(Exception):  # noqa: B017 (any failure to speak HTTP)
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=WAIT)
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0, proc.stderr.read()


def test_oversized_heads_are_refused(server, greeter):
    """A request head over 64 KiB gets 431 and the connection is not held."""
    with socket.create_connection(("127.0.0.1", server.api_port), timeout=WAIT) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (80 * 1024) + b"\r\n\r\n")
        head = s.recv(4096).decode(errors="replace")
    assert head.startswith("HTTP/1.1 431"), head


def read_answers(sock, count):
    """`count` HTTP/1.1 answers read off `sock`: [(status line, headers, body)]."""
    data, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            assert more, f"closed after {len(answers)} answers: {data!r}"
            data += more
        head, data = data.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in data:
                    data += sock.recv(65536)
                size, data = data.split(b"\r\n", 1)
                size = int(size, 16)
                while len(data) < size + 2:
                    data += sock.recv(65536)
                body, data = body + data[:size], data[size + 2:]
                if size == 0:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            while len(data) < length:
                more = sock.recv(65536)
                assert more, "closed mid-body"
                data += more
            body, data = data[:length], data[length:]
        if lines[0].split()[1] != "100":
            answers.append((lines[0], headers, body))
    return answers


def test_http11_connections(server, greeter):
    """Kept-alive connections, pipelined requests, a body that comes after its
    head, and the requests the gateway hands to its general HTTP server (HTTP/1.0,
    chunked and large bodies, Expect) on the same connection as plain ones."""
    wait_routable(server)
    hello = b'{"name":"John"}'
    post = (b"POST /greeter/hello HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 15\r\n\r\n" + hello)
    greeting = {"message": "Hello John"}
    with socket.create_connection(("127.0.0.1", server.api_port), timeout=WAIT) as s:
        # Three pipelined in one write, answered in order, each with a date.
        s.sendall(post + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + post)
        answers = read_answers(s, 3)
        assert [a[0] for a in answers] == ["HTTP/1.1 200 OK"] * 3
        assert json.loads(answers[0][2]) == greeting and json.loads(answers[2][2]) == greeting
        assert json.loads(answers[1][2]) == {"status": "ok"}
        assert all("date" in a[1] and "x-request-id" in a[1] for a in answers)
        # The body a moment after its head.
        s.sendall(post[:-len(hello)])
        time.sleep(0.3)
        s.sendall(hello)
        assert json.loads(read_answers(s, 1)[0][2]) == greeting
        # A chunked body: served (by hyper from here on), and so is what follows.
        s.sendall(b"POST /greeter/hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\n{\"nam\r\na\r\ne\":\"John\"}\r\n0\r\n\r\n" + post)
        answers = read_answers(s, 2)
        assert [json.loads(a[2]) for a in answers] == [greeting, greeting]
        # Connection: close is answered, then the connection ends.
        s.sendall(post.replace(b"Host: x", b"Host: x\r\nConnection: close"))
        (status, headers, body), = read_answers(s, 1)
        assert status == "HTTP/1.1 200 OK" and headers.get("connection") == "close"
        assert s.recv(10) == b""
    for first in (
        b"GET /health HTTP/1.0\r\n\r\n",
        b"POST /greeter/hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 15\r\n\r\n" + hello,
        # Over the size read with the head (64 KiB): streamed to the handler.
        b"POST /greeter/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 80011\r\n\r\n"
        + b'{"name":"' + b"J" * 80000 + b'"}',
    ):
        with socket.create_connection(("127.0.0.1", server.api_port), timeout=WAIT) as s:
            s.sendall(first)
            status, _, body = read_answers(s, 1)[0]
            assert status.split()[1] == "200", (first[:60], status, body[:200])
            if first.startswith(b"GET /health HTTP/1.0"):
                continue  # HTTP/1.0 closes by default
            s.sendall(post)
            assert json.loads(read_answers(s, 1)[0][2]) == greeting


def test_a_stream_over_websocket(server, greeter):
    """A streaming endpoint over WebSocket: the query is the request, each message
    is a text frame, the end a close 1000; a failure is an error frame and 1011."""
    from websockets.sync.client import connect  # noqa: PLC0415

    wait_routable(server)
    url = f"ws://{server.api}/greeter/stream?name=WS&count=3"
    with connect(url, open_timeout=WAIT) as ws:
        frames = [json.loads(ws.recv(timeout=WAIT)) for _ in range(3)]
        assert [f["sequence"] for f in frames] == [1, 2, 3]
        assert frames[0]["message"] == "Hello WS"
        from websockets.exceptions import ConnectionClosedOK  # noqa: PLC0415

        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=WAIT)
    with connect(f"ws://{server.api}/greeter/stream?count=2", open_timeout=WAIT) as ws:
        error = json.loads(ws.recv(timeout=WAIT))["error"]
        assert error["code"] == 400 and error["id"] == "greeter", error
        from websockets.exceptions import ConnectionClosedError  # noqa: PLC0415

        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=WAIT)
        assert closed.value.rcvd.code == 1011


def start_api(port, env=None, *extra):
    import os  # noqa: PLC0415

    return subprocess.Popen(
        [str(TARGET / "micro"), "api", "--address", f"127.0.0.1:{port}", *extra],
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def test_slow_clients_time_out(greeter):
    """A body that stops arriving gets 408 after the read timeout; a head that
    never ends is cut off. Nothing else waits for them."""
    port = free_port()
    api = start_api(port, {"MICRO_SERVER_READ_TIMEOUT": "1s"})
    try:
        wait_for_port(port, api)
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(b"POST /greeter/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na")
            started = time.monotonic()
            head = s.recv(4096).decode()
        assert head.startswith("HTTP/1.1 408"), head
        assert time.monotonic() - started < WAIT
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            assert s.recv(4096) == b"", "a head that never ends must be cut off"
    finally:
        api.terminate()
        api.wait(timeout=15)


def test_a_stop_finishes_requests_in_flight(tmp_path):
    """SIGTERM while a call is running: the call still gets its answer, and the
    gateway then exits 0."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    gport = free_port()
    slow = subprocess.Popen(
        [str(TARGET / "greeter"), "--server_address", f"127.0.0.1:{gport}"],
        env={**os.environ, "MICRO_WRAPPERS": "chaos", "MICRO_WRAPPER_CHAOS_DELAY_PERCENT": "100",
             "MICRO_WRAPPER_CHAOS_DELAY": "1s"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    port = free_port()
    api = start_api(port)
    try:
        wait_for_port(gport, slow)
        wait_for_port(port, api)
        url = f"http://127.0.0.1:{port}/greeter/hello"
        deadline = time.monotonic() + WAIT
        while request(url, {"name": "warm"})[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        answer = {}
        t = threading.Thread(target=lambda: answer.update(r=request(url, {"name": "late"})))
        t.start()
        time.sleep(0.4)
        api.send_signal(signal.SIGTERM)
        t.join(WAIT)
        status, _, body = answer["r"]
        assert status == 200 and json.loads(body) == {"message": "Hello late"}, body
        assert api.wait(timeout=WAIT) == 0
    finally:
        for p in (api, slow):
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=15)


def test_namespace(tmp_path):
    """--namespace acme: the service registered as acme.greeter answers at
    /greeter/hello; a 404 names what was looked for."""
    import os  # noqa: PLC0415

    gport = free_port()
    greeter = subprocess.Popen(
        [str(TARGET / "greeter"), "--server_address", f"127.0.0.1:{gport}"],
        env={**os.environ, "MICRO_SERVER_NAME": "acme.greeter"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    port = free_port()
    api = start_api(port, None, "--namespace", "acme")
    try:
        wait_for_port(gport, greeter)
        wait_for_port(port, api)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + WAIT
        while (r := request(f"{base}/greeter/hello", {"name": "NS"}))[0] != 200:
            assert time.monotonic() < deadline, r
            time.sleep(0.1)
        assert json.loads(r[2]) == {"message": "Hello NS"}
        status, _, body = request(f"{base}/nope/hello", {})
        assert status == 404 and '"acme.nope"' in json.loads(body)["detail"], body
    finally:
        for p in (api, greeter):
            p.terminate()
            p.wait(timeout=15)


def test_workers_share_connections_and_calls(greeter):
    """--api_workers 3: concurrent keep-alive connections (spread over the
    workers, each with its own pooled connections to the greeter) all get their
    own answers, request after request; 0 workers is refused with a message."""
    import http.client  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    refused = subprocess.run(
        [str(TARGET / "micro"), "api", "--api_workers", "0"],
        capture_output=True, text=True, timeout=WAIT,
    )
    assert refused.returncode != 0 and "--api_workers" in refused.stderr, refused.stderr

    port = free_port()
    api = start_api(port, None, "--api_workers", "3")
    try:
        wait_for_port(port, api)
        url = f"http://127.0.0.1:{port}/greeter/hello"
        deadline = time.monotonic() + WAIT
        while request(url, {"name": "warm"})[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        def client(n):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
            try:
                for i in range(20):
                    name = f"c{n}-{i}"
                    conn.request("POST", "/greeter/hello", json.dumps({"name": name}),
                                 {"Content-Type": "application/json"})
                    rsp = conn.getresponse()
                    assert (rsp.status, json.loads(rsp.read())) == (200, {"message": f"Hello {name}"})
            finally:
                conn.close()
            return n

        with ThreadPoolExecutor(max_workers=12) as pool:
            assert sorted(pool.map(client, range(12))) == list(range(12))
    finally:
        api.terminate()
        api.wait(timeout=15)
