"""Handle response codes (RFC 3652 section 2.2.2.3 plus Handle.Net 9 and Teleinfo additions).

One table, shared by every transport: the binary protocol sends the code as-is,
the REST API maps it to an HTTP status (see ``protocol.rest_json.http_status``).
"""

from enum import IntEnum


class RC(IntEnum):
    SUCCESS = 1
    ERROR = 2
    SERVER_TOO_BUSY = 3
    PROTOCOL_ERROR = 4
    OPERATION_NOT_SUPPORTED = 5
    RECURSION_COUNT_TOO_HIGH = 6
    SERVER_BACKUP = 7

    HANDLE_NOT_FOUND = 100
    HANDLE_ALREADY_EXISTS = 101
    INVALID_HANDLE = 102

    VALUES_NOT_FOUND = 200
    VALUE_ALREADY_EXISTS = 201
    INVALID_VALUE = 202

    EXPIRED_SITE_INFO = 300
    SERVER_NOT_RESP = 301
    SERVICE_REFERRAL = 302
    PREFIX_REFERRAL = 303

    INVALID_ADMIN = 400
    INSUFFICIENT_PERMISSIONS = 401
    AUTHENTICATION_NEEDED = 402
    AUTHENTICATION_FAILED = 403
    INVALID_CREDENTIAL = 404
    AUTHEN_TIMEOUT = 405
    UNABLE_TO_AUTHENTICATE = 406

    SESSION_TIMEOUT = 500
    SESSION_FAILED = 501

    # Teleinfo secondary-node quota codes.
    QUOTA_REQUESTS_EXCEEDED = 603
    QUOTA_IDENTIFIERS_EXCEEDED = 604
    QUOTA_PREFIXES_EXCEEDED = 605
