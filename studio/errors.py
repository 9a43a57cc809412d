"""Errors a user can cause and fix. Their message is one sentence naming the problem and the fix;
the UI and the CLI show it as is, and the traceback goes to the log only."""


class UserError(Exception):
    """Base of every error whose message is meant for the user."""


class ConfigError(UserError, ValueError):
    """A setting the user can fix: the message names the field and the fix."""


class ModelError(UserError):
    """A model that cannot be found or loaded."""


class DataError(UserError, ValueError):
    """A data file that cannot be read or used."""
