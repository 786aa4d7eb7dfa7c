"""The fields of a step's own input (beyond evidence and reason) as a household page's form sends them: what a
verification found, where and when the list was posted, an objection, a change. This only adapts the form's
text to the input models' fields (models/eligibility.py, models/review.py); the models and the engine judge
them, and a value they refuse comes back as the engine's `InvalidInput` refusal naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.eligibility import PARTS
from models.household import Step

_TEXT = {
    Step.POST_LIST: ("place", "posted_on"),
    Step.RECORD_OBJECTION: ("objector", "about", "raised_on"),
    Step.RESOLVE_OBJECTION: ("objection", "outcome"),
    Step.OVERRIDE_DOUBLE_SUPPORT: ("programme",),
    Step.REQUEST_CHANGE: ("kind", "support_type", "payee"),
    Step.DECIDE_CHANGE: ("change", "approved"),
}


def details_from_form(step: Step, form: Mapping[str, Any]) -> dict[str, Any]:
    """The step's details from the posted form: blank fields are left out (the model names what is missing)."""

    def text(name: str) -> str | None:
        value = form.get(name)
        value = str(value).strip() if value is not None else ""
        return value or None

    if step is Step.VERIFY:
        has_house = text("has_house") != "no"
        if has_house and not any(text(n) for n in (*PARTS, "floor_area_m2", "household_size", "earlier_support")):
            return {}  # nothing found recorded: the policy decides whether findings are required
        findings: dict[str, Any] = {"has_house": has_house, "earlier_support": text("earlier_support")}
        if has_house:
            findings |= {p: text(p) for p in PARTS}
            findings |= {"floor_area_m2": _number(text("floor_area_m2")), "household_size": text("household_size")}
        return {"findings": {k: v for k, v in findings.items() if v is not None}}
    return {name: value for name in _TEXT.get(step, ()) if (value := text(name)) is not None}


def _number(value: str | None) -> str | None:
    # A Vietnamese officer writes 12,5 m²; the model reads 12.5.
    return value.replace(",", ".") if value else None
