"""The one exception type the core raises for bad input; the CLI turns it into exit code 2."""


class BatchprofError(Exception):
    """A user-facing problem: bad profile, unknown name, impossible shape, missing device.

    The message is one line that names what is wrong and where.
    """


class ProfileError(BatchprofError):
    """A profile (YAML or config.json) that cannot be loaded or fails validation."""
