"""Frame codec of the control plane: one length-prefixed frame = a msgpack header + raw payload.

Wire format of one frame::

    +--------------------+--------------------+-------------------+------------------+
    | header length (u32)| payload length(u64)| header (msgpack)  | payload (bytes)  |
    +--------------------+--------------------+-------------------+------------------+
      little endian, struct "<IQ" (12 bytes)    a dict with a str    opaque; often a
                                                "t" (message type)   pickle stream

Invariants:
    * The header is always a ``dict`` whose ``"t"`` is a ``str``; msgpack runs with
      ``use_bin_type=True`` / ``raw=False`` so ``bytes`` stay ``bytes`` and ``str`` stay ``str``.
    * The reader never allocates more than the declared lengths allow, and the declared lengths
      are checked against :data:`MAX_HEADER_BYTES` / :data:`MAX_PAYLOAD_BYTES` before any read,
      so a hostile or corrupt prefix cannot make a process allocate gigabytes. A long payload is
      read in pieces, so memory is only taken as its bytes really arrive.
    * :data:`MAX_PAYLOAD_BYTES` is the largest message memlab itself sends, not what the u64
      allows. Values travel through the shared-memory store (DESIGN §2); what does travel in
      frames is bounded at its source: a function or class ships once, at most
      :data:`MAX_FUNCTION_BYTES` (refused at ``.remote()``); a task's inline arguments are at
      most :data:`MAX_INLINE_ARGS_BYTES` (refused at ``.remote()``); each inline dependency or
      return value is at most the inline threshold (at most :data:`MAX_INLINE_THRESHOLD`);
      copies between nodes travel in :data:`COPY_CHUNK_BYTES` pieces.
    * The payload is handed out as-is; this module never unpickles anything. Frames are only
      read after :mod:`memlab.protocol.auth` has authenticated the peer (see transport).
"""

from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING

import msgpack

from memlab.exceptions import ProtocolError

if TYPE_CHECKING:
    import socket

__all__ = [
    "COPY_CHUNK_BYTES",
    "MAX_FUNCTION_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_INLINE_ARGS_BYTES",
    "MAX_INLINE_THRESHOLD",
    "MAX_PAYLOAD_BYTES",
    "PREFIX_SIZE",
    "FrameReader",
    "encode",
]

MAX_HEADER_BYTES = 1 << 20
# Ray refuses functions over 100 MB too: such a function captured a large value by accident.
MAX_FUNCTION_BYTES = 100 << 20
MAX_INLINE_ARGS_BYTES = 64 << 20
MAX_INLINE_THRESHOLD = 16 << 20
COPY_CHUNK_BYTES = 8 << 20
# A task message: its function, its inline arguments and, with room to spare, its inline
# dependencies (hundreds at the largest inline threshold; over a thousand at the default).
MAX_PAYLOAD_BYTES = 256 << 20

_PREFIX = struct.Struct("<IQ")
PREFIX_SIZE = _PREFIX.size

# Below this size the payload is copied next to the header so the frame goes out in one
# syscall; above it a copy costs more than the second sendall.
_JOIN_LIMIT = 64 * 1024
_READ_BUFFER = 256 * 1024
# A payload longer than this is read piece by piece: a peer that declares a length and sends
# nothing must not have made this process reserve it.
_READ_PIECE = 16 << 20

# msgpack.Packer is not thread-safe, and packb builds a new Packer per call (about twice the
# cost of reusing one), so each thread keeps its own.
_local = threading.local()


def _packer() -> msgpack.Packer:
    packer = msgpack.Packer(use_bin_type=True)
    _local.packer = packer
    return packer


def _as_bytes_view(payload: bytes | memoryview) -> bytes | memoryview:
    """Return payload as bytes or a flat byte-format memoryview (so len() counts bytes)."""
    if type(payload) is bytes:
        return payload
    view = memoryview(payload)
    if view.format != "B" or view.ndim != 1:
        try:
            view = view.cast("B")
        except TypeError as exc:
            raise ValueError(
                "frame payload must be a C-contiguous buffer; pass bytes(payload) or a "
                "contiguous copy"
            ) from exc
    return view


