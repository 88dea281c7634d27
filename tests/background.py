"""Long child-process checks run on the machine's spare core while the suite goes on.

Some tests only wait on a child process: mypy over the whole tree, and the Triton kernels run by the
CPU interpreter (``tests/interpreted.py``). Run one after another in the foreground they take minutes
of a two-core CI machine's wall time while its second core idles. When collection ends (``conftest``),
the jobs whose test modules were collected start in collection order, one at a time, under ``nice``
so the tests in the foreground keep their CPU (several of them compare timings); a test that needs a
job's result waits for it (``result``), or runs the job itself when none was started (a lone test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Job:
    module: str
    """The test module (``tests/test_x.py``) that reads the result; the job starts only if it was collected."""
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 600
    done: threading.Event = field(default_factory=threading.Event)
    outcome: subprocess.CompletedProcess[str] | BaseException | None = None
    process: subprocess.Popen[str] | None = None

    def run(self, *, niced: bool) -> None:
        prefix = ["nice", "-n", "19"] if niced and shutil.which("nice") else []
        try:
            with subprocess.Popen(prefix + self.argv, cwd=ROOT, env={**os.environ, **self.env}, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) as self.process:
                try:
                    out, err = self.process.communicate(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    out, err = self.process.communicate()
                    raise subprocess.TimeoutExpired(self.argv, self.timeout, out, err) from None
            self.outcome = subprocess.CompletedProcess(self.argv, self.process.returncode, out, err)
        except BaseException as exc:  # the waiting test reports it
            self.outcome = exc
        finally:
            self.done.set()


def _interpreted(module: str) -> Job:
    return Job(f"tests/{module}.py", [sys.executable, "-m", f"tests.{module}"],
               {"TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}, timeout=300)


JOBS: dict[str, Job] = {
    "mypy": Job("tests/test_lint.py", [sys.executable, "-m", "mypy"]),
    **{f"tests.{m}": _interpreted(m) for m in ("test_attention_kernels", "test_bitmask_kernel", "test_extend_kernel",
                                               "test_fused_kernels", "test_gemv_kernel")},
}

_started: list[Job] = []


def start(collected_modules: list[str]) -> None:
    """Start, in one thread, the jobs whose modules are among ``collected_modules`` (in that order)."""
    order = {module: i for i, module in reversed(list(enumerate(collected_modules)))}
    jobs = sorted((job for job in JOBS.values() if job.module in order), key=lambda job: order[job.module])
    if not jobs:
        return
    _started.extend(jobs)

    def work() -> None:
        for job in jobs:
            if not job.done.is_set():
                job.run(niced=True)

    threading.Thread(target=work, name="background-checks", daemon=True).start()


def result(name: str) -> subprocess.CompletedProcess[str]:
    """The job's finished process, waiting for it (or running it now when it was never started)."""
    job = JOBS[name]
    if job not in _started:
        _started.append(job)
        job.run(niced=False)
    job.done.wait()
    if isinstance(job.outcome, BaseException):
        raise job.outcome
    assert job.outcome is not None
    return job.outcome


def stop() -> None:
    """Kill what is still running (the session ended early)."""
    for job in _started:
        if job.process is not None and job.process.poll() is None:
            job.process.kill()
