"""The bundled benchmark cannot rot: one tiny scenario end to end, plus the generator's parts on loopback.

The end-to-end test runs ``python -m bench fanout`` with 3 subscribers for about a second: a real server (control's
Supervisor and one worker), synthetic participants doing ICE, DTLS and SRTP, the limit loop and the report. It
asserts the JSON keys of issue 4 and that packets were forwarded and authenticated, never a timing. The other tests
check the generator's pieces (the Cython loop against itself, STUN integrity, DTLS record packing, percentiles,
the generator-bound rule, option errors) without a server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import fastpath
from bench._loadgen import LoadGen
from bench.net import GeneratorSocket, participant_address
from bench.peer import ServerParams, _split_records, binding_request, integrity_ok
from bench.profile import summarize_collapsed
from bench.report import REQUIRED_KEYS, build_result, combine_runs, format_table
from bench.scenarios import Options, generator_bound
from bench.session import Measurement, header_extension, percentile

ROOT = Path(__file__).resolve().parents[2]


def _run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _bench_result(args: list[str], tmp_path: Path) -> dict:
    """``python -m bench ARGS --no-limit --json F`` must succeed; its JSON result."""
    out = tmp_path / "result.json"
    done = _run_bench([*args, "--no-limit", "--json", str(out)], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.timeout(150)
def test_fanout_end_to_end_writes_the_issue_keys(tmp_path: Path) -> None:
    out = tmp_path / "fanout.json"
    done = _run_bench(["fanout", "--subscribers", "3", "--seconds", "1", "--rate", "200", "--json", str(out)],
                      timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(REQUIRED_KEYS) <= set(result)
    assert result["scenario"] == "fanout"
    assert result["srtp_profile"] == "AES_CM_128_HMAC_SHA1_80"
    assert result["subscribers"] == 3
    point = result["points"][0]
    assert point["received"] > 0 and result["forwarded_pps"] > 0
    assert point["verified"] == point["received"]  # every packet authenticated and decrypted by its subscriber
    assert point["auth_failed"] == 0 and point["bad_payload"] == 0
    assert point["streams"] == 3 and point["stream_received_min"] > 0  # every subscriber got its stream
    assert result["latency_ms_p50"] is not None
    assert result["limit_forwarded_pps"] > 0 and result["limit"]["load"] == 3
    assert isinstance(result["udp_gso"], bool)
    assert result["limit"]["limit_counters"]["gso"] is result["udp_gso"]  # both segment sends, or neither
    assert result["cpu_us_per_packet"] > 0
    assert isinstance(result["generator_bound"], bool)
    assert result["commit"] and result["machine"]
    assert "fanout" in done.stdout  # the table


@pytest.mark.timeout(150)
def test_aiortc_baseline_relays_to_every_subscriber_and_is_compared(tmp_path: Path) -> None:
    """``--aiortc``: the relay built on aiortc forwards the same publisher to the same subscribers (its own
    process, its own CPU accounting) and the result states mediarouter's packets per CPU-second as a multiple."""
    result = _bench_result(["fanout", "--subscribers", "2", "--seconds", "1", "--rate", "200", "--aiortc"], tmp_path)
    relay = result["aiortc_relay"]
    assert relay["subscribers"] == 2
    assert 1.5 * 200 < relay["forwarded_pps"] < 2.5 * 200
    assert relay["packets_per_cpu_second"] > 0 and relay["cpu_us_per_packet"] > 0
    assert relay["versions"]["aiortc"] and relay["versions"]["pylibsrtp"] == "1.0.0"
    assert result["ratio_to_aiortc"] == pytest.approx(
        1e6 / result["cpu_us_per_packet"] / relay["packets_per_cpu_second"], rel=0.05)


