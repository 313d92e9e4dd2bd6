"""Server configuration: typed, validated, from a TOML/YAML file, environment and flags.

Every error names the key that is wrong, e.g. `limits.max_calls: expected an integer >= 1`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from callbot.pipeline.lang import SUPPORTED_LANGUAGES, VoiceSettings
from callbot.pipeline.safety.settings import SafetySettings
from callbot.pipeline.settings import EngineSettings, TurnSettings, hold_after_for
from callbot.pipeline.vision.base import VisionSettings
from callbot.rtc.ice import IceServer
from callbot.signalling.errors import SignallingError


class ConfigError(SignallingError, ValueError):
    """A setting is wrong; the message names its key (`limits.max_calls: ...`)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    max_calls: int = 8  # concurrent calls; more get 503
    # Load shedding (signalling/server/overload.py): while, in the last 5 s, a turn waited longer
    # than this for a model, or the event loop ran this late, new calls get 503 `overloaded`.
    overload_queue_ms: float = 1000.0
    overload_loop_lag_ms: float = 300.0
    max_call_s: float = 1800.0  # a call is ended after this long
    idle_timeout_s: float = 60.0  # no audio from the caller for this long ends the call
    disconnect_grace_s: float = 5.0  # no packet at all from the peer this long (RTP, RTCP, SCTP)
    setup_timeout_s: float = 20.0  # offer -> connected
    max_sdp_bytes: int = 64 * 1024
    max_body_bytes: int = 96 * 1024
    max_prompt_chars: int = 2000
    max_event_bytes: int = 4096  # data-channel messages from the caller
    max_text_chars: int = 1000  # one typed turn
    max_calls_per_client: int = 4  # concurrent calls of one client (token subject or IP)
    call_rate_per_minute: float = 30.0  # call set-ups per client per minute (token bucket)
    # Realtime client secrets (POST /v1/realtime/client_secrets), per credential: mints per
    # minute (token bucket; beyond: 429 with Retry-After) and unused ones kept (minting more
    # drops that credential's oldest, never another's); all credentials together: at most
    # `max_client_secrets` unused (beyond: 429).
    client_secrets_per_minute: float = 20.0
    max_client_secrets_per_client: int = 50
    max_client_secrets: int = 10_000
    drain_s: float = 10.0  # on shutdown: how long active calls may go on before being closed
    # Slow clients (see signalling/server/slowclients.py): headers and body must arrive in time.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_pending_connections: int = 64  # connections without a finished request, beyond: closed
    # One call's data channel: messages and typed turns per call (token buckets), and how much
    # may wait unsent for a peer that stops reading before events are dropped / the call ends.
    channel_messages_per_s: float = 10.0
    channel_burst: int = 20
    typed_turns_per_minute: float = 30.0
    typed_turn_burst: int = 6
    max_send_buffer_bytes: int = 256 * 1024
    send_stall_s: float = 15.0  # the send buffer stays full this long: the call is ended
    # The offer: what a browser needs is a handful of each.
    max_m_lines: int = 8
    max_remote_candidates: int = 24

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) <= 0:
                raise ConfigError(f"{f.name}: must be greater than 0")


@dataclasses.dataclass(frozen=True)
class AuthSettings:
    """Who may start calls (see signalling/server/auth.py)."""

    # "auto": open only for a local request (loopback peer, no proxy header, loopback Host
    # and Origin) while no credential is configured, else a token; "none": open on purpose;
    # "token": always a token.
    mode: str = "auto"
    bearer_tokens: tuple[str, ...] = ()  # static API tokens (Authorization: Bearer ...)
    admin_tokens: tuple[str, ...] = ()  # may list and end every call (and start calls)
    signing_secret: str | None = None  # verifies short-lived single-use call tokens
    allowed_origins: tuple[str, ...] = ()  # when set, a browser Origin outside it gets 403
    # May a client set `options.system_prompt`? "auto": only an authenticated one (a token),
    # never in the open mode; "allow"; "deny".
    client_system_prompt: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "none", "token"):
            raise ConfigError("mode: expected 'auto', 'none' or 'token'")
        if self.client_system_prompt not in ("auto", "allow", "deny"):
            raise ConfigError("client_system_prompt: expected 'auto', 'allow' or 'deny'")
        for name in ("bearer_tokens", "admin_tokens"):
            for token in getattr(self, name):
                if not token.isascii() or not token.isprintable() or " " in token:
                    raise ConfigError(f"{name}: tokens must be printable ASCII without spaces")


