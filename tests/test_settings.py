"""Settings: where each value comes from, the URL it builds, and every validation rule."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Dict

import pytest

import basetts
from basetts import EMOTION_TAGS, VOICES, ConfigurationError, Settings, Synthesizer
from basetts.settings import baseten_url

KEY = "sk-test-0123456789abcdef"
LOCAL = "ws://127.0.0.1:9/v1/websocket"


def resolve(tmp_path: Path, environ: Dict[str, str], dotenv: str = "", **kwargs: Any) -> Settings:
    """Resolve with a controlled environment and a .env file written to tmp_path."""
    path = tmp_path / ".env"
    path.write_text(dotenv)
    return Settings.resolve(environ=environ, dotenv_path=str(path), **kwargs)


def local(**kwargs: Any) -> Settings:
    return Settings(url=LOCAL, api_key=KEY, **kwargs)


# resolution order ---------------------------------------------------------------------------------------
def test_argument_beats_environment_beats_dotenv(tmp_path: Path) -> None:
    dotenv = "BASETEN_API_KEY=from-dotenv\nBASETEN_MODEL_ID=dotenvmodel\n"
    environ = {"BASETEN_API_KEY": "from-env", "BASETEN_MODEL_ID": "envmodel"}
    only_dotenv = resolve(tmp_path, {}, dotenv)
    assert only_dotenv.api_key == "from-dotenv"
    assert "model-dotenvmodel." in only_dotenv.url
    env_and_dotenv = resolve(tmp_path, environ, dotenv)
    assert env_and_dotenv.api_key == "from-env"
    assert "model-envmodel." in env_and_dotenv.url
    arguments = resolve(tmp_path, environ, dotenv, api_key="from-arg", model_id="argmodel")
    assert arguments.api_key == "from-arg"
    assert "model-argmodel." in arguments.url


def test_hyphenated_key_name_of_the_official_example(tmp_path: Path) -> None:
    assert resolve(tmp_path, {}, "BASETEN-API-KEY=hyphen\n", model_id="m").api_key == "hyphen"
    assert resolve(tmp_path, {"BASETEN-API-KEY": "hyphen-env"}, model_id="m").api_key == "hyphen-env"
    # Either name in the environment beats either name in .env.
    assert resolve(tmp_path, {"BASETEN-API-KEY": "env"}, "BASETEN_API_KEY=dotenv\n", model_id="m").api_key == "env"


def test_blank_values_fall_through_to_the_next_source(tmp_path: Path) -> None:
    settings = resolve(tmp_path, {"BASETEN_API_KEY": "   ", "BASETEN_MODEL_ID": ""},
                       "BASETEN_API_KEY=dotenv-key\nBASETEN_MODEL_ID=dotenvmodel\n")
    assert settings.api_key == "dotenv-key"
    assert "model-dotenvmodel." in settings.url


def test_environment_model_id_beats_dotenv_url(tmp_path: Path) -> None:
    settings = resolve(tmp_path, {"BASETEN_MODEL_ID": "envmodel", "BASETEN_API_KEY": KEY},
                       "BASETTS_URL=ws://localhost:1/v1/websocket\n")
    assert settings.url == baseten_url("envmodel")


def test_url_from_the_environment_and_model_id_argument_beats_it(tmp_path: Path) -> None:
    environ = {"BASETTS_URL": "ws://localhost:8000/v1/websocket", "BASETEN_API_KEY": KEY}
    assert resolve(tmp_path, environ).url == "ws://localhost:8000/v1/websocket"
    assert resolve(tmp_path, environ, model_id="argmodel").url == baseten_url("argmodel")
    assert resolve(tmp_path, environ, url="wss://example.com/x").url == "wss://example.com/x"
    both = resolve(tmp_path, environ, url="wss://example.com/x", model_id="argmodel", environment="staging")
    assert both.url == "wss://example.com/x"  # url wins over model_id and environment, all arguments


def test_dotenv_in_the_working_directory_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("BASETEN_API_KEY=cwd-key\nBASETEN_MODEL_ID=cwdmodel\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings.resolve(environ={})
    assert settings.api_key == "cwd-key"
    assert settings.url == baseten_url("cwdmodel")


def test_missing_key_or_endpoint_is_a_configuration_error_naming_all_that_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Missing the API key") as caught:
        resolve(tmp_path, {}, model_id="m")
    assert caught.value.missing == ["api_key"] and "BASETEN_API_KEY" in str(caught.value)
    with pytest.raises(ConfigurationError, match="Missing the endpoint") as caught:
        resolve(tmp_path, {"BASETEN_API_KEY": KEY})
    assert caught.value.missing == ["endpoint"] and "BASETEN_MODEL_ID" in str(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        resolve(tmp_path, {})
    assert caught.value.missing == ["endpoint", "api_key"]
    assert "BASETEN_MODEL_ID" in str(caught.value) and "BASETEN_API_KEY" in str(caught.value)


# URL building ----------------------------------------------------------------------------------------------
def test_baseten_urls() -> None:
    assert baseten_url("abc123") == "wss://model-abc123.api.baseten.co/environments/production/websocket"
    assert baseten_url("abc123", "staging") == "wss://model-abc123.api.baseten.co/environments/staging/websocket"
    assert baseten_url("abc123", "development") == "wss://model-abc123.api.baseten.co/development/websocket"


def test_environment_argument_and_whitespace_in_model_id(tmp_path: Path) -> None:
    settings = resolve(tmp_path, {"BASETEN_MODEL_ID": " abc123 \n"}, api_key=KEY, environment="staging")
    assert settings.url == baseten_url("abc123", "staging")


@pytest.mark.parametrize("model_id, environment", [
    ("abc/../x", None), ("abc def", None), ("abc?x=1", None), ("abc", "prod/../dev"), ("abc", "a b"),
])
def test_model_id_and_environment_must_be_one_path_segment(
    tmp_path: Path, model_id: str, environment: Any
) -> None:
    with pytest.raises(ConfigurationError):
        resolve(tmp_path, {}, api_key=KEY, model_id=model_id, environment=environment)


@pytest.mark.parametrize("url", ["http://example.com/ws", "example.com", "wss://", "ws:///path"])
def test_url_must_be_websocket_with_a_host(url: str) -> None:
    with pytest.raises(ConfigurationError, match="url"):
        Settings(url=url, api_key=KEY).validate()


@pytest.mark.parametrize("url", [123, b"wss://x/y"])
def test_a_url_that_is_not_a_str_is_our_type_error(tmp_path: Path, url: Any) -> None:
    """Ours (also a TypeError), not an AttributeError or TypeError from inside urlsplit."""
    with pytest.raises(basetts.ArgumentTypeError, match="url must be a str"):
        resolve(tmp_path, {}, api_key=KEY, url=url)
    settings = resolve(tmp_path, {}, api_key=KEY, url="ws://127.0.0.1:1/x")
    with pytest.raises(basetts.ArgumentTypeError, match="url must be a str"):
        settings.replace(url=url)


def test_plain_ws_only_to_loopback_unless_allowed() -> None:
    for url in ("ws://localhost:1/x", "ws://127.0.0.1:1/x", "ws://127.8.9.10/x", "ws://[::1]:1/x"):
        Settings(url=url, api_key=KEY).validate()
    with pytest.raises(ConfigurationError, match="unencrypted"):
        Settings(url="ws://example.com/x", api_key=KEY).validate()
    Settings(url="ws://example.com/x", api_key=KEY, allow_insecure=True).validate()


@pytest.mark.parametrize("api_key", ["", "two\nlines", "cr\rkey", None, 42])
def test_api_key_must_be_one_line_of_text(api_key: Any) -> None:
    with pytest.raises(ConfigurationError, match="api_key"):
        Settings(url=LOCAL, api_key=api_key).validate()


def test_a_key_read_from_a_file_loses_its_newline_and_spaces(tmp_path: Path) -> None:
    # open("key.txt").read() ends with the newline; a key pasted between quotes may carry spaces. The key itself
    # goes in the header as it is; a line break inside it is still refused (above).
    (tmp_path / "key.txt").write_text(KEY + "\n")
    for given in ((tmp_path / "key.txt").read_text(), f"  {KEY}\r\n", f" {KEY} "):
        assert Settings.resolve(api_key=given, url=LOCAL, environ={}, dotenv_path=str(tmp_path / "none")).api_key == KEY


# validation --------------------------------------------------------------------------------------------
BAD = [
    ("voice", ""), ("voice", "   "), ("voice", 3), ("voice", "tara\ud800"),
    ("api_key", "key\udc80"), ("url", "ws://127.0.0.1:1/\ud800"),
    ("max_tokens", 0), ("max_tokens", -1), ("max_tokens", 2.0), ("max_tokens", "2000"), ("max_tokens", True),
    ("buffer_size", 0), ("buffer_size", -3), ("buffer_size", 1.5), ("buffer_size", "10"), ("buffer_size", True),
    ("buffer_size", False), ("buffer_size", None),
    ("temperature", -0.1), ("temperature", math.nan), ("temperature", math.inf), ("temperature", "0.6"),
    ("temperature", True),
    ("top_p", 0), ("top_p", 0.0), ("top_p", -0.5), ("top_p", 1.0001), ("top_p", math.nan), ("top_p", False),
    ("repetition_penalty", 0), ("repetition_penalty", -1.0), ("repetition_penalty", math.inf),
    ("repetition_penalty", "1.3"), ("repetition_penalty", True),
    ("encoding", "wav"), ("encoding", "PCM_MULAW"), ("encoding", "mulaw"), ("encoding", 8),
    ("connect_timeout", 0), ("connect_timeout", -1), ("connect_timeout", None), ("read_timeout", math.nan),
    ("handshake_timeout", "300"), ("first_audio_timeout", True), ("first_audio_timeout", None),
]


@pytest.mark.parametrize("field, value", BAD)
def test_invalid_values_are_rejected_before_connecting(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=field) as raised:
        dataclasses.replace(local(), **{field: value}).validate()
    if field == "api_key":
        assert "key" not in str(raised.value).replace("api_key", "")  # the key itself is never shown


GOOD = [
    ("max_tokens", 1), ("max_tokens", 6144), ("buffer_size", 1), ("buffer_size", 500),
    ("temperature", 0), ("temperature", 0.0), ("temperature", 1.5), ("top_p", 1), ("top_p", 1e-9),
    ("top_p", 0.8), ("repetition_penalty", 1e-6), ("repetition_penalty", 2), ("encoding", "pcm_s16le"),
    ("encoding", "pcm_mulaw"), ("read_timeout", 0.001), ("connect_timeout", 1),
]


@pytest.mark.parametrize("field, value", GOOD)
def test_valid_edge_values_are_accepted(field: str, value: Any) -> None:
    local(**{field: value}).validate()


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        local(top_p=2).validate()


def test_resolve_validates_and_rejects_unknown_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="buffer_size"):
        resolve(tmp_path, {}, api_key=KEY, url=LOCAL, buffer_size=0)
    with pytest.raises(TypeError, match="buffersize"):
        resolve(tmp_path, {}, api_key=KEY, url=LOCAL, buffersize=3)


def test_unknown_voice_is_a_warning_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    voice = f"custom-voice-{id(caplog)}"  # warned once per process: a name no other test used
    with caplog.at_level(logging.WARNING, logger="basetts"), pytest.warns(basetts.BasettsWarning, match=voice):
        settings = local(voice=voice)
        settings.validate()
        settings.replace(max_tokens=10)  # every call validates: the warning is not repeated
    assert [r.levelno for r in caplog.records if voice in r.getMessage()] == [logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="basetts"):
        for voice in VOICES:
            local(voice=voice).validate()
    assert not caplog.records


def test_voices_and_emotion_tags_are_public() -> None:
    assert basetts.VOICES == ("tara", "leah", "jess", "leo", "dan", "mia", "zac", "zoe")
    assert basetts.EMOTION_TAGS == EMOTION_TAGS
    assert set(EMOTION_TAGS) == {"<laugh>", "<chuckle>", "<sigh>", "<cough>", "<sniffle>", "<groan>",
                                 "<yawn>", "<gasp>"}
    # Each tag is sent as one word: it must survive the server's split.
    assert all(tag.split() == [tag] for tag in EMOTION_TAGS)


# the settings message ---------------------------------------------------------------------------------------
def test_session_message_has_our_defaults_only() -> None:
    assert local().session_message() == {"voice": "tara", "max_tokens": 2000, "buffer_size": 10}


def test_session_message_has_every_field_set_and_nothing_else() -> None:
    settings = local(voice="leo", max_tokens=300, buffer_size=3, temperature=0.0, top_p=1.0,
                     repetition_penalty=1.1, encoding="pcm_mulaw", read_timeout=5.0, allow_insecure=True)
    message = settings.session_message()
    assert message == {"voice": "leo", "max_tokens": 300, "buffer_size": 3, "temperature": 0.0, "top_p": 1.0,
                       "repetition_penalty": 1.1, "encoding": "pcm_mulaw"}
    assert json.loads(json.dumps(message)) == message
    assert local(top_p=0.5).session_message() == {"voice": "tara", "max_tokens": 2000, "buffer_size": 10,
                                                  "top_p": 0.5}


def test_bytes_per_sample() -> None:
    assert local().bytes_per_sample == 2
    assert local(encoding="pcm_s16le").bytes_per_sample == 2
    assert local(encoding="pcm_mulaw").bytes_per_sample == 1


# secrets and per-call overrides -----------------------------------------------------------------------------
def test_repr_never_shows_the_key(tmp_path: Path) -> None:
    settings = resolve(tmp_path, {}, api_key=KEY, url=LOCAL)
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert "api_key=<set>" in repr(settings)
    assert KEY not in repr(settings.replace(voice="leo"))
    assert KEY not in repr(Synthesizer(api_key=KEY, url=LOCAL))


def test_replace_overrides_per_call_and_validates() -> None:
    base = local(voice="tara", temperature=0.6)
    changed = base.replace(voice="zoe", top_p=0.5, temperature=None)
    assert (changed.voice, changed.top_p, changed.temperature) == ("zoe", 0.5, 0.6)
    assert (base.voice, base.top_p) == ("tara", None)  # the original is untouched
    assert base.replace() is base and base.replace(voice=None) is base
    with pytest.raises(ConfigurationError, match="top_p"):
        base.replace(top_p=0)
    with pytest.raises(ConfigurationError, match="buffer_size"):
        base.replace(buffer_size=True)
    with pytest.raises(TypeError, match="colour"):
        base.replace(colour="blue")


def test_synthesizer_accepts_every_server_setting() -> None:
    synth = Synthesizer(api_key=KEY, url=LOCAL, voice="mia", max_tokens=1000, buffer_size=4, temperature=0.7,
                        top_p=0.9, repetition_penalty=1.2, encoding="pcm_mulaw")
    assert synth.settings.session_message() == {
        "voice": "mia", "max_tokens": 1000, "buffer_size": 4, "temperature": 0.7, "top_p": 0.9,
        "repetition_penalty": 1.2, "encoding": "pcm_mulaw"}
    with pytest.raises(ConfigurationError, match="top_p"):
        Synthesizer(api_key=KEY, url=LOCAL, top_p=1.5)


def test_voice_names_match_case_insensitively() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: it is a known voice
        assert local(voice="Tara").voice == "tara" and local(voice=" LEO ").voice == "leo"
        assert local().replace(voice="Mia").voice == "mia"


def test_a_script_sees_the_warning_for_a_misspelt_voice_without_configuring_logging() -> None:
    from basetts.testing import LocalServer

    with LocalServer() as server:
        result = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import basetts
            synth = basetts.Synthesizer(url={server.url!r}, api_key={server.api_key!r})
            synth.synthesize("hi", voice="tarra")
        """)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "BasettsWarning: voice 'tarra' is not one of the Orpheus voices" in result.stderr
    assert '<string>:4: BasettsWarning' in result.stderr  # attributed to the user's line, not ours


