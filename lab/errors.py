"""The errors services raise; each API maps them to an HTTP status with a `detail`."""


class ApplicationError(Exception):
    status_code = 400

    def __init__(self, detail: str | list | dict):
        super().__init__(detail)
        self.detail = detail


class BadRequest(ApplicationError):
    status_code = 400


class NotFound(ApplicationError):
    status_code = 404


class Conflict(ApplicationError):
    status_code = 409


class PayloadTooLarge(ApplicationError):
    status_code = 413


class Unprocessable(ApplicationError):
    status_code = 422


class ServiceUnavailable(ApplicationError):
    status_code = 503


class Forbidden(ApplicationError):
    status_code = 403


class Gone(ApplicationError):
    status_code = 410
