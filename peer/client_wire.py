"""The binary client protocol on the peer port (kinds 70-79): submit signed orders and hear back.

A client opens an authenticated session (`gossip.client.open_client`) and pipelines `Submit`s; the
peer answers each with `PaymentStatus` messages carrying the same `req`: once at submission, then at
each status the client asked to wait for. It exists because HTTP costs more than the settlement work
itself for a load generator; wallets use the HTTP API.
"""

from __future__ import annotations

from typing import Annotated

from crypto.messages import Hash, Order
from crypto.schema import U32_MAX, Bytes, Message, Nested, Text, UInt, message

WAIT_NONE, WAIT_CERTIFIED, WAIT_SETTLED = 0, 1, 2
STATUS_CODES = {"pending": 0, "certified": 1, "settled": 2, "failed": 3, "rejected": 4}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}


@message(70, max_size=1024)
class Submit(Message):
    req: Annotated[int, UInt(0, U32_MAX)]
    order: Annotated[Order, Nested(Order)]
    wait: Annotated[int, UInt(WAIT_NONE, WAIT_SETTLED)]


@message(71, max_size=20_000)
class PaymentStatus(Message):
    req: Annotated[int, UInt(0, U32_MAX)]
    order_id: Hash
    status: Annotated[int, UInt(0, 4)]
    code: Annotated[str, Text(40)]
    detail: Annotated[str, Text(200)]
    cert: Annotated[bytes, Bytes(max_size=17_000)]
