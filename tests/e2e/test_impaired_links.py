"""Impaired links with the unmodified ``livekit`` SDK: subscribers in client hosts behind the impairment relay.

Each test runs a short form of a measurement scenario (tests/e2e/lk_scenarios/cap.py, loss.py; the full ones run
with ``python tests/e2e/netns.py --scenario cap``): the relay does what its rule says inside the harness, loss toward
a subscriber is repaired about once per lost packet without a storm, a capped subscriber is moved to a layer that fits
without disturbing a clean one, and video flows again when the cap is lifted. Pass criteria and the measured figures:
docs/RELIABILITY.md, L2 and L3.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sdk_scenario import scenario  # noqa: E402


def test_loss_toward_a_subscriber_is_repaired_once_per_lost_packet_and_video_keeps_flowing() -> None:
    r = scenario("loss_short", workers=1, timeout_s=90)
    relay, sub, worker = r["relay"], r["subscriber"], r["worker"]
    assert 0.03 <= relay["loss_share"] <= 0.07, relay  # the 5 % rule, measured at the relay inside the harness
    # Random loss that NACK/RTX repairs does not keep the subscriber below the layer it had without loss (before
    # the estimator's larger loss window and probing through loss below 10 %, 5 % loss held it on 640 px). One
    # lowering may still come when the loaded relay's jitter reads as queuing: the raise after it waits RAISE_HOLD_S
    # and a probe, so most of the seconds stay on 1280 px.
    widths = [s["width"] for s in r["per_second"]]
    assert widths.count(1280) >= 0.6 * len(widths), r["per_second"]
    # The subscriber is held to the frames the publisher encoded of the layer it shows, second by second (on a
    # loaded host the publisher's encoder, not the link, sets the frame rate). Without a playout delay a libwebrtc
    # receiver, which knows no round-trip time, skips the frames whose retransmission comes after its short jitter
    # buffer: 0.67 of them on the full 25 s scenario. The worker raises the subscriber's playout delay at the end of
    # the first scoring window with loss (router/playout.py): 0.96 there, 28.2 fps of the publisher's 30. From one
    # window after the loss began the subscriber is held to 0.85; the seconds before, the link's start-up, cost
    # more (0.83-0.97 over the whole 12 s in four quiet runs, 0.88-0.95 earlier).
    assert worker["playout_stamped"] > 0, worker
    assert r["clean_fps_over_publisher"] is not None and r["steady_fps_over_publisher"] >= 0.85, (r["per_second"], r)
    assert r["fps_over_publisher"] >= 0.75, (r["per_second"], r)
    assert sub["fps"] >= 5 and sub["longest_freeze_s"] <= 3.5, sub
    # NACK repairs: about one retransmission per packet the relay dropped (0.87-0.98 measured: the relay also drops
    # bandwidth-probe padding, which nobody repairs), never a storm; a packet is resent at most once per RTT (the
    # worker refuses sooner NACKs: drop_nack_too_soon), and on the RTX stream, which the SDK negotiates.
    assert 0.5 <= r["retransmits_per_lost_packet"] <= 1.3, (r["retransmits_per_lost_packet"], relay, worker)
    assert worker["retransmits"] <= 1.2 * worker["nack_rx"] + 5, worker
    assert worker["rtx_packets"] == worker["retransmits"] > 0, worker


def test_a_capped_subscriber_does_not_disturb_a_clean_one_and_recovers_when_the_cap_lifts() -> None:
    r = scenario("cap_short", workers=1, timeout_s=100)
    cap, after = r["cap"], r["after"]
    # The relay's token bucket holds the capped link at its 500 kbit/s, whatever is offered.
    capped_seconds = [s for s in r["per_second"] if s["capped"] and s["t"] >= 2]
    assert capped_seconds and all(s["delivered_kbit"] <= 560 for s in capped_seconds), r["per_second"]
    # The clean subscriber stays on the 1280 px layer with video flowing, before, during and after the cap.
    assert r["clean_min_width"] == 1280, r["per_second"]
    assert cap["clean"]["fps"] >= 5 and cap["clean"]["longest_freeze_s"] <= 2.0, cap["clean"]
    # The capped subscriber is moved to a layer that fits (which one depends on what the loaded publisher's
    # encoder makes of each layer) and keeps receiving it, and the worker pushes no more than 1.3x the link's rate
    # at it (before congestion control: 0 fps and 59x the rate).
    late = [s for s in r["per_second"] if s["capped"] and s["t"] >= 4]
    assert sum(s["frames"] for s in late) >= 2 * len(late), r["per_second"]
    # (Over the whole cap this is about 2.5x in this short run: the first 2-3 s still carry the large layer.)
    assert sum(s["offered_kbit"] for s in late) <= 1.3 * 500 * len(late), r["per_second"]
    # Once the cap is lifted the capped subscriber's video flows again (today at 1280 px within about 2 s).
    assert after["capped"]["fps"] >= 3, after


def test_below_the_lowest_layer_video_pauses_audio_flows_quality_is_poor_and_all_comes_back() -> None:
    r = scenario("pause", workers=1, timeout_s=120)
    during = [s for s in r["per_second"] if s["capped"]]
    # 100 kbit/s holds audio (Opus ~40 kbit/s) but not the 320 px layer (~150 kbit/s): the allocator pauses the
    # video (the subscriber is sent StreamStateUpdate PAUSED) and the audio keeps flowing through the cap.
    assert r["paused_after_s"] is not None and r["paused_after_s"] <= 6, r["per_second"]
    late = [s for s in during if s["t"] >= r["paused_after_s"] + 2]
    assert late and all(s["audio_frames"] >= 80 for s in late), r["per_second"]  # 10 ms frames: 100/s
    assert sum(s["frames"] for s in late) <= 2, r["per_second"]
    # The server tells the capped subscriber that its connection is POOR within 10 s ...
    assert r["poor_after_s"] is not None and r["poor_after_s"] <= 10, r["per_second"]
    # ... and once the cap is lifted, the video comes back (after the next probe: its backoff grows under the cap)
    # and so does the quality.
    assert r["resumed_after_lift_s"] is not None and r["resumed_after_lift_s"] <= 12, r["per_second"]
    assert r["good_again_after_lift_s"] is not None, r["per_second"]


def test_a_capped_screen_share_keeps_its_resolution_at_a_lower_frame_rate() -> None:
    r = scenario("temporal", workers=1, timeout_s=100)
    # The SDK's screen share: two simulcast layers, each with three VP8 temporal layers (TID 0/1/2 in 1:1:2).
    top = r["producer_tids_end"][-1]
    assert top[0] > 0 and top[1] > 0 and top[2] > 0, r["producer_tids_end"]
    during = [s for s in r["per_second"] if s["capped"]]
    after = [s for s in r["per_second"] if not s["capped"]]
    late = [s for s in during if s["t"] >= 4]
    # 1 Mbit/s holds the top layer's lower temporal layers, not all of it: the screen share stays on the top layer
    # with pictures above a TID cap dropped (the first seconds of the cap, while its queue overflows, may take it
    # down a layer too) and is never paused: a frame every second at least.
    assert any(s["worker"]["layers"] == [1] and s["worker"]["tid_cap"] <= 1 for s in late), r["per_second"]
    assert late[-1]["worker"]["filtered"] > 0, r["per_second"]
    assert all(s["worker"]["layers"] != ["p"] and s["frames"] >= 1 for s in late), r["per_second"]
    # Once the cap is lifted, the top layer's TID cap is raised again, past TID 1's 7.5 fps.
    assert any(s["worker"]["layers"] == [1] and s["worker"]["tid_cap"] >= 2 for s in after), r["per_second"]
    assert max(s["frames"] for s in after) >= 11, r["per_second"]
