"""Atomic writes: a file or a directory appears at its path whole, or not at all.

Every write goes to a temporary beside its target (same directory, so the same filesystem;
:mod:`arlm.runtime.partial_files` names it and removes those of writers that died), is fsynced,
and is renamed into place; the directory is fsynced after the rename. On any error (a full disk
included) the temporary is removed and the target is as it was; a write stopped by Ctrl+C /
SIGINT says so (:class:`WriteInterrupted`) instead of blaming the directory.

* :func:`write_file_atomically`: bytes, text or a callback writing into a binary file.
* :func:`write_directory_atomically`: a callback fills a new staging directory, which is
  renamed into place. A target that exists and is not an empty directory is refused unless ``replace``
  is asked, and the refusal holds at the moment of the rename: of two writers racing into one
  new directory exactly one succeeds, the other gets :class:`TargetExistsError`. ``replace``
  swaps the new directory in atomically (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two
  renames) and deletes only the target it replaced.

What is created gets the permissions a plain ``open()`` / ``mkdir`` would get under the umask
(``tempfile.mkstemp``/``mkdtemp`` would give 0600/0700, safetensors 0.8 gives its files 0600).
This module imports neither torch, Lightning, Hydra nor xLM, so the Hugging Face exporter uses it
without xlm-core installed.
"""

import ctypes
import errno
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional, Union

from arlm.runtime.partial_files import discard, remove_dead_writers_temporaries, temporary_path

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

FileContent = Union[bytes, str, Callable[[BinaryIO], None]]


class AtomicWriteError(OSError):
    """Writing ``path`` failed with ``reason``; the temporary was removed, ``path`` is as it was.

    ``errno`` is the reason's; :attr:`no_space` says whether the filesystem (or quota) was full.
    """

    def __init__(self, message: str, path: Path, reason: BaseException):
        super().__init__(message)
        self.path = path
        self.reason = reason
        self.errno = getattr(reason, "errno", None)

    @property
    def no_space(self) -> bool:
        return is_no_space(self.reason)


class WriteInterrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` (Ctrl+C / SIGINT) stopped the write of ``path``; the temporary was
    removed and ``path`` is as it was. Being a ``KeyboardInterrupt``, it stops the program as the
    interrupt would have (Lightning's graceful shutdown, Python's exit)."""

    def __init__(self, path: Path):
        super().__init__(
            f"Writing {path} was interrupted (Ctrl+C / SIGINT): the partial copy was removed and {path} "
            f"is as it was (its previous version, if there was one)"
        )
        self.path = path


class TargetExistsError(FileExistsError):
    """The target directory exists and is not empty (or is not a directory) and ``replace`` was
    not asked. ``kind`` says what is there; ``while_writing`` is True when it appeared after this
    write began (another writer finished first: its directory was kept, this one discarded)."""

    def __init__(self, target: Path, kind: str, while_writing: bool):
        when = " (another writer finished it while this one was writing; this copy was discarded)" if while_writing else ""
        super().__init__(f"{target} {kind}{when}. Fix: write to a new or empty directory, or ask to replace it")
        self.target = target
        self.kind = kind
        self.while_writing = while_writing


def _chain(error: Optional[BaseException]) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from or while handling, each once."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def underlying_os_error(error: BaseException) -> Optional[OSError]:
    """``error`` if it is an ``OSError``, else the first one it was raised from or while handling
    (``torch.save`` turns a failed ``write`` into a ``RuntimeError`` raised during the ``OSError``)."""
    return next((cause for cause in _chain(error) if isinstance(cause, OSError)), None)


def was_interrupted(error: BaseException) -> bool:
    """True when ``error`` is, or was raised from or while handling, a ``KeyboardInterrupt``
    (``torch.save`` turns one raised inside its ``write`` calls into a ``RuntimeError``)."""
    return any(isinstance(cause, KeyboardInterrupt) for cause in _chain(error))


def is_no_space(error: BaseException) -> bool:
    """True for a full filesystem or quota (``ENOSPC``/``EDQUOT``) behind ``error``."""
    os_error = underlying_os_error(error)
    return (os_error is not None and os_error.errno in NO_SPACE_ERRNOS) or "No space left" in str(error)


def occupant(target: Path) -> Optional[str]:
    """What keeps ``target`` from being written without replacing: ``"is an existing file"``,
    ``"is a symbolic link"``, ``"directory is not empty"``, or None (absent or an empty directory)."""
    if target.is_symlink():
        return "is a symbolic link"
    if not target.exists():
        return None
    if not target.is_dir():
        return "is an existing file"
    with os.scandir(target) as entries:
        return "directory is not empty" if any(True for _ in entries) else None


def write_file_atomically(path: Union[str, Path], content: FileContent) -> None:
    """Write ``content`` (bytes, text as UTF-8, or ``callback(binary file)``) to ``path`` atomically.

    Raises:
        AtomicWriteError: an ``OSError`` while writing (full disk, no permission, ``path`` is a
            directory), also one raised inside ``content`` under another error (see
            :func:`underlying_os_error`); it names ``path`` and the fix.
        WriteInterrupted: Ctrl+C / SIGINT stopped the write (:func:`was_interrupted`). Other
            errors propagate as they are. In all cases nothing is left but the old ``path``, if any.
    """
    path = Path(path)
    _make_parent(path)
    remove_dead_writers_temporaries(path.parent)
    tmp = temporary_path(path)
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        discard(tmp)
        _raise_write_failure(path, error)
    _fsync_directory(path.parent)


def write_directory_atomically(
    target: Union[str, Path], write: Callable[[Path], None], replace: bool = False
) -> None:
    """Run ``write(staging)`` to fill the new, empty directory ``staging``, then put it at ``target``.

    Without ``replace``, ``target`` must be absent or an empty directory, when this is called and
    when the staging directory is renamed onto it. With ``replace``, whatever is at ``target`` (a
    directory, a file, a symbolic link: the link, never what it points to) is swapped out and
    deleted; nothing else is. Whatever ``write`` creates gets the permissions of a plain
    ``open()`` / ``mkdir`` under the umask (some writers, e.g. safetensors 0.8, make 0600 files).

    Raises:
        TargetExistsError: ``target`` is taken and ``replace`` is False (checked before ``write``
            runs and again at the rename).
        AtomicWriteError: an ``OSError`` while writing (as for :func:`write_file_atomically`);
            it names ``target`` and the fix.
    """
    target = Path(target)
    _make_parent(target)
    remove_dead_writers_temporaries(target.parent)
    if not replace and occupant(target) is not None:
        raise TargetExistsError(target, occupant(target), while_writing=False)
    staging = temporary_path(target)
    try:
        os.mkdir(staging, 0o777)
        directory_mode = stat.S_IMODE(staging.stat().st_mode)
        write(staging)
        _give_plain_permissions(staging, directory_mode)
        _fsync_tree(staging)
        _put_in_place(staging, target, replace)
    except TargetExistsError:
        discard(staging)
        raise
    except BaseException as error:
        discard(staging)
        _raise_write_failure(target, error)
    _fsync_directory(target.parent)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(path, error) from error


def _raise_write_failure(path: Path, error: BaseException) -> None:
    """Re-raise ``error`` (the temporary already removed) as :class:`WriteInterrupted` when an
    interrupt caused it, as :class:`AtomicWriteError` when an ``OSError`` did, else as it is."""
    if was_interrupted(error):
        raise WriteInterrupted(path) from error
    reason = underlying_os_error(error) if isinstance(error, Exception) else None
    if reason is not None:
        raise _write_error(path, reason) from error
    raise error


def _write_error(path: Path, error: OSError) -> AtomicWriteError:
    if is_no_space(error):
        fix = f"free space on the filesystem of {path.parent}, or write to another filesystem with room"
    else:
        fix = f"make {path.parent} a writable directory in which {path.name} can be written"
    return AtomicWriteError(
        f"Could not write {path}: {error}. The partial copy was removed and {path} is as it was. Fix: {fix}",
        path,
        error,
    )


def _put_in_place(staging: Path, target: Path, replace: bool) -> None:
    if replace and (target.exists() or target.is_symlink()):
        _swap_into_place(staging, target)
        return
    try:
        _rename_onto_new(staging, target)
    except TargetExistsError:
        if not replace:
            raise
        _swap_into_place(staging, target)


def _rename_onto_new(staging: Path, target: Path) -> None:
    """``rename(2)`` of a directory succeeds onto an absent path or an empty directory and fails
    onto anything else, atomically: the emptiness check holds at the rename itself."""
    try:
        os.rename(staging, target)
    except OSError as error:
        kind = occupant(target)
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR) and kind is not None:
            raise TargetExistsError(target, kind, while_writing=True) from None
        raise


def _swap_into_place(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target`` and delete what was there (``staging`` ends up removed)."""
    if _exchange(staging, target):
        discard(staging)
        return
    aside = temporary_path(target)
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)
        raise
    discard(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    platform or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _give_plain_permissions(root: Path, directory_mode: int) -> None:
    """``chmod`` the directories under ``root`` to ``directory_mode`` (what ``mkdir`` gave
    ``root``: ``0o777 & ~umask``, plus a setgid bit inherited from its parent) and the files to
    what ``open()`` gives (``0o666 & ~umask``; executable files ``0o777 & ~umask``). A filesystem
    that refuses ``chmod`` keeps the writer's modes."""
    modes = {False: directory_mode & 0o666, True: directory_mode & 0o777}
    try:
        for directory, _, files in os.walk(root):
            os.chmod(directory, directory_mode)
            for name in files:
                path = os.path.join(directory, name)
                if not os.path.islink(path):
                    os.chmod(path, modes[bool(os.stat(path).st_mode & 0o111)])
    except PermissionError:
        pass


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            file_path = os.path.join(directory, name)
            if not os.path.islink(file_path):
                fd = os.open(file_path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_directory(Path(directory))


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; some filesystems cannot fsync a directory, which is no error."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
