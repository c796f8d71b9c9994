"""The life of each credited card on the training platforms, and the platforms' event feeds.

When the issuer applies a credit, the card's life (what its holder buys, cancels and
completes, and when) is drawn from a `random.Random` seeded with sha256(seed, card number),
day 0 being the credit's moment on the simulated clock: the same seed, card, amount and
moment give the same life, also after a restart that replays the issuer's journal. Each
event then waits in a heap until the simulated clock passes its delivery time (the event's
time plus a small delay, so `at` does not increase along a feed), and is appended to its
platform's feed. A feed is read with a cursor: the (delivery time, sequence) of the last
event returned; events created later always sort after what was delivered.

Memory: one flat tuple per event (about 200 bytes), a (amount, day 0) tuple per card.
"""

import base64
import binascii
import hashlib
import heapq
import math
import random
import threading
import time
from bisect import bisect_right
from datetime import datetime, timedelta, timezone
from typing import Any

from partners.simulator.truth import TRAINING_PLATFORMS

WIB = timezone(timedelta(hours=7), "WIB")
_WIB_S = 7 * 3600
DAY = 86400
HOUR = 3600
MINUTE = 60

PURCHASED, CANCELLED, COMPLETED = 0, 1, 2
EVENT_TYPES = ("PURCHASED", "CANCELLED", "COMPLETED")
_TYPE_CODES = {name: code for code, name in enumerate(EVENT_TYPES)}

# --- the shares of a life (per credited card) -----------------------------------------
FIRST_TRAINING_DAYS = 30  # the deadline day: the credit's WIB date + 30 days
BUY_IN_TIME_SHARE = 0.86  # a first purchase on days 0-29
BUY_ON_DEADLINE_DAY_SHARE = 0.04  # a first purchase on day 30, any hour WIB
# The rest (10%) never buy on a platform; of those, this share used the card at the issuer
# without any platform event (their NO_TRAINING_IN_TIME revocation answers CARD_USED).
USED_AT_ISSUER_SHARE = 0.10
EARLY_PURCHASE_SHARE = 0.85  # of in-time first purchases: days 0-10 (mostly the first days)
LATE_PURCHASE_DAYS = (11, FIRST_TRAINING_DAYS - 1)  # the others
CANCEL_SHARE = 0.03  # buyers who cancel their first purchase 1-2 days later, then buy again
REBUY_DAYS = (1, 6)  # days after the cancellation
COMPLETE_SHARE = 0.90  # purchases (not cancelled) completed
COMPLETE_DAYS = (3, 20)  # days after the purchase
SECOND_COURSE_SHARE = 0.20  # completers who buy another course, if the balance allows
SECOND_COURSE_DAYS = (1, 40)  # days after the first completion
WHOLE_BALANCE_SHARE = 0.25  # purchases that spend the whole balance left
MIN_PRICE = 50_000
PRICE_STEP = 1_000
COURSES = 256  # course ids c-100 .. c-355

# --- the feeds' imperfections ---------------------------------------------------------
DUPLICATE_DELIVERY_RATE = 0.005  # events delivered a second time, 1-24 hours later
UNKNOWN_CARD_RATE = 0.001  # per event: one extra purchase by a card never issued
SHORT_DELAY_SHARE = 0.8  # delivery 1-30 minutes after the event; the rest 30 min-4 h
SHORT_DELAY_S = (MINUTE, 30 * MINUTE)
LONG_DELAY_S = (30 * MINUTE, 4 * HOUR)
DUPLICATE_DELAY_S = (HOUR, 24 * HOUR)

LIFE_MODES = ("seeded", "none")
MAX_FEED_PAGE = 10_000

# A life event: (at, platform index, card number, type code, course number, price or None,
# index within the life). Its event id is derived from (seed, card number, index).
LifeEvent = tuple[float, int, str, int, int, int | None, int]
# A feed entry: (delivery, sequence, at, platform index, card number, type code, course,
# price or None, event id or life index[, `at` as given]). Scripted events carry their
# course id and event id as strings, and their `at` text as a tenth field.
FeedEntry = tuple[Any, ...]

_PRICES = tuple(k * PRICE_STEP for k in range(10_001))  # shared int objects for prices


def wib_iso(at: float) -> str:
    """The simulated moment `at` (epoch seconds) as ISO 8601 with the +07:00 offset."""
    return datetime.fromtimestamp(at, WIB).isoformat(timespec="seconds")


def parse_aware(text: Any) -> float | None:
    """Epoch seconds of an ISO 8601 time with an offset; None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    if at.tzinfo is None or at.utcoffset() is None:
        return None
    return at.timestamp()


class Clock:
    """The simulated clock: real time plus an offset (0 at start); setting it moves the
    offset, and it keeps advancing with real time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def set(self, at: float) -> None:
        self.offset = at - time.time()


