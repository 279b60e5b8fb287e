"""Settings resolve in one place: argument > environment > `.env` in the working directory > default."""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import logging
import os
import re
from typing import Any, ClassVar, Dict, Iterable, List, Mapping, Optional, Tuple, TypedDict
from urllib.parse import urlsplit

from . import protocols
from .checks import check_int, check_number, check_writable, is_utf8
from .errors import ArgumentTypeError, ConfigurationError, keep_secret, warn
from .text import TextFormat, check_text_format

log = logging.getLogger("basetts")

# Names read from the environment and `.env`; the hyphenated key name is the official example's.
ENV_API_KEY = ("BASETEN_API_KEY", "BASETEN-API-KEY")
ENV_MODEL_ID = "BASETEN_MODEL_ID"
ENV_URL = "BASETTS_URL"
ENV_TRACE = "BASETTS_TRACE"
ENV_PROTOCOL = "BASETTS_PROTOCOL"

MAX_TIMEOUT = 1e6
"""Seconds (11 days): the longest timeout taken, far past any wait a call can mean; beyond it the clocks and
the system calls that wait overflow."""
MAX_RETRIES = 100

PROTOCOLS = protocols.NAMES
"""Baseten's streaming TTS protocols: Orpheus's websocket, Qwen3-TTS's (vLLM-Omni), Orpheus over HTTP."""

# A model id or environment name becomes one segment of the URL's path.
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")


# Baseten's HTTP endpoints for a model, whose websocket sits beside them.
_HTTP_ENDPOINT = re.compile(r"/(predict|async_predict|sync|async|run_remote)/?$")
# A predict endpoint: Baseten's (/environments/NAME/predict, /production/predict, /development/predict,
# /deployment/ID/predict) or truss's own (/v1/models/NAME:predict).
_PREDICT = re.compile(r"[/:]predict/?$")
_PUBLIC_PATH = re.compile(r"^/(environments/[^/]+|production|development|deployment/[^/]+)/(websocket|predict)/?$")


def is_predict_url(url: str) -> bool:
    """Whether `url` is an HTTP predict endpoint: a deployment that speaks HTTP (protocol="orpheus-http")."""
    parts = urlsplit(url.strip())
    return parts.scheme.lower() in ("http", "https") and bool(_PREDICT.search(parts.path))


def websocket_url(url: str) -> str:
    """`url` as a websocket URL: an https:// (http://) URL becomes wss:// (ws://), and a Baseten model's
    HTTP endpoint (.../predict) its websocket (.../websocket), saying so. Anything else is left as is."""
    converted = _endpoint(url, upgrades=True)
    if converted != url:
        warn(f"url {url!r} is an HTTP URL; using its websocket URL {converted!r}")
    return converted


def predict_url(url: str) -> str:
    """`url` as an HTTP URL: a wss:// (ws://) URL becomes https:// (http://), and a Baseten model's websocket
    (.../websocket) its predict endpoint (.../predict), saying so. Anything else is left as is."""
    converted = _endpoint(url, upgrades=False)
    if converted != url:
        warn(f"url {url!r} is a websocket URL; an HTTP protocol posts to {converted!r}")
    return converted


def _endpoint(url: str, upgrades: bool) -> str:
    """The same model's endpoint for a websocket protocol (`upgrades`) or an HTTP one; `url` if it is one."""
    parts = urlsplit(url.strip())
    schemes = {"https": "wss", "http": "ws"} if upgrades else {"wss": "https", "ws": "http"}
    scheme = schemes.get(parts.scheme.lower())
    if scheme is None:
        return url
    path = parts.path
    if (parts.hostname or "").endswith(".api.baseten.co"):
        if upgrades:
            path = _HTTP_ENDPOINT.sub("/websocket", path) if _HTTP_ENDPOINT.search(path) else path
            if not path.rstrip("/").endswith("/websocket"):
                path = path.rstrip("/") + "/websocket"
        else:
            path = re.sub(r"/websocket/?$", "/predict", path)
            if not _PREDICT.search(path):
                path = path.rstrip("/") + "/predict"
    elif _PUBLIC_PATH.match(path):  # Baseten's public paths, wherever served (a gateway, the local server)
        path = re.sub(r"/(websocket|predict)/?$", "/websocket" if upgrades else "/predict", path)
    return parts._replace(scheme=scheme, path=path).geturl()


