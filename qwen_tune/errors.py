"""User-facing errors: one line, what is wrong and what to do, and a distinct exit code."""


class UserError(Exception):
    """An error the user can fix; the CLI prints it as one line, without a traceback."""

    exit_code = 2


class NoGpuError(UserError):
    """NVML or the driver is missing: planning for this box is impossible."""


class TrainingFailed(UserError):
    """swift exited non-zero; its own log says why."""

    exit_code = 3


class OutOfMemory(TrainingFailed):
    """swift ran out of GPU memory, and no rung of the retry ladder was left (or --no-auto-retry)."""

    exit_code = 5


class Interrupted(UserError):
    """The user (or a scheduler) stopped the run; checkpoints are kept for --resume."""

    exit_code = 130


class IdentityCheckFailed(UserError):
    """The tuned model did not answer with the recipe's name."""

    exit_code = 4
