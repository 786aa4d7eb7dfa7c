"""Business refusals, named by rule. Activities turn them into non-retryable ApplicationErrors."""


class DomainError(Exception):
    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"