@pytest.mark.parametrize("given, url, protocol", [
    ("model-abc123", baseten_url("abc123"), "orpheus"),
    ("https://model-abc123.api.baseten.co/environments/production/predict",
     "https://model-abc123.api.baseten.co/environments/production/predict", "orpheus-http"),
    ("model-abc123.api.baseten.co/environments/staging/predict",
     "https://model-abc123.api.baseten.co/environments/staging/predict", "orpheus-http"),
    ("https://model-abc123.api.baseten.co/development/predict",
     "https://model-abc123.api.baseten.co/development/predict", "orpheus-http"),
], ids=["host-name", "https-predict-url", "bare-host-url", "development"])
def test_a_model_id_copied_from_the_host_or_the_dashboard_is_understood(
        tmp_path: Path, given: str, url: str, protocol: str) -> None:
    """A predict URL is the deployment's HTTP endpoint: Orpheus over HTTP (issue 22), taken as it is."""
    with warnings.catch_warnings(record=True):
        settings = resolve(tmp_path, {}, api_key=KEY, model_id=given)
    assert (settings.url, settings.protocol) == (url, protocol)


def test_a_baseten_url_copied_without_its_scheme_gets_the_one_its_path_says(tmp_path: Path) -> None:
    """As a model id copied from the dashboard: https:// for a predict URL, wss:// for a websocket, and nothing
    said (no URL was rewritten); a URL of another host without one names what to write."""
    host = "model-abc123.api.baseten.co/environments/production"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for given in ({"url": f"{host}/predict "}, {"model_id": f"{host}/predict"}):
            settings = resolve(tmp_path, {}, api_key=KEY, **given)
            assert (settings.url, settings.protocol) == (f"https://{host}/predict", "orpheus-http")
        for given in ({"url": f"{host}/websocket"}, {"model_id": f"{host}/websocket"}):
            settings = resolve(tmp_path, {}, api_key=KEY, **given)
            assert (settings.url, settings.protocol) == (f"wss://{host}/websocket", "orpheus")
    with pytest.raises(ConfigurationError, match=r"url needs its scheme: https://…/predict .* wss://…/websocket"):
        resolve(tmp_path, {}, api_key=KEY, url="127.0.0.1:8000/environments/production/predict")


