"""Through an HTTP proxy: a real tinyproxy on loopback, started by the tests (Debian's tinyproxy)."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from typing import Iterator

import pytest

import basetts
from basetts import Synthesizer
from basetts.net.transport import Proxy, proxy_for
from basetts.settings import Settings
from basetts.testing import Faults, LocalServer

from .helpers import raw_server

CERTS = os.path.join(os.path.dirname(__file__), "certs")
TEXT = "Through the proxy. Every word arrives."


class Tinyproxy:
    def __init__(self, directory: str, port: int, extra: str = "") -> None:
        self.port = port
        self.log_path = os.path.join(directory, f"tinyproxy-{port}.log")
        config = os.path.join(directory, f"tinyproxy-{port}.conf")
        with open(config, "w") as file:
            file.write(f'Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{self.log_path}"\nLogLevel Info\n'
                       f"MaxClients 50\nAllow 127.0.0.1\nDisableViaHeader Yes\n{extra}\n")
        self.process = subprocess.Popen(["tinyproxy", "-d", "-c", config], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"tinyproxy did not start: {self.log()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path, encoding="utf-8", errors="replace") as file:
            return file.read()
        return ""

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def proxies() -> Iterator[object]:
    if shutil.which("tinyproxy") is None:
        pytest.fail("tinyproxy is not installed: `make system-deps` installs it (Debian: tinyproxy)")
    directory = tempfile.mkdtemp(prefix="basetts-proxy-")
    started = []

    def start(extra: str = "") -> Tinyproxy:
        proxy = Tinyproxy(directory, free_port(), extra)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_through_a_proxy_every_word_arrives(proxies) -> None:
    proxy = proxies()
    with LocalServer() as server:
        audio = Synthesizer(url=server.url, api_key=server.api_key, proxy=proxy.url).synthesize(TEXT)
        assert audio.pcm == server.expected_pcm(TEXT)
        assert f"127.0.0.1:{server.port}" in proxy.log()  # tinyproxy logs the CONNECT's target


def test_a_batch_through_a_proxy_every_text_arrives(proxies) -> None:
    """synthesize_many's connectors tunnel too, and its I/O thread streams over the tunnels."""
    proxy = proxies()
    texts = [f"{TEXT} {i}" for i in range(6)]
    with LocalServer() as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key, proxy=proxy.url)
        results = list(synth.synthesize_many(texts, concurrency=3))
        assert [r.audio.pcm if r.audio else r.error for r in results] == [server.expected_pcm(t) for t in texts]
        assert proxy.log().count(f"127.0.0.1:{server.port}") >= len(texts)  # one CONNECT per text


def test_tls_to_the_server_through_the_tunnel_with_credentials(proxies, monkeypatch) -> None:
    """wss:// inside CONNECT: the proxy sees the CONNECT (and our proxy credentials), never the API key."""
    proxy = proxies("BasicAuth user s3cret")
    monkeypatch.setenv("SSL_CERT_FILE", os.path.join(CERTS, "untrusted-cert.pem"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(CERTS, "untrusted-cert.pem"), os.path.join(CERTS, "untrusted-key.pem"))
    with LocalServer(ssl_context=context, api_key="key-that-only-the-server-sees") as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key, proxy=f"http://user:s3cret@127.0.0.1:{proxy.port}")
        audio = synth.synthesize(TEXT)
        assert audio.pcm == server.expected_pcm(TEXT)
        assert server.last().authorization == "Api-Key key-that-only-the-server-sees"
    assert "key-that-only-the-server-sees" not in proxy.log()


