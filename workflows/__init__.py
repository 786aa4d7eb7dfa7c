from workflows.household import HouseholdWorkflow

__all__ = ["HouseholdWorkflow"]
