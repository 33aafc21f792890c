"""Metadata-template checks for records written over the Handle APIs.

A record that carries a TEMPLATE value at index 1001 (what the SNMS API
writes; a Handle REST or binary client may write one too) is checked against
the template ``(handle prefix, that version)`` like an SNMS write: values at
indexes from 2000 (the template item range) must be enabled items of the
template with their type and lengths, and required items must be there.
Values below 2000 (HS_ADMIN, HS_SECKEY, a URL at 1, ...) are Handle
housekeeping and not governed by templates. A failure is rc 202 (invalid value).
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol import snms, templates
from protocol.errors import InvalidValue
from protocol.identifier import Handle
from protocol.snms import SnmsError, SnmsValue
from protocol.values import HandleValue
from registry.store import Store


class TemplateChecker:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def __call__(self, handle: Handle, values: Sequence[HandleValue]) -> None:
        version = next(
            (
                v.data for v in values
                if v.index == snms.TEMPLATE_INDEX and v.type == snms.TEMPLATE_TYPE
            ),
            None,
        )
        if version is None:
            return
        try:
            text = version.decode()
            document = await self._store.get_template(handle.prefix, text)
            if document is None:
                raise InvalidValue(templates.MSG_TEMPLATE_MISSING.format(handle.prefix, text))
            governed = [
                SnmsValue(v.index, v.type, v.data.decode())
                for v in values
                if v.index >= templates.FIRST_INDEX
            ]
            templates.validate(templates.loads(document), governed)
        except UnicodeDecodeError:
            raise InvalidValue("Template-governed values must be UTF-8 text") from None
        except SnmsError as exc:
            raise InvalidValue(exc.message) from None
