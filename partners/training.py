"""A training platform (marketplace): its feed of card purchases, cancellations and completions.

partner-api.md, "Training platforms: the event feed". The feed may deliver an event again
or out of order: the reader keeps `event_id`s, this client only reads pages. Card numbers
are personal data: nothing here logs them, nor an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from partners.client import PartnerClient, PartnerError, PartnerFailure, is_int

EVENTS_PATH = "/v1/events"
EVENT_TYPES = frozenset({"PURCHASED", "CANCELLED", "COMPLETED"})


@dataclass(frozen=True)
class TrainingEvent:
    """One event of the feed. `price` (int rupiah) is given for PURCHASED, may be for
    CANCELLED (which refers to the purchase of `course_id` on the same card) and never is
    for COMPLETED. `at` is timezone-aware."""

    event_id: str
    type: str
    card_number: str
    course_id: str
    price: int | None
    at: datetime


@dataclass(frozen=True)
class FeedPage:
    """A page of the feed: its readable events, the cursor to read from next time (always
    given), whether more events are waiting now, and how many events could not be read
    (left out of `events`)."""

    events: list[TrainingEvent]
    next: str
    more: bool
    unreadable: int


class TrainingPlatformClient(PartnerClient):
    def events(self, after: str | None, limit: int = 1000) -> FeedPage:
        """The events after cursor `after` (None: from the start of the feed), at most `limit`.

        An event that cannot be read is left out and counted, never fatal. A page that
        cannot be read is retried like any unreadable body; raises PartnerError when no
        page could be had after the retries.
        """
        if not is_int(limit) or limit < 1:
            raise ValueError("limit must be a positive int")
        params: dict = {} if after is None else {"after": after}
        params["limit"] = limit
        status, page = self._get(EVENTS_PATH, params, label=EVENTS_PATH, parse=parse_feed_page)
        if page is None:
            raise PartnerError(
                PartnerFailure(self.settings.id, f"HTTPStatus{status}", "no event feed", True)
            )
        if page.unreadable:
            # The count only: an event holds a card number.
            self._log.warning(
                "%s %s: left out %d unreadable events of %d",
                self.settings.id,
                EVENTS_PATH,
                page.unreadable,
                page.unreadable + len(page.events),
            )
        return page


def parse_feed_page(body: dict) -> FeedPage | None:
    """A feed page, or None when its top level cannot be read (no `events` list, a `next`
    that is not a string, a `more` that is not a bool; a missing `more` is false)."""
    raw = body.get("events")
    cursor = body.get("next")
    more = body.get("more", False)
    if not isinstance(raw, list) or not isinstance(cursor, str) or not isinstance(more, bool):
        return None
    events = []
    for item in raw:
        event = parse_event(item) if isinstance(item, dict) else None
        if event is not None:
            events.append(event)
    return FeedPage(events, cursor, more, len(raw) - len(events))


def parse_event(item: dict) -> TrainingEvent | None:
    """One event, or None when it cannot be read."""
    event_id = item.get("event_id")
    kind = item.get("type")
    card_number = item.get("card_number")
    course_id = item.get("course_id")
    price = item.get("price")
    texts = (event_id, card_number, course_id)
    if kind not in EVENT_TYPES or not all(isinstance(t, str) and t for t in texts):
        return None
    if price is not None and not (is_int(price) and price >= 0):
        return None
    if (kind == "PURCHASED" and price is None) or (kind == "COMPLETED" and price is not None):
        return None
    at = _aware(item.get("at"))
    if at is None:
        return None
    return TrainingEvent(str(event_id), str(kind), str(card_number), str(course_id), price, at)


def _aware(value: object) -> datetime | None:
    """An ISO 8601 time with its offset; None when it is not one (no offset included)."""
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None and at.utcoffset() is not None else None
