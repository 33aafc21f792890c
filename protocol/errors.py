"""Errors raised by the codecs and by everything built on them.

    HandleError            carries the Handle response code (``rc``) to answer with
    ├── InvalidHandle      rc 102: identifier syntax
    ├── InvalidValue       rc 202: a value that cannot be represented
    ├── MalformedMessage   rc 4:   bytes or JSON that do not decode
    ├── HandleNotFound     rc 100
    ├── HandleAlreadyExists rc 101
    ├── ValuesNotFound     rc 200: an index asked for is not there
    ├── ValueAlreadyExists rc 201: an index is taken
    └── NotResponsible     rc 301: the prefix is not homed here

Transports turn a ``HandleError`` into their own terms at one place each
(HTTP status + JSON body, or a binary error message); anything else that
escapes a request is a bug and becomes rc 2.
"""

from protocol.codes import RC


class HandleError(Exception):
    """A request failed with a Handle response code."""

    rc: RC = RC.ERROR

    def __init__(self, message: str = "", rc: RC | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if rc is not None:
            self.rc = RC(rc)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rc={int(self.rc)}, message={self.message!r})"


class InvalidHandle(HandleError):
    rc = RC.INVALID_HANDLE


class InvalidValue(HandleError):
    rc = RC.INVALID_VALUE


class MalformedMessage(HandleError):
    rc = RC.PROTOCOL_ERROR


class HandleNotFound(HandleError):
    rc = RC.HANDLE_NOT_FOUND


class HandleAlreadyExists(HandleError):
    rc = RC.HANDLE_ALREADY_EXISTS


class ValuesNotFound(HandleError):
    rc = RC.VALUES_NOT_FOUND


class ValueAlreadyExists(HandleError):
    rc = RC.VALUE_ALREADY_EXISTS


class NotResponsible(HandleError):
    rc = RC.SERVER_NOT_RESP

    def __init__(self, message: str = "That prefix doesn't live here") -> None:
        super().__init__(message)
