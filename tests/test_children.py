"""Children never outlive the auditing process, even when it dies right at their fork."""

import os
import signal
import subprocess
import sys
import time
from functools import partial

from ground.children import die_with_parent, dies_with_me, run_child
from tests.conftest import ROOT, process_running


def test_child_whose_parent_already_died_kills_itself():
    # a parent that died between fork and prctl sends no death signal: the child must notice
    proc = subprocess.Popen(["sleep", "30"], preexec_fn=partial(die_with_parent, os.getpid() + 10**6))
    assert proc.wait(timeout=10) == -signal.SIGKILL


def test_child_dies_when_its_parent_is_killed():
    script = ("import subprocess, sys, time; from ground.children import dies_with_me; "
              "p = subprocess.Popen(['sleep', '30'], preexec_fn=dies_with_me()); "
              "print(p.pid, flush=True); time.sleep(30)")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    child = int(parent.stdout.readline())
    assert open(f"/proc/{child}/cmdline").read().startswith("sleep")
    parent.kill()
    parent.wait()
    end = time.monotonic() + 10
    while process_running(child) and time.monotonic() < end:  # reparented to init or a subreaper, reaped there
        time.sleep(0.05)
    assert not process_running(child)


def test_dies_with_me_binds_this_process():
    bound = dies_with_me()
    assert bound.func is die_with_parent and bound.args == (os.getpid(),)


def test_run_child_streams_phases_and_says_how_it_died():
    script = ("import os, signal, sys; print('phase compile', flush=True); print('phase measure', flush=True); "
              "print('it broke', file=sys.stderr, flush=True); os.kill(os.getpid(), signal.SIGSEGV)")
    seen = []
    done = run_child([sys.executable, "-c", script], timeout_s=60, on_phase=seen.append)
    assert seen == ["compile", "measure"]
    assert done.returncode == -signal.SIGSEGV and not done.timed_out
    assert done.failure("worker") == "worker died with SIGSEGV: it broke"


def test_run_child_timeout_kills_the_whole_group():
    script = ("import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
              "print(p.pid, flush=True); time.sleep(60)")
    done = run_child([sys.executable, "-c", script], timeout_s=2)
    grandchild = int(done.stdout.split()[0])
    end = time.monotonic() + 10
    while process_running(grandchild) and time.monotonic() < end:
        time.sleep(0.05)
    assert done.timed_out and done.returncode is None and not process_running(grandchild)
    assert done.failure("worker", 2) == "no result within 2 s; worker killed"


def test_run_child_exit_code_and_files():
    assert run_child(["sh", "-c", "echo out; echo bad >&2; exit 3"]).failure("cmd") == "cmd exited with code 3: bad"
    assert run_child(["true"]).failure("cmd") is None
