"""Errors services raise that the web, the API and the CLI all understand."""


class NotFoundError(LookupError):
    """The thing asked for does not exist (404 on the web and API, exit code 2 in the CLI)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