def _price(rng: random.Random, left: int) -> int | None:
    top = left // PRICE_STEP
    low = MIN_PRICE // PRICE_STEP
    if top < low:
        return None
    if rng.random() < WHOLE_BALANCE_SHARE:
        k = top
    else:
        # Mostly the cheaper courses: a triangle with its mode a fifth of the way up.
        k = int(rng.triangular(low, top + 1, low + (top - low) / 5))
        k = min(max(k, low), top)
    return _PRICES[k] if k < len(_PRICES) else k * PRICE_STEP


def _moment(rng: random.Random, midnight: float, day: int, not_before: float) -> float:
    """A moment of WIB day `day` (0: the credit's date), not before `not_before`."""
    start = midnight + day * DAY
    end = start + DAY - 1
    lo = min(max(start, math.ceil(not_before)), end)
    return float(rng.randint(int(lo), int(end)))


def _other_course(rng: random.Random, taken: tuple[int, ...]) -> int:
    course = rng.randrange(COURSES)
    while course in taken:
        course = (course + 1) % COURSES
    return course


def _unknown_card(rng: random.Random) -> str:
    """A 16-digit card number with a wrong Luhn digit: no issuer ever issued it."""
    body = "5049" + "".join(str(rng.randrange(10)) for _ in range(11))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    check = (10 - total % 10) % 10
    return body + str((check + 1 + rng.randrange(9)) % 10)


def life_rng(seed: str, card_number: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}|life|{card_number}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def card_life(
    seed: str, card_number: str, amount: int, day0: float
) -> tuple[list[LifeEvent], bool]:
    """The card's own events (in the order drawn) and whether its holder used it at the
    issuer with no platform event. Deterministic in its arguments."""
    return _life(life_rng(seed, card_number), card_number, amount, day0)