@pytest.mark.timeout(150)
def test_simulcast_fanout_forwards_the_top_layer_to_every_subscriber(tmp_path: Path) -> None:
    """Three layers per publisher (SSRCs signaled in the TrackPlan): each subscriber's packets carry the stream id
    of the top layer's sender (``bad_payload`` counts any other), and the lower layers reach the worker."""
    result = _bench_result(["fanout", "--subscribers", "3", "--seconds", "1", "--rate", "150", "--simulcast"],
                           tmp_path)
    point = result["points"][0]
    assert result["simulcast"] is True
    assert point["streams"] == 3 and point["stream_received_min"] > 0
    assert point["verified"] == point["received"] > 0 and point["bad_payload"] == 0
    assert result["loss_pct"] < 5
    # 150 + 50 + 15 packets/s offered by the publisher, only the top layer's 150 forwarded to each of three.
    assert 2.5 * 150 < point["forwarded_pps"] < 3.5 * 150


def test_simulcast_needs_a_paced_rate_and_video() -> None:
    with pytest.raises(ValueError, match="--simulcast needs video at a paced --rate"):
        Options("fanout", rate=0, simulcast=True)
    with pytest.raises(ValueError, match="--simulcast needs video"):
        Options("audio", simulcast=True)


def test_header_extension_is_rfc_8285_one_byte_form() -> None:
    assert header_extension([(1, b"0"), (2, b"f")]) == bytes.fromhex("bede0001" "1030" "2066")
    assert header_extension([(1, b"12"), (2, b"hi")]) == bytes.fromhex("bede0002" "113132" "216869" "0000")
    with pytest.raises(ValueError, match="id in 1..14"):
        header_extension([(15, b"x")])


def test_loadgen_sends_a_header_extension_its_receivers_skip() -> None:
    net, port = _loop_socket()
    plain = _bound_socket(2.0)
    try:
        p = fastpath.PROFILE_AES128_CM_SHA1_80
        key = os.urandom(30)
        ext = header_extension([(1, b"0"), (2, b"h")])
        gen = LoadGen(net.fileno(), 3, 1, 0)
        looped = gen.add_sender(participant_address(3), "127.0.0.1", port, fastpath.SrtpContext(p, key, True),
                                0x31, 96, 300, 200.0, video=True, clock_rate=90000, header_ext=ext)
        gen.add_sender(participant_address(4), "127.0.0.1", plain.getsockname()[1],
                       fastpath.SrtpContext(p, key, True), 0x32, 96, 300, 200.0, video=True, clock_rate=90000,
                       header_ext=ext)
        gen.add_receiver(0x31, fastpath.SrtpContext(p, key, False), looped)
        gen.run(0.2)
        gen.run(0.05, send=False)
        got = gen.receivers_snapshot()[0]
        assert got["received"] > 0 and got["verified"] == got["received"] and got["bad_payload"] == 0
        packet = fastpath.SrtpContext(p, key, False).unprotect(plain.recv(2048))
        assert packet[0] == 0x90 and packet[12:20] == ext and len(packet) == 12 + len(ext) + 300
        assert packet[20 + 2:20 + 6] == (0x4D524231).to_bytes(4, "big")  # the bench header follows the block
        with pytest.raises(ValueError, match="extension block"):
            gen.add_sender(participant_address(5), "127.0.0.1", port, fastpath.SrtpContext(p, key, True), 0x33, 96,
                           300, 200.0, video=True, clock_rate=90000, header_ext=bytes.fromhex("bede0005" "1030"))
    finally:
        plain.close()
        net.close()


@pytest.mark.timeout(150)
def test_downlink_loss_is_nacked_and_mostly_recovered_by_the_server(tmp_path: Path) -> None:
    """5 % of the packets to the subscribers dropped by the generator: each gap is NACKed, the worker retransmits
    from its NACK history, and what stays lost is about the retransmissions lost again (5 % of 5 %)."""
    result = _bench_result(["fanout", "--subscribers", "5", "--seconds", "2", "--rate", "200", "--downlink-loss",
                            "5"], tmp_path)
    point = result["points"][0]
    assert result["downlink_loss_pct"] == 5.0
    assert point["downlink_dropped"] > 50 and point["nacks_sent"] > 0
    assert point["nacked"] >= 0.8 * point["downlink_dropped"]
    assert point["recovered_pct"] > 80 and result["loss_pct"] < 1.5
    assert point["verified"] == point["received"] and point["bad_payload"] == 0


