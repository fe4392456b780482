"""Supervised child processes: started in order, each ready before the next, restarted when they die,
stopped in reverse order.

A child says it is ready by writing a line to the pipe named by ``PINGSTREAM_NOTIFY_FD``
(``notify_ready``, like systemd's sd_notify); a child that ends before that fails the start.
Once running, a child that exits while nobody asked it to (killed with -9, crashed) is started
again after a backoff that doubles from ``RESTART_MIN_S`` to ``RESTART_MAX_S`` and falls back to
the minimum once a child has stayed up ``STABLE_S``; each restart is logged.
Children run in their own session (process group), so a Ctrl-C in the terminal reaches the supervisor
only, which stops them in order; and they get SIGTERM should the supervisor itself die
(``die_with_supervisor``).
Knows no service: a child is a command line and an environment.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import os
import signal
import time

log = logging.getLogger(__name__)

NOTIFY_FD = "PINGSTREAM_NOTIFY_FD"
SUPERVISOR_PID = "PINGSTREAM_SUPERVISOR_PID"
RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0
STABLE_S = 30.0
_PR_SET_PDEATHSIG = 1


def notify_ready() -> None:
    """In a supervised child: tell the supervisor this process is ready (once; no-op when unsupervised)."""
    fd = os.environ.pop(NOTIFY_FD, None)
    if fd is None:
        return
    try:
        os.write(int(fd), b"ready\n")
        os.close(int(fd))
    except (OSError, ValueError):
        pass  # the supervisor is gone: it will not be waiting


def die_with_supervisor() -> None:
    """In a supervised child, first thing: be sent SIGTERM when the supervisor dies (Linux's
    PR_SET_PDEATHSIG; elsewhere nothing), and stop at once if it already has."""
    supervisor = os.environ.get(SUPERVISOR_PID)
    if supervisor is None:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != supervisor:
        os.kill(os.getpid(), signal.SIGTERM)


class ChildFailed(Exception):
    """A child ended before it was ready."""


@dataclasses.dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_timeout_s: float = 120.0
    stop_timeout_s: float = 20.0
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._stopping = False
        self._watchers: list[asyncio.Task] = []

    async def start(self, child: Child) -> None:
        """Start ``child`` and wait until it is ready; then keep it running (restarts) until ``stop``."""
        await self._spawn(child)
        self.children.append(child)
        self._watchers.append(asyncio.create_task(self._keep(child), name=f"supervise-{child.name}"))

    async def _spawn(self, child: Child) -> None:
        read_fd, write_fd = os.pipe()
        try:
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv, env={**child.env, NOTIFY_FD: str(write_fd), SUPERVISOR_PID: str(os.getpid())},
                pass_fds=(write_fd,), start_new_session=True,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the child holds the only write end: its exit ends our read
        child.started_at = time.monotonic()
        reading = asyncio.get_running_loop().run_in_executor(None, os.read, read_fd, 64)
        try:
            said = await asyncio.wait_for(asyncio.shield(reading), child.ready_timeout_s)
        except BaseException as exc:  # not ready in time, or cancelled: the child goes
            if child.proc.returncode is None:
                child.proc.kill()
            await child.proc.wait()
            await reading  # ends with the child (the write end closed)
            if isinstance(exc, asyncio.TimeoutError):
                raise ChildFailed(f"{child.name} was not ready within {child.ready_timeout_s:g} s") from None
            raise
        finally:
            if reading.done():
                os.close(read_fd)
        if not said:
            code = await child.proc.wait()
            raise ChildFailed(f"{child.name} exited with {_describe_exit(code)} before it was ready")
        log.info("%s ready (pid %d)", child.name, child.proc.pid)

    async def _keep(self, child: Child) -> None:
        backoff = RESTART_MIN_S
        while True:
            code = await child.proc.wait()
            if self._stopping:
                return
            if time.monotonic() - child.started_at > STABLE_S:
                backoff = RESTART_MIN_S
            log.warning("%s (pid %d) exited with %s; restarting in %.1f s", child.name, child.proc.pid,
                        _describe_exit(code), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)
            if self._stopping:
                return
            try:
                child.restarts += 1
                await self._spawn(child)
            except (ChildFailed, OSError) as exc:
                if not self._stopping:  # else it was stopped while starting
                    log.error("restarting %s failed: %s", child.name, exc)

    async def stop(self) -> None:
        """Stop the children in reverse order of start: SIGTERM, then SIGKILL after their stop timeout."""
        self._stopping = True
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.returncode is not None:
                continue
            log.info("stopping %s (pid %d)", child.name, proc.pid)
            try:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), child.stop_timeout_s)
            except ProcessLookupError:
                pass
            except asyncio.TimeoutError:
                log.warning("%s (pid %d) did not stop within %g s; killed", child.name, proc.pid,
                            child.stop_timeout_s)
                proc.kill()
                await proc.wait()
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
