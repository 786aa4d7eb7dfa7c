"""The payload converter: pydantic models as JSON, one instance for the whole process.

The SDK builds a new data converter for every workflow activation it encodes or decodes, and with it a new
payload converter, whose pydantic type adapters it then builds again from an empty cache. The pydantic
converter keeps no state per use (only that cache), so every data converter of the process shares one.
"""

from __future__ import annotations

from typing import ClassVar

from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter


class SharedPydanticPayloadConverter(PydanticPayloadConverter):
    """`PydanticPayloadConverter()`, made once: constructing it again returns the same instance."""

    _instance: ClassVar[SharedPydanticPayloadConverter | None] = None

    def __new__(cls) -> SharedPydanticPayloadConverter:
        if cls._instance is None:
            instance = super().__new__(cls)
            PydanticPayloadConverter.__init__(instance)
            cls._instance = instance
        return cls._instance

    def __init__(self) -> None:
        pass  # initialised once, in __new__


DATA_CONVERTER = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
