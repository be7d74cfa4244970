"""The control plane between the processes of one machine.

Unix-domain sockets carry length-prefixed frames (a msgpack header dict with a str ``"t"``
plus raw payload bytes). Every connection passes a mutual HMAC challenge before a single frame
is parsed. ``frames`` is the codec, ``auth`` the handshake, ``transport`` the threads and
sockets (``Connection``, ``Listener``, ``connect``).
"""

from memlab.protocol.auth import client_handshake, server_handshake
from memlab.protocol.endpoints import Listener, connect
from memlab.protocol.frames import MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES, FrameReader, encode
from memlab.protocol.transport import Connection

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_PAYLOAD_BYTES",
    "Connection",
    "FrameReader",
    "Listener",
    "client_handshake",
    "connect",
    "encode",
    "server_handshake",
]
