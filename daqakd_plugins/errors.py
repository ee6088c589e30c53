"""One error hierarchy. Every message says what went wrong *and* how to fix the call.

Catch :class:`DaqakdError` to handle anything daqakd raises on purpose; the CLI turns it into a
one-paragraph message and exit code 2 instead of a traceback.
"""

from __future__ import annotations

__all__ = [
    "DaqakdError",
    "ConfigError",
    "DataError",
    "PluginError",
    "PluginLoadError",
    "UnknownNameError",
    "BackendUnavailableError",
    "BackendError",
    "ExportError",
    "ModelError",
    "NonFiniteError",
    "CheckpointError",
    "RunDirError",
]


class DaqakdError(Exception):
    """Base class of every error daqakd raises on purpose."""


class ConfigError(DaqakdError, ValueError):
    """A configuration value is out of range or inconsistent."""


class DataError(DaqakdError, ValueError):
    """The data set or a batch is unusable (empty, wrong labels, wrong shape, ...)."""


class ModelError(DaqakdError, ValueError):
    """A model does not fit the task (output width, mode, parameters that require grad, ...)."""


class NonFiniteError(DaqakdError, FloatingPointError):
    """A NaN or infinity appeared in logits or in a loss."""


class PluginError(DaqakdError):
    """A plugin misbehaved."""


class PluginLoadError(PluginError):
    """A plugin could not be registered (misspelled hook, argument its spec lacks, import error)."""


class UnknownNameError(DaqakdError, LookupError):
    """A name (augmentation, metric, loss, backend) is not registered. The message lists the known ones."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...], hint: str = "") -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        plural = kind + ("es" if kind.endswith(("s", "x")) else "s")  # loss -> losses
        msg = f"unknown {kind} {name!r}; registered {plural}: {', '.join(self.known) or '(none)'}."
        if hint:
            msg += " " + hint
        super().__init__(msg)

    def __str__(self) -> str:  # LookupError would repr() the message otherwise
        return str(self.args[0])


class BackendUnavailableError(DaqakdError, ImportError):
    """A backend's package is not installed; the message carries the install command."""


class BackendError(DaqakdError):
    """A backend rejected a request (bit width out of range, unsupported layer, ...)."""


class ExportError(BackendError):
    """A model cannot be exported in the requested format; the message says what works instead."""


class CheckpointError(DaqakdError):
    """A checkpoint is missing, from another run, or unreadable."""


class RunDirError(DaqakdError, FileExistsError):
    """The run directory holds an earlier run that this one would overwrite (use --resume or --fresh)."""
