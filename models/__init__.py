"""Pydantic types shared by workflows, activities and the command line.

Kept free of I/O so the workflow sandbox can pass them through unchanged.
"""

from models.actions import (
    AcceptInput,
    AcceptResult,
    ActionInput,
    ActionResult,
    AllocateInput,
    AllocateResult,
    ApproveInput,
    ApproveResult,
    CancelInput,
    CancelResult,
    CompleteConstructionInput,
    CompleteConstructionResult,
    SendBackInput,
    SendBackResult,
    SetPolicyInput,
    SetPolicyResult,
    SettleInput,
    SettleResult,
    VerifyInput,
    VerifyResult,
)
from models.actor import Actor, Jurisdiction
from models.household import BeneficiaryGroup, Household, Stage, Step, SupportType
from models.policy import StepRule, WorkflowPolicy
from models.records import MoneyOp, ReminderRecord, TransitionOutcome, TransitionRecord
from models.state import HouseholdState, HouseholdWorkflowInput, HouseholdWorkflowResult, TimelineEntry

__all__ = [
    "AcceptInput",
    "AcceptResult",
    "ActionInput",
    "ActionResult",
    "Actor",
    "AllocateInput",
    "AllocateResult",
    "ApproveInput",
    "ApproveResult",
    "BeneficiaryGroup",
    "CancelInput",
    "CancelResult",
    "CompleteConstructionInput",
    "CompleteConstructionResult",
    "Household",
    "HouseholdState",
    "HouseholdWorkflowInput",
    "HouseholdWorkflowResult",
    "Jurisdiction",
    "MoneyOp",
    "ReminderRecord",
    "SendBackInput",
    "SendBackResult",
    "SetPolicyInput",
    "SetPolicyResult",
    "SettleInput",
    "SettleResult",
    "Stage",
    "Step",
    "StepRule",
    "SupportType",
    "TimelineEntry",
    "TransitionOutcome",
    "TransitionRecord",
    "VerifyInput",
    "VerifyResult",
    "WorkflowPolicy",
]