@dataclasses.dataclass(frozen=True)
class ClusterSettings:
    """Shared state of several workers/nodes in Redis (see signalling/cluster/redis_store.py)."""

    redis_url: str | None = None  # e.g. redis://10.0.0.5:6379/0; None: this process alone
    advertise_url: str | None = None  # how other nodes reach this one, e.g. http://10.0.0.7:8080
    node_ttl_s: float = 3.0  # a node silent this long is dead; its calls end as node_lost
    heartbeat_s: float = 1.0
    # Signs offers a full node hands to another (the caller's address rides along): the same
    # on every node, never stored in Redis. Unset: no forwarding (a full node answers 503).
    # `--workers` without `--cluster` makes one for its own workers.
    forward_secret: str | None = None
    forward_secret_file: str | None = None  # or read from this file (e.g. a mounted secret)

    def __post_init__(self) -> None:
        if self.node_ttl_s <= self.heartbeat_s or self.heartbeat_s <= 0:
            raise ConfigError("node_ttl_s must be greater than heartbeat_s (> 0)")
        if self.forward_secret is not None and len(self.forward_secret) < 16:
            raise ConfigError("forward_secret: at least 16 characters (e.g. `openssl rand "
                              "-hex 32`)")
        if self.forward_secret is not None and self.forward_secret_file is not None:
            raise ConfigError("forward_secret and forward_secret_file: set one of them")

    def forward_key(self) -> bytes | None:
        """The key that signs forwarded offers (read from the file, if one is named)."""
        if self.forward_secret_file is not None:
            try:
                key = Path(self.forward_secret_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"forward_secret_file: {exc}") from None
            if len(key) < 16:
                raise ConfigError("forward_secret_file: the key needs at least 16 characters")
            return key.encode()
        return self.forward_secret.encode() if self.forward_secret else None
        if self.redis_url is not None and not self.redis_url.startswith(
                ("redis://", "rediss://", "unix://")):
            raise ConfigError("redis_url: expected redis://, rediss:// or unix://")


@dataclasses.dataclass(frozen=True)
class WebRtcSettings:
    """What a browser's peer connection is told, besides the top-level `ice_servers` (which
    both the browser and the server's peer use). A TURN server with a shared secret (coturn
    `use-auth-secret` + `static-auth-secret`, the TURN REST convention) gets short-lived
    credentials minted per request (`GET /v1/ice_servers`) and per call."""

    turn_urls: tuple[str, ...] = ()  # e.g. ["turn:turn.example.com:3478?transport=udp"]
    turn_shared_secret: str | None = None  # coturn's static-auth-secret
    turn_credential_ttl_s: float = 3600.0  # how long minted credentials work
    # "all" or "relay" (only relayed candidates: the page sets iceTransportPolicy "relay",
    # for callers whose network allows nothing else, or to keep their address private)
    ice_transport_policy: str = "all"

    def __post_init__(self) -> None:
        if self.ice_transport_policy not in ("all", "relay"):
            raise ConfigError("ice_transport_policy: expected 'all' or 'relay'")
        if bool(self.turn_urls) != bool(self.turn_shared_secret):
            raise ConfigError("turn_urls and turn_shared_secret: set both or neither")
        for url in self.turn_urls:
            if not url.startswith(("turn:", "turns:")):
                raise ConfigError(f"turn_urls: {url!r} is not a turn: or turns: URL")
        if self.turn_credential_ttl_s <= 0:
            raise ConfigError("turn_credential_ttl_s: must be greater than 0")


