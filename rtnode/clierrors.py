"""One error boundary for every ``rtnode`` command, and the check that a file given for a DICOM
option is that kind of object.

Input a person has to fix — a mistyped path, a folder where a file belongs, a file that is not
DICOM, an RTDOSE given as ``--rtplan``, DICOM content a stage refuses — ends in one line on
standard error naming the file and the problem, and exit code 2; never a traceback. Errors of
another kind are bugs and keep their traceback; so do input errors when RTNODE_TRACEBACK=1 is
set (to see where one came from).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import typer
from pydicom.errors import InvalidDicomError

#: exceptions that mean "the input is wrong", not "the program is wrong"
INPUT_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, InvalidDicomError)


def describe(exc: BaseException) -> str:
    """One line: the file and the problem."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with known input errors turned into one line and exit code 2."""
    if getattr(fn, "__rtnode_guarded__", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except INPUT_ERRORS as exc:
            if os.environ.get("RTNODE_TRACEBACK") == "1":
                raise
            sys.stderr.write(f"error: {describe(exc)}\n")
            raise typer.Exit(2) from None

    wrapper.__rtnode_guarded__ = True  # type: ignore[attr-defined]
    return wrapper


def guard_commands(app: typer.Typer) -> None:
    """Put every command of ``app`` and of its sub-command groups behind the boundary."""
    for command in app.registered_commands:
        if command.callback is not None:
            command.callback = guarded(command.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_commands(group.typer_instance)


def check_dicom_file(path: Path, modality: str, option: str) -> None:
    """Raise ValueError naming ``option`` and ``path`` unless it is a readable DICOM file of
    ``modality``."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{option} {path}: no such file")
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder, a {modality} file is expected")
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{option} {path}: not a DICOM file ({describe(exc)})") from None
    found = str(getattr(ds, "Modality", "") or "")
    if found != modality:
        raise ValueError(f"{option} {path} is {'an' if found[:1] in 'AEIMOR' else 'a'} "
                         f"{found or 'object without Modality'}, not {modality}")


def check_folder(path: Path, what: str) -> None:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} {path}: no such folder")
    if not path.is_dir():
        raise ValueError(f"{what} {path}: is a file, a folder is expected")


def dicom_options(folders: tuple[str, ...] = (),
                  **expected: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command so that each keyword parameter named in ``folders`` is an existing
    folder, and each named in ``expected`` (a path or a list of paths) a DICOM file of that
    modality, before the command runs."""
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for name in folders:
                if kwargs.get(name) is not None:
                    check_folder(kwargs[name], name.upper())
            for name, modality in expected.items():
                given = kwargs.get(name)
                for p in (given if isinstance(given, (list, tuple)) else [given]):
                    if p is not None:
                        check_dicom_file(p, modality, "--" + name.replace("_", "-"))
            return fn(*args, **kwargs)
        return wrapper
    return decorate
