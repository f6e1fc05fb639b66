"""The trainers' own exceptions: the CLI prints them as one line and exits with status 2."""


class TrainerError(Exception):
    """Base class of every error the trainers raise on purpose (bad input, bad config)."""


class ConfigError(TrainerError):
    """A configuration key or value is wrong (unknown key, wrong type, missing required)."""


class DataError(TrainerError):
    """An input file or row is malformed; the message names the file, line and field."""