@dataclasses.dataclass(frozen=True)
class KnowledgeSettings:
    """The documents the bot answers from (`callbot kb add ...`). With `db` unset the default
    index (`default_kb_path()`, where `callbot kb add` writes) is used when it exists, so
    `callbot kb add ./docs && callbot serve` answers from the documents with no flag."""

    db: str | None = None  # the index file built by `callbot kb add` (default: see above)
    enabled: bool = True  # false (`serve --no-kb`): no knowledge base, whatever exists
    passages: int = 3  # at most this many passages per turn
    token_budget: int = 300  # and at most about this many tokens of them
    min_similarity: float = 0.84  # a passage less similar to the question is not "found"
    timeout_s: float = 2.0  # retrieval slower than this is skipped for the turn

    def __post_init__(self) -> None:
        if self.passages < 1 or self.token_budget < 20 or self.timeout_s <= 0:
            raise ConfigError("passages >= 1, token_budget >= 20 and timeout_s > 0 are required")
        if not -1 <= self.min_similarity <= 1:
            raise ConfigError("min_similarity: expected -1..1")

    def index_path(self) -> str | None:
        """The index serve answers from: the configured one, else the default one if `callbot
        kb add` built it; None when off or there is none."""
        if not self.enabled:
            return None
        if self.db is not None:
            return self.db
        default = default_kb_path()
        return default if os.path.exists(default) else None


def default_kb_path(env: Mapping[str, str] | None = None) -> str:
    """The one index location `callbot kb` and `callbot serve` share by default: env
    CALLBOT_KB, else `$CALLBOT_HOME/knowledge.db` (CALLBOT_HOME defaults to ~/.callbot)."""
    env = os.environ if env is None else env
    if env.get("CALLBOT_KB"):
        return env["CALLBOT_KB"]
    home = env.get("CALLBOT_HOME") or os.path.join(os.path.expanduser("~"), ".callbot")
    return os.path.join(home, "knowledge.db")


@dataclasses.dataclass(frozen=True)
class MemorySettings:
    """Caller memory: off by default. Only callers with an identity (a signed call token's
    `sub`, or `CallOptions.caller_id` set by the app) are remembered."""

    enabled: bool = False
    db: str = "callbot-memory.sqlite"
    retention_days: float = 30.0  # older notes are deleted
    max_chars: int = 800  # of remembered notes given to a call
    summarizer: str = "auto"  # "llm", "last_turns", or "auto": llm unless the 135M default
    keep_transcripts: bool = False  # store the full conversation with each note

    def __post_init__(self) -> None:
        if self.retention_days <= 0 or self.max_chars < 50:
            raise ConfigError("retention_days > 0 and max_chars >= 50 are required")
        if self.summarizer not in ("auto", "llm", "last_turns"):
            raise ConfigError("summarizer: expected 'auto', 'llm' or 'last_turns'")


@dataclasses.dataclass(frozen=True)
class RecordSettings:
    """The call record (signalling/records/). Every live call keeps its transcript in memory;
    `keep` stores it after the call (SQLite, erased after `retention_days`); `audio` also
    records a stereo WAV (caller left, bot right). Both are off by default: opt-in, with the
    caller told (a consent notice is the deployment's job)."""

    keep: bool = False
    audio: bool = False  # implies keep (the recording is found through the stored record)
    db: str = "callbot-records.sqlite"
    audio_dir: str = "callbot-recordings"
    retention_days: float = 30.0
    redact_pii: bool = False  # mask PII in the transcripts served, stored and hooked
    max_backlog_s: float = 30.0  # audio waiting for a slow disk; beyond it, audio is dropped

    def __post_init__(self) -> None:
        if self.retention_days <= 0 or self.max_backlog_s <= 0:
            raise ConfigError("retention_days > 0 and max_backlog_s > 0 are required")

    @property
    def stored(self) -> bool:
        return self.keep or self.audio


