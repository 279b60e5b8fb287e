"""examples/flask_stream.py in a real browser: Debian's headless Chromium, driven by selenium through
Debian's chromium-driver, plays the endpoint in the page's <audio> element while the text is still being
generated (real time: the worst case), to the end, for as long as the audio lasts."""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Iterator

import pytest
from werkzeug.serving import make_server

from basetts.testing import LocalServer

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Records the <audio> element's events as the page runs (media events do not bubble: captured).
PROBE = """
window.probe = [];
for (const name of ["loadedmetadata", "playing", "waiting", "ended", "error"]) {
  document.addEventListener(name, e => window.probe.push([name, performance.now(), e.target.currentTime]), true);
}
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        pytest.fail("Debian's chromium and chromium-driver are not installed: `make test` installs them")
    from selenium import webdriver

    profile = tempfile.mkdtemp(prefix="basetts-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--mute-audio", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def example(monkeypatch: Any) -> Iterator[Any]:
    """The example app behind a real WSGI server on loopback, its backend a real-time local server."""
    with LocalServer(speed=1.0) as tts:
        monkeypatch.setenv("BASETTS_URL", tts.url)
        monkeypatch.setenv("BASETEN_API_KEY", tts.api_key)
        monkeypatch.delenv("BASETEN_MODEL_ID", raising=False)
        spec = importlib.util.spec_from_file_location("flask_stream_browser", os.path.join(EXAMPLES, "flask_stream.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        http = make_server("127.0.0.1", 0, module.app, threaded=True)
        thread = threading.Thread(target=http.serve_forever, name="test-wsgi", daemon=True)
        thread.start()
        try:
            yield tts, f"http://127.0.0.1:{http.server_port}"
        finally:
            http.shutdown()
            thread.join(5)


def test_a_browser_plays_the_stream_while_it_is_generated_and_to_its_end(browser: Any, example: Any) -> None:
    tts, base = example
    text = " ".join(f"word{i}" for i in range(70))  # 70 x 2048 samples: 6 s of audio, sent in real time
    seconds = 70 * 2048 / 24000
    browser.get(f"{base}/?text={'+'.join(text.split())}")
    audio = "document.getElementById('speech')"
    deadline = time.monotonic() + 30
    while not (tts.conversations and browser.execute_script(f"return {audio}.currentTime") > 1.0):
        assert time.monotonic() < deadline, browser.execute_script("return window.probe")
        time.sleep(0.05)
    record = tts.conversations[-1]
    assert not record.done.is_set(), "the browser started playing only once the whole text was generated"
    heard_early = record.bytes_sent / 48000
    assert heard_early < seconds - 1.0, f"{heard_early:.1f} s of {seconds:.1f} s already generated"
    while not browser.execute_script(f"return {audio}.ended"):
        assert time.monotonic() < deadline, browser.execute_script("return window.probe")
        time.sleep(0.05)
    events = browser.execute_script("return window.probe")
    ended = [event for event in events if event[0] == "ended"]
    assert ended and ended[0][2] == pytest.approx(seconds, abs=0.1), events  # all of it was played
    assert not [event for event in events if event[0] == "error"], events