@pytest.mark.timeout(150)
def test_capped_subscribers_send_twcc_feedback_and_are_moved_off_the_top_layer(tmp_path: Path) -> None:
    """--downlink-cap: every subscriber answers with transport-wide CC feedback from the generator, so the server
    estimates each subscriber's link; a quarter of them have a 500 kbit/s token bucket, which the 2.9 Mbit/s top
    layer does not fit: the allocator moves them down (or pauses them), never the others."""
    result = _bench_result(["fanout", "--subscribers", "4", "--seconds", "2", "--rate", "300", "--simulcast",
                            "--downlink-cap", "500", "--capped", "25"], tmp_path)
    assert result["twcc_feedback"] and result["downlink_cap_kbps"] == 500
    groups = result["points"][0]["downlinks"]
    capped, others = groups["capped"], groups["others"]
    assert capped["subscribers"] == 1 and others["subscribers"] == 3
    assert others["feedback_sent"] > 0  # (a capped subscriber the allocator paused receives nothing to report)
    # Estimates from the generator's feedback (the Engine starts at 1,000 kbit/s): the capped link's below it,
    # the others' above it, probed up to the top layer.
    assert 0 < capped["bwe_kbps_median"] < 1000 < others["bwe_kbps_median"]
    assert capped["delivered_kbit_per_sub"] <= 500 * 1.1  # the bucket holds (plus its queue)
    assert capped["cap_dropped"] + capped["overflowed_s_max"] > 0 and others["overflowed_s_max"] == 0
    assert set(capped["layers"]) <= {"0", "1", "paused"} and "paused" not in others["layers"]


@pytest.mark.timeout(150)
def test_uplink_loss_is_nacked_by_the_worker_and_resent_by_the_publisher(tmp_path: Path) -> None:
    """5 % of the publisher's packets never reach the worker: it NACKs them, the generator's publisher resends them
    from its history, and the subscribers get them late instead of never."""
    result = _bench_result(["fanout", "--subscribers", "3", "--seconds", "2", "--rate", "300", "--uplink-loss", "5"],
                           tmp_path)
    point = result["points"][0]
    assert result["uplink_loss_pct"] == 5.0
    assert point["uplink_dropped"] > 10 and point["uplink_retransmitted"] >= 0.8 * point["uplink_dropped"]
    assert point["generator_counters"]["nacks_received"] > 0
    assert point["recovered_pct"] > 80 and result["loss_pct"] < 1.5
    assert point["verified"] == point["received"] and point["bad_payload"] == 0


