"""Which process is which: a pid plus its start time, so the app only ever signals processes it started.

A pid alone names whatever process holds that number now: after the job ends (or the machine
restarts) the number is reused, and a job.json can be planted by anyone. So at launch the app
records `start_token(pid)`, a string that differs for every process that ever had that pid, and
later acts on a pid only when the live process there still has that token.

Each token holds the pid, so a token copied from one process never matches another.

    Linux        /proc/<pid>/stat field 22 (start time in clock ticks since boot) + the boot id
    Windows      the creation time from GetProcessTimes
    macOS, BSD   `ps -o lstart=` (start time to the second; no new dependency)
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

STILL_ACTIVE = 259  # Windows GetExitCodeProcess: the process has not exited


def start_token(pid: object) -> str | None:
    """What identifies the live process `pid` for its whole life; None if there is none (or a zombie)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return None  # 0, -1 and 1 mean "my group", "everyone" or init to kill(): never a job
    if os.name == "nt":
        return _windows_token(pid)
    if Path("/proc/self/stat").exists():
        return _linux_token(pid)
    return _ps_token(pid)


def is_process(pid: object, token: object) -> bool:
    """Is the live process at `pid` the one recorded (at launch) with `token`?"""
    return bool(token) and isinstance(token, str) and start_token(pid) == token


def kill_tree(pid: int, token: str | None) -> bool:
    """Kill the process started with `token` and its process group (Windows: its tree), only if it is still that
    process. Returns whether a kill was sent."""
    if not is_process(pid, token):
        return False
    try:
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
        else:
            os.killpg(pid, signal.SIGKILL)  # jobs start in their own session: the group id is the pid
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


def _linux_token(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": field 3 (state) onwards
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None  # exited, not yet reaped
    return f"linux:{_boot_id()}:{pid}:{fields[19]}"  # field 22: starttime


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _ps_token(pid: int) -> str | None:
    try:
        out = subprocess.run(["ps", "-o", "stat=", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True,
                             check=False, timeout=10, env=dict(os.environ, LC_ALL="C")).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    if len(out) < 2 or out[0].startswith("Z"):
        return None
    return f"ps:{pid}:" + " ".join(out[1:])


def _windows_token(pid: int) -> str | None:
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return None
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value != STILL_ACTIVE:
            return None
        created, exited, kernel, user = (wintypes.FILETIME() for _ in range(4))
        if not kernel32.GetProcessTimes(handle, ctypes.byref(created), ctypes.byref(exited), ctypes.byref(kernel),
                                        ctypes.byref(user)):
            return None
        return f"win:{pid}:{(created.dwHighDateTime << 32) | created.dwLowDateTime}"
    finally:
        kernel32.CloseHandle(handle)
