"""Long child-process checks run on the machine's spare core while the suite goes on.

Some tests only wait on a child process: mypy over the whole tree, the Triton kernels run by the CPU
interpreter (``tests/interpreted.py``), commands that load the demo model (declared by their test
modules with ``register``). Run one after another in the foreground they take minutes of a two-core
CI machine's wall time while its second core idles. When collection ends (``conftest``),
the jobs whose test modules were collected start in collection order, one at a time, under ``nice``
so the tests in the foreground keep their CPU (several of them compare timings); a test that needs a
job's result waits for it (``result``), or runs the job itself when none was started (a lone test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Job:
    module: str
    """The test module (``tests/test_x.py``) that reads the result; the job starts only if it was collected."""
    argv: list[str]
    """The command; ``{workdir}`` in an argument becomes a fresh directory of the job's own (``workdir``)."""
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    timeout: float = 600
    done: threading.Event = field(default_factory=threading.Event)
    outcome: subprocess.CompletedProcess[str] | BaseException | None = None
    process: subprocess.Popen[str] | None = None
    workdir: Path | None = None

    def run(self, *, niced: bool) -> None:
        prefix = ["nice", "-n", "19"] if niced and shutil.which("nice") else []
        env = {k: v for k, v in {**os.environ, **self.env}.items() if k not in self.unset}
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix="agentflow-background-"))
            argv = [arg.replace("{workdir}", str(self.workdir)) for arg in self.argv]
            with subprocess.Popen(prefix + argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) as self.process:
                try:
                    out, err = self.process.communicate(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    out, err = self.process.communicate()
                    raise subprocess.TimeoutExpired(argv, self.timeout, out, err) from None
            self.outcome = subprocess.CompletedProcess(argv, self.process.returncode, out, err)
        except BaseException as exc:  # the waiting test reports it
            self.outcome = exc
        finally:
            self.done.set()


def register(name: str, module: str, argv: list[str], *, env: dict[str, str] | None = None,
             unset: tuple[str, ...] = (), timeout: float = 600) -> None:
    """Declare a job at the import of the test module (``__name__``) that reads it, which is before
    collection ends; the job runs in ROOT with the session's environment."""
    if name not in JOBS:
        JOBS[name] = Job(module.replace(".", "/") + ".py", argv, env or {}, unset, timeout)


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


def workdir(name: str) -> Path:
    """The directory the job's ``{workdir}`` stood for (after ``result``)."""
    path = JOBS[name].workdir
    assert path is not None, f"the background job {name!r} has not run"
    return path


def stop() -> None:
    """Kill what is still running (the session ended early) and remove the jobs' directories."""
    for job in _started:
        if job.process is not None and job.process.poll() is None:
            job.process.kill()
        if job.workdir is not None:
            shutil.rmtree(job.workdir, ignore_errors=True)
