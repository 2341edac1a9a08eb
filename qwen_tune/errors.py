"""User-facing errors: one line, what is wrong and what to do, and a distinct exit code per kind.

Scripts and schedulers branch on the exit code, so each kind of bad input has its own; the
README's "Exit codes" and "When things go wrong" sections list them.
"""


class UserError(Exception):
    """An error the user can fix; the CLI prints it as one line, without a traceback."""

    exit_code = 2


class UsageError(UserError):
    """A flag's value is wrong: fixed on the command line alone (click's own usage errors exit 2 too)."""

    exit_code = 2


class TrainingFailed(UserError):
    """swift exited non-zero; its own log says why."""

    exit_code = 3


class IdentityCheckFailed(UserError):
    """The tuned model did not answer with the recipe's name."""

    exit_code = 4


class OutOfMemory(TrainingFailed):
    """swift ran out of GPU memory, and no rung of the retry ladder was left (or --no-auto-retry)."""

    exit_code = 5


class DatasetError(UserError):
    """The training data cannot be used as it is: the fix is in the data file, not the flags."""

    exit_code = 10


class ModelError(UserError):
    """The base model cannot be read or reached: a directory or a download is missing."""

    exit_code = 11


class ConfigError(UserError):
    """A recipe or profile YAML is unknown or has a wrong field: the fix is in that file."""

    exit_code = 12


class GpuSelectionError(UserError):
    """--gpus or CUDA_VISIBLE_DEVICES names GPUs this box does not have."""

    exit_code = 13


class NoGpuError(UserError):
    """NVML or the driver is missing, or cannot name or size a GPU: planning for this box is impossible."""

    exit_code = 14


class OutputError(UserError):
    """The run directory cannot be written under --output-dir; refused before anything is written."""

    exit_code = 15


class DiskSpaceError(UserError):
    """The checkpoints would not fit on the disk under --output-dir, or it filled up while the run wrote to it."""

    exit_code = 16


class GpuBusyError(UserError):
    """Another program or qwen-tune run holds the GPUs (waiting or --force may do), or writes this run directory."""

    exit_code = 17


class DoesNotFit(UserError):
    """No profile fits the model on these devices, even the leanest: other hardware or shorter samples."""

    exit_code = 18


class SwiftMissing(UserError):
    """ms-swift, the engine that trains, is not installed where qwen-tune runs."""

    exit_code = 19


class MissingPackage(UserError):
    """The plan turns on something (DeepSpeed, 4-bit QLoRA) whose package this Python lacks or has too old."""

    exit_code = 20


class TorchCannotUseGpus(UserError):
    """NVML sees GPUs but this Python's torch cannot use them: a CPU-only build, or a driver older than its CUDA."""

    exit_code = 21


class LockError(UserError):
    """The lock directory or a lock file is not this user's own (another user's, a symlink, writable by others)."""

    exit_code = 22


class Interrupted(UserError):
    """The user (or a scheduler) stopped the run; checkpoints are kept for --resume."""

    exit_code = 130
