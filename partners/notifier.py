"""The message gateway: sends the SMS that tell registrants their result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from partners.client import PartnerClient, PartnerFailure

MESSAGES_PATH = "/v1/messages"
MESSAGE_STATUSES = frozenset({"ACCEPTED", "REJECTED"})
_FIELDS = ("idempotency_key", "channel", "to", "template", "params")


@dataclass(frozen=True)
class MessageResult:
    status: str
    reason: str | None


class NotifierClient(PartnerClient):
    def send(self, messages: Sequence[dict]) -> dict[str, MessageResult | PartnerFailure]:
        """Sends messages of idempotency_key, channel, to, template and params."""
        payload = [{name: m[name] for name in _FIELDS} for m in messages]
        return self.post_items(
            MESSAGES_PATH, "messages", payload, key_field="idempotency_key", parse=parse_message
        )


def parse_message(result: dict) -> MessageResult | None:
    status = result.get("status")
    reason = result.get("reason")
    if status not in MESSAGE_STATUSES or not (reason is None or isinstance(reason, str)):
        return None
    return MessageResult(status, reason)