def with_scheme(url: str) -> str:
    """A Baseten URL copied without its scheme gets the one its path says (Baseten's are TLS: wss:// for a
    …/websocket, else https://); any other URL is left as it is."""
    bare = url.strip()
    if "://" in bare or ".api.baseten.co" not in bare:
        return url
    return f"{'wss' if re.search(r'/websocket/?$', bare) else 'https'}://{bare}"


def model_id_of(model_id: str, protocol: Optional[str] = None) -> Tuple[Optional[str], Optional[str]]:
    """(model id, url) from what users pass as a model id: "abc123", the host's "model-abc123", or a
    whole URL (copied from the dashboard: see `endpoint_of` for which protocol it means)."""
    value = model_id.strip()
    if "://" in value or ".api.baseten.co" in value:
        return None, with_scheme(value)
    if value.startswith("model-") and len(value) > len("model-"):
        warn(f"model_id {value!r} is the host's name (model-{{id}}.api.baseten.co); using {value[6:]!r}")
        return value[6:], None
    return value, None


def endpoint_of(url: str, protocol: Optional[str]) -> Tuple[str, str]:
    """(url, protocol) for a URL the user gave: a predict URL means the HTTP protocol unless `protocol` (given
    outright) says otherwise; the URL is then made the protocol's (an HTTP URL for a websocket protocol
    becomes its websocket URL, saying so, and the other way round)."""
    if protocol is None:
        protocol = "orpheus-http" if is_predict_url(url) else PROTOCOLS[0]
    spec = protocols.find(protocol)
    if spec is None:
        return url, protocol  # validate() names the protocols
    return (websocket_url(url) if spec.upgrades else predict_url(url)), protocol


def baseten_url(model_id: str, environment: str = "production", protocol: str = "orpheus") -> str:
    """The public URL of a Baseten model in an environment (``development`` has its own path): its websocket,
    or its predict endpoint for an HTTP protocol."""
    spec = protocols.find(protocol)
    upgrades = spec is None or spec.upgrades
    host = f"{'wss' if upgrades else 'https'}://model-{model_id}.api.baseten.co"
    endpoint = "websocket" if upgrades else "predict"
    if environment == "development":
        return f"{host}/development/{endpoint}"
    return f"{host}/environments/{environment}/{endpoint}"


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 / ::1, where an unencrypted key never leaves the machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MissingSettings(ConfigurationError):
    """The endpoint or the API key (or both) is nowhere: all that is missing, in one message."""

    WHERE = {
        "endpoint": "the endpoint: pass model_id= or url=, or set BASETEN_MODEL_ID (or BASETTS_URL)",
        "api_key": "the API key: pass api_key=, or set BASETEN_API_KEY",
    }

    def __init__(self, missing: List[str]) -> None:
        self.missing = missing
        super().__init__("Missing " + "; and ".join(self.WHERE[name] for name in missing)
                         + " (in the environment or in .env).")


