"""Typed stub for bench._limit (the limit loop)."""

from fastpath.srtp import SrtpContext

def run_limit(fd: int, dests: list[tuple[str, int]], rx: SrtpContext, tx: list[SrtpContext], seconds: float,
              ssrc_base: int = 0x10000000, batch: int = 64, gso: bool = True) -> dict[str, int]: ...