@dataclasses.dataclass(frozen=True)
class CapacitySettings:
    """Admission from measured capacity (signalling/server/capacity.py): how many *talking*
    calls this node holds with replies within `latency_budget_ms`. `calls` comes from
    `callbot capacity` (it measures this machine with synthetic callers); a new call beyond it
    gets 503 `at_capacity` with `Retry-After` (a cluster node hands it on), so the calls in
    progress never slow down. `limits.max_calls` stays the hard cap above it."""

    calls: int = 0  # measured capacity; 0: unknown (only limits.max_calls applies)
    # Reply latency (the caller's end of speech -> the bot's first audio, server-side) that
    # answers must stay within; `callbot capacity` measures against the same budget.
    latency_budget_ms: float = 2500.0
    # Learn from the turns answered: when the p95 reply latency of the last `window_s` seconds
    # (at least `min_turns` turns) is over the budget, the capacity drops below the number of
    # calls that was live then; after a window within 80 % of the budget at capacity, it rises
    # by one (never above `calls`, or `limits.max_calls` when `calls` is 0). Off by default: on
    # a machine shared with other work a slow spell would refuse calls.
    learn: bool = False
    window_s: float = 60.0
    min_turns: int = 5
    retry_after_s: int = 5  # the Retry-After of an `at_capacity` refusal

    def __post_init__(self) -> None:
        if self.calls < 0 or self.latency_budget_ms <= 0 or self.window_s <= 0:
            raise ConfigError("calls >= 0, latency_budget_ms > 0 and window_s > 0 are required")
        if self.min_turns < 1 or self.retry_after_s < 1:
            raise ConfigError("min_turns >= 1 and retry_after_s >= 1 are required")


@dataclasses.dataclass(frozen=True)
class SipSettings:
    """The phone line (signalling/protocols/sip/): a SIP user agent answering INVITEs over UDP
    with G.711 (µ-law, A-law) and RFC 4733 DTMF. Off by default (`callbot serve --sip`).
    Every INVITE goes through the same admission as a WebRTC call; who may call is
    `allow` (peer addresses, CIDR) and/or digest credentials (`username` + `password`)."""

    enabled: bool = False
    host: str = "127.0.0.1"  # where the SIP UDP socket listens
    port: int = 5060
    public_ip: str | None = None  # announced in SDP/Contact instead of `host` (NAT 1:1)
    rtp_port_min: int = 20000  # RTP/RTCP ports, one even/odd pair per call
    rtp_port_max: int = 20200
    # Peer addresses allowed to call (CIDR; a PBX or the carrier's signalling addresses).
    # Empty: any peer (then set digest credentials, or keep the port off the internet).
    allow: tuple[str, ...] = ()
    username: str | None = None  # digest auth (RFC 8760/2617): both or neither
    password: str | None = None
    realm: str = "callbot"
    system_prompt: str | None = None  # for phone calls (None: turn.reply.system_prompt)
    voice: str | None = None  # the phone voice (None: the default)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError("port: expected 1..65535")
        if not 1024 <= self.rtp_port_min < self.rtp_port_max < 65536:
            raise ConfigError("rtp_port_min < rtp_port_max, within 1024..65535, are required")
        if (self.username is None) != (self.password is None):
            raise ConfigError("username and password: give both (or neither)")
        for network in self.allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"allow: {network!r} is not a network (CIDR)") from None
        if self.public_ip is not None and not _is_ip(self.public_ip):
            raise ConfigError(f"public_ip: {self.public_ip!r} is not an IP address")


