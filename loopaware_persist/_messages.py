"""Safe kiwipy message encoding: the msgpack codec and its allow-list, on the wire.

kiwipy's RabbitMQ communicator encodes every message (task bodies, RPCs,
broadcasts and replies) with ``yaml.dump`` and decodes it with
``yaml.load(Loader=yaml.FullLoader)`` (``kiwipy.rmq.defaults``); AiiDA swaps in
the unsafe ``yaml.Loader``. Whoever can publish to the task queue can then make
a worker import modules and call constructors of its choosing. Here a message is
the msgpack codec's bytes behind a short magic prefix: only plain data and the
types the registry knows travel, and a class, enum or exception is revived only
if the allow-list names it. Anything else is an :class:`UnsafeCheckpointError`
raised before any of the message's code runs.

Use one :class:`MessageCodec` for both directions of a communicator::

    codec = MessageCodec(allow=["myapp"])
    RmqThreadCommunicator.connect(connection_params=url,
                                  encoder=codec.encode, decoder=codec.worker_decoder)

:meth:`MessageCodec.decode` is strict (it raises). kiwipy, however, calls the
decoder where a raise does damage: for a task, before its ``processing()``
context, so the message is neither acknowledged nor requeued and stays on the
channel, using up the prefetch window; for a reply, after the waiting future
was popped, so the sender waits forever. The two tolerant decoders turn a
refused message into a value kiwipy handles:

* :meth:`MessageCodec.worker_decoder` returns a :class:`RefusedMessage`, which
  kiwipy unpacks as a task ``(body, no_reply)`` of ``(itself, True)``; the worker
  refuses it with an error, so it is acknowledged (dropped) without running
  anything and without a reply to an address the attacker chose. As an RPC or
  broadcast body it fails the receiver with an error kiwipy reports.
* :meth:`MessageCodec.client_decoder` returns ``{"exception": ...}``, kiwipy's
  own error reply, so the sender's future fails with a ``kiwipy.RemoteException``
  naming the reason instead of hanging.

Encoding fails the same way: kiwipy encodes a task's reply after acknowledging the
task, so a reply the encoder refuses (a process output that is not plain data) is
lost and its sender waits forever. :meth:`MessageCodec.worker_encoder` sends kiwipy's
error reply in its place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import attrs

from ._arguments import check_allow, check_instance, describe
from ._errors import ArgumentTypeError, CorruptCheckpointError, DecodeError, EncodeError
from ._hooks import default_registry
from ._registry import HookRegistry, check_registry
from .codecs.msgpack import MsgpackCodec

__all__ = (
    "MESSAGE_MAGIC",
    "MessageCodec",
    "RefusedMessage",
    "decode_message",
    "encode_message",
)

_LOGGER = logging.getLogger(__name__)

#: The first bytes of every message: names the format and its version, so that a
#: YAML message from a default kiwipy sender is refused with a message that says so.
MESSAGE_MAGIC: Final = b"LAPM\x01"

# kiwipy's error reply key (kiwipy.rmq.utils.EXCEPTION_KEY), spelt out so this
# module does not import kiwipy's RabbitMQ half (aio-pika) just for a constant.
_EXCEPTION_KEY: Final = "exception"
_RESULT_KEY: Final = "result"  # kiwipy.rmq.utils.RESULT_KEY


@attrs.frozen
class RefusedMessage:
    """What :meth:`MessageCodec.worker_decoder` returns for a message it refused.

    Iterating it gives ``(self, True)``: kiwipy's task subscriber unpacks a
    decoded task as ``TaskInfo(*decoded)``, so the refused message becomes a task
    whose body is this object and whose ``no_reply`` is true.

    :param reason: why it was refused (the decode error's message)
    :param size: the length of the raw message, for the log
    """

    reason: str
    size: int

    def __iter__(self) -> Iterator[object]:
        return iter((self, True))


class MessageCodec:
    """Encode and decode kiwipy messages with the msgpack codec and an allow-list.

    :param allow: modules or classes whose objects may travel in messages (the
        process classes' module, for the outputs of their processes), besides
        what ``registry`` already allows
    :param registry: the hooks and base allow-list (default: a copy of
        ``default_registry``)
    """

    def __init__(
        self, *, allow: Iterable[str | type] = (), registry: HookRegistry | None = None
    ) -> None:
        entries = check_allow(allow, call="MessageCodec()")
        check_registry(registry, call="MessageCodec()")
        registry = (registry if registry is not None else default_registry).copy()
        registry.allow(*entries)
        self.registry = registry
        self._codec = MsgpackCodec(registry=registry)

    def __repr__(self) -> str:
        return f"<MessageCodec allow={list(self.registry.allowed)!r}>"

    def encode(self, message: Any) -> bytes:
        """Encode a message (the ``encoder`` kiwipy calls).

        :param message: a task ``(body, no_reply)``, an RPC or broadcast body, or a reply
        :raises EncodeError: naming the path of a value the registry cannot encode
        :return: the bytes to publish
        """
        try:
            return MESSAGE_MAGIC + self._codec.encode(message)
        except EncodeError as error:
            msg = (
                f"Cannot send this message: {error} Send plain data (or register a hook), "
                "not live objects."
            )
            raise EncodeError(msg, path=error.path) from error

    def worker_encoder(self, message: Any) -> bytes:
        """Encode a message for a worker: a result reply it cannot encode becomes an error reply.

        :param message: as for :meth:`encode`
        :raises EncodeError: if a message other than a result reply cannot be encoded
        :return: the bytes to publish (for a refused result, kiwipy's
            ``{"exception": reason}`` reply; logged as a warning)
        """
        try:
            return self.encode(message)
        except EncodeError as error:
            if not (isinstance(message, Mapping) and _RESULT_KEY in message):
                raise
            _LOGGER.warning("Could not send a result reply: %s", error)
            reply = {k: v for k, v in message.items() if k != _RESULT_KEY}
            reply[_EXCEPTION_KEY] = f"The result could not be sent: {error}"
            return self.encode(reply)

    def decode(self, data: bytes) -> Any:
        """Decode a message, strictly.

        :param data: the message body as received
        :raises UnsafeCheckpointError: if it names a class outside the allow-list;
            nothing it names was imported or called
        :raises DecodeError: if it is not a message :meth:`encode` wrote (e.g. kiwipy's
            default YAML) or is damaged
        :return: the message
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            msg = f"A message must be bytes, got {type(data).__name__}."
            raise CorruptCheckpointError(msg)
        raw = bytes(data)
        if not raw.startswith(MESSAGE_MAGIC):
            msg = (
                f"Refusing a {len(raw)}-byte message that does not start with {MESSAGE_MAGIC!r}: "
                f"it begins {raw[:24]!r}. Senders must use loopaware_persist's encoder "
                "(kiwipy's default YAML encoding is never decoded)."
            )
            raise CorruptCheckpointError(msg)
        return self._codec.decode(raw[len(MESSAGE_MAGIC) :])

    def worker_decoder(self, data: bytes) -> Any:
        """Decode a message for a worker: a refused one becomes a :class:`RefusedMessage`.

        :param data: the message body as received
        :return: the message, or a :class:`RefusedMessage` (logged as a warning)
        """
        try:
            return self.decode(data)
        except DecodeError as error:
            _LOGGER.warning("Refused a %d-byte message: %s", len(data), error)
            return RefusedMessage(reason=str(error), size=len(data))

    def client_decoder(self, data: bytes) -> Any:
        """Decode a reply for a sender: a refused one becomes kiwipy's error reply.

        :param data: the message body as received
        :return: the message, or ``{"exception": reason}`` (logged as a warning)
        """
        try:
            return self.decode(data)
        except DecodeError as error:
            _LOGGER.warning("Refused a %d-byte reply: %s", len(data), error)
            return {_EXCEPTION_KEY: f"The reply was refused: {error}"}


_DEFAULT = MessageCodec()


def _check_codec(codec: object, call: str) -> None:
    check_instance(
        codec,
        MessageCodec,
        call=call,
        argument="codec",
        wanted="a MessageCodec or None",
        hint="Build one with MessageCodec(allow=[...]).",
    )


def encode_message(message: Any, *, codec: MessageCodec | None = None) -> bytes:
    """Encode a kiwipy message safely.

    :param message: the message
    :param codec: the codec to use (default: one with plumpy's allow-list only)
    :raises EncodeError: if a value cannot be encoded
    :raises ArgumentTypeError: if ``codec`` is not a MessageCodec
    :return: the bytes
    """
    if codec is not None:
        _check_codec(codec, "encode_message()")
    return (codec or _DEFAULT).encode(message)


def decode_message(
    data: bytes, *, allow: Iterable[str | type] = (), codec: MessageCodec | None = None
) -> Any:
    """Decode a kiwipy message safely and strictly.

    :param data: the bytes received
    :param allow: modules/classes the message may revive, besides plumpy's
        (ignored when ``codec`` is given)
    :param codec: the codec to use
    :raises UnsafeCheckpointError: if it names a class outside the allow-list
    :raises DecodeError: if it is not a loopaware message or is damaged
    :raises ArgumentTypeError: if ``codec`` is not a MessageCodec or ``allow`` not modules
    :return: the message
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        msg = f"decode_message() takes bytes as data, got {describe(data)}. Pass the body received."
        raise ArgumentTypeError(msg, argument="data")
    if codec is not None:
        _check_codec(codec, "decode_message()")
    else:
        allow = check_allow(allow, call="decode_message()")
        codec = MessageCodec(allow=allow) if allow else _DEFAULT
    return codec.decode(data)
