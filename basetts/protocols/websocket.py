"""RFC 6455 framing for a client, both ways, sans-I/O: frames out (masked, as a client must), and server bytes
in as whole messages and control frames, checked and bounded. Every protocol that speaks a websocket frames
through here; nothing else encodes or parses a frame."""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import websocket

NORMAL_CLOSE = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
"""What truss closes with at once when the deployment has no websocket (a predict-only model)."""
POLICY_VIOLATION = 1008
"""Our close when the server broke a bound (far more audio than asked for)."""

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA
_OPCODES = (OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG)


class ProtocolViolation(ValueError):
    """The server broke RFC 6455; the message says what it did. `before`: what came whole before it."""

    before: List[Tuple[int, bytes]] = []


class MessageTooBig(ProtocolViolation):
    """A message longer than `max_message_size`."""


def valid_close_code(code: int) -> bool:
    """RFC 6455 7.4 (and the IANA registry): the codes a close frame may carry."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class FrameReader:
    """Server bytes in, whole messages and control frames out, checked as RFC 6455 requires of a client.

    Bounded: a message (all its fragments) may be at most `max_size` bytes, refused as soon as a frame
    header announces more, so memory never follows a hostile length; fragments are joined once, at the
    end (linear time). `partial_since` is when the unfinished frame or message began, so the caller can
    bound the whole frame and the whole message, not each read.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._fragments: List[bytes] = []
        self._fragments_size = 0
        self._fragment_opcode: Optional[int] = None
        self.partial_since: Optional[float] = None

    def feed(self, data: bytes, now: float) -> List[Tuple[int, bytes]]:
        """(opcode, payload) for each complete message (text or binary, fragments joined) and each
        control frame (ping, pong, close), in order. Raises ProtocolViolation."""
        buffer = self._buffer
        buffer += data
        out: List[Tuple[int, bytes]] = []
        offset = 0
        while True:
            try:
                parsed = self._frame(buffer, offset)
            except ProtocolViolation as exc:
                exc.before = out
                raise
            if parsed is None:
                break
            offset, fin, opcode, payload = parsed
            if opcode >= OPCODE_CLOSE:
                out.append((opcode, payload))
            elif fin and opcode != OPCODE_CONTINUATION:
                out.append((opcode, payload))
            else:
                if opcode != OPCODE_CONTINUATION:
                    self._fragment_opcode = opcode
                self._fragments.append(payload)
                if fin:
                    assert self._fragment_opcode is not None
                    out.append((self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments, self._fragments_size, self._fragment_opcode = [], 0, None
        del buffer[:offset]
        if not buffer and self._fragment_opcode is None:
            self.partial_since = None
        elif self.partial_since is None or (offset and self._fragment_opcode is None):
            self.partial_since = now  # a frame (or a message's first fragment) began: bound from here
        return out

    def _frame(self, buffer: bytearray, offset: int) -> Optional[Tuple[int, bool, int, bytes]]:
        available = len(buffer) - offset
        if available < 2:
            return None
        first, second = buffer[offset], buffer[offset + 1]
        fin, rsv, opcode = bool(first & 0x80), first & 0x70, first & 0x0F
        length, start = second & 0x7F, offset + 2
        if rsv:
            raise ProtocolViolation(f"the server set reserved bits ({rsv >> 4:03b}) with no extension agreed")
        if second & 0x80:
            raise ProtocolViolation("the server masked a frame (a server must not)")
        if opcode not in _OPCODES:
            raise ProtocolViolation(f"the server sent a frame with the reserved opcode {opcode:#x}")
        if opcode >= OPCODE_CLOSE:
            if not fin:
                raise ProtocolViolation("the server fragmented a control frame")
        elif opcode == OPCODE_CONTINUATION and self._fragment_opcode is None:
            raise ProtocolViolation("the server sent a continuation frame with no message to continue")
        elif opcode != OPCODE_CONTINUATION and self._fragment_opcode is not None:
            raise ProtocolViolation("the server began a new message before finishing the last one")
        if length == 126:
            if available < 4:
                return None
            length, start = int.from_bytes(buffer[offset + 2:offset + 4], "big"), offset + 4
        elif length == 127:
            if available < 10:
                return None
            length, start = int.from_bytes(buffer[offset + 2:offset + 10], "big"), offset + 10
            if length >> 63:
                raise ProtocolViolation("the server announced a frame length with the top bit set")
        if opcode >= OPCODE_CLOSE and length > 125:
            raise ProtocolViolation(f"the server sent a control frame of {length} bytes (at most 125)")
        if opcode < OPCODE_CLOSE and self._fragments_size + length > self.max_size:
            raise MessageTooBig(
                f"the server sent a message of over {self.max_size} bytes (a frame of {length}); "
                "raise max_message_size if that is expected")
        end = start + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[start:end])
        if opcode < OPCODE_CLOSE and not (fin and opcode != OPCODE_CONTINUATION):
            self._fragments_size += length  # a fragment: the message's size so far
        elif opcode == OPCODE_CLOSE:
            check_close(payload)
        return end, fin, opcode, payload


def check_close(payload: bytes) -> None:
    """A close frame's payload: empty, or a valid code and a UTF-8 reason."""
    if len(payload) == 1:
        raise ProtocolViolation("the server sent a close frame with a 1-byte payload")
    if payload:
        code = int.from_bytes(payload[:2], "big")
        if not valid_close_code(code):
            raise ProtocolViolation(f"the server closed with code {code}, which is not a valid close code")
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("the server's close reason is not UTF-8") from None


def frame(payload: bytes, opcode: int = OPCODE_TEXT) -> bytes:
    """One final, masked client frame (a fresh random mask, as RFC 6455 5.3 requires). websocket-client's
    public `ABNF` builds it."""
    return websocket.ABNF.create_frame(payload, opcode).format()  # type: ignore[no-any-return]


def frames(messages: Iterable[str], ping: Optional[bytes] = None) -> bytes:
    """Text messages, each its own frame, then a ping with `ping` as its payload, as one write."""
    out: List[bytes] = [frame(message.encode("utf-8")) for message in messages]
    if ping is not None:
        out.append(frame(ping, OPCODE_PING))
    return b"".join(out)


def pong(payload: bytes) -> bytes:
    return frame(payload, OPCODE_PONG)


def close_frame(code: int = NORMAL_CLOSE) -> bytes:
    return frame(code.to_bytes(2, "big"), OPCODE_CLOSE)


def close_of(payload: bytes) -> Tuple[int, str]:
    """A (checked) close frame's code and reason; no code means 1000 (RFC 6455 7.1.5 says 1005, "no status",
    which the real server never sends: it closes with 1000)."""
    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NORMAL_CLOSE
    return code, payload[2:].decode("utf-8")
