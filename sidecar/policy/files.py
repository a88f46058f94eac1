"""Read a policy directory as hostile input: nothing outside it, nothing that can block.

Whoever can drop a file into the policy directory (a ConfigMap, a shared volume, a
careless `ln -s`) must not be able to make the sidecar read `/etc/shadow` and echo it in
an error, hang on a FIFO, or swell its memory with a 10 GB file. So the directory is
never read through the kernel's path resolution:

- every entry is looked at with `lstat` relative to an open directory descriptor, and
  opened with `O_NOFOLLOW | O_NONBLOCK` (a FIFO never blocks the open), then checked
  again with `fstat` on what was actually opened (same inode, a regular file);
- a symbolic link is followed only by this module, one component at a time, and only
  when its target is relative and stays inside the policy directory. That is the one
  layout that needs links: a Kubernetes ConfigMap volume (`default.yaml → ..data/
  default.yaml`, `..data → ..2024_…`). An absolute target, a target that climbs out with
  `..`, a dangling link or a chain of more than `MAX_LINK_HOPS` links is refused;
- only regular files and directories are accepted; FIFOs, sockets and devices are
  refused by name and kind;
- names starting with `.` are skipped (editor swap files, a ConfigMap's own internals),
  directory loops are cut by (device, inode), and the number of files, their sizes and
  the nesting depth are bounded before anything is parsed.

Every refusal is a `PolicyIssue` naming the file as the operator knows it (its path
relative to the policy directory, through links) and the reason; never its content.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import signal
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from sidecar.errors import PolicyError, PolicyIssue
from sidecar.wellformed import has_surrogates

try:
    import fcntl
except ImportError:  # not POSIX: whether a file is still being written cannot be told
    fcntl = None  # type: ignore[assignment]

MAX_TREE_FILES = 2000
# A policy file is refused above 4 MiB (loader) and a schema file above 4 MiB (schema
# stage); all files together stay below this, so one reload never holds more.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_TREE_BYTES = 32 * 1024 * 1024
MAX_DIRECTORY_DEPTH = 8
MAX_LINK_HOPS = 16

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class File:
    name: str  # relative to the policy directory, "/"-separated, as the operator sees it
    data: bytes
    mode: int  # st_mode of what was read (world-writable files are refused by the loader)


@dataclass(frozen=True)
class Tree:
    """What a policy directory held, read once, safely; what compiles and what is hashed."""

    files: tuple[File, ...]
    # No link was followed: the directory on disk holds exactly these files at these
    # names, so it can be compiled in place.
    plain: bool

    def digest(self) -> str:
        digest = hashlib.sha256()
        for item in self.files:
            digest.update(f"{item.name}\0{item.mode & 0o7777}\0{len(item.data)}\0".encode())
            digest.update(item.data)
        return digest.hexdigest()

    def write(self, target: Path) -> None:
        """Materialise the tree as plain files under `target` (modes kept)."""
        target.mkdir(parents=True, exist_ok=True)
        for item in self.files:
            path = target / item.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(item.data)
            os.chmod(path, item.mode & 0o777)


# One entry of a cheap scan: (name, size, mtime_ns, mode, inode), or (name, reason) for
# an entry that would be refused. Equal scans mean nothing worth reloading changed.
ScanEntry = tuple[str, int, int, int, int] | tuple[str, str]


class StillWriting(Exception):
    """A file of the directory is still open for writing: read it again later."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


def read_tree(root: Path, *, settled: bool = False) -> Tree:
    """Every regular file under `root`, read safely; PolicyError lists every refusal.

    With `settled`, StillWriting is raised instead when a file is still open for
    writing by any process (see `open_for_writing`): what it holds so far may be a valid
    but truncated policy, looser than the one serving."""
    walker = _Walker(root, contents=True, settled=settled)
    walker.run()
    if walker.issues:
        raise PolicyError(walker.issues)
    if walker.writing:
        raise StillWriting(walker.writing)
    return Tree(tuple(walker.files), walker.plain)


