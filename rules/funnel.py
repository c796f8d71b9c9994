"""The wave funnel beside the reference figures of wave 1 of 2020 (wave-rules.md)."""

REFERENCE_WAVE_1_2020 = {
    "registered": 5_965_048,
    "intake_accepted": 4_428_669,  # verified their email
    "identity_verified": 3_294_190,
    "eligible": 2_078_026,
    "selected": 200_000,
    "confirmed": 168_111,
    "credited": 168_111,
}

FUNNEL_LABELS = {
    "registered": "registered",
    "intake_accepted": "email verified (intake accepted)",
    "locally_eligible": "locally eligible",
    "identity_verified": "identity verified",
    "eligible": "eligible",
    "selected": "selected",
    "confirmed": "confirmed",
    "credited": "credited",
}


def share(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def funnel_rows(funnel: dict[str, int]) -> list[dict[str, object]]:
    """One row per step: count, share of registered, and the reference share."""
    registered = funnel.get("registered", 0)
    ref_total = REFERENCE_WAVE_1_2020["registered"]
    rows = []
    for key, label in FUNNEL_LABELS.items():
        ref = REFERENCE_WAVE_1_2020.get(key)
        rows.append(
            {
                "step": label,
                "count": funnel.get(key, 0),
                "share_pct": share(funnel.get(key, 0), registered),
                "reference": ref if ref is not None else "",
                "reference_share_pct": share(ref, ref_total) if ref is not None else "",
            }
        )
    return rows


def demo_quota(registrants: int) -> int:
    """The demo's quota in the reference ratio, 200,000 seats for 5,965,048 registrants."""
    return max(
        1,
        round(
            registrants * REFERENCE_WAVE_1_2020["selected"] / REFERENCE_WAVE_1_2020["registered"]
        ),
    )


def selected_parts(selected: int, split: dict[str, int] | None) -> list[tuple[str, int]]:
    """How the funnel's `selected` add up when not all of them got their seat in the draw
    (readmodels.reporting.selected_by_round): the rows under it; none when they all did."""
    if not split or selected == split.get("in_draw", 0):
        return []
    parts = [("in the draw", split.get("in_draw", 0))]
    if split.get("backfilled"):
        parts.append(("backfilled into freed seats", split["backfilled"]))
    if split.get("quota_raise"):
        parts.append(("drawn at a quota raise", split["quota_raise"]))
    return parts