@pytest.mark.parametrize("path", ["/environments/production/predict", "/production/predict",
                                  "/development/predict", "/deployment/abc/predict", "/v1/models/model:predict"])
def test_every_form_of_predict_url_means_orpheus_over_http(tmp_path: Path, path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # taken as it is, without a word
        settings = resolve(tmp_path, {}, api_key=KEY, url=f"https://model-abc123.api.baseten.co{path}")
    assert settings.protocol == "orpheus-http" and settings.url.endswith(path)
    assert resolve(tmp_path, {}, api_key=KEY, model_id="abc123", protocol="orpheus-http").url == \
        "https://model-abc123.api.baseten.co/environments/production/predict"


def test_an_https_url_with_a_websocket_protocol_becomes_its_websocket_url_saying_so(tmp_path: Path) -> None:
    with pytest.warns(basetts.BasettsWarning, match="websocket URL"):
        settings = resolve(tmp_path, {}, api_key=KEY, protocol="orpheus",
                           url="https://model-abc123.api.baseten.co/environments/production/predict")
    assert settings.url == baseten_url("abc123")
    with pytest.warns(basetts.BasettsWarning):
        assert resolve(tmp_path, {}, api_key=KEY, url="http://127.0.0.1:8080/v1/websocket").url == \
            "ws://127.0.0.1:8080/v1/websocket"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a websocket URL is taken as it is, without a word
        assert resolve(tmp_path, {}, api_key=KEY, url=LOCAL).url == LOCAL
    with pytest.warns(basetts.BasettsWarning, match="posts to"):  # and the other way round
        assert resolve(tmp_path, {}, api_key=KEY, url=baseten_url("abc123"), protocol="orpheus-http").url == \
            "https://model-abc123.api.baseten.co/environments/production/predict"


@pytest.mark.parametrize("url", ["ws://127.0.0.1:99999/x", "ws://127.0.0.1:abc/x", "ws://127.0.0.1:0/x",
                                 "wss://example.com:-1/x"])
def test_a_port_that_is_no_port_is_refused_at_construction(url: str) -> None:
    with pytest.raises(ConfigurationError, match="port"):
        Settings(url=url, api_key=KEY).validate()


def test_an_upper_case_scheme_is_the_same_scheme() -> None:
    settings = Settings(url="WS://127.0.0.1:8080/x", api_key=KEY)
    settings.validate()
    assert settings.url == "ws://127.0.0.1:8080/x"
    assert Settings(url="Wss://example.com/x", api_key=KEY).url == "wss://example.com/x"


@pytest.mark.parametrize("option", [{"connect_timeout": 1e10}, {"handshake_timeout": 1e10}, {"read_timeout": 1e300},
                                    {"retries": 10 ** 12}, {"retry_backoff": 1e10}])
def test_absurd_timeouts_and_retries_are_refused_naming_the_setting(option: Any) -> None:
    (name,) = option
    with pytest.raises(ConfigurationError, match=name):
        Settings(url="ws://127.0.0.1:1/x", api_key=KEY, **option).validate()
