"""One refusal type: the engine said no, naming the rule (OutOfOrder, RoleNotAllowed, InsufficientFunds, …).

The pure rules, the repositories, the activities, the workflow, the operations, the command line and the web
app all raise and catch `Refusal`. Crossing Temporal it travels as a non-retryable `ApplicationError` whose
type is the rule (`Refusal.application_error`), and comes back as a `Refusal` (`Refusal.of`). The HTTP status
of each rule lives beside the API (web/problems.py), the exit code beside the command line (cli/command.py).
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError


class Refusal(Exception):
    """Refused, named by its rule: `rule` is what a caller, a test or an auditor tells refusals apart by,
    `message` says what was wrong in words an officer can act on."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"

    def application_error(self) -> ApplicationError:
        """The refusal as it crosses Temporal: non-retryable (asking again cannot change the answer)."""
        return ApplicationError(self.message, type=self.rule, non_retryable=True)

    @classmethod
    def of(cls, err: BaseException) -> Refusal:
        """The refusal a Temporal call came back with: an update's or an activity's ApplicationError, or the
        server's answer that there is no such workflow (never started, or closed)."""
        # Imported here: the workflow sandbox imports this module and must not load the client.
        from temporalio.client import WorkflowUpdateFailedError
        from temporalio.exceptions import ActivityError
        from temporalio.service import RPCError, RPCStatusCode

        if isinstance(err, Refusal):
            return err
        cause = err.cause if isinstance(err, WorkflowUpdateFailedError | ActivityError) else err
        if isinstance(cause, ApplicationError):
            return cls(cause.type or "Refused", cause.message)
        if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
            # The server words a closed workflow as "completed", or "closing workflow" when it closed as we came.
            if "completed" in err.message or "closing workflow" in err.message:
                return cls("Closed", "the household's file is closed (settled or cancelled): no step can be taken")
            return cls("UnknownHousehold", "no workflow for this household: is it on an imported list?")
        return cls("Error", str(cause or err))