@dataclasses.dataclass(frozen=True)
class CallbotConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # HTTPS (browsers give the microphone only to https pages, or http://localhost): a PEM
    # certificate (chain) and its private key, both or neither; or TLS at a reverse proxy.
    tls_cert: str | None = None
    tls_key: str | None = None
    ice_hosts: tuple[str, ...] | None = None  # None: every local address aioice finds
    ice_servers: tuple[IceServer, ...] = ()
    ice_public_ip: str | None = None  # NAT 1:1: announced instead of host candidate addresses
    webrtc: WebRtcSettings = dataclasses.field(default_factory=WebRtcSettings)
    # Remote candidates that get connectivity checks (CIDRs). None: automatic — a public
    # deployment (ice_public_ip, or a global ice_hosts address) checks global addresses only
    # (no loopback/private/link-local); a loopback or private one checks any unicast address.
    ice_remote_networks: tuple[str, ...] | None = None
    # What a call may ask for or be detected as (ASR, conversation, voice); by default all five
    # (zh, en, de, fr, es). More than English needs engines.asr_model "auto" (the default) or
    # "base"; with tiny.en only English is offered (AppState.allowed_languages).
    languages: tuple[str, ...] = SUPPORTED_LANGUAGES
    limits: Limits = dataclasses.field(default_factory=Limits)
    capacity: CapacitySettings = dataclasses.field(default_factory=CapacitySettings)
    engines: EngineSettings = dataclasses.field(default_factory=EngineSettings)
    turn: TurnSettings = dataclasses.field(default_factory=TurnSettings)
    auth: AuthSettings = dataclasses.field(default_factory=AuthSettings)
    safety: SafetySettings = dataclasses.field(default_factory=SafetySettings)
    tts: VoiceSettings = dataclasses.field(default_factory=VoiceSettings)
    knowledge: KnowledgeSettings = dataclasses.field(default_factory=KnowledgeSettings)
    memory: MemorySettings = dataclasses.field(default_factory=MemorySettings)
    record: RecordSettings = dataclasses.field(default_factory=RecordSettings)
    vision: VisionSettings = dataclasses.field(default_factory=VisionSettings)
    cluster: ClusterSettings = dataclasses.field(default_factory=ClusterSettings)
    sip: SipSettings = dataclasses.field(default_factory=SipSettings)

    def __post_init__(self) -> None:
        if not self.languages:
            raise ConfigError("languages: list at least one language")
        for language in self.languages:
            if language not in SUPPORTED_LANGUAGES:
                raise ConfigError(f"languages: {language!r} is not one of "
                                  f"{', '.join(SUPPORTED_LANGUAGES)}")
        if not 0 < self.port < 65536:
            raise ConfigError("port: expected 1..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key: give both (or neither)")
        for host in self.ice_hosts or ():
            if not _is_ip(host):
                raise ConfigError(f"ice_hosts: {host!r} is not an IP address")
        for network in self.ice_remote_networks or ():
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"ice_remote_networks: {network!r} is not a network (CIDR)"
                                  ) from None
        if self.ice_public_ip is not None and not _is_ip(self.ice_public_ip):
            raise ConfigError(f"ice_public_ip: {self.ice_public_ip!r} is not an IP address")
        if self.turn.reply.hold_after_s is None:  # unset: follows the model
            reply = dataclasses.replace(self.turn.reply,
                                        hold_after_s=hold_after_for(self.engines))
            object.__setattr__(self, "turn", dataclasses.replace(self.turn, reply=reply))

    def replace(self, **changes: Any) -> CallbotConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None,
             env: Mapping[str, str] | None = None) -> CallbotConfig:
        """Defaults, then the file (TOML or YAML), then CALLBOT_* environment variables."""
        data: dict[str, Any] = {}
        if path is not None:
            data = _read_file(Path(path))
        config = from_mapping(data)
        return apply_env(config, os.environ if env is None else env)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of settings")
    return data


def from_mapping(data: Mapping[str, Any]) -> CallbotConfig:
    config: CallbotConfig = _build(CallbotConfig, data, "")
    return config


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{name}: unknown setting (known: {', '.join(sorted(fields))})")
        values[key] = _coerce(fields[key], raw, name)
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as exc:  # the settings' own checks name the field
        raise ConfigError(f"{prefix}{exc}" if prefix else str(exc)) from exc
    return obj


