"""The rooms' view of the Supervisor: worker loads for placement, a MediaClient per worker, and the routing of
every worker's notifications and deaths to the RoomManager.
"""

from __future__ import annotations

from collections.abc import Mapping

from control.rtc.media import MediaClient
from control.rtc.rooms import RoomManager
from control.workers.placement import WorkerLoad, loads_from_slots
from control.workers.supervisor import Supervisor


class SupervisorPool:
    """``control.rtc.rooms.WorkerPool`` over the Supervisor."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def loads(self, rooms_per_worker: Mapping[int, int]) -> list[WorkerLoad]:
        return loads_from_slots(self.supervisor.slots, rooms_per_worker)

    def media(self, worker_id: int) -> MediaClient:
        return MediaClient(self.supervisor.client(worker_id))

    def udp_port(self, worker_id: int) -> int:
        """The worker's UDP port: where pipes toward it are sent (control/rtc/spread.py)."""
        return int(self.supervisor.slots[worker_id].udp_port)


def attach_supervisor(manager: RoomManager, supervisor: Supervisor) -> None:
    """Routes every worker's notifications and deaths to the room manager."""
    for client in supervisor.clients:
        worker_id = client.worker_id
        client.on_notification(
            lambda event, target, body, wid=worker_id: manager.on_notification(wid, event, target, body)
        )
    supervisor.on_worker_died(manager.on_worker_died)