def open_for_writing(fd: int) -> bool:
    """Whether any process has the file of `fd` (opened O_RDONLY) open for writing.

    A writer that pauses longer than the watcher's debounce leaves a file that parses
    (everything up to `pii:`) and would apply. Linux tells: a read lease (F_SETLEASE
    F_RDLCK) is refused with EAGAIN while the file is open for writing anywhere; it is
    released at once. Any other refusal (not the file's owner without CAP_LEASE, a
    filesystem without leases, not Linux) means we cannot tell, and the file is read as
    before. While the lease is held, a writer opening the file makes the kernel signal
    us: F_SETSIG makes that SIGURG, which is ignored by default, rather than SIGIO,
    which would end the process."""
    setlease = getattr(fcntl, "F_SETLEASE", None) if fcntl is not None else None
    setsig = getattr(fcntl, "F_SETSIG", None) if fcntl is not None else None
    if fcntl is None or setlease is None or setsig is None:
        return False
    try:
        fcntl.fcntl(fd, setsig, signal.SIGURG)
        fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
    except OSError as err:
        return err.errno == errno.EAGAIN
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
    return False


def scan(root: Path) -> tuple[ScanEntry, ...]:
    """What `read_tree` would read, by metadata only: cheap enough to poll."""
    walker = _Walker(root, contents=False)
    walker.run()
    return (*walker.entries, *((issue.file, issue.reason) for issue in walker.issues))


