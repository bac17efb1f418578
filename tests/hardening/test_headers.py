"""Header bounds through real HTTP: a 16 MiB header, a large one, too many → 431; the server stays up."""

from __future__ import annotations

import json
import socket
import threading
from urllib.parse import urlsplit

import httpx
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def raw_request(url: str, header_bytes: int, *, count: int = 1) -> tuple[int, bytes]:
    """Send a GET with `count` headers totalling about `header_bytes` while reading the answer (the server may
    answer before the head is all sent)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    chunk = b"a" * max(1, header_bytes // count)
    head = b"GET /video/notice HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, chunk) for i in range(count))

    def send() -> None:
        try:
            sock.sendall(head + b"\r\n")
        except OSError:
            pass  # the server stopped reading after answering

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = b""
    try:
        while b"\r\n\r\n" not in received or len(received) < received.index(b"\r\n\r\n") + 4 + _length(received):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    finally:
        sock.close()
        sender.join(timeout=30)
    status = int(received.split(b" ", 2)[1])
    return status, received.split(b"\r\n\r\n", 1)[1]


def _length(received: bytes) -> int:
    head = received.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_16_mib_header_is_431_and_the_server_goes_on(app_url):
    status, body = raw_request(app_url, 16 * 1024 * 1024)
    assert status == 431
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert httpx.get(app_url + "/video/notice").status_code == 200


def test_headers_over_the_apps_limit_are_431(app_url):
    status, body = raw_request(app_url, 40 * 1024)  # under the parser's cap, over the app's 32 KiB
    assert status == 431 and "32768 bytes" in json.loads(body)["error"]["message"]


def test_too_many_headers_are_431(app_url):
    status, body = raw_request(app_url, 200 * 8, count=200)
    assert status == 431 and "more than 100" in json.loads(body)["error"]["message"]
    response = httpx.get(app_url + "/video/notice", headers={f"x-h{i}": "1" for i in range(50)})
    assert response.status_code == 200  # ordinary requests are untouched


def test_the_uvicorn_hooks_the_parser_bound_relies_on_are_there():
    for hook in ("data_received", "on_headers_complete", "on_message_complete", "send_400_response"):
        assert callable(getattr(HttpToolsProtocol, hook, None)), hook
