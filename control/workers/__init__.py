"""The worker processes as the control process sees them.

Spawning, pinning and supervising workers, the ZeroMQ client with its pending requests, placement of rooms by
load, and the kernel counters read from ``/proc``. It imports nothing else of control.
"""