class CallSettings(TypedDict, total=False):
    """The settings every call takes as keywords (``synth.speak(text, voice="leo")``), and a
    `Synthesizer` as its defaults (which are `Settings`'s)."""

    voice: str
    """One of `VOICES` (case-insensitive); another name is sent with a `BasettsWarning`. Default "tara"."""
    max_tokens: int
    """The model's token budget per segment. Default 2000."""
    buffer_size: int
    """Words per forced flush: smaller speaks sooner, larger gives more context. Default 10."""
    temperature: Optional[float]
    """Sampling temperature; None: the server's default."""
    top_p: Optional[float]
    """Nucleus sampling, 0..1; None: the server's default."""
    repetition_penalty: Optional[float]
    """None: the server's default."""
    encoding: Optional[str]
    """"pcm_mulaw" halves the bytes on the wire (decoded back to 16-bit); None: 16-bit PCM."""
    connect_timeout: float
    """Seconds for TCP, the proxy and TLS. Default 10."""
    handshake_timeout: float
    """Seconds for the websocket upgrade (a cold start holds it). Default 300."""
    first_audio_timeout: float
    """Seconds of silence once audio is owed. Default 60."""
    read_timeout: float
    """Seconds between two frames once audio flows. Default 30."""
    allow_insecure: bool
    """Allow ws:// with a key to a host other than loopback. Default False."""
    retries: int
    """Transient failures retried before any audio. Default 2."""
    retry_backoff: float
    """First retry's wait, doubled each time (with jitter). Default 0.5."""
    recoveries: int
    """Connections lost after audio began that a call recovers from (0: none). Default 3."""
    proxy: Optional[str]
    """An HTTP proxy (http://user:password@host:port); "" for none; None: HTTPS_PROXY and the like."""
    keepalive_timeout: float
    """How late the server lets a pong be; the words are paced within a tenth of it. Default 20."""
    max_message_size: int
    """Bytes: a larger audio message is refused, not buffered. Default 16 MiB."""
    trace: Optional[str]
    """A file to append a JSON line per event to (or BASETTS_TRACE). Default off."""
    protocol: str
    """"orpheus" (the default: its websocket), "qwen3" (Qwen3-TTS's websocket), "orpheus-http" (Orpheus's
    predict endpoint, orpheus-best-performance: a …/predict URL means it), "xtts-streaming" (XTTS v2's
    streaming truss, POST …/predict), a truss answering JSON with a base64 WAV: "kokoro", "chatterbox",
    "sesame", "piper", "xtts-v2", "metavoice", or "json-audio" (described by text_field, response_key,
    request_fields); or BASETTS_PROTOCOL."""
    language: Optional[str]
    """Qwen3: one of `qwen3.LANGUAGES` ("Auto", "English", "Chinese", ...); xtts-streaming: one of
    `xtts.LANGUAGES` ("en", "de", "zh-cn", ...); None: the server's."""
    instructions: Optional[str]
    """Qwen3: how to speak (style, emotion), or the voice to design with task_type="VoiceDesign"."""
    task_type: Optional[str]
    """Qwen3: "Base" (cloning), "CustomVoice" or "VoiceDesign"; None: the model's."""
    ref_audio: Any
    """Qwen3: a voice to clone inline: a path, bytes, an `Audio` or an http(s) URL (1-30 s)."""
    ref_text: Optional[str]
    """Qwen3: the transcript of `ref_audio` (needed unless x_vector_only_mode)."""
    x_vector_only_mode: Optional[bool]
    """Qwen3: clone from the speaker embedding alone (no transcript needed)."""
    word_timestamps: bool
    """Qwen3: fill `Audio.words` (the server needs its aligner). Default False."""
    timestamp_transport: Optional[str]
    """Qwen3: "sync" (each sentence's words with its end; the default) or "async" (all at the end)."""
    split_granularity: Optional[str]
    """Qwen3: "sentence" (the default) or "clause" (also at CJK commas and semicolons)."""
    max_new_tokens: Optional[int]
    """Qwen3: the token budget per sentence, 1..4096; None: the server's."""
    initial_codec_chunk_frames: Optional[int]
    """Qwen3: the first audio chunk's size in codec frames (smaller starts sooner); None: the server's."""
    sentence_errors: str
    """Qwen3: "raise" (default: a failed sentence ends the call with `SentenceError`) or "collect"
    (go on; `Audio.sentences` holds the server's message)."""
    text_field: Optional[str]
    """json-audio: the request's JSON key for the text. Default "text"."""
    response_key: Optional[str]
    """json-audio: the answer's JSON key holding the base64 WAV. Default "output"."""
    request_fields: Optional[Dict[str, Any]]
    """json-audio: other JSON fields every request carries (the model's own settings)."""
    text_format: TextFormat
    """How the text given is read: "markdown" (the default: Markdown's marks, code blocks, URLs' paths and emoji
    are left out, as a person reading it aloud would), "plain" (sent as it is) or a function of one sentence
    (str -> str) of your own."""
    idle_timeout: float
    """Qwen3: how long the server waits for a message before it ends the session (its 30 s); a quiet
    producer (or a paused player) is kept alive with an empty message every third of it."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything one synthesis needs. Build with `Settings.resolve`; `replace` for per-call overrides."""

    protocol_guessed: ClassVar[bool] = False
    """Set by `resolve` when only a model id was given (no URL, no protocol): the default protocol is a guess
    the first call checks (`net.spare.probe`)."""

    url: str
    api_key: str = dataclasses.field(repr=False)
    voice: Optional[str] = None  # Orpheus: DEFAULT_VOICE
    max_tokens: int = 2000
    buffer_size: int = 10
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    encoding: Optional[str] = None
    connect_timeout: float = 10.0
    # A deployment scaled to zero holds the upgrade until a replica is up: minutes, not seconds.
    handshake_timeout: float = 300.0
    # No audio this long after the server owes some (sentinel sent, or buffer_size words since audio).
    first_audio_timeout: float = 60.0
    # Gap between two frames once audio is flowing.
    read_timeout: float = 30.0
    allow_insecure: bool = False
    # Transient failures before any audio (refused, 429, 5xx at the upgrade) are retried this often.
    retries: int = 2
    retry_backoff: float = 0.5
    # A connection lost after audio began is reopened and the text resumes after its last unit done
    # (docs/reliability.md), at most this often per call; 0 raises at once, as before.
    recoveries: int = 3
    # An HTTP proxy to tunnel through (http://user:password@host:port); None: HTTPS_PROXY and the other
    # standard variables decide; "": no proxy.
    proxy: Optional[str] = dataclasses.field(default=None, repr=False)  # may hold credentials
    # The server's keepalive: it closes the connection when a pong is this late (uvicorn's default,
    # which Baseten's server keeps). basetts paces its words so that no pong waits a tenth of it.
    keepalive_timeout: float = 20.0
    # The largest audio message accepted, in bytes: a server announcing more is refused, not buffered.
    max_message_size: int = 16 * 2 ** 20
    # A file to append a JSON line to for every event of each call (docs/troubleshooting.md).
    trace: Optional[str] = None
    protocol: str = "orpheus"
    # Qwen3-TTS's own (see CallSettings); None: not sent, the server's default applies.
    language: Optional[str] = None
    instructions: Optional[str] = None
    task_type: Optional[str] = None
    ref_audio: Any = dataclasses.field(default=None, repr=False)  # may be megabytes
    ref_text: Optional[str] = None
    x_vector_only_mode: Optional[bool] = None
    word_timestamps: bool = False
    timestamp_transport: Optional[str] = None
    split_granularity: Optional[str] = None
    max_new_tokens: Optional[int] = None
    initial_codec_chunk_frames: Optional[int] = None
    sentence_errors: str = "raise"
    idle_timeout: float = 30.0
    # json-audio's: a deployment answering JSON with a base64 WAV that no preset describes.
    text_field: Optional[str] = None
    response_key: Optional[str] = None
    request_fields: Optional[Dict[str, Any]] = None
    text_format: TextFormat = "markdown"

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
            if f.name not in ("api_key", "proxy", "ref_audio")
            and (getattr(self, f.name) != f.default or f.name not in _hidden_at_default(self.protocol))
        )
        proxy = "" if self.proxy is None else ", proxy=<set>"
        return f"Settings({shown}, api_key={'<set>' if self.api_key else '<missing>'}{proxy})"

    @classmethod
    def resolve(
        cls,
        api_key: Optional[str] = None,
        model_id: Optional[str] = None,
        environment: Optional[str] = None,
        url: Optional[str] = None,
        *,
        environ: Optional[Mapping[str, str]] = None,
        dotenv_path: Optional[str] = None,
        **options: Any,
    ) -> "Settings":
        """Resolve key and endpoint from arguments, then the environment, then `.env`; validate all."""
        sources = [os.environ if environ is None else environ, _read_dotenv(dotenv_path)]

        def lookup(source: Mapping[str, Optional[str]], *names: str) -> Optional[str]:
            for name in names:
                value = (source.get(name) or "").strip()
                if value:
                    return value
            return None

        if isinstance(api_key, str):  # a key read from a file ends with its newline; the environment's are stripped
            api_key = api_key.strip()
        if not api_key:
            for source in sources:
                api_key = lookup(source, *ENV_API_KEY)
                if api_key:
                    break
        if not url and not model_id:
            # The endpoint comes whole from the first source that has one, so the environment's model
            # id is never mixed with (or beaten by) a URL in .env.
            for source in sources:
                url, model_id = lookup(source, ENV_URL), lookup(source, ENV_MODEL_ID)
                if url or model_id:
                    break
        missing = [name for name, value in (("endpoint", url or model_id), ("api_key", api_key)) if not value]
        if missing:
            raise MissingSettings(missing)
        assert api_key is not None
        for name, variable in (("trace", ENV_TRACE), ("protocol", ENV_PROTOCOL)):
            if options.get(name) is None:
                for source in sources:
                    found = lookup(source, variable)
                    if found:
                        options[name] = found.lower() if name == "protocol" else found
                        break
        guessed = not url and options.get("protocol") is None
        if isinstance(model_id, str) and model_id and not url:
            model_id, url = model_id_of(model_id)
            guessed = guessed and not url  # a URL in model_id= says what it is
        if url is not None and not isinstance(url, str):
            raise ArgumentTypeError(f"url must be a str, not {type(url).__name__}")
        if url:
            url, protocol = endpoint_of(with_scheme(url), options.get("protocol"))
            options["protocol"] = protocol
        if not url:
            assert model_id is not None
            environment = environment or "production"
            for name, value in (("model_id", model_id), ("environment", environment)):
                if not isinstance(value, str) or not _PATH_SEGMENT.match(value.strip()):
                    raise ConfigurationError(f"{name} must be letters, digits, '-' or '_', got {value!r}")
            url = baseten_url(model_id.strip(), environment.strip(), options.get("protocol") or PROTOCOLS[0])
        _known(options)
        options = {k: v for k, v in options.items() if v is not None}
        settings = cls(url=url, api_key=api_key, **options)
        settings.validate()
        object.__setattr__(settings, "protocol_guessed", guessed)
        return settings

    def replace(self, **overrides: Any) -> "Settings":
        """A copy with per-call overrides (None leaves a field as it is), validated."""
        if not overrides:
            return self
        _known(overrides)
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        spec = protocols.find(changes.get("protocol"))
        if spec is not None and "url" not in changes:  # a call's protocol=: the same model's endpoint for it
            changes["url"] = _endpoint(self.url, spec.upgrades)
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    def __post_init__(self) -> None:
        scheme, separator, rest = self.url.partition("://") if isinstance(self.url, str) else ("", "", "")
        if separator and scheme.lower() in ("ws", "wss", "http", "https") and scheme != scheme.lower():
            object.__setattr__(self, "url", f"{scheme.lower()}://{rest}")  # "WS://" is ws:// (RFC 3986 3.1)
        spec = protocols.find(self.protocol)
        if spec is not None:
            object.__setattr__(self, "voice", spec.voice(self.voice))

    def validate(self) -> None:
        """Reject what the server would crash on, before anything is sent."""
        for name in ("url", "api_key", "voice", "encoding"):
            value = getattr(self, name)
            if isinstance(value, str) and not is_utf8(value):
                shown = "" if name == "api_key" else f", got {value!r}"
                raise ConfigurationError(f"{name} must be valid unicode text (no lone surrogates){shown}")
        if self.protocol not in PROTOCOLS:
            raise ConfigurationError(f"protocol must be one of {PROTOCOLS} (or set BASETTS_PROTOCOL), "
                                     f"got {self.protocol!r}")
        insecure, secure = protocols.spec(self.protocol).schemes
        if not isinstance(self.url, str):
            raise ArgumentTypeError(f"url must be a str, not {type(self.url).__name__}")
        parts = urlsplit(self.url)
        if "://" not in self.url:
            raise ConfigurationError(f"url needs its scheme: https://…/predict for an HTTP deployment, "
                                     "wss://…/websocket for a websocket (http:// or ws:// to a server on this "
                                     f"machine), got {self.url!r}")
        if parts.scheme not in (insecure, secure) or not parts.hostname:
            raise ConfigurationError(f"url must be {insecure}:// or {secure}:// with a host for "
                                     f"protocol={self.protocol!r}, got {self.url!r}")
        try:
            port = parts.port  # None when not given
        except ValueError:  # not a number, or over 65535
            port = 0
        if port == 0:  # ":0" would mean the scheme's default to some clients: say it instead
            raise ConfigurationError(f"url's port must be a number from 1 to 65535, got {self.url!r}")
        if parts.scheme == insecure and not self.allow_insecure and not is_loopback(parts.hostname):
            raise ConfigurationError(
                f"Refusing to send the API key unencrypted to {parts.hostname}: use {secure}://, "
                "or pass allow_insecure=True if you really mean it."
            )
        if not isinstance(self.api_key, str) or not self.api_key or any(c in self.api_key for c in "\r\n"):
            raise ConfigurationError("api_key must be a non-empty single-line string")
        keep_secret(self.api_key)
        if self.voice is not None and (not isinstance(self.voice, str) or not self.voice.strip()):
            raise ConfigurationError("voice must be a non-empty string, e.g. 'tara'")
        self._check_protocol_fields()
        for name in ("connect_timeout", "handshake_timeout", "first_audio_timeout", "read_timeout",
                     "keepalive_timeout"):
            # None would mean "wait forever" to the socket: a timeout is always required.
            check_number(name, getattr(self, name), low=0.0, high=MAX_TIMEOUT, required=True)
        check_int("retries", self.retries, 0, high=MAX_RETRIES)
        check_int("recoveries", self.recoveries, 0, high=MAX_RETRIES)
        check_int("max_message_size", self.max_message_size, 4096)
        if self.proxy is not None and not isinstance(self.proxy, str):
            raise ConfigurationError("proxy must be a URL string like 'http://host:3128' (or '' for none)")
        proxy_host = str(urlsplit(self.proxy if "://" in self.proxy else f"http://{self.proxy}").hostname or "") \
            if self.proxy else ""
        if self.proxy and parts.scheme == insecure and not self.allow_insecure and not is_loopback(proxy_host):
            # An environment's proxy is never used for loopback, and any other ws:// host needs allow_insecure.
            raise ConfigurationError(
                f"Refusing to send the API key unencrypted through the proxy {proxy_host}: the tunnel is not TLS, "
                f"so the proxy would read it. Use {secure}://, proxy='' for none, or allow_insecure=True if you "
                "really mean it.")
        if self.trace is not None:
            if not isinstance(self.trace, (str, os.PathLike)):
                raise ConfigurationError("trace must be a file path")
            check_writable(self.trace, f"trace=, or {ENV_TRACE}")
        check_number("retry_backoff", self.retry_backoff, low=0.0, high=MAX_TIMEOUT, low_open=False, required=True)
        check_text_format(self.text_format)

    def _check_protocol_fields(self) -> None:
        """Settings of another protocol are refused, naming it; this protocol's are checked as its server
        checks them, before anything is sent."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        own = protocols.spec(self.protocol).fields
        for other in protocols.others(self.protocol):
            given = [name for name in other.fields if name not in own and getattr(self, name) != defaults[name]]
            if given:
                having = [spec.name for spec in protocols.others(self.protocol) if set(given) <= set(spec.fields)]
                theirs = other.name
                named = " or ".join(repr(name) for name in having) if having else repr(theirs)
                raise ConfigurationError(
                    f"{', '.join(given)}: {'a setting' if len(given) == 1 else 'settings'} of protocol={named} "
                    f"only; this Synthesizer speaks protocol={self.protocol!r}. Pass protocol={theirs!r} "
                    f"(or BASETTS_PROTOCOL={theirs}), or leave {'it' if len(given) == 1 else 'them'} out.")
        protocols.spec(self.protocol).check(self)

    def session_message(self) -> Dict[str, Any]:
        """The JSON object sent first: every field set, and no others (the server defaults the rest)."""
        return protocols.spec(self.protocol).first_message(self)

    @property
    def bytes_per_sample(self) -> int:
        """Bytes per sample on the wire: 1 for μ-law, else 2."""
        return 1 if self.encoding == "pcm_mulaw" else 2


def unknown_settings(names: Iterable[str], known: Iterable[str]) -> Optional[str]:
    """The names that are not settings, each with the one meant when it is close to one ("voise (did you mean
    'voice'?)"); None when all are known."""
    known = list(known)
    unknown = sorted(set(names) - set(known))
    if not unknown:
        return None
    return ", ".join(name + "".join(f" (did you mean {close!r}?)" for close in difflib.get_close_matches(
        name, known, 1)) for name in unknown)