def _coerce(field: dataclasses.Field[Any], raw: Any, name: str) -> Any:
    default = (
        field.default_factory() if field.default_factory is not dataclasses.MISSING
        else field.default
    )
    if dataclasses.is_dataclass(default):
        return _build(type(default), raw, f"{name}.")
    if field.name == "ice_servers":
        return tuple(_ice_server(item, f"{name}[{i}]") for i, item in enumerate(raw or []))
    if isinstance(default, dict):
        return _string_map(raw, name)
    if field.name in ("ice_hosts", "languages", "bearer_tokens", "admin_tokens",
                      "allowed_origins", "server_voices", "ice_remote_networks", "turn_urls",
                      "allow"):
        if raw is None and field.name in ("ice_hosts", "ice_remote_networks"):
            return None
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{name}: expected a list of strings")
        return tuple(i.strip() for i in items if i.strip())
    if isinstance(default, bool):
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "0", "false", "no"):
            return raw.lower() in ("1", "true", "yes")
        if not isinstance(raw, bool):
            raise ConfigError(f"{name}: expected true or false")
        return raw
    if isinstance(default, int):
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
        return value
    if field.type == "str | None" and raw is not None and not isinstance(raw, str):
        raise ConfigError(f"{name}: expected a string, got {raw!r}")
    if isinstance(default, float) or field.type in ("float | None",):
        if raw is None:
            return None
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if raw is not None and not isinstance(raw, str):
        raise ConfigError(f"{name}: expected a string, got {raw!r}")
    return raw


