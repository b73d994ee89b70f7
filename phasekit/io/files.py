"""Output files: the one place that decides where phasekit writes and what it may delete.

``phasekit run``, ``analyze`` and ``boundary`` treat an output ``OUT`` alike:

- :func:`check_writable` runs before any work: a folder, a device or another
  non-regular file is refused as ``OUT``, a parent that is not a folder too,
  and a temporary file is created and removed in the target folder, so a
  read-only or missing location fails at once instead of after the computation.
- :class:`OutputLock` holds ``OUT.lock`` (``fcntl.flock``; the file names the
  holder's pid, host, start time and command) while a run writes ``OUT``.  A
  second run on the same output is refused, naming the first; the kernel drops
  the lock of a killed run, so its leftover lock file is simply taken over.
  The lock file is opened without following links; a link, a non-regular file
  or a file whose content phasekit did not write is refused and left alone.
  Once the lock is held, stale temporaries of ``OUT`` left by a killed run
  (:func:`clean_temporaries`) are removed.
- :func:`atomic_write` writes through a temporary file next to the target,
  ``fsync``, then a rename; the file gets the mode of the file it replaces, or
  ``0o666`` less the umask for a new file (as ``open`` would give it).
- :func:`create_owned_folder` makes a folder carrying a marker file
  (``.phasekit``), atomically with its first files, and :func:`remove_owned`
  deletes only the files phasekit names as its own, never a folder it did not
  make (:func:`is_owned`).

Files phasekit creates are created new (``O_EXCL``) and never through a link
(``O_NOFOLLOW``).  Temporary names are phasekit's own: ``.OUT.XXXXXXXX.part`` (a file being
written), ``.OUT.XXXXXXXX.probe`` (the writability probe) and
``.OUT.XXXXXXXX.new`` (a folder being created), with 8 characters from
``[a-z0-9_]``; only names of exactly that form next to ``OUT`` are ever
cleaned up, and a probe only once it is older than :data:`STALE_PROBE_S` (a
fresh one is another process's, about to remove it itself).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

from phasekit.errors import OutputError, fmt_bytes

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: outputs are not locked there
    fcntl = None

LOCK_SUFFIX = ".lock"
MARKER = ".phasekit"
MARKER_TEXT = "made by phasekit; phasekit deletes only its own files here\n"
TEMP_KINDS = ("part", "probe", "new")
#: A probe lives for microseconds; one older than this was left by a killed process.
STALE_PROBE_S = 60.0
#: bytes phasekit's longest own name adds to ``OUT``'s (``.OUT.parts.XXXXXXXX.new``)
NAME_ROOM = 20
#: flags of a file phasekit creates: new (never an existing file), not through a link
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


# -- names ------------------------------------------------------------------------------

def lock_path(path: Path) -> Path:
    return path.with_name(path.name + LOCK_SUFFIX)


def temp_name(path: Path, kind: str) -> Path:
    """A fresh temporary name next to ``path`` of one of :data:`TEMP_KINDS`."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


def temp_pattern(path: Path) -> re.Pattern:
    """The names of ``path``'s temporaries, and nothing else."""
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(?:{'|'.join(TEMP_KINDS)})")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def write_failure(path: Path, exc: BaseException) -> str:
    """Why writing ``path`` failed, with the free space where the disk is (nearly) full."""
    text = _reason(exc)
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and (full or free < 64 * 2 ** 20):
        text += f"; {fmt_bytes(free)} free on that disk"
    return text


# -- memory -----------------------------------------------------------------------------


# -- modes ------------------------------------------------------------------------------

def current_umask() -> int:
    """The process's umask (read from /proc where possible: ``os.umask`` sets it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(path: Path) -> int:
    """The mode ``path`` gets when written: that of the regular file it replaces, else
    ``0o666`` less the umask."""
    try:
        st = os.stat(path)
    except OSError:
        return 0o666 & ~current_umask()
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o666 & ~current_umask()


# -- checks before any work ---------------------------------------------------------------

def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` as the output to write, after checking it can be written (module docstring).

    A symbolic link is followed (its target is written).  Missing parent folders
    are created.  Raises :class:`OutputError` with the reason.
    """
    path = Path(path)
    try:
        return _check_writable(path, what)
    except OutputError:
        raise
    except OSError as exc:          # a name too long, a loop of links, no permission
        raise OutputError(f"cannot write {what} {str(path)[:80]}: {_reason(exc)}") from None


