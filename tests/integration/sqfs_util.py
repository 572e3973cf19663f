"""Helpers shared by the integration tests: start, stop, kill and remount a
real squeezefs instance on a temporary backing directory."""

import os
import signal
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SQUEEZEFS_BIN") or os.path.join(ROOT, "build", "squeezefs")
TOOLS = os.environ.get("SQ_TOOLS") or os.path.join(ROOT, "build", "tests", "tools")
LONG = os.environ.get("SQ_LONG") == "1"

# Sanitizer reports in the daemon's log fail the test that owns the mount.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "ThreadSanitizer")


def wait_for(pred, timeout=15.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Mount:
    """One squeezefs daemon run in the foreground (-f) so the test owns its
    pid; stderr goes to `log` so tests can read what it logged."""

    def __init__(self, backing, mnt, opts=None, log=None):
        self.backing = str(backing)
        self.mnt = str(mnt)
        self.opts = list(opts or [])
        self.log = str(log or (os.path.dirname(self.mnt) + "/daemon.log"))
        self.proc = None
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mnt, exist_ok=True)

    def argv(self):
        a = [BIN, "-f"]
        if self.opts:
            a += ["-o", ",".join(self.opts)]
        return a + [self.backing, self.mnt]

    def start(self):
        assert self.proc is None
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=logf,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        ok = wait_for(lambda: os.path.ismount(self.mnt) or
                      self.proc.poll() is not None)
        if not os.path.ismount(self.mnt):
            rc = self.proc.poll()
            self.proc = None
            raise RuntimeError("squeezefs did not mount (rc=%s, ok=%s): %s"
                               % (rc, ok, self.read_log()[-2000:]))
        return self

    def read_log(self):
        try:
            with open(self.log, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def check_log(self):
        text = self.read_log()
        for mark in SANITIZER_MARKS:
            assert mark not in text, "sanitizer finding in daemon log:\n" + text[-4000:]

    def stop(self):
        """Clean unmount; asserts the daemon exits 0."""
        if self.proc is None:
            return
        subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], check=False)
            self.proc = None
            raise AssertionError("squeezefs did not exit after unmount")
        self.proc = None
        self.check_log()
        assert rc == 0, "squeezefs exited %d:\n%s" % (rc, self.read_log()[-3000:])

    def kill(self):
        """kill -9 the daemon, then clear the dead mount point."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        subprocess.run(["fusermount3", "-u", "-z", self.mnt], check=False,
                       stderr=subprocess.DEVNULL)
        wait_for(lambda: not os.path.ismount(self.mnt), timeout=5)

    def remount(self):
        self.stop()
        return self.start()

    def cleanup(self):
        if self.proc is not None:
            try:
                self.stop()
            except Exception:
                self.kill()
                raise

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def bpath(self, *parts):
        return os.path.join(self.backing, *parts)


def run_fsck(backing):
    """Runs `squeezefs fsck BACKING`; returns CompletedProcess."""
    return subprocess.run([BIN, "fsck", str(backing)], capture_output=True,
                          text=True)