def encode(
    header: dict[str, object], payload: bytes | memoryview = b""
) -> list[bytes | memoryview]:
    """Encode one frame into the buffers to write, in order.

    Args:
        header: The message header; must contain a ``str`` under ``"t"``.
        payload: Raw bytes (any C-contiguous buffer). Not copied when larger than 64 KiB.

    Returns:
        ``[prefix + header + payload]`` for small payloads (one syscall), otherwise
        ``[prefix + header, payload]``.

    Raises:
        ValueError: The header has no str ``"t"``, cannot be msgpack-encoded, or a length
            exceeds the frame limits.
    """
    if type(header.get("t")) is not str:
        raise ValueError(
            f"frame header {_preview(header)} has no str 't' (message type); the peer would "
            "drop the connection - add the message type under 't'"
        )
    try:
        packer = _local.packer
    except AttributeError:
        packer = _packer()
    try:
        head = packer.pack(header)
    except Exception as exc:
        packer.reset()  # a failed pack may leave partial data in the packer's buffer
        raise ValueError(
            f"cannot encode frame header {header!r}: {exc}; headers hold only msgpack types "
            "(dict, list, str, bytes, int, float, bool, None) - put Python objects in the payload"
        ) from exc
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(
            f"frame header is {len(head)} bytes, over the {MAX_HEADER_BYTES}-byte limit; "
            "move bulky fields into the payload"
        )
    if type(payload) is not bytes:
        payload = _as_bytes_view(payload)
    size = len(payload)
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"frame payload is {size} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit; "
            "large values belong in the shared-memory object store, not in messages"
        )
    if size <= _JOIN_LIMIT:
        return [b"".join((_PREFIX.pack(len(head), size), head, payload))]
    return [_PREFIX.pack(len(head), size) + head, payload]


class FrameReader:
    """Reads frames from a connected stream socket through a 256 KiB buffer.

    The buffer means that several small frames that arrive together cost one ``recv``.
    Not thread-safe: one reader thread per connection owns it.
    """

    def __init__(self, sock: socket.socket) -> None:
        """Wrap a connected, blocking socket.

        Args:
            sock: A connected stream socket in blocking mode.
        """
        self._file = sock.makefile("rb", buffering=_READ_BUFFER)
        self._read = self._file.read

    def read(self) -> tuple[dict[str, object], bytes]:
        """Read the next frame.

        Returns:
            ``(header, payload)``; the payload is ``b""`` when empty.

        Raises:
            EOFError: The peer closed the stream cleanly, between two frames.
            ProtocolError: The frame is malformed: lengths over the limits, header not msgpack,
                header not a dict, header without a ``str`` ``"t"``, or the stream ended inside
                a frame.
            OSError: The socket failed (reset, shut down locally).
        """
        read = self._read
        prefix = read(PREFIX_SIZE)
        if len(prefix) != PREFIX_SIZE:
            if not prefix:
                raise EOFError("peer closed the connection")
            raise ProtocolError(
                f"stream ended {len(prefix)} bytes into a frame prefix; the peer died mid-write "
                "or is not speaking the memlab protocol"
            )
        header_len, payload_len = _PREFIX.unpack(prefix)
        if header_len > MAX_HEADER_BYTES or payload_len > MAX_PAYLOAD_BYTES:
            raise ProtocolError(
                f"frame declares a {header_len}-byte header and a {payload_len}-byte payload, "
                f"over the largest message memlab sends ({MAX_HEADER_BYTES}-byte header, "
                f"{MAX_PAYLOAD_BYTES}-byte payload); the peer is corrupt or not speaking the "
                "memlab protocol, so the connection is dropped"
            )
        raw = read(header_len)
        if len(raw) != header_len:
            raise ProtocolError(
                f"stream ended inside a frame header ({len(raw)} of {header_len} bytes); "
                "the peer died mid-write"
            )
        try:
            header = msgpack.unpackb(raw, raw=False)
        except Exception as exc:
            raise ProtocolError(
                f"frame header is not valid msgpack ({exc}); the peer is corrupt or not "
                "speaking the memlab protocol"
            ) from exc
        if type(header) is not dict or type(header.get("t")) is not str:
            raise ProtocolError(
                f"frame header must be a dict with a str 't' (message type), got "
                f"{_preview(header)}; the peer is not speaking the memlab protocol"
            )
        if not payload_len:
            return header, b""
        if payload_len <= _READ_PIECE:
            payload = read(payload_len)
        else:
            pieces = []
            left = payload_len
            while left:
                piece = read(min(left, _READ_PIECE))
                if not piece:
                    break
                pieces.append(piece)
                left -= len(piece)
            payload = b"".join(pieces)
        if len(payload) != payload_len:
            raise ProtocolError(
                f"stream ended inside a frame payload ({len(payload)} of {payload_len} bytes); "
                "the peer died mid-write"
            )
        return header, payload

    def close(self) -> None:
        """Release the buffer and this reader's reference to the socket."""
        self._file.close()


def _preview(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
