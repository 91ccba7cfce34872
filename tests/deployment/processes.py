"""
Child processes of the deployment: each in a process group of its own, stopped by pid, and what they
listen on.

Each process is the leader of a new session, so signalling its process group reaches what it starts
there (the scheduler's executor workers, the triggerer's trigger runner) and nothing else; task
processes, which Airflow's supervisor puts in process groups of their own, are found through their
parents. Linux's ``PR_SET_PDEATHSIG`` stops a leader whose test process died without tearing down.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import subprocess
import sys
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

# prctl(2) option: the signal the kernel sends a process when its parent dies.
PR_SET_PDEATHSIG = 1
STOP_SECONDS = 20.0
LOG_TAIL_LINES = 30
# /proc/net/tcp state of a listening socket.
TCP_LISTEN = "0A"


@dataclass
class ManagedProcess:
    """
    A process the deployment started, with its log.

    :param name: a short name for reports, e.g. ``scheduler``.
    :param command: the command line.
    :param log_path: the file its stdout and stderr go to.
    :param popen: the running process.
    :param killed_on_purpose: a test killed it; its exit is no failure of the deployment.
    """

    name: str
    command: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] = field(repr=False)
    killed_on_purpose: bool = False

    @property
    def pid(self) -> int:
        """The leader's pid, which is also its process group id."""
        return self.popen.pid

    def exited(self) -> bool:
        """Whether the leader has exited."""
        return self.popen.poll() is not None

    def describe(self) -> str:
        """One line for failure messages: name, pid, state and log."""
        state = "running" if not self.exited() else f"exited with {self.popen.returncode}"
        return f"{self.name} (pid {self.pid}, {state}): {self.log_path}"


def start_process(
    name: str, command: list[str], env: dict[str, str], log_path: Path, cwd: Path
) -> ManagedProcess:
    """
    Start ``command`` as the leader of a new session, its output appended to ``log_path``.

    :param name: a short name for reports.
    :param command: the command line.
    :param env: the whole environment of the process.
    :param log_path: where its stdout and stderr go.
    :param cwd: its working directory.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_terminate_with_parent if sys.platform == "linux" else None,
        )
    return ManagedProcess(name=name, command=command, log_path=log_path, popen=popen)


def _terminate_with_parent() -> None:
    """In the child, before ``exec``: have Linux send SIGTERM if the test process dies first."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process(process: ManagedProcess, timeout: float = STOP_SECONDS) -> None:
    """
    Stop a process and all it started: SIGTERM to its group, then SIGKILL to whatever is left after
    ``timeout``, in its group or not (task processes have groups of their own).

    :param process: the process to stop.
    :param timeout: seconds to wait after SIGTERM.
    """
    started = {pid: command_line(pid) for pid in descendants(process) if pid != process.pid}
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.popen.wait(timeout=timeout)
    kill_group(process)
    for pid, command in started.items():
        # Only the very process seen before: its pid may since have been given to another.
        if command and command_line(pid) == command:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.popen.wait(timeout=timeout)


def kill_group(process: ManagedProcess) -> None:
    """
    SIGKILL every process of ``process``'s group at once, as a crash of the machine it runs on would.

    :param process: the group leader.
    """
    process.killed_on_purpose = True
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def descendants(process: ManagedProcess) -> list[int]:
    """
    The pids of ``process`` and of every live process it started, directly or not, whatever their group:
    a task process, say, that a worker's supervisor forked into a process group of its own.

    :param process: the process.
    """
    parents: dict[int, int] = {}
    groups: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)], groups[int(entry.name)] = stat
    found = {pid for pid, group in groups.items() if group == process.pid}
    if process.pid in parents:
        found.add(process.pid)
    while True:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        if not children:
            return sorted(found)
        found |= children


def _stat(pid: int) -> tuple[int, int] | None:
    """A process's parent pid and process group, or ``None`` once it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces; fields after it are plain.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2])


def command_line(pid: int) -> str:
    """
    A process's command line (its title, for processes that set one), or "" once it has gone.

    :param pid: the process.
    """
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@dataclass(frozen=True)
class ListeningSocket:
    """
    A TCP socket in the LISTEN state, and the process that holds it.

    :param pid: the holder.
    :param process: the holder's command line.
    :param address: the local address it is bound to.
    :param port: the local port.
    """

    pid: int
    process: str
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect to it."""
        address = ipaddress.ip_address(self.address)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback

    def __str__(self) -> str:
        return f"{self.address}:{self.port} held by pid {self.pid} ({self.process})"


def listening_sockets(pids: list[int]) -> list[ListeningSocket]:
    """
    Every TCP socket that the given processes listen on, read from ``/proc`` (no ``ss`` or ``lsof`` needed).

    :param pids: the processes to inspect.
    """
    listening = _listening_inodes()
    found = []
    for pid in pids:
        for inode in _socket_inodes(pid):
            if inode in listening:
                address, port = listening[inode]
                found.append(ListeningSocket(pid, command_line(pid), address, port))
    return found


def _listening_inodes() -> dict[str, tuple[str, int]]:
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == TCP_LISTEN:
                    inodes[fields[9]] = _decode_address(fields[1])
    return inodes


def _decode_address(hex_address: str) -> tuple[str, int]:
    # The kernel prints each 32-bit word of the address in host byte order (little-endian here).
    host, port = hex_address.split(":")
    raw = b"".join(bytes.fromhex(host[i : i + 8])[::-1] for i in range(0, len(host), 8))
    return str(ipaddress.ip_address(raw)), int(port, 16)


def _socket_inodes(pid: int) -> list[str]:
    inodes = []
    with suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.append(target[len("socket:[") : -1])
    return inodes


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """
    The last lines of a log, for failure messages.

    :param path: the log file.
    :param lines: how many lines.
    """
    if not path.exists():
        return "(no log yet)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