def _check_writable(path: Path, what: str) -> Path:
    if path.is_symlink():
        path = path.resolve()
    if path.name in ("", ".", "..") or path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name such as "
                          f"{path / 'sweep.nc'}")
    if os.path.lexists(path) and not path.is_file():
        raise OutputError(f"{what} {path} exists and is not a regular file; choose another -o")
    parent = path.parent
    ancestor = parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {what} {path}: {ancestor} is not a folder")
    if len(os.fsencode(path.name)) + NAME_ROOM > _name_max(ancestor):
        raise OutputError(f"{what} name {path.name[:40]}... is too long for its file system "
                          f"({len(os.fsencode(path.name))} bytes, at most "
                          f"{_name_max(ancestor) - NAME_ROOM}: phasekit's own names add "
                          f"{NAME_ROOM}); choose a shorter -o")
    probe = temp_name(path, "probe")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, _NEW_FILE, 0o600)
        os.close(fd)
        os.unlink(probe)           # only this process removes a fresh probe (clean_temporaries)
    except OSError as exc:
        raise OutputError(f"cannot write {what} {path}: cannot create a file in {parent} "
                          f"({_reason(exc)})") from None
    return path


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) in ``folder``'s file system."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


# -- writing ----------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None],
                 mode: int | None = None) -> Path:
    """Write ``path`` by ``write(tmp)`` into a temporary next to it, then rename.

    The temporary is ``fsync``-ed and given ``mode`` (default :func:`new_file_mode`)
    before the rename; it is removed whatever goes wrong (Ctrl-C included), so
    ``path`` is either the old file or the complete new one.
    """
    path = Path(path)
    tmp = temp_name(path, "part")
    fd = os.open(tmp, _NEW_FILE, 0o600)
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, new_file_mode(path) if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


# -- phasekit's own folders -----------------------------------------------------------------

def is_owned(folder: Path) -> bool:
    """Whether phasekit made ``folder`` (it holds the marker file)."""
    return (Path(folder) / MARKER).is_file()


def create_owned_folder(folder: Path, files: dict[str, str]) -> None:
    """Create ``folder`` with the marker and ``files`` (name -> text) in one rename, so
    a kill leaves either no folder or a complete one (and at most a stale temporary,
    which :func:`clean_temporaries` removes)."""
    folder = Path(folder)
    tmp = temp_name(folder, "new")
    tmp.mkdir(mode=0o777)
    try:
        (tmp / MARKER).write_text(MARKER_TEXT)
        for name, text in files.items():
            (tmp / name).write_text(text)
        os.replace(tmp, folder)
    except BaseException:
        _remove_tree_of_own(tmp, lambda name: True)
        raise


def remove_owned(folder: Path, own: Callable[[str], bool], keep_folder: bool = False) -> list[str]:
    """Delete the files of phasekit's ``folder`` for which ``own(name)`` holds (the marker
    too, unless ``keep_folder``), then the folder if it is empty.  Returns the names of
    the files it left (not phasekit's)."""
    folder = Path(folder)
    if not is_owned(folder):
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    left = []
    for entry in folder.iterdir():
        if entry.name == MARKER:
            continue
        if own(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
        else:
            left.append(entry.name)
    if not keep_folder and not left:
        (folder / MARKER).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:       # something appeared meanwhile: leave the folder
            pass
    return sorted(left)


def _remove_tree_of_own(folder: Path, own: Callable[[str], bool]) -> None:
    """Remove a temporary folder phasekit was creating (only plain files of its own)."""
    try:
        for entry in folder.iterdir():
            if (entry.name == MARKER or own(entry.name)) and entry.is_file() \
                    and not entry.is_symlink():
                entry.unlink(missing_ok=True)
        folder.rmdir()
    except OSError:
        pass


def clean_temporaries(path: Path, folder_files: Callable[[str], bool] = lambda n: False
                      ) -> list[Path]:
    """Remove ``path``'s stale temporaries (only names of :func:`temp_pattern`): files,
    and folders being created that hold only the marker and ``folder_files``.  Call
    only while holding ``path``'s :class:`OutputLock`.  Returns what was removed."""
    pattern = temp_pattern(path)
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name) or entry.is_symlink():
            continue
        if entry.is_file():
            if entry.name.endswith(".probe") and not _stale(entry):
                continue        # another process's probe, made before it took the lock
            entry.unlink(missing_ok=True)
            removed.append(entry)
        elif entry.is_dir() and all(e.name == MARKER or folder_files(e.name)
                                    for e in entry.iterdir()):
            _remove_tree_of_own(entry, folder_files)
            removed.append(entry)
    return removed


