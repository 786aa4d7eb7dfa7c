"""After the money: what a household says when asked whether the money arrived, how it was asked, and the
grievances (khiếu nại, phản ánh) a household's file can carry. Stored by migration 0019."""

from __future__ import annotations

from enum import StrEnum


class Answer(StrEnum):
    RECEIVED_FULL = "received_full"  # đã nhận đủ
    RECEIVED_ISSUES = "received_issues"  # đã nhận, có vấn đề (thiếu, chậm, phải trả phí, ...)
    NOT_RECEIVED = "not_received"  # chưa nhận được


class Channel(StrEnum):
    PHONE = "phone"
    VISIT = "visit"
    SMS = "sms"


class Category(StrEnum):
    PAYMENT_NOT_RECEIVED = "payment_not_received"
    PAYMENT_ISSUE = "payment_issue"
    CONSTRUCTION = "construction"
    ELIGIBILITY = "eligibility"
    CONDUCT = "conduct"  # an officer asked for money, or behaved improperly
    OTHER = "other"

    @property
    def payment(self) -> bool:
        """A payment grievance blocks the household's settlement until it is resolved."""
        return self in (Category.PAYMENT_NOT_RECEIVED, Category.PAYMENT_ISSUE)


# The grievance an answer opens.
OPENS = {Answer.NOT_RECEIVED: Category.PAYMENT_NOT_RECEIVED, Answer.RECEIVED_ISSUES: Category.PAYMENT_ISSUE}


class Outcome(StrEnum):
    RESOLVED = "resolved"  # addressed (the household confirms, the issue is put right)
    UNFOUNDED = "unfounded"  # không có cơ sở
    TRACE_PAYMENT = "trace_payment"  # the money did not arrive: traced with the payment channel, not paid again
