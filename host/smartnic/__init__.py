"""The SmartNIC path: ``offload serve`` (:mod:`.server`) and its client backend.

``SmartNicBackend`` (backend name ``"smartnic"``) sends batches, packed with the engine wire
format, to an ``offload serve`` process over TCP (protocol: ``docs/smartnic_protocol.md``).
"""

from .backend import SmartNicBackend

__all__ = ["SmartNicBackend"]