def _known(options: Mapping[str, Any]) -> None:
    """ArgumentTypeError for a setting that does not exist, naming the one meant when it is close to one."""
    unknown = unknown_settings(options, (f.name for f in dataclasses.fields(Settings)))
    if unknown is not None:
        raise ArgumentTypeError(f"unknown setting(s): {unknown} (help(basetts.Settings) lists them all)")


def protocol_from_environment(dotenv_path: Optional[str] = None) -> str:
    """BASETTS_PROTOCOL from the environment, else `.env`, else "orpheus" (what `Settings.resolve` uses)."""
    for source in (os.environ, _read_dotenv(dotenv_path)):
        value = (source.get(ENV_PROTOCOL) or "").strip()
        if value:
            return value.lower()
    return PROTOCOLS[0]


def _hidden_at_default(protocol: str) -> Tuple[str, ...]:
    """The fields a repr leaves out while they hold their default: every protocol's own but Orpheus's
    (the default protocol's) under Orpheus."""
    shown = protocols.find(protocol)
    return tuple(name for spec in (protocols.find(n) for n in PROTOCOLS)
                 if spec is not None and (spec is not shown or spec.name != PROTOCOLS[0]) for name in spec.fields)


def _read_dotenv(path: Optional[str]) -> Mapping[str, Optional[str]]:
    from dotenv import dotenv_values

    path = path or os.path.join(os.getcwd(), ".env")
    return dotenv_values(path) if os.path.isfile(path) else {}