def located(issues: list[PolicyIssue], directory: Path) -> list[PolicyIssue]:
    """Issues with their files named under `directory` (as given on the command line)
    rather than relative to it: for messages printed to the operator who gave it."""
    def where(file: str) -> str:
        if file in ("", "."):
            return str(directory)
        if Path(file).is_absolute() or file == str(directory):
            return file
        return str(directory / file)

    return [dataclasses.replace(issue, file=where(issue.file)) for issue in issues]


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _printable(name: str) -> str:
    """A file name as text any log or terminal takes: stray bytes as `\\xff`."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "is a symbolic link that changed while it was read"
    return f"cannot read: {err.strerror or os.strerror(err.errno or 0)}"


class _Walker:
    def __init__(self, root: Path, *, contents: bool, settled: bool = False) -> None:
        self.root = root
        self.contents = contents
        self.settled = settled
        self.writing: list[str] = []  # files still open for writing (with `settled`)
        self.files: list[File] = []
        self.entries: list[ScanEntry] = []
        self.issues: list[PolicyIssue] = []
        self.plain = True
        self.total = 0
        self.count = 0

    def run(self) -> None:
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            self.issues.append(PolicyIssue(str(self.root), "", "policy directory does not "
                                                               "exist"))
            return
        except NotADirectoryError:
            self.issues.append(PolicyIssue(str(self.root), "", "not a directory"))
            return
        except OSError as err:
            self.issues.append(PolicyIssue(str(self.root), "", _os_reason(err)))
            return
        try:
            self.root_fd = root_fd
            info = os.fstat(root_fd)
            self._walk([], "", {(info.st_dev, info.st_ino)}, 0)
        finally:
            os.close(root_fd)

    # -- resolution beneath the root ------------------------------------------------

    def _open_dir(self, where: list[str]) -> int:
        """A descriptor for the real directory `where` (names from the root, no links)."""
        fd = os.dup(self.root_fd)
        try:
            for name in where:
                child = os.open(name, _DIRECTORY_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _resolve(self, where: list[str], name: str) -> tuple[list[str], os.stat_result]:
        """Follow `name` from directory `where` as the kernel would, but never out of the
        root: returns the real location (names from the root) and its lstat."""
        current = list(where)
        pending = deque([name])
        hops = 0
        info: os.stat_result | None = None
        while pending:
            part = pending.popleft()
            if part in ("", "."):
                continue
            if part == "..":
                if not current:
                    raise _Refused("is a symbolic link to a path outside the policy "
                                   "directory")
                current.pop()
                info = None
                continue
            fd = self._open_dir(current)
            try:
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(info.st_mode):
                    hops += 1
                    if hops > MAX_LINK_HOPS:
                        raise _Refused(f"more than {MAX_LINK_HOPS} symbolic links in a row")
                    target = os.readlink(part, dir_fd=fd)
                    if target.startswith("/"):
                        raise _Refused("is a symbolic link to an absolute path; only "
                                       "relative links that stay inside the policy "
                                       "directory are followed")
                    self.plain = False
                    pending.extendleft(reversed(target.split("/")))
                    info = None
                    continue
            finally:
                os.close(fd)
            if pending and not stat.S_ISDIR(info.st_mode):
                raise _Refused("is a symbolic link through something that is not a "
                               "directory")
            current.append(part)
        if info is None:  # ended on "." or "..": the directory itself
            fd = self._open_dir(current)
            try:
                info = os.fstat(fd)
            finally:
                os.close(fd)
        return current, info

    # -- the walk -------------------------------------------------------------------

    def _walk(self, where: list[str], shown: str, seen: set[tuple[int, int]],
              depth: int) -> None:
        fd = self._open_dir(where)
        try:
            names = sorted(entry.name for entry in os.scandir(fd))
        except OSError as err:
            self.issues.append(PolicyIssue(shown or str(self.root), "", _os_reason(err)))
            return
        finally:
            os.close(fd)
        for name in names:
            if name.startswith("."):
                continue
            display = f"{shown}/{name}" if shown else name
            if has_surrogates(name):  # os.scandir decodes a name's stray bytes to surrogates
                self.issues.append(PolicyIssue(
                    _printable(display), "", "its name is not valid UTF-8; rename or remove "
                    "it (every file here is hashed into the policy revision)"))
                continue
            try:
                real, info = self._resolve(where, name)
                if stat.S_ISDIR(info.st_mode):
                    key = (info.st_dev, info.st_ino)
                    if key in seen:
                        raise _Refused("is a link back to a directory above it (a loop)")
                    if depth + 1 > MAX_DIRECTORY_DEPTH:
                        raise _Refused(f"directories nested deeper than "
                                       f"{MAX_DIRECTORY_DEPTH}")
                    self._walk(real, display, seen | {key}, depth + 1)
                    continue
                if not stat.S_ISREG(info.st_mode):
                    raise _Refused(f"is {_kind(info.st_mode)}, not a regular file")
                self.count += 1
                if self.count > MAX_TREE_FILES:
                    raise _Refused(f"more than {MAX_TREE_FILES} files in the policy "
                                   "directory")
                if info.st_size > MAX_FILE_BYTES:
                    raise _Refused(f"file is larger than {MAX_FILE_BYTES} bytes")
                if self.contents:
                    self._read(real, info, display)
                else:
                    self.entries.append((display, info.st_size, info.st_mtime_ns,
                                         info.st_mode, info.st_ino))
            except _Refused as refused:
                self.issues.append(PolicyIssue(display, "", refused.reason))
                if self.count > MAX_TREE_FILES:
                    return
            except OSError as err:
                self.issues.append(PolicyIssue(display, "", _os_reason(err)))

    def _read(self, real: list[str], info: os.stat_result, display: str) -> None:
        parent = self._open_dir(real[:-1])
        try:
            fd = os.open(real[-1], _FILE_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino) \
                    or not stat.S_ISREG(opened.st_mode):
                raise _Refused("changed while it was read; it is read again on the next "
                               "change")
            if self.settled and open_for_writing(fd):
                self.writing.append(display)
                return
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise _Refused(f"file is larger than {MAX_FILE_BYTES} bytes")
                chunks.append(chunk)
        finally:
            os.close(fd)
        self.total += size
        if self.total > MAX_TREE_BYTES:
            raise _Refused(f"the policy directory holds more than {MAX_TREE_BYTES} bytes")
        self.files.append(File(display, b"".join(chunks), opened.st_mode))
