"""The payload and failure converters: pydantic models as JSON, one instance for the whole process; payloads the
codec would not open are refused by whoever reads them; failure messages sealed like any payload.

The SDK builds a new data converter for every workflow activation it encodes or decodes, and with it a new
payload converter, whose pydantic type adapters it then builds again from an empty cache. The pydantic
converter keeps no state per use (only that cache), so every data converter of the process shares one.

A payload that reaches the engine unsealed (plain JSON from `temporal workflow update ... --input`, or sealed by
a key the engine does not hold) must not fail the payload codec: that fails the whole workflow task, and the
update behind it would be delivered again forever. The codec hands it on as a `binary/refused` payload
(core/codec.py); reading one raises a non-retryable `Unauthenticated` ApplicationError, which the SDK rethrows
from argument conversion as is, so an update with such input is rejected (no event in history) and such a
signal dropped.
"""

from __future__ import annotations

from typing import Any, ClassVar

from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter, DefaultFailureConverter, EncodingPayloadConverter, PayloadConverter
from temporalio.exceptions import ApplicationError

REFUSED = "binary/refused"
REFUSED_REASON = "refused-reason"  # metadata: why the codec would not open the payload
MISSING_KEY = "refused-missing-key"  # metadata: sealed under a key id this process's ring does not hold
UNAUTHENTICATED = "Unauthenticated"
# Refusals whose message carries no personal data and that operators must read with the raw `temporal` CLI
# (no key): their message stays plain, only their stack trace is sealed.
READABLE_FAILURES = frozenset({UNAUTHENTICATED})


class MissingPayloadKey(RuntimeError):
    """A payload sealed under a key id this process does not hold: a configuration to fix, not an attack to
    refuse for good."""


class RefusedPayloadConverter(EncodingPayloadConverter):
    """Reads a payload the codec refused by refusing it: nothing is ever written in this encoding."""

    @property
    def encoding(self) -> str:
        return REFUSED

    def to_payload(self, value: Any) -> Payload | None:
        return None

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        reason = payload.metadata.get(REFUSED_REASON, b"").decode() or "not sealed"
        if payload.metadata.get(MISSING_KEY):
            # Not a FailureError: a workflow start or an activity result under a key this worker lacks fails the
            # workflow task, retried until the worker has the key, and never fails the household's workflow.
            # An update with such input is still rejected ("Failed decoding arguments"), with no event.
            raise MissingPayloadKey(f"{reason}: give this process the key ring that holds it")
        raise ApplicationError(
            f"the input is not sealed by a payload key this engine holds ({reason}): only the engine's front doors "
            "may send it",
            type=UNAUTHENTICATED,
            non_retryable=True,
        )


class SharedPydanticPayloadConverter(PydanticPayloadConverter):
    """`PydanticPayloadConverter()` with the refused encoding, made once: constructing it again returns the
    same instance."""

    _instance: ClassVar[SharedPydanticPayloadConverter | None] = None

    def __new__(cls) -> SharedPydanticPayloadConverter:
        if cls._instance is None:
            instance = super().__new__(cls)
            PydanticPayloadConverter.__init__(instance)
            # Last: it writes nothing, so it never takes a value from the converters before it.
            instance._set_converters(*instance.converters.values(), RefusedPayloadConverter())
            cls._instance = instance
        return cls._instance

    def __init__(self) -> None:
        pass  # initialised once, in __new__


class SealedFailureConverter(DefaultFailureConverter):
    """Failures with their message and stack trace in the encoded attributes, which the codec seals: a refusal
    names people, codes and amounts. A refusal of a READABLE_FAILURES type keeps its message plain."""

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=True)

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        super().to_failure(exception, payload_converter, failure)
        level: Failure | None = failure
        while level is not None:  # every level of the chain was encoded; give the readable ones their message
            if level.application_failure_info.type in READABLE_FAILURES and level.HasField("encoded_attributes"):
                _unseal_message(level, payload_converter)
            level = level.cause if level.HasField("cause") else None


def _unseal_message(failure: Failure, payload_converter: PayloadConverter) -> None:
    if failure.encoded_attributes.metadata.get("encoding") != b"json/plain":
        return  # copied from a failure still sealed: leave it so
    [attributes] = payload_converter.from_payloads([failure.encoded_attributes])
    if not isinstance(attributes, dict) or not isinstance(attributes.get("message"), str):
        return  # not what the encoding step wrote: leave it sealed
    failure.message = attributes["message"]
    failure.encoded_attributes.CopyFrom(
        payload_converter.to_payloads([{"stack_trace": attributes.get("stack_trace", "")}])[0]
    )


DATA_CONVERTER = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
