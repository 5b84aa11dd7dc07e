"""control/config.py and the argument side of control/cli.py: precedence, dev keys, validation, tokens."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from control.cli import build_parser, parse_duration, parse_grant, run_token, token_credentials
from control.config import ConfigError, RoomSettings, Settings, WebhookSettings, load_settings, parse_keys


def serve_args(*argv: str) -> object:
    return build_parser().parse_args(["serve", *argv])


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mediarouter.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_without_keys_are_development_mode(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="control.config"):
        settings = load_settings(serve_args(), environ={})
    assert settings.workers >= 1
    assert (settings.node_ip, settings.rtc_port_base) == ("127.0.0.1", 7882)
    assert (settings.http_host, settings.http_port, settings.log_level) == ("0.0.0.0", 7880, "info")
    assert dict(settings.keys) == {"devkey": "secret"}
    assert settings.dev_mode
    assert (settings.gso, settings.hmac_batch, settings.srtp_crypto) == (True, True, "mediarouter")
    assert "development mode: API key devkey, secret 'secret'" in caplog.messages


def test_settings_are_frozen() -> None:
    settings = load_settings(serve_args("--keys", "k:s"), environ={})
    with pytest.raises(AttributeError):
        settings.workers = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.keys["x"] = "y"  # type: ignore[index]


def test_keys_precedence_is_cli_then_env_then_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write(tmp_path, "keys: {filekey: filesecret}\n")
    env = {"MEDIAROUTER_KEYS": "envkey:envsecret, envkey2:s2"}
    with caplog.at_level(logging.WARNING, logger="control.config"):
        from_cli = load_settings(serve_args("--config", config, "--keys", "clikey:clisecret"), environ=env)
        from_env = load_settings(serve_args("--config", config), environ=env)
        from_file = load_settings(serve_args("--config", config), environ={})
    assert dict(from_cli.keys) == {"clikey": "clisecret"}
    assert dict(from_env.keys) == {"envkey": "envsecret", "envkey2": "s2"}
    assert dict(from_file.keys) == {"filekey": "filesecret"}
    assert not (from_cli.dev_mode or from_env.dev_mode or from_file.dev_mode)
    assert not [m for m in caplog.messages if "development mode" in m]


def test_command_line_overrides_file_which_overrides_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, "workers: 3\nnode_ip: 10.0.0.5\nrtc_port_base: 40000\nhttp_port: 9000\n"
                             "http_host: 127.0.0.1\nlog_level: debug\n")
    args = serve_args("--config", config, "--workers", "1", "--http-port", "9100")
    settings = load_settings(args, environ={})
    assert settings == Settings(workers=1, node_ip="10.0.0.5", rtc_port_base=40000, http_host="127.0.0.1",
                                http_port=9100, keys=settings.keys, dev_mode=True, log_level="debug",
                                config_path=config)


# setting, command line, environment variable and value, YAML line, what each gives (cli, env, file)
PRECEDENCE = [
    ("workers", ["--workers", "1"], ("MEDIAROUTER_WORKERS", "2"), "workers: 3", (1, 2, 3)),
    ("node_ip", ["--node-ip", "10.0.0.1"], ("MEDIAROUTER_NODE_IP", "10.0.0.2"), "node_ip: 10.0.0.3",
     ("10.0.0.1", "10.0.0.2", "10.0.0.3")),
    ("rtc_port_base", ["--rtc-port-base", "40000"], ("MEDIAROUTER_RTC_PORT_BASE", "41000"), "rtc_port_base: 42000",
     (40000, 41000, 42000)),
    ("http_host", ["--http-host", "127.0.0.1"], ("MEDIAROUTER_HTTP_HOST", "127.0.0.2"), "http_host: 127.0.0.3",
     ("127.0.0.1", "127.0.0.2", "127.0.0.3")),
    ("http_port", ["--http-port", "9001"], ("MEDIAROUTER_HTTP_PORT", "9002"), "http_port: 9003", (9001, 9002, 9003)),
    ("log_level", ["--log-level", "debug"], ("MEDIAROUTER_LOG_LEVEL", "WARNING"), "log_level: error",
     ("debug", "warning", "error")),
    ("gso", ["--gso"], ("MEDIAROUTER_GSO", "0"), "gso: true", (True, False, True)),
    ("gso", ["--no-gso"], ("MEDIAROUTER_GSO", "on"), "gso: false", (False, True, False)),
    ("hmac_batch", ["--hmac-batch"], ("MEDIAROUTER_HMAC_BATCH", "false"), "hmac_batch: yes", (True, False, True)),
    ("hmac_batch", ["--no-hmac-batch"], ("MEDIAROUTER_HMAC_BATCH", "1"), "hmac_batch: off", (False, True, False)),
    ("srtp_crypto", ["--srtp-crypto", "mediarouter"], ("MEDIAROUTER_SRTP_CRYPTO", "libsrtp"),
     "srtp_crypto: mediarouter", ("mediarouter", "libsrtp", "mediarouter")),
    ("srtp_crypto", ["--srtp-crypto", "libsrtp"], ("MEDIAROUTER_SRTP_CRYPTO", "MediaRouter"), "srtp_crypto: libsrtp",
     ("libsrtp", "mediarouter", "libsrtp")),
    ("congestion_control", ["--no-congestion-control"], ("MEDIAROUTER_CONGESTION_CONTROL", "on"),
     "congestion_control: false", (False, True, False)),
    ("congestion_control", ["--congestion-control"], ("MEDIAROUTER_CONGESTION_CONTROL", "0"),
     "congestion_control: true", (True, False, True)),
    ("rx_hold_ms", ["--rx-hold-ms", "2"], ("MEDIAROUTER_RX_HOLD_MS", "1"), "rx_hold_ms: 5", (2, 1, 5)),
    ("header_timeout_s", ["--header-timeout-s", "2.5"], ("MEDIAROUTER_HEADER_TIMEOUT_S", "4"),
     "header_timeout_s: 30", (2.5, 4.0, 30.0)),
    ("max_pending_connections", ["--max-pending-connections", "100"], ("MEDIAROUTER_MAX_PENDING_CONNECTIONS", "200"),
     "max_pending_connections: 300", (100, 200, 300)),
    ("max_pending_per_address", ["--max-pending-per-address", "10"], ("MEDIAROUTER_MAX_PENDING_PER_ADDRESS", "20"),
     "max_pending_per_address: 30", (10, 20, 30)),
    ("fd_reserve", ["--fd-reserve", "100"], ("MEDIAROUTER_FD_RESERVE", "200"), "fd_reserve: 300", (100, 200, 300)),
    ("livekit_client_url", ["--livekit-client-url", "/cli.js"], ("MEDIAROUTER_LIVEKIT_CLIENT_URL", "http://e/env.js"),
     "livekit_client_url: https://f/file.js", ("/cli.js", "http://e/env.js", "https://f/file.js")),
]


@pytest.mark.parametrize(("name", "argv", "env", "line", "expected"), PRECEDENCE)
def test_every_setting_is_cli_then_env_then_file(tmp_path: Path, name: str, argv: list[str], env: tuple[str, str],
                                                 line: str, expected: tuple[object, object, object]) -> None:
    config = write(tmp_path, line + "\n")
    environ = {env[0]: env[1], "MEDIAROUTER_KEYS": "k:s"}
    from_cli = load_settings(serve_args("--config", config, *argv), environ=environ)
    from_env = load_settings(serve_args("--config", config), environ=environ)
    from_file = load_settings(serve_args("--config", config), environ={"MEDIAROUTER_KEYS": "k:s", env[0]: " "})
    assert (getattr(from_cli, name), getattr(from_env, name), getattr(from_file, name)) == expected


def test_parse_keys_accepts_several_and_trims() -> None:
    assert parse_keys(" a:1 , b:2,", "--keys") == {"a": "1", "b": "2"}


@pytest.mark.parametrize(("text", "message"), [
    ("nocolon", "--keys: key 'nocolon' is not 'key:secret'"),
    ("k:", "--keys: key 'k:' is not 'key:secret'"),
    (":s", "--keys: key ':s' is not 'key:secret'"),
    ("k:1,k:2", "--keys: key 'k' given twice"),
    (" , ", "--keys: no key in ' , '"),
])
def test_bad_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_keys(text, "--keys")
    assert str(info.value) == message


def test_bad_env_keys_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="^MEDIAROUTER_KEYS: key 'oops' is not 'key:secret'$"):
        load_settings(serve_args(), environ={"MEDIAROUTER_KEYS": "oops"})


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "0"], "workers 0 out of range 1-1024"),
    (["--rtc-port-base", "70000"], "rtc_port_base 70000 out of range 1-65535"),
    (["--rtc-port-base", "65535", "--workers", "2"], "rtc_port_base 65535 leaves no room for 2 UDP ports"),
    (["--http-port", "0"], "http_port 0 out of range 1-65535"),
    (["--node-ip", "example.org"], "node_ip 'example.org' is not an IP address"),
    (["--node-ip", "0.0.0.0"], "node_ip 0.0.0.0 is unspecified; give the address clients can reach"),
    (["--header-timeout-s", "0"], "header_timeout_s must be a number of seconds in 0.1-3600, not 0.0"),
    (["--max-pending-connections", "0"], "max_pending_connections 0 out of range 1-1048576"),
    (["--max-pending-per-address", "0"], "max_pending_per_address 0 out of range 1-1048576"),
    (["--fd-reserve", "8"], "fd_reserve 8 out of range 16-1048576"),
    (["--rx-hold-ms", "21"], "rx_hold_ms 21 out of range 0-20"),
    (["--livekit-client-url", "cdn/lk.js"],
     "livekit_client_url must be an http:// or https:// URL or a path starting with /, not 'cdn/lk.js'"),
])
def test_bad_command_line_values_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(serve_args("--keys", "k:s", *argv), environ={})
    assert str(info.value) == message


@pytest.mark.parametrize(("name", "value", "message"), [
    ("MEDIAROUTER_WORKERS", "two", "MEDIAROUTER_WORKERS must be an integer, not 'two'"),
    ("MEDIAROUTER_WORKERS", "0", "workers 0 out of range 1-1024"),
    ("MEDIAROUTER_HTTP_PORT", "80.5", "MEDIAROUTER_HTTP_PORT must be an integer, not '80.5'"),
    ("MEDIAROUTER_RTC_PORT_BASE", "70000", "rtc_port_base 70000 out of range 1-65535"),
    ("MEDIAROUTER_NODE_IP", "localhost", "node_ip 'localhost' is not an IP address"),
    ("MEDIAROUTER_LOG_LEVEL", "loud", "log_level must be one of debug, info, warning, error, not 'loud'"),
    ("MEDIAROUTER_GSO", "2", "MEDIAROUTER_GSO must be 1 or 0 (or true/false, yes/no, on/off), not '2'"),
    ("MEDIAROUTER_HMAC_BATCH", "maybe",
     "MEDIAROUTER_HMAC_BATCH must be 1 or 0 (or true/false, yes/no, on/off), not 'maybe'"),
    ("MEDIAROUTER_SRTP_CRYPTO", "openssl", "srtp_crypto must be one of mediarouter, libsrtp, not 'openssl'"),
    ("MEDIAROUTER_CONGESTION_CONTROL", "auto",
     "MEDIAROUTER_CONGESTION_CONTROL must be 1 or 0 (or true/false, yes/no, on/off), not 'auto'"),
    ("MEDIAROUTER_HEADER_TIMEOUT_S", "soon", "MEDIAROUTER_HEADER_TIMEOUT_S must be a number, not 'soon'"),
    ("MEDIAROUTER_FD_RESERVE", "lots", "MEDIAROUTER_FD_RESERVE must be an integer, not 'lots'"),
])
def test_bad_environment_values_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(serve_args(), environ={"MEDIAROUTER_KEYS": "k:s", name: value})
    assert str(info.value) == message


def test_the_command_line_refuses_an_unknown_srtp_crypto(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        serve_args("--srtp-crypto", "openssl")
    assert "argument --srtp-crypto: invalid choice: 'openssl' (choose from " in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ("- a\n- b\n", "must hold a mapping, not list"),
    ("workers: 2\nport: 7880\n", "unknown setting 'port'"),
    ("workers: two\n", "workers must be an integer, not 'two'"),
    ("keys: devkey\n", "keys must be a non-empty mapping of key: secret"),
    ("keys: {devkey: 12}\n", "key 'devkey' needs a non-empty string secret"),
    ("log_level: loud\n", "log_level must be one of debug, info, warning, error, not 'loud'"),
    ("gso: 0\n", "gso must be true or false, not 0"),
    ("hmac_batch: 'no'\n", "hmac_batch must be true or false, not 'no'"),
    ("srtp_crypto: openssl\n", "srtp_crypto must be one of mediarouter, libsrtp, not 'openssl'"),
    ("srtp_crypto: true\n", "srtp_crypto must be one of mediarouter, libsrtp, not True"),
    ("workers: [\n", "is not valid YAML"),
])
def test_bad_config_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(serve_args("--config", config), environ={})
    assert message in str(info.value)


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml: No such file or directory"):
        load_settings(serve_args("--config", str(tmp_path / "nope.yaml")), environ={})


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    settings = load_settings(serve_args("--config", write(tmp_path, ""), "--keys", "k:s"), environ={})
    assert settings.http_port == 7880


# ------------------------------------------------------------------------------------------------ token


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("6h", 21600),
                                               ("1d", 86400), ("1h30m", 5400)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "message"), [
    ("5x", "invalid duration '5x' (use e.g. 90s, 30m, 6h, 1d, 1h30m)"),
    ("", "invalid duration '' (use e.g. 90s, 30m, 6h, 1d, 1h30m)"),
    ("0s", "duration '0s' must be positive"),
])
def test_bad_durations(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


def test_grants_are_json_when_they_can_be() -> None:
    assert parse_grant("canPublish=false") == ("canPublish", False)
    assert parse_grant('canPublishSources=["camera"]') == ("canPublishSources", ["camera"])
    assert parse_grant("destinationRoom=lobby") == ("destinationRoom", "lobby")
    with pytest.raises(ValueError, match="invalid grant 'canPublish' \\(use key=value\\)"):
        parse_grant("canPublish")


def test_token_credentials_follow_serve_resolution(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(["token", "--room", "r", "--identity", "i"])
    assert token_credentials(args, {}) == ("devkey", "secret")
    assert token_credentials(args, {"MEDIAROUTER_KEYS": "k1:s1,k2:s2"}) == ("k1", "s1")
    args = parser.parse_args(["token", "--room", "r", "--identity", "i", "--api-key", "k2"])
    assert token_credentials(args, {"MEDIAROUTER_KEYS": "k1:s1,k2:s2"}) == ("k2", "s2")
    with pytest.raises(ConfigError, match="no secret known for API key 'k2'; give --api-secret"):
        token_credentials(args, {})
    config = write(tmp_path, "keys: {filekey: filesecret}\n")
    args = parser.parse_args(["token", "--room", "r", "--identity", "i", "--config", config])
    assert token_credentials(args, {}) == ("filekey", "filesecret")


def test_token_command_makes_a_token_the_server_accepts() -> None:
    auth = pytest.importorskip("control.auth")
    args = build_parser().parse_args(["token", "--room", "r1", "--identity", "alice", "--name", "Alice",
                                      "--no-can-publish", "--grant", "canPublishData=false",
                                      "--valid-for", "1h"])
    token = run_token(args, {"MEDIAROUTER_KEYS": "k:longsecret"})
    claims = auth.verify_token(token, {"k": "longsecret"})
    assert (claims.identity, claims.name, claims.api_key) == ("alice", "Alice", "k")
    assert claims.grants.room == "r1"
    assert not claims.grants.can_publish and not claims.grants.can_publish_data
    assert claims.grants.can_subscribe
    assert claims.expires_at - claims.not_before == 3600


# ---- room settings (the room: section and MEDIAROUTER_ROOM_*) ------------------------------------------------


def test_room_settings_default_without_section() -> None:
    settings = load_settings(serve_args("--keys", "k:s"), environ={})
    assert settings.room == RoomSettings()
    assert settings.room.ping_interval == 5 and settings.room.enabled_codecs == ("audio/opus", "video/VP8")


def test_room_section_and_environment(tmp_path: Path) -> None:
    config = write(tmp_path, "room:\n  ping_interval: 7\n  ping_timeout: 30\n  grace_period_s: 2.5\n"
                             "  join_timeout_s: 20\n  worker_wait_s: 0\n  empty_timeout: 60\n"
                             "  departure_timeout: 0\n  enabled_codecs: [audio/OPUS, video/h264]\n")
    room = load_settings(serve_args("--config", config, "--keys", "k:s"), environ={}).room
    assert (room.ping_interval, room.ping_timeout, room.grace_period_s, room.join_timeout_s) == (7, 30, 2.5, 20.0)
    assert (room.worker_wait_s, room.empty_timeout, room.departure_timeout) == (0.0, 60, 0)
    assert isinstance(room.join_timeout_s, float)
    assert room.enabled_codecs == ("audio/opus", "video/H264")  # canonical spelling
    assert room.keys == {} and room.server_version == RoomSettings().server_version
    env = {"MEDIAROUTER_ROOM_PING_INTERVAL": "9", "MEDIAROUTER_ROOM_GRACE_PERIOD_S": " 0.5 ",
           "MEDIAROUTER_ROOM_ENABLED_CODECS": "audio/opus,video/VP9,video/VP8"}
    room = load_settings(serve_args("--config", config, "--keys", "k:s"), environ=env).room
    assert (room.ping_interval, room.ping_timeout, room.grace_period_s) == (9, 30, 0.5)  # environment > file
    assert room.enabled_codecs == ("audio/opus", "video/VP9", "video/VP8")


def test_room_dynacast_pause_delay(tmp_path: Path) -> None:
    assert RoomSettings().dynacast_pause_delay_s == 5.0  # LiveKit's dynacast_pause_delay
    config = write(tmp_path, "room:\n  dynacast_pause_delay_s: 2\n")
    room = load_settings(serve_args("--config", config, "--keys", "k:s"), environ={}).room
    assert room.dynacast_pause_delay_s == 2.0 and isinstance(room.dynacast_pause_delay_s, float)
    env = {"MEDIAROUTER_ROOM_DYNACAST_PAUSE_DELAY_S": "0"}
    assert load_settings(serve_args("--config", config, "--keys", "k:s"), environ=env).room.dynacast_pause_delay_s == 0
    bad = write(tmp_path, "room:\n  dynacast_pause_delay_s: -1\n")
    with pytest.raises(ConfigError, match="room.dynacast_pause_delay_s -1 out of range 0-3600"):
        load_settings(serve_args("--config", bad, "--keys", "k:s"), environ={})


def test_room_spread(tmp_path: Path) -> None:
    assert (RoomSettings().spread, RoomSettings().spread_share) == ("auto", 0.5)
    config = write(tmp_path, "room:\n  spread: always\n  spread_share: 0.7\n")
    room = load_settings(serve_args("--config", config, "--keys", "k:s"), environ={}).room
    assert (room.spread, room.spread_share) == ("always", 0.7)
    env = {"MEDIAROUTER_ROOM_SPREAD": "Never"}
    assert load_settings(serve_args("--config", config, "--keys", "k:s"), environ=env).room.spread == "never"
    bad = write(tmp_path, "room:\n  spread: sometimes\n")
    with pytest.raises(ConfigError, match="room.spread must be one of auto, always, never, not 'sometimes'"):
        load_settings(serve_args("--config", bad, "--keys", "k:s"), environ={})
    with pytest.raises(ConfigError, match="room.spread_share 2 out of range 0-1"):
        load_settings(serve_args("--config", write(tmp_path, "room:\n  spread_share: 2\n"), "--keys", "k:s"),
                      environ={})


@pytest.mark.parametrize(("text", "message"), [
    ("room: 5\n", "config file {config}: room must be a mapping, not int"),
    ("room:\n  ping: 5\n", "config file {config}: room: unknown setting 'ping'"),
    ("room:\n  server_version: 2\n", "config file {config}: room: unknown setting 'server_version'"),
    ("room:\n  refresh_interval_s: 0\n", "room.refresh_interval_s 0 out of range 1-86400"),
    ("room:\n  enable_remote_unmute: 1\n", "room.enable_remote_unmute must be true or false, not 1"),
    ("room:\n  ping_interval: five\n", "room.ping_interval must be an integer, not 'five'"),
    ("room:\n  ping_interval: 2.5\n", "room.ping_interval must be an integer, not 2.5"),
    ("room:\n  ping_interval: true\n", "room.ping_interval must be an integer, not True"),
    ("room:\n  ping_interval: 0\n", "room.ping_interval 0 out of range 1-3600"),
    ("room:\n  grace_period_s: -1\n", "room.grace_period_s -1 out of range 0-3600"),
    ("room:\n  join_timeout_s: soon\n", "room.join_timeout_s must be a number, not 'soon'"),
    ("room:\n  empty_timeout: 100000\n", "room.empty_timeout 100000 out of range 1-86400"),
    ("room:\n  ping_interval: 20\n", "room.ping_timeout 15 must be greater than room.ping_interval 20"),
    ("room:\n  enabled_codecs: audio/opus\n", "room.enabled_codecs must be a non-empty list of codec mime types"),
    ("room:\n  enabled_codecs: []\n", "room.enabled_codecs must be a non-empty list of codec mime types"),
    ("room:\n  enabled_codecs: [video/H265]\n",
     "room.enabled_codecs: codec 'video/H265' is not one of audio/opus, video/VP8, video/H264, video/VP9, video/AV1"),
    ("room:\n  enabled_codecs: [audio/opus, audio/Opus]\n", "room.enabled_codecs: codec audio/opus given twice"),
])
def test_bad_room_sections_are_refused(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(serve_args("--config", config, "--keys", "k:s"), environ={})
    assert str(info.value) == message.format(config=config)


@pytest.mark.parametrize(("env", "message"), [
    ({"MEDIAROUTER_ROOM_PING_TIMEOUT": "15s"}, "MEDIAROUTER_ROOM_PING_TIMEOUT must be an integer, not '15s'"),
    ({"MEDIAROUTER_ROOM_WORKER_WAIT_S": "700"}, "MEDIAROUTER_ROOM_WORKER_WAIT_S 700.0 out of range 0-600"),
    ({"MEDIAROUTER_ROOM_ENABLED_CODECS": "audio/opus,"},
     "MEDIAROUTER_ROOM_ENABLED_CODECS: codec '' is not one of audio/opus, video/VP8, video/H264, video/VP9, "
     "video/AV1"),
    ({"MEDIAROUTER_ROOM_GRACE_PERIOD": "5"}, "unknown environment variable MEDIAROUTER_ROOM_GRACE_PERIOD (known: "
     "MEDIAROUTER_ROOM_PING_INTERVAL, MEDIAROUTER_ROOM_PING_TIMEOUT, MEDIAROUTER_ROOM_GRACE_PERIOD_S, "
     "MEDIAROUTER_ROOM_JOIN_TIMEOUT_S, MEDIAROUTER_ROOM_WORKER_WAIT_S, MEDIAROUTER_ROOM_EMPTY_TIMEOUT, "
     "MEDIAROUTER_ROOM_DEPARTURE_TIMEOUT, MEDIAROUTER_ROOM_DYNACAST_PAUSE_DELAY_S, "
     "MEDIAROUTER_ROOM_REFRESH_INTERVAL_S, "
     "MEDIAROUTER_ROOM_UPDATE_BATCH_INTERVAL_S, MEDIAROUTER_ROOM_ROOM_UPDATE_INTERVAL_S, "
     "MEDIAROUTER_ROOM_UPDATE_BATCH_MIN_PARTICIPANTS, "
     "MEDIAROUTER_ROOM_MAX_TRACKS_PER_PARTICIPANT, MEDIAROUTER_ROOM_MAX_PENDING_TRACKS, "
     "MEDIAROUTER_ROOM_MAX_SUBSCRIPTIONS_PER_PARTICIPANT, MEDIAROUTER_ROOM_MAX_PARTICIPANTS_PER_ROOM, "
     "MEDIAROUTER_ROOM_MAX_PARTICIPANTS_PER_NODE, MEDIAROUTER_ROOM_MAX_ROOMS_PER_NODE, "
     "MEDIAROUTER_ROOM_MAX_DATA_PACKET_BYTES, MEDIAROUTER_ROOM_DATA_PACKETS_PER_S, MEDIAROUTER_ROOM_SPREAD_SHARE, "
     "MEDIAROUTER_ROOM_ENABLED_CODECS, MEDIAROUTER_ROOM_ENABLE_REMOTE_UNMUTE, MEDIAROUTER_ROOM_SPREAD)"),
])
def test_bad_room_environment_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(serve_args("--keys", "k:s"), environ=env)
    assert str(info.value) == message


def test_webhook_and_drain_settings(tmp_path: Path) -> None:
    config = write(tmp_path, "keys: {k1: s1, k2: s2}\ndrain_timeout: 30\n"
                             "webhook: {urls: ['http://127.0.0.1:9/hook'], api_key: k2}\n")
    settings = load_settings(serve_args("--config", str(config)), environ={})
    assert settings.drain_timeout == 30
    assert settings.webhook == WebhookSettings(urls=("http://127.0.0.1:9/hook",), api_key="k2", api_secret="s2")
    env = {"MEDIAROUTER_WEBHOOK_URLS": "http://a.example/x, https://b.example/y", "MEDIAROUTER_DRAIN_TIMEOUT": "5"}
    settings = load_settings(serve_args("--keys", "k:s", "--drain-timeout", "7"), environ=env)
    assert settings.drain_timeout == 7
    assert settings.webhook.urls == ("http://a.example/x", "https://b.example/y") and settings.webhook.api_key == "k"
    assert load_settings(serve_args("--keys", "k:s"), environ={}).webhook.urls == ()
    with pytest.raises(ConfigError, match="webhook.api_key 'nope' is not one of the API keys"):
        load_settings(serve_args("--keys", "k:s"), environ={**env, "MEDIAROUTER_WEBHOOK_API_KEY": "nope"})
    with pytest.raises(ConfigError, match="webhook.urls must be a list"):
        load_settings(serve_args("--keys", "k:s"), environ={"MEDIAROUTER_WEBHOOK_URLS": "ftp://x"})
