"""The benchmark's client-side SDP (``bench.lk_client``): what a simulcast publisher offers and how the server's
answer is read back."""

from __future__ import annotations

from bench.lk_client import LocalTrack, publisher_offer, simulcast_accepted


def _section(sdp: str, mid: str) -> list[str]:
    sections = sdp.split("m=")[1:]
    return next(s for s in sections if f"a=mid:{mid}\r\n" in s).split("\r\n")


def test_a_simulcast_track_is_offered_with_rids_and_extensions_instead_of_ssrcs() -> None:
    sdp = publisher_offer("ufrag", "pwd", "AA:BB", [LocalTrack("mic", "audio", 11),
                                                     LocalTrack("cam", "video", 22, rids=("q", "h", "f"))])
    audio, video = _section(sdp, "0"), _section(sdp, "1")
    assert "a=ssrc:11 cname:bench" in audio and not any(line.startswith("a=rid") for line in audio)
    assert not any(line.startswith("a=ssrc") for line in video)
    assert ["a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send q;h;f"] == [
        line for line in video if line.startswith(("a=rid", "a=simulcast"))]
    assert "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid" in video
    assert "a=extmap:2 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in video
    assert "a=msid:bench cam" in video and "a=group:BUNDLE 0 1" in sdp


def test_simulcast_accepted_reads_the_answers_recv_layers_of_one_m_line() -> None:
    answer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
              "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\n"
              "a=simulcast:recv q;~h,x;f\r\n")
    assert simulcast_accepted(answer, "1") == ["q", "h", "f"]
    assert simulcast_accepted(answer, "0") == []
    assert simulcast_accepted(answer, "7") == []