def _life(
    rng: random.Random, card_number: str, amount: int, day0: float
) -> tuple[list[LifeEvent], bool]:
    midnight = ((day0 + _WIB_S) // DAY) * DAY - _WIB_S
    u = rng.random()
    if u >= BUY_IN_TIME_SHARE + BUY_ON_DEADLINE_DAY_SHARE:
        return [], rng.random() < USED_AT_ISSUER_SHARE
    if u >= BUY_IN_TIME_SHARE:
        day = FIRST_TRAINING_DAYS
    elif rng.random() < EARLY_PURCHASE_SHARE:
        day = min(int(rng.triangular(0, 11, 0)), 10)
    else:
        day = rng.randint(*LATE_PURCHASE_DAYS)
    events: list[LifeEvent] = []
    price = _price(rng, amount)
    if price is None:  # nothing on sale for so small a balance
        return events, False
    at = _moment(rng, midnight, day, day0 + MINUTE)
    course = rng.randrange(COURSES)
    platform = rng.randrange(len(TRAINING_PLATFORMS))
    events.append((at, platform, card_number, PURCHASED, course, price, 0))
    taken: tuple[int, ...] = (course,)
    if rng.random() < CANCEL_SHARE:
        cancelled_at = at + rng.randint(DAY, 2 * DAY)
        events.append((cancelled_at, platform, card_number, CANCELLED, course, price, 1))
        at = cancelled_at + rng.randint(REBUY_DAYS[0] * DAY, REBUY_DAYS[1] * DAY)
        course = _other_course(rng, taken)
        taken += (course,)
        platform = rng.randrange(len(TRAINING_PLATFORMS))
        price = _price(rng, amount)
        if price is None:
            return events, False
        events.append((at, platform, card_number, PURCHASED, course, price, 2))
    left = amount - price
    if rng.random() < COMPLETE_SHARE:
        done = at + rng.randint(COMPLETE_DAYS[0] * DAY, COMPLETE_DAYS[1] * DAY)
        events.append((done, platform, card_number, COMPLETED, course, None, len(events)))
        if rng.random() < SECOND_COURSE_SHARE:
            price = _price(rng, left)
            if price is not None:
                at = done + rng.randint(SECOND_COURSE_DAYS[0] * DAY, SECOND_COURSE_DAYS[1] * DAY)
                course = _other_course(rng, taken)
                platform = rng.randrange(len(TRAINING_PLATFORMS))
                events.append((at, platform, card_number, PURCHASED, course, price, len(events)))
                if rng.random() < COMPLETE_SHARE:
                    done = at + rng.randint(COMPLETE_DAYS[0] * DAY, COMPLETE_DAYS[1] * DAY)
                    events.append(
                        (done, platform, card_number, COMPLETED, course, None, len(events))
                    )
    return events, False


def _deliveries(rng: random.Random, events: list[LifeEvent]) -> list[tuple[float, LifeEvent]]:
    """(delivery time, event) for each event, its duplicate deliveries, and the extra
    events of unknown cards, drawn after the life from the same generator."""
    out: list[tuple[float, LifeEvent]] = []
    for event in events:
        if rng.random() < SHORT_DELAY_SHARE:
            delivery = event[0] + rng.randint(*SHORT_DELAY_S)
        else:
            delivery = event[0] + rng.randint(*LONG_DELAY_S)
        out.append((delivery, event))
        if rng.random() < DUPLICATE_DELIVERY_RATE:
            out.append((delivery + rng.randint(*DUPLICATE_DELAY_S), event))
        if rng.random() < UNKNOWN_CARD_RATE:
            stranger = _unknown_card(rng)
            at = event[0] + rng.randint(MINUTE, HOUR)
            platform = rng.randrange(len(TRAINING_PLATFORMS))
            price = _PRICES[rng.randint(MIN_PRICE // PRICE_STEP, 1000)]
            course = rng.randrange(COURSES)
            extra: LifeEvent = (at, platform, stranger, PURCHASED, course, price, 0)
            out.append((at + rng.randint(*SHORT_DELAY_S), extra))
    return out


def encode_cursor(delivery: float, seq: int) -> str:
    raw = f"{delivery!r}:{seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


START_CURSOR = encode_cursor(-1.0, -1)


def decode_cursor(cursor: str) -> tuple[float, int]:
    """ValueError when it is not a cursor this feed gave."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        delivery, seq = raw.split(":")
        return float(delivery), int(seq)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a cursor of this feed") from None


def _key(entry: FeedEntry) -> tuple[float, int]:
    return entry[0], entry[1]


class Training:
    """The credited cards, their lives, the scripted events, and each platform's feed."""

    def __init__(self, seed: str, clock: Clock, lives: str = "seeded") -> None:
        if lives not in LIFE_MODES:
            raise ValueError(f"lives must be one of {LIFE_MODES}, not {lives!r}")
        self.seed = seed
        self.clock = clock
        self.lives = lives
        self._lock = threading.Lock()
        # card -> (credited amount, the life's day 0 or None, the amount the life was
        # drawn for): a life is redrawn from these when the issuer needs it.
        self.cards: dict[str, tuple[int, float | None, int]] = {}
        self.used_at_issuer: set[str] = set()  # set by the admin route
        self.revoked: dict[str, float] = {}  # card -> the revocation's simulated moment
        # card -> [(at, type code, course id, price)] of the scripted events
        self.scripted: dict[str, list[tuple[float, int, str, int | None]]] = {}
        self._pending: list[FeedEntry] = []
        self._feeds: list[list[FeedEntry]] = [[] for _ in TRAINING_PLATFORMS]
        self._seq = 0
        self._horizon = -math.inf  # the latest moment feeds were delivered up to
        self.events_created = 0

    # --- what makes events ------------------------------------------------------------

    def credited(self, card: str, amount: int, at: float, seeded: bool) -> None:
        """The issuer applied a credit of `amount` to `card` at simulated moment `at`; a
        card credited for the first time gets its life (when `seeded`)."""
        with self._lock:
            known = self.cards.get(card)
            if known is not None:
                self.cards[card] = (known[0] + amount, known[1], known[2])
                return
            self.cards[card] = (amount, at if seeded else None, amount)
            if not seeded:
                return
            # The deliveries are drawn after the life, from the same generator.
            rng = life_rng(self.seed, card)
            events, _ = _life(rng, card, amount, at)
            if not events:
                return
            horizon = self._horizon
            for delivery, e in _deliveries(rng, events):
                self._seq += 1
                entry = (
                    max(delivery, horizon),
                    self._seq,
                    e[0],
                    e[1],
                    e[2],
                    e[3],
                    e[4],
                    e[5],
                    e[6],
                )
                heapq.heappush(self._pending, entry)
            self.events_created += len(events)

    def script(self, platform: int, events: list[dict[str, Any]], delivery: float) -> None:
        """Append checked events (see check_scripted) to a feed, delivered at `delivery`."""
        with self._lock:
            delivery = max(delivery, self._horizon)
            for ev in events:
                self._seq += 1
                code = _TYPE_CODES[ev["type"]]
                at = float(ev["_at"])
                price = ev.get("price")
                entry = (
                    delivery,
                    self._seq,
                    at,
                    platform,
                    ev["card_number"],
                    code,
                    ev["course_id"],
                    price,
                    ev["event_id"],
                    ev["at"],
                )
                heapq.heappush(self._pending, entry)
                self.scripted.setdefault(ev["card_number"], []).append(
                    (at, code, ev["course_id"], price)
                )
            self.events_created += len(events)

    def revoke(self, card: str, at: float) -> None:
        """From `at` on the card has no life: its later events are never delivered."""
        with self._lock:
            self.revoked.setdefault(card, at)

    # --- the issuer's view of a card -------------------------------------------------

    def card_view(self, card: str, now: float) -> tuple[int, int, bool] | None:
        """(credited amount, spent by purchases at or before `now` not cancelled by then,
        used: any such purchase, or used at the issuer), or None for a card never credited."""
        known = self.cards.get(card)
        if known is None:
            return None
        amount, day0, life_amount = known
        moves: list[tuple[float, int, str, int | None]] = []
        used = card in self.used_at_issuer
        if day0 is not None:
            events, at_issuer = card_life(self.seed, card, life_amount, day0)
            used = used or at_issuer
            moves += [(e[0], e[3], f"c-{100 + e[4]}", e[5]) for e in events if e[3] != COMPLETED]
        moves += self.scripted.get(card, [])
        moves.sort(key=lambda m: m[0])
        open_purchases: dict[str, list[int]] = {}
        for at, code, course, price in moves:
            if at > now:
                break
            if code == PURCHASED:
                open_purchases.setdefault(course, []).append(price or 0)
            elif code == CANCELLED and open_purchases.get(course):
                open_purchases[course].pop()
        spent = sum(sum(prices) for prices in open_purchases.values())
        bought = any(open_purchases.values())
        return amount, spent, used or bought

    # --- the feeds --------------------------------------------------------------------

    def _deliver(self, now: float) -> None:
        """Move what the clock has passed from the heap to its platform's feed."""
        self._horizon = max(self._horizon, now)
        pending = self._pending
        revoked = self.revoked
        feeds = self._feeds
        while pending and pending[0][0] <= now:
            entry = heapq.heappop(pending)
            if revoked and isinstance(entry[8], int):
                cut = revoked.get(entry[4])
                if cut is not None and entry[2] > cut:
                    continue  # the card was closed before this happened
            feeds[entry[3]].append(entry)

    def page(self, platform: int, after: str | None, limit: int) -> dict[str, Any]:
        """The events of a platform's feed after the cursor `after` (None: from the
        start), at most `limit`; ValueError for a cursor this feed never gave."""
        start_key = decode_cursor(after) if after is not None else None
        with self._lock:
            self._deliver(self.clock.now())
            feed = self._feeds[platform]
            start = 0 if start_key is None else bisect_right(feed, start_key, key=_key)
            chunk = feed[start : start + limit]
            more = start + len(chunk) < len(feed)
        if chunk:
            cursor = encode_cursor(chunk[-1][0], chunk[-1][1])
        else:
            cursor = after if after is not None else START_CURSOR
        name = TRAINING_PLATFORMS[platform]
        return {"events": [self.render(name, e) for e in chunk], "next": cursor, "more": more}

    def render(self, platform: str, entry: FeedEntry) -> dict[str, Any]:
        _, _, at, _, card, code, course, price, eid = entry[:9]
        if isinstance(eid, str):  # scripted: as given
            out: dict[str, Any] = {
                "event_id": eid,
                "type": EVENT_TYPES[code],
                "card_number": card,
                "course_id": course,
            }
            if price is not None:
                out["price"] = price
            out["at"] = entry[9]
            return out
        digest = hashlib.sha256(f"{self.seed}|event|{card}|{eid}".encode()).hexdigest()
        out = {
            "event_id": f"{platform}-{digest[:16]}",
            "type": EVENT_TYPES[code],
            "card_number": card,
            "course_id": f"c-{100 + course}",
        }
        if price is not None:
            out["price"] = price
        out["at"] = wib_iso(at)
        return out

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "cards": len(self.cards),
                "events_created": self.events_created,
                "events_pending": len(self._pending),
                "events_delivered": {
                    TRAINING_PLATFORMS[i]: len(f) for i, f in enumerate(self._feeds)
                },
            }


def check_scripted(events: Any) -> list[dict[str, Any]]:
    """The events of POST /_admin/training/events, each with its `at` parsed into `_at`;
    ValueError naming what is wrong."""
    if not isinstance(events, list):
        raise ValueError("events must be a list")
    out = []
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise ValueError(f"events[{i}] is not an object")
        for name in ("event_id", "card_number", "course_id"):
            if not isinstance(ev.get(name), str) or not ev[name]:
                raise ValueError(f"events[{i}].{name} must be a non-empty string")
        if ev.get("type") not in _TYPE_CODES:
            raise ValueError(f"events[{i}].type must be one of {EVENT_TYPES}")
        price = ev.get("price")
        if price is not None and (not isinstance(price, int) or isinstance(price, bool)):
            raise ValueError(f"events[{i}].price must be an integer")
        if ev["type"] == "PURCHASED" and price is None:
            raise ValueError(f"events[{i}].price is required for PURCHASED")
        at = parse_aware(ev.get("at"))
        if at is None:
            raise ValueError(f"events[{i}].at must be ISO 8601 with an offset")
        out.append({**ev, "_at": at})
    return out
