"""Rooms and participants: what the SFU does with a LiveKit session once it is admitted.

Room membership and LiveKit's room rules, the participant state machine, SDP offer/answer and codec
negotiation, the LiveKit messages they send, and the typed media requests to a worker (``media.MediaClient``)
over the workers that ``worker_pool.SupervisorPool`` offers them. It knows nothing of HTTP.
"""
