"""Every log line of a call carries its call id.

The call sets `CALL_ID` when it starts; asyncio tasks (and model-worker jobs) inherit it from
the context they were created in. `CallIdFilter` on a handler adds `record.call_id` ("-" for
lines outside any call), so a format can show it:

    handler.addFilter(CallIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

CALL_ID: ContextVar[str] = ContextVar("callbot_call_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [call %(call_id)s] %(message)s"


class CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "call_id"):
            record.call_id = CALL_ID.get()
        return True