def test_loadgen_resends_what_a_nack_names_from_its_history() -> None:
    """A publisher with uplink loss: the packets a fake server never got are named in an SRTCP generic NACK and
    come back protected again with their original sequence numbers; a sequence number it never sent is counted as
    missing, not invented."""
    net, port = _loop_socket()
    server = _bound_socket(0.2)
    try:
        p = fastpath.PROFILE_AES128_CM_SHA1_80
        media_key, rtcp_key = os.urandom(30), os.urandom(30)
        address = participant_address(11)
        gen = LoadGen(net.fileno(), 1, 0, 1)
        gen.set_uplink_loss(20.0)
        gen.add_sender(address, "127.0.0.1", server.getsockname()[1], fastpath.SrtpContext(p, media_key, True),
                       0x61, 96, 200, 1000.0, video=True, clock_rate=90000)
        gen.add_rtcp_endpoint(address, fastpath.SrtpContext(p, rtcp_key, False))
        gen.run(0.2)
        reader = fastpath.SrtpContext(p, media_key, False)

        def drain() -> list[int]:
            seqs = []
            while True:
                try:
                    seqs.append(int.from_bytes(reader.unprotect(server.recv(2048))[2:4], "big"))
                except TimeoutError:
                    return seqs

        got = drain()
        sent = gen.senders_snapshot()[0]
        first, last = min(got), max(got)
        missing = sorted(set(range(first, last + 1)) - set(got))
        assert len(missing) == sent["uplink_dropped"] - (sent["sent"] - 1 - (last - first)) > 5
        fci = b"".join(seq.to_bytes(2, "big") + b"\0\0" for seq in [*missing, (first - 600) & 0xFFFF])
        nack = bytes([0x81, 205]) + (2 + len(fci) // 4).to_bytes(2, "big") + (1).to_bytes(4, "big") \
            + (0x61).to_bytes(4, "big") + fci
        server.sendto(fastpath.SrtpContext(p, rtcp_key, True).protect_rtcp(nack), (address, port))
        gen.run(0.05, send=False)
        assert sorted(drain()) == missing
        sent = gen.senders_snapshot()[0]
        assert sent["retransmitted"] == len(missing) and sent["nack_missing"] == 1
        assert gen.counters()["nacks_received"] == 1
    finally:
        server.close()
        net.close()


def test_loadgen_nacks_exactly_the_packets_it_dropped() -> None:
    """A sender looped back to the generator's own receiver with 20 % simulated loss: the generic NACKs the
    receiver sends (RFC 4585: PID + BLP bitmask) name the sequence numbers that never counted as received."""
    net, port = _loop_socket()
    server = _bound_socket(0.2)
    try:
        p = fastpath.PROFILE_AES128_CM_SHA1_80
        key, report_key = os.urandom(30), os.urandom(30)
        gen = LoadGen(net.fileno(), 1, 1, 0)
        stream = gen.add_sender(participant_address(7), "127.0.0.1", port, fastpath.SrtpContext(p, key, True),
                                0x51, 96, 200, 2000.0, video=True, clock_rate=90000)
        gen.add_receiver(0x51, fastpath.SrtpContext(p, key, False), stream,
                         report_ctx=fastpath.SrtpContext(p, report_key, True), report_from=participant_address(8),
                         report_to="127.0.0.1", report_port=server.getsockname()[1], reporter_ssrc=0x7000_0008)
        gen.set_downlink_loss(20.0, seed=12345)
        gen.run(0.5)
        gen.run(0.05, send=False)
        got = gen.receivers_snapshot()[0]
        nacked: list[int] = []
        reader = fastpath.SrtpContext(p, report_key, False)
        while True:
            try:
                rtcp = reader.unprotect_rtcp(server.recv(2048))
            except TimeoutError:
                break
            if rtcp[1] != 205:
                continue  # a receiver report
            assert rtcp[0] == 0x81 and int.from_bytes(rtcp[8:12], "big") == 0x51
            for at in range(12, len(rtcp), 4):
                pid, blp = int.from_bytes(rtcp[at:at + 2], "big"), int.from_bytes(rtcp[at + 2:at + 4], "big")
                nacked += [pid] + [(pid + 1 + k) & 0xFFFF for k in range(16) if blp >> k & 1]
        assert got["dropped"] > 100 and got["nacks_sent"] > 0
        assert len(nacked) == got["nacked"] == len(set(nacked))
        # Nothing retransmits here, so every dropped packet but those after the last one received is a gap.
        assert got["dropped"] - 5 <= got["gaps"] == got["nacked"] <= got["dropped"]
        with pytest.raises(ValueError, match="0..50"):
            gen.set_downlink_loss(60.0)
    finally:
        server.close()
        net.close()


def _bound_socket(timeout_s: float) -> socket.socket:
    """A loopback UDP socket that plays the server: what the generator sends to it, read with a timeout."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(timeout_s)
    return sock


def _loop_socket() -> tuple[GeneratorSocket, int]:
    net = GeneratorSocket(buffer_bytes=4 << 20)
    return net, net.port


@pytest.mark.parametrize("profile", [fastpath.PROFILE_AES128_CM_SHA1_80, fastpath.PROFILE_AEAD_AES_128_GCM])
def test_loadgen_sends_paced_srtp_and_counts_it(profile: int) -> None:
    net, port = _loop_socket()
    try:
        key = os.urandom(fastpath.KEY_LENGTHS[profile])
        gen = LoadGen(net.fileno(), 2, 2, 1)
        stream = gen.add_sender(participant_address(5), "127.0.0.1", port, fastpath.SrtpContext(profile, key, True),
                                0x1111, 96, 1188, 400.0, video=True, clock_rate=90000)
        report_key = os.urandom(fastpath.KEY_LENGTHS[profile])
        gen.add_receiver(0x1111, fastpath.SrtpContext(profile, key, False), stream,
                         report_ctx=fastpath.SrtpContext(profile, report_key, True), report_from=participant_address(6),
                         report_to="127.0.0.1", report_port=port, reporter_ssrc=0x7000_0001)
        gen.run(1.1)
        gen.run(0.1, send=False)
        sent = gen.senders_snapshot()[0]["sent"]
        got = gen.receivers_snapshot()[0]
        assert sent > 0
        assert got["received"] == sent and got["verified"] == sent
        assert got["gaps"] == 0 and got["auth_failed"] == 0 and got["bad_payload"] == 0
        assert got["bytes"] == sent * (1200 + (10 if profile == 1 else 16))
        assert sum(c for _, c in gen.latency_histogram()) == sent
        counters = gen.counters()
        assert counters["receiver_reports_sent"] >= 1 and counters["rtcp"] == counters["receiver_reports_sent"]
    finally:
        net.close()


def test_loadgen_answers_a_pli_and_ignores_a_forged_one() -> None:
    net, port = _loop_socket()
    try:
        p = fastpath.PROFILE_AES128_CM_SHA1_80
        server_key = os.urandom(30)
        gen = LoadGen(net.fileno(), 1, 1, 1)
        address = participant_address(9)
        gen.add_sender(address, "127.0.0.1", 9, fastpath.SrtpContext(p, os.urandom(30), True), 0xABC, 96, 500, 0.0,
                       video=True, clock_rate=90000)
        gen.add_rtcp_endpoint(address, fastpath.SrtpContext(p, server_key, False))
        pli = bytes([0x81, 206, 0, 2]) + (0x5555).to_bytes(4, "big") + (0xABC).to_bytes(4, "big")
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sender.sendto(fastpath.SrtpContext(p, server_key, True).protect_rtcp(pli), (address, port))
            sender.sendto(fastpath.SrtpContext(p, os.urandom(30), True).protect_rtcp(pli), (address, port))
            gen.run(0.1, send=False)
        finally:
            sender.close()
        counters = gen.counters()
        assert counters["key_frame_requests"] == 1 and counters["rtcp_auth_failed"] == 1
    finally:
        net.close()


def test_loadgen_flags_a_wrong_key_and_a_wrong_stream() -> None:
    net, port = _loop_socket()
    try:
        p = fastpath.PROFILE_AES128_CM_SHA1_80
        key = os.urandom(30)
        gen = LoadGen(net.fileno(), 2, 2, 0)
        gen.add_sender(participant_address(1), "127.0.0.1", port, fastpath.SrtpContext(p, key, True), 0x10, 111,
                       88, 500.0, video=False, clock_rate=48000)
        gen.add_sender(participant_address(2), "127.0.0.1", port, fastpath.SrtpContext(p, key, True), 0x20, 111,
                       88, 500.0, video=False, clock_rate=48000)
        gen.add_receiver(0x10, fastpath.SrtpContext(p, os.urandom(30), False), 0)   # wrong key
        gen.add_receiver(0x20, fastpath.SrtpContext(p, key, False), 0)              # expects stream 0, gets 1
        gen.run(0.1)
        gen.run(0.05, send=False)
        wrong_key, wrong_stream = gen.receivers_snapshot()
        assert wrong_key["received"] > 0 and wrong_key["auth_failed"] == wrong_key["received"]
        assert wrong_stream["received"] > 0 and wrong_stream["bad_payload"] == wrong_stream["received"]
    finally:
        net.close()


def test_loadgen_rejects_bad_configuration() -> None:
    net, port = _loop_socket()
    try:
        gen = LoadGen(net.fileno(), 1, 1, 0)
        out = fastpath.SrtpContext(1, os.urandom(30), True)
        inbound = fastpath.SrtpContext(1, os.urandom(30), False)
        with pytest.raises(ValueError, match="outbound SRTP context"):
            gen.add_sender("127.0.0.2", "127.0.0.1", port, inbound, 1, 96, 500, 10.0, video=True, clock_rate=90000)
        with pytest.raises(ValueError, match="payload_len"):
            gen.add_sender("127.0.0.2", "127.0.0.1", port, out, 1, 96, 10, 10.0, video=True, clock_rate=90000)
        with pytest.raises(ValueError, match="IPv4 address expected"):
            gen.add_sender("nowhere", "127.0.0.1", port, out, 1, 96, 500, 10.0, video=True, clock_rate=90000)
        with pytest.raises(ValueError, match="inbound SRTP context"):
            gen.add_receiver(1, out)
        with pytest.raises(ValueError, match="receiver reports need an outbound context"):
            gen.add_receiver(1, inbound, report_ctx=inbound, report_from="127.0.0.2", report_to="127.0.0.1")
        gen.add_receiver(7, inbound)
        with pytest.raises(ValueError, match="more than 1 receivers"):
            gen.add_receiver(8, inbound)
        with pytest.raises(ValueError, match="batch"):
            LoadGen(net.fileno(), 1, 1, 0, batch=0)
    finally:
        net.close()


def test_participant_addresses_are_distinct_loopback_addresses() -> None:
    addresses = {participant_address(i) for i in range(600)}
    assert len(addresses) == 600 and all(a.startswith("127.77.") for a in addresses)
    socket.inet_aton(participant_address(64999))
    with pytest.raises(ValueError, match="participant index"):
        participant_address(-1)


def test_binding_request_integrity_uses_the_server_password() -> None:
    server = ServerParams("srvu", "server-password-0123456789", "AA:" * 31 + "AA", "127.0.0.1", 9)
    request = binding_request(server, "cli", 42, nominate=True)
    assert integrity_ok(request, b"server-password-0123456789")
    assert not integrity_ok(request, b"some other password")
    tampered = bytearray(request)
    tampered[-30] ^= 1
    assert not integrity_ok(bytes(tampered), b"server-password-0123456789")
    assert b"srvu:cli" in request


def test_dtls_records_are_packed_whole_into_datagrams() -> None:
    def record(n: int) -> bytes:
        return bytes([22, 0xFE, 0xFD]) + bytes(8) + n.to_bytes(2, "big") + bytes(n)

    data = record(500) + record(500) + record(300) + record(1000)
    datagrams = _split_records(data, mtu=1200)
    assert b"".join(datagrams) == data
    assert [len(d) for d in datagrams] == [1026, 313, 1013]


def test_percentile_reads_bucket_upper_bounds() -> None:
    hist = [(0.01, 50), (0.02, 49), (5.0, 1)]
    assert percentile(hist, 0.5) == 0.01
    assert percentile(hist, 0.99) == 0.02
    assert percentile(hist, 1.0) == 5.0
    assert percentile([], 0.5) is None


def _measurement(**changes: object) -> Measurement:
    base: dict[str, object] = dict(
        seconds=2.0, sent=1000, expected=10000, received=10000, received_bytes=0, gaps=0, reordered=0,
        verified=10000, auth_failed=0, bad_payload=0, latency_ms_p50=0.2, latency_ms_p99=1.0, server_cpu_s=[1.0],
        server_run_s=[1.0], server_rss=[1], server_drops=0, generator_drops=0, generator_cpu_s=0.5, generator_late=0,
        generator_behind=0, generator_rx_backlog=0, generator_max_late_ms=0.0, snmp_rcvbuf_errors=0, counters={})
    base.update(changes)
    return Measurement(**base)  # type: ignore[arg-type]


def test_generator_bound_rule() -> None:
    assert generator_bound(_measurement(), flat_out=False) == (False, "")
    assert generator_bound(_measurement(generator_drops=500), flat_out=False)[0]
    assert not generator_bound(_measurement(generator_late=100), flat_out=False)[0]  # late but all sent
    assert generator_bound(_measurement(generator_behind=100), flat_out=False)[0]
    assert generator_bound(_measurement(generator_rx_backlog=32 << 20), flat_out=False)[0]
    assert generator_bound(_measurement(generator_cpu_s=1.9), flat_out=False)[0]
    # Flat out: a busy generator is expected; it is the bottleneck only if the worker was not.
    assert not generator_bound(_measurement(generator_cpu_s=1.9, server_run_s=[1.95]), flat_out=True)[0]
    assert generator_bound(_measurement(generator_cpu_s=1.9, server_run_s=[1.0]), flat_out=True)[0]
    assert not generator_bound(_measurement(generator_cpu_s=1.9, server_run_s=[1.0], server_drops=5),
                               flat_out=True)[0]
    assert _measurement(received=9950).loss_pct == pytest.approx(0.5)


def test_cpu_per_packet_uses_the_schedulers_nanoseconds_where_reported() -> None:
    """20 ms of CPU for 1,000 packets: utime + stime may say 10 or 30 ms (ticks), the run time says 20.3."""
    m = _measurement(received=1000, server_cpu_s=[0.03], server_run_s=[0.0203])
    assert m.cpu_us_per_packet == pytest.approx(20.3)
    assert _measurement(received=1000, server_cpu_s=[0.03], server_run_s=[0.0]).cpu_us_per_packet == pytest.approx(30)


def test_options_refuse_bad_values_with_reasons() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'mesh'"):
        Options("mesh")
    with pytest.raises(ValueError, match="unknown SRTP profile 'null'"):
        Options("fanout", srtp="null")
    with pytest.raises(ValueError, match="size in 40..1400"):
        Options("fanout", size=9000)


def test_collapsed_stacks_summary() -> None:
    text = ("main (w.py:1);pump (engine.pyx:10);sendmmsg (libc.so.6) 30\nmain (w.py:1);tick (engine.pyx:20) 10\n"
            "worker (thread.py:1);_queue_SimpleQueue_get_impl (q.c:1);PyThread_acquire_lock_timed (t.c:1);"
            "0x7f00 (libc.so.6) 50\n")
    self_top, total_top, samples, waiting = summarize_collapsed(text)
    assert (samples, waiting) == (40, 50)  # a thread parked on a lock is not CPU time
    assert self_top[0] == ("sendmmsg (libc.so.6)", 75.0)
    assert ("main (w.py)", 100.0) in total_top


def test_table_has_one_row_per_result() -> None:
    row = {"scenario": "fanout", "srtp_profile": "AEAD_AES_128_GCM", "subscribers": 10, "forwarded_pps": 1000.0,
           "forwarded_mbps": 9.6, "cpu_us_per_packet": 3.0, "limit_cpu_us_per_packet": 2.5, "ratio_to_limit": 0.9,
           "loss_pct": 0.0, "latency_ms_p50": 0.2, "latency_ms_p99": None, "rss_mb_per_worker": [50.0],
           "generator_bound": False}
    lines = format_table([row, dict(row, generator_bound=True)]).splitlines()
    assert len(lines) == 4
    assert lines[2].split()[:3] == ["fanout", "gcm", "10"] and lines[3].endswith("BND")


def test_repeated_runs_report_medians_and_keep_every_run() -> None:
    def run(pps: float, us: float, bound: bool) -> dict[str, object]:
        return {"forwarded_pps": pps, "cpu_us_per_packet": us, "ratio_to_limit": pps / 100.0, "loss_pct": 0.0,
                "generator_bound": bound, "generator_bound_reason": "busy" if bound else "", "points": [pps]}

    combined = combine_runs([run(90.0, 5.0, False), run(120.0, 4.0, False), run(100.0, 4.5, True)])
    assert combined["forwarded_pps"] == 100.0 and combined["cpu_us_per_packet"] == 4.5
    assert combined["ratio_to_limit"] == 1.0 and combined["points"] == [100.0]
    assert combined["generator_bound"] is True and combined["median_of"] == 3
    assert [r["forwarded_pps"] for r in combined["runs"]] == [90.0, 120.0, 100.0]


def _point(load: int, loss: float, p50: float) -> dict[str, object]:
    return {"load": load, "forwarded_pps": 156.0 * load, "mbps": 1.5 * load, "cpu_us_per_packet": 4.0,
            "loss_pct": loss, "latency_ms_p50": p50, "latency_ms_p99": 3 * p50, "rss_mb_per_worker": [100.0],
            "worker_cpu_pct": [50.0], "generator_bound": False, "generator_bound_reason": "", "host_steal_pct": 0.0}


def test_capacity_reports_the_load_with_low_loss_and_the_one_with_low_latency_too() -> None:
    """Loss stays under 0.5 % up to 1,300 subscribers here, but the median latency passes 20 ms after 1,100: both
    figures are reported, the headline is the loss capacity (issue 4's definition)."""
    opts = Options("fanout", subscribers=1400, rate=156, find_capacity=True, capacity_step=100)
    points = [_point(1000, 0.0, 3.0), _point(1100, 0.0, 4.0), _point(1200, 0.0, 46.0), _point(1300, 0.2, 147.0),
              _point(1400, 9.0, 430.0)]
    result = build_result(opts, points, {}, None, capacity=1300)
    assert result["capacity_subscribers"] == 1300 and result["subscribers"] == 1300
    assert result["capacity_low_latency_subscribers"] == 1100 and result["capacity_low_latency_p50_ms"] == 20.0
    assert result["latency_ms_p50"] == 147.0
    assert build_result(opts, [_point(100, 0.0, 25.0)], {}, None, capacity=100)["capacity_low_latency_subscribers"] == 0
    # A step that queued ends the low-latency ramp even if a later one (less stolen time) did not queue.
    ramp = [_point(100, 0.0, 2.0), _point(200, 0.0, 150.0), _point(300, 0.0, 3.0)]
    assert build_result(opts, ramp, {}, None, capacity=300)["capacity_low_latency_subscribers"] == 100


def test_cost_fit_separates_the_fixed_cost_from_the_marginal_one() -> None:
    from bench.report import cost_fit

    # 30 ms of CPU per second fixed, 4 us per forwarded packet: the fit recovers both, and the smallest load
    # (1,000 pkt/s: 34 us per packet) pays 8.5x the marginal cost.
    points = [{"load": n, "forwarded_pps": pps, "cpu_us_per_packet": (30_000 + 4 * pps) / pps}
              for n, pps in ((10, 1000), (50, 5000), (100, 10_000))]
    fit = cost_fit(points)
    assert fit is not None
    assert fit["marginal_us_per_packet"] == pytest.approx(4.0, abs=1e-6)
    assert fit["fixed_cpu_ms_per_s"] == pytest.approx(30.0, abs=0.01)
    assert fit["smallest_load"] == 10
    assert fit["smallest_load_over_marginal"] == pytest.approx(8.5, abs=1e-3)
    assert cost_fit(points[:1]) is None  # one load: no line