def _stale(entry: Path) -> bool:
    try:
        return time.time() - entry.stat().st_mtime > STALE_PROBE_S
    except OSError:
        return False


# -- the lock --------------------------------------------------------------------------------

def _holder_info(text: str) -> dict | None:
    """The lock file's content as phasekit writes it (pid, host, ...), else ``None``."""
    try:
        info = json.loads(text)
        return info if isinstance(info, dict) and int(info["pid"]) > 0 and "host" in info \
            else None
    except (ValueError, KeyError, TypeError):
        return None


def describe_holder(text: str) -> str:
    """The lock file's content as words: pid, host, start time, command."""
    info = _holder_info(text)
    if info is None:
        return "another process; its lock file gives no details"
    parts = [f"pid {int(info['pid'])} on {info['host']}"]
    if info.get("started"):
        parts.append(f"started {info['started']}")
    if info.get("command"):
        parts.append(f"command: {info['command']}")
    return ", ".join(parts)


_LOCK_FLAGS = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))


class OutputLock:
    """``OUT.lock``: one phasekit process writes ``OUT`` at a time (module docstring).

    Re-entrant within a process (``cmd_run`` and :func:`~phasekit.runner.execute` both
    take it).  A live holder makes :meth:`acquire` raise :class:`OutputError` naming it.
    """

    _held: dict[str, list] = {}          # lock file -> [count, fd]

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.file = lock_path(self.path)
        self._key = os.path.abspath(self.file)

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _info(self) -> bytes:
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""
        return json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command[:300]}).encode()

    def _refuse(self, holder_text: str):
        raise OutputError(f"{self.path} is being written by another phasekit run "
                          f"({describe_holder(holder_text)}); wait for it to finish or "
                          f"choose another -o (its lock: {self.file})")

    def acquire(self) -> None:
        held = self._held.get(self._key)
        if held is not None:
            held[0] += 1
            return
        if fcntl is None:       # no flock (Windows): outputs are not locked there
            self._held[self._key] = [1, None]
            return
        try:
            fd = self._lock_flock()
        except OSError as exc:
            raise OutputError(f"cannot lock output {self.path}: cannot create {self.file} "
                              f"({_reason(exc)})") from None
        self._held[self._key] = [1, fd]
        clean_temporaries(self.path)

    def _open_lock_file(self) -> int:
        """``OUT.lock`` opened (created if missing) without following a link; a link or
        anything but a regular file is refused, never written through."""
        try:
            fd = os.open(self.file, _LOCK_FLAGS, 0o666)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            fd = None
        if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        if fd is not None:
            os.close(fd)
        raise OutputError(f"{self.file} exists and is not a regular file (a symbolic link, "
                          f"say); phasekit writes its lock only into a file of its own: "
                          f"remove it or choose another -o")

    def _lock_flock(self) -> int:
        for _ in range(20):
            fd = self._open_lock_file()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                self._refuse(text)
            text = os.pread(fd, 4096, 0).decode(errors="replace")
            if text.strip() and _holder_info(text) is None:
                os.close(fd)
                raise OutputError(f"{self.file} exists but was not written by phasekit; "
                                  f"phasekit keeps its lock there and will not replace it: "
                                  f"move it away or choose another -o")
            # The previous holder may have unlinked the file between our open and flock:
            # then we hold a lock on a file nobody else can see; start again.
            try:
                st, mine = os.stat(self.file), os.fstat(fd)
                same = (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, self._info(), 0)
                return fd
            os.close(fd)
        raise OutputError(f"cannot lock output {self.path}: {self.file} keeps changing")

    def release(self) -> None:
        held = self._held.get(self._key)
        if held is None:
            return
        held[0] -= 1
        if held[0] > 0:
            return
        del self._held[self._key]
        if held[1] is None:
            return
        try:
            self.file.unlink(missing_ok=True)     # while still locked: see _lock_flock
        finally:
            os.close(held[1])


def lock_holder(path: Path) -> str | None:
    """Who holds ``path``'s lock now (words), or ``None``."""
    file = lock_path(Path(path))
    if fcntl is None or not file.exists():
        return None
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return describe_holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
