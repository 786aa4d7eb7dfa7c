from activities.household import HouseholdActivities

__all__ = ["HouseholdActivities"]
