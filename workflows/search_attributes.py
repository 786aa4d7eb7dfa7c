"""The five search attributes every household workflow carries. Never personal data here."""

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from models.household import Household, Stage

STAGE = SearchAttributeKey.for_keyword("Stage")
DISTRICT = SearchAttributeKey.for_keyword("District")
COMMUNE = SearchAttributeKey.for_keyword("Commune")
BENEFICIARY_GROUP = SearchAttributeKey.for_keyword("BeneficiaryGroup")
SUPPORT_TYPE = SearchAttributeKey.for_keyword("SupportType")

ALL = (STAGE, DISTRICT, COMMUNE, BENEFICIARY_GROUP, SUPPORT_TYPE)


def _values(household: Household, stage: Stage) -> list[tuple[SearchAttributeKey[str], str | None]]:
    return [
        (STAGE, stage.value),
        (DISTRICT, household.district),
        (COMMUNE, household.commune),
        (BENEFICIARY_GROUP, household.beneficiary_group.value),
        (SUPPORT_TYPE, household.support_type.value),
    ]


def at_start(household: Household, stage: Stage = Stage.VERIFICATION) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(k, v) for k, v in _values(household, stage) if v is not None])


def updates(household: Household, stage: Stage) -> list[SearchAttributeUpdate]:
    """The attributes as they are now; a household moved to the two-tier map has no district."""
    return [k.value_set(v) if v is not None else k.value_unset() for k, v in _values(household, stage)]
