"""Which exceptions are the user's to fix (printed as one line by the CLI) and which are bugs (traceback)."""
from __future__ import annotations


def user_error_types() -> tuple[type, ...]:
    from .config import SettingError
    from .data.io import DataError
    from .models import WeightsUnavailable
    from .rundir import RunBusy, RunConflict
    from .splits import SplitError

    types = [DataError, SplitError, SettingError, RunBusy, RunConflict, WeightsUnavailable, FileNotFoundError]
    try:
        from .appg.gdino_sam import ModelNotFound

        types.append(ModelNotFound)
    except ImportError:
        pass
    return tuple(types)


def closest(name: str, choices) -> str | None:
    """The choice nearest to a mistyped ``name`` (difflib), or None: the "did you mean" of every one-line error."""
    import difflib

    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return close[0] if close else None


def is_user_error(e: BaseException) -> bool:
    """Errors whose message names the problem and the fix: bad data, splits, settings, run folders, missing
    weights, and plain ValueErrors raised by busnb's own checks."""
    if isinstance(e, user_error_types()):
        return True
    if type(e) is ValueError:
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return tb is not None and "/busnb/" in tb.tb_frame.f_code.co_filename.replace("\\", "/")
    return False
