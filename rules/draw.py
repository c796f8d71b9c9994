"""The draw (wave-rules.md, "The draw"): keys, seat allocation, the seat walk, backfill, raises.

Anyone with the eligible list and the seed can recompute it; candidates stream in draw order.
"""

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rules.enums import Allocation, Outcome, ReasonCode

SELECTED: str = Outcome.SELECTED
WAITLISTED: str = Outcome.WAITLISTED
HOUSEHOLD_CAP: str = ReasonCode.HOUSEHOLD_CAP


def seed_sha256(seed: str) -> str:
    """The published commitment to a lottery seed: SHA-256 of its UTF-8 bytes, lowercase hex."""
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()


def draw_key(seed: str, nik: str) -> str:
    """A registrant's draw key: `sha256(seed + ":" + nik)`, lowercase hex."""
    return hashlib.sha256(f"{seed}:{nik}".encode()).hexdigest()


def province_of(regency_code: str) -> str:
    """The province of a regency code: its first two digits."""
    return regency_code[:2]


def draw_order_key(priority: bool, key: str) -> tuple[bool, str]:
    """Sort key of the draw: priority registrants first, then draw key ascending."""
    return (not priority, key)


def provincial_seats(quota: int, pool_counts: Mapping[str, int]) -> dict[str, int]:
    """Split `quota` over provinces by pool size: floors first, then largest remainders
    `(quota * n_p) mod n`, ties to the lower province code. An empty pool gets {}."""
    if quota < 0:
        raise ValueError(f"quota must not be negative: {quota}")
    total = sum(pool_counts.values())
    if total == 0:
        return {}
    seats = {province: quota * count // total for province, count in pool_counts.items()}
    left = quota - sum(seats.values())
    by_remainder = sorted(
        (province for province, count in pool_counts.items() if count > 0),
        key=lambda province: (-(quota * pool_counts[province] % total), province),
    )
    for province in by_remainder[:left]:
        seats[province] += 1
    return seats


@dataclass(frozen=True, slots=True)
class Candidate:
    """One registrant as the draw sees it."""

    nik: str
    kk_number: str
    province: str
    priority: bool
    key: str


class SeatWalker:
    """Offers seats to candidates one at a time, in draw order, under the household cap.

    `seats` is the national quota (an int) or seats per province. `household_counts` are the
    participants each KK already holds (earlier waves confirmed or credited, this wave
    selected, confirmed or credited); the walker keeps its own copy and counts what it selects.
    """

    def __init__(
        self,
        *,
        seats: Mapping[str, int] | int,
        household_cap: int,
        household_counts: Mapping[str, int],
    ) -> None:
        if household_cap < 0:
            raise ValueError(f"household_cap must not be negative: {household_cap}")
        self._national = isinstance(seats, int)
        if isinstance(seats, int):
            self._left_national = max(seats, 0)
            self._left_by_province: dict[str, int] = {}
            self._open_provinces = 0
        else:
            self._left_national = 0
            self._left_by_province = {p: max(n, 0) for p, n in seats.items()}
            self._open_provinces = sum(1 for n in self._left_by_province.values() if n > 0)
        self._cap = household_cap
        self._counts: dict[str, int] = dict(household_counts)
        self._selected = 0

    @property
    def full(self) -> bool:
        """Every seat is taken: every later candidate is waitlisted."""
        if self._national:
            return self._left_national == 0
        return self._open_provinces == 0

    @property
    def selected_count(self) -> int:
        return self._selected

    def has_seat(self, province: str) -> bool:
        """Whether a candidate of `province` would be offered a seat now."""
        if self._national:
            return self._left_national > 0
        return self._left_by_province.get(province, 0) > 0

    def offer(self, candidate: Candidate) -> str:
        """Decide one candidate: SELECTED, HOUSEHOLD_CAP (a seat was offered, the KK is full)
        or WAITLISTED (no seat left for it)."""
        if not self.has_seat(candidate.province):
            return WAITLISTED
        if self._cap > 0 and self._counts.get(candidate.kk_number, 0) >= self._cap:
            return HOUSEHOLD_CAP
        if self._national:
            self._left_national -= 1
        else:
            left = self._left_by_province[candidate.province] - 1
            self._left_by_province[candidate.province] = left
            if left == 0:
                self._open_provinces -= 1
        self._counts[candidate.kk_number] = self._counts.get(candidate.kk_number, 0) + 1
        self._selected += 1
        return SELECTED


def _seats_for(
    allocation: str, quota: int, pool_counts: Mapping[str, int]
) -> Mapping[str, int] | int:
    if allocation == Allocation.NATIONAL:
        return quota
    if allocation == Allocation.PROVINCIAL:
        return provincial_seats(quota, pool_counts)
    raise ValueError(f"unknown allocation {allocation!r}")


def draw(
    candidates: Iterable[Candidate],
    *,
    quota: int,
    allocation: str,
    household_cap: int,
    household_counts: Mapping[str, int],
) -> list[tuple[str, str]]:
    """Reference draw over a whole pool: `(nik, outcome)` in draw order.

    Holds the pool in memory; the production walk feeds SeatWalker from storage in draw order.
    """
    pool = sorted(candidates, key=lambda c: draw_order_key(c.priority, c.key))
    seats = _seats_for(allocation, quota, Counter(c.province for c in pool))
    walker = SeatWalker(seats=seats, household_cap=household_cap, household_counts=household_counts)
    return [(c.nik, walker.offer(c)) for c in pool]


def backfill_round(
    *,
    free_seats: Mapping[str, int] | int,
    waitlist: Iterable[Candidate],
    household_cap: int,
    household_counts: Mapping[str, int],
) -> list[tuple[str, str]]:
    """One backfill round: offer the free seats to the waitlist (given in draw order).

    Returns only the decided `(nik, SELECTED | HOUSEHOLD_CAP)`; a candidate whose province has
    no free seat is passed over and stays waitlisted. Stops reading once every seat is filled.
    """
    walker = SeatWalker(
        seats=free_seats, household_cap=household_cap, household_counts=household_counts
    )
    decided: list[tuple[str, str]] = []
    for candidate in waitlist:
        if walker.full:
            break
        if walker.has_seat(candidate.province):
            decided.append((candidate.nik, walker.offer(candidate)))
    return decided


def raised_seats(
    *, old_quota: int, new_quota: int, allocation: str, pool_counts: Mapping[str, int]
) -> int | dict[str, int]:
    """The seats a quota raise opens: the difference nationally, or per province the growth
    of its share (a province whose share would shrink keeps its seats and gets none)."""
    if new_quota < old_quota:
        raise ValueError(f"a quota can only be raised: {old_quota} -> {new_quota}")
    if allocation == Allocation.NATIONAL:
        return new_quota - old_quota
    if allocation != Allocation.PROVINCIAL:
        raise ValueError(f"unknown allocation {allocation!r}")
    old = provincial_seats(old_quota, pool_counts)
    new = provincial_seats(new_quota, pool_counts)
    return {province: max(0, seats - old.get(province, 0)) for province, seats in new.items()}


class PoolDigest:
    """SHA-256 of the draw keys joined by newlines, fed one key at a time."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._separator = b""

    def add(self, key: str) -> None:
        self._digest.update(self._separator)
        self._digest.update(key.encode())
        self._separator = b"\n"

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def pool_digest(keys_in_draw_order: Iterable[str]) -> str:
    """SHA-256 (lowercase hex) of the draw keys joined by newlines: the pool's fingerprint."""
    digest = PoolDigest()
    for key in keys_in_draw_order:
        digest.add(key)
    return digest.hexdigest()