def _string_map(raw: Any, name: str) -> dict[str, Any]:
    """A table of strings, or of lists of strings (word lists per language)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{name}: expected a table")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            out[str(key)] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            out[str(key)] = tuple(value)
        else:
            raise ConfigError(f"{name}.{key}: expected a string or a list of strings")
    return out


def _ice_server(item: Any, name: str) -> IceServer:
    if isinstance(item, str):
        return IceServer(urls=(item,))
    if not isinstance(item, Mapping) or "urls" not in item:
        raise ConfigError(f"{name}: expected a URL or a table with 'urls'")
    urls = item["urls"]
    urls = (urls,) if isinstance(urls, str) else tuple(urls)
    return IceServer(urls=urls, username=item.get("username"), credential=item.get("credential"))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Environment variables, each mapped to a dotted key of the config.
ENV_KEYS = {
    "CALLBOT_HOST": "host",
    "CALLBOT_PORT": "port",
    "CALLBOT_TLS_CERT": "tls_cert",
    "CALLBOT_TLS_KEY": "tls_key",
    "CALLBOT_ICE_HOSTS": "ice_hosts",
    "CALLBOT_ICE_PUBLIC_IP": "ice_public_ip",
    "CALLBOT_ICE_REMOTE_NETWORKS": "ice_remote_networks",
    "CALLBOT_MAX_CALLS": "limits.max_calls",
    "CALLBOT_CAPACITY": "capacity.calls",
    "CALLBOT_MAX_CALLS_PER_CLIENT": "limits.max_calls_per_client",
    "CALLBOT_CALL_RATE_PER_MINUTE": "limits.call_rate_per_minute",
    "CALLBOT_ASR_MODEL": "engines.asr_model",
    "CALLBOT_ASR_URL": "engines.asr_url",
    "CALLBOT_TTS_URL": "engines.tts_url",
    "CALLBOT_CLUSTER": "cluster.redis_url",
    "CALLBOT_ADVERTISE_URL": "cluster.advertise_url",
    "CALLBOT_TURN_URLS": "webrtc.turn_urls",
    "CALLBOT_TURN_SHARED_SECRET": "webrtc.turn_shared_secret",
    "CALLBOT_CLUSTER_FORWARD_SECRET": "cluster.forward_secret",
    "CALLBOT_CLUSTER_FORWARD_SECRET_FILE": "cluster.forward_secret_file",
    "CALLBOT_LLM_BACKEND": "engines.llm_backend",
    "CALLBOT_LLM_ISOLATION": "engines.llm_isolation",
    "CALLBOT_LLM_STATE_CACHE_MB": "engines.llm_state_cache_mb",
    "CALLBOT_LLM_BASE_URL": "engines.openai_base_url",
    "CALLBOT_LLM_MODEL": "engines.openai_model",
    "CALLBOT_LLM_API_KEY": "engines.openai_api_key",
    "CALLBOT_SYSTEM_PROMPT": "turn.reply.system_prompt",
    "CALLBOT_AUTH_MODE": "auth.mode",
    "CALLBOT_AUTH_TOKENS": "auth.bearer_tokens",
    "CALLBOT_AUTH_SIGNING_SECRET": "auth.signing_secret",
    "CALLBOT_ALLOWED_ORIGINS": "auth.allowed_origins",
    "CALLBOT_LANGUAGES": "languages",
    "CALLBOT_SAFETY": "safety.enabled",
    "CALLBOT_MODERATION_URL": "safety.endpoint_url",
    "CALLBOT_MODERATION_API_KEY": "safety.endpoint_api_key",
    "CALLBOT_REDACT_PII": "safety.redact_pii",
    "CALLBOT_TTS_SERVER_URL": "tts.server_url",
    "CALLBOT_TTS_SERVER_VOICES": "tts.server_voices",
    "CALLBOT_TTS_SERVER_API_KEY": "tts.server_api_key",
    "CALLBOT_AUTH_ADMIN_TOKENS": "auth.admin_tokens",
    "CALLBOT_CLIENT_SYSTEM_PROMPT": "auth.client_system_prompt",
    "CALLBOT_LLM_LOCAL_MODEL": "engines.llm_model",
    "CALLBOT_KB_DB": "knowledge.db",
    "CALLBOT_KB_ENABLED": "knowledge.enabled",
    "CALLBOT_KB_PASSAGES": "knowledge.passages",
    "CALLBOT_KB_TOKEN_BUDGET": "knowledge.token_budget",
    "CALLBOT_KB_MIN_SIMILARITY": "knowledge.min_similarity",
    "CALLBOT_MEMORY": "memory.enabled",
    "CALLBOT_MEMORY_DB": "memory.db",
    "CALLBOT_MEMORY_RETENTION_DAYS": "memory.retention_days",
    "CALLBOT_MEMORY_KEEP_TRANSCRIPTS": "memory.keep_transcripts",
    "CALLBOT_RECORD_KEEP": "record.keep",
    "CALLBOT_RECORD_AUDIO": "record.audio",
    "CALLBOT_RECORD_DB": "record.db",
    "CALLBOT_RECORD_DIR": "record.audio_dir",
    "CALLBOT_RECORD_RETENTION_DAYS": "record.retention_days",
    "CALLBOT_RECORD_REDACT_PII": "record.redact_pii",
    "CALLBOT_VISION_ENGINE": "vision.engine",
    "CALLBOT_VISION_BASE_URL": "vision.base_url",
    "CALLBOT_VISION_MODEL": "vision.model",
    "CALLBOT_VISION_API_KEY": "vision.api_key",
    "CALLBOT_BOT_VIDEO": "vision.bot_video",
    "CALLBOT_SIP": "sip.enabled",
    "CALLBOT_SIP_HOST": "sip.host",
    "CALLBOT_SIP_PORT": "sip.port",
    "CALLBOT_SIP_PUBLIC_IP": "sip.public_ip",
    "CALLBOT_SIP_ALLOW": "sip.allow",
    "CALLBOT_SIP_USERNAME": "sip.username",
    "CALLBOT_SIP_PASSWORD": "sip.password",
}


def apply_env(config: CallbotConfig, env: Mapping[str, str]) -> CallbotConfig:
    overrides = {key: env[var] for var, key in ENV_KEYS.items() if var in env}
    if "vision.base_url" in overrides and "vision.engine" not in overrides:
        overrides["vision.engine"] = "openai"  # a vision endpoint given means using it
    if "engines.openai_base_url" in overrides and "engines.llm_backend" not in overrides:
        overrides["engines.llm_backend"] = "openai"  # pointing at a server means using it
    return with_overrides(config, overrides)


def with_overrides(config: CallbotConfig, overrides: Mapping[str, Any]) -> CallbotConfig:
    """Apply dotted-key overrides (from env or flags), validated like the file."""
    data = _to_mapping(config)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return from_mapping(data)


def _to_mapping(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _to_mapping(value)
        elif f.name == "ice_servers":
            out[f.name] = [dataclasses.asdict(s) | {"urls": list(s.urls)} for s in value]
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