def test_orpheus_over_https_through_the_tunnel_the_proxy_never_sees_the_key(proxies, monkeypatch) -> None:
    """https:// to a …/predict deployment: the POST goes inside CONNECT and TLS, as wss:// does."""
    proxy = proxies()
    monkeypatch.setenv("SSL_CERT_FILE", os.path.join(CERTS, "untrusted-cert.pem"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(CERTS, "untrusted-cert.pem"), os.path.join(CERTS, "untrusted-key.pem"))
    with LocalServer(protocol="orpheus-http", ssl_context=context, api_key="key-only-for-the-server") as server:
        assert server.url.startswith("https://")
        synth = Synthesizer(url=server.url, api_key=server.api_key, proxy=proxy.url)
        text = " ".join(f"{TEXT} Part {i}." for i in range(20))  # several requests on the tunnel
        assert synth.synthesize(text).pcm == server.expected_pcm(text)
        assert len(server.conversations) > 1 and {c.connection for c in server.conversations} == {1}
        assert server.last().authorization == "Api-Key key-only-for-the-server"
        assert f"127.0.0.1:{server.port}" in proxy.log()  # the CONNECT's target
    assert "key-only-for-the-server" not in proxy.log()


@pytest.mark.parametrize("protocol", ["orpheus", "orpheus-http"])
def test_a_connection_lost_through_the_proxy_goes_on_through_it(proxies, protocol: str) -> None:
    """The recovery's new connection tunnels too: every connection the server saw came through a CONNECT."""
    proxy = proxies()
    text = " ".join(f"{TEXT} Part {i}." for i in range(20))  # parts (a connection each) or several requests
    faults = Faults(drop_after_bytes=3000, stream_failures=1, first_failure=2)
    with LocalServer(protocol=protocol, faults=faults) as server:
        synth = Synthesizer(url=server.url, api_key=server.api_key, protocol=protocol, proxy=proxy.url)
        audio = synth.synthesize(text)
        assert audio.pcm == server.expected_pcm(text) and audio.stats.recoveries == 1
        connections = {c.connection for c in server.conversations}
        assert len(connections) >= 2 and proxy.log().count(f"CONNECT 127.0.0.1:{server.port}") == len(connections)


@pytest.mark.parametrize("extra, status, gist", [
    ("BasicAuth user s3cret", 407, "credentials"),
    ("ConnectPort 1", 403, "does not allow"),
])
def test_a_proxy_that_refuses_is_a_clear_connect_error(proxies, extra: str, status: int, gist: str) -> None:
    proxy = proxies(extra)
    with LocalServer() as server:
        with pytest.raises(basetts.ConnectError) as info:
            Synthesizer(url=server.url, api_key=server.api_key, proxy=proxy.url, retries=0).synthesize(TEXT)
        assert not server.conversations
    assert f"HTTP {status}" in str(info.value) and gist in str(info.value) and "proxy" in str(info.value)


def test_a_proxy_that_cannot_reach_the_server(proxies) -> None:
    proxy = proxies()
    with pytest.raises(basetts.ConnectError, match=r"refused to tunnel .* HTTP 5\d\d"):
        Synthesizer(url=f"ws://127.0.0.1:{free_port()}/v1/websocket", api_key="k", proxy=proxy.url,
                    retries=0).synthesize(TEXT)


def test_a_502_from_the_proxy_is_named() -> None:
    """A proxy of our own that answers 502."""
    def answer(connection: socket.socket, target: str) -> None:
        assert target == "127.0.0.1:9"
        connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

    with raw_server(answer, pattern=r"^CONNECT (\S+) HTTP/1.1") as url:
        port = int(url.split(":")[2].split("/")[0])
        with pytest.raises(basetts.ConnectError, match=r"HTTP 502 \(it could not reach the server\)"):
            Synthesizer(url="ws://127.0.0.1:9/v1/websocket", api_key="k", proxy=f"http://127.0.0.1:{port}",
                        retries=0).synthesize(TEXT)


def test_no_proxy_and_the_environment(proxies, monkeypatch) -> None:
    """The standard variables pick the proxy; NO_PROXY and loopback skip it; proxy= wins."""
    settings = Settings.resolve(url="wss://model-x.api.baseten.co/environments/production/websocket",
                                api_key="k")
    assert proxy_for(settings, {"HTTPS_PROXY": "http://p:3128"}) == Proxy("p", 3128, None)
    assert proxy_for(settings, {"https_proxy": "http://u:p%40ss@p:3128"}) == Proxy("p", 3128, "Basic dTpwQHNz")
    assert proxy_for(settings, {"ALL_PROXY": "p:8000"}) == Proxy("p", 8000, None)
    assert proxy_for(settings, {"HTTP_PROXY": "http://p:1"}) is None  # wss:// goes by HTTPS_PROXY
    for no_proxy in ("baseten.co", ".api.baseten.co", "*", "other.com, model-x.api.baseten.co"):
        assert proxy_for(settings, {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": no_proxy}) is None
    assert proxy_for(settings.replace(proxy="http://q:1"), {"HTTPS_PROXY": "http://p:3128"}) == Proxy("q", 1, None)
    assert proxy_for(settings.replace(proxy=""), {"HTTPS_PROXY": "http://p:3128"}) is None
    local = Settings.resolve(url="ws://127.0.0.1:1/v1/websocket", api_key="k")
    assert proxy_for(local, {"HTTP_PROXY": "http://p:3128"}) is None
    with pytest.raises(basetts.ConnectError, match="HTTP proxies"):
        proxy_for(settings, {"HTTPS_PROXY": "socks5://p:1080"})
    # End to end: an environment proxy is not used for loopback; the tunnel works by setting alone.
    proxy = proxies()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with LocalServer() as server:
        assert Synthesizer(url=server.url, api_key=server.api_key).synthesize(TEXT).pcm == server.expected_pcm(TEXT)
        assert f":{server.port}" not in proxy.log()


def test_the_proxy_setting_never_shows_its_credentials() -> None:
    synth = Synthesizer(url="wss://x.example/ws", api_key="k", proxy="http://user:hunter2@p:3128")
    assert "hunter2" not in repr(synth.settings) and "hunter2" not in repr(synth)
    assert "hunter2" not in repr(proxy_for(synth.settings))
