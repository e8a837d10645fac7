"""What the orchestrator hands one worker: a typed job, saved as JSON beside the run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from auditor.accuracy import Tolerance
from auditor.timing import TimingSettings


@dataclass
class WorkerJob:
    """One compiler variant on one prepared model, measured by `python -m auditor.worker`."""

    run_id: str
    results_dir: Path
    workdir: Path
    bundle_dir: Path
    data_dir: Path
    inputs_source: str
    compiler: str
    options: dict
    target: str  # a ground.targets.TARGETS key
    device: str
    harness: str  # python or native (auto is resolved before a job is made)
    timing: TimingSettings = field(default_factory=TimingSettings)
    tolerance: Tolerance = field(default_factory=Tolerance)
    budget_us: float = 16 / 44100 * 1e6
    profile_runs: int = 100
    memory_interval_s: float = 0.005
    sched_fifo: int = 0
    cpu: int = -1
    sequence: dict | None = None  # outputs checked over a sequence of calls (auditor.state)
    rt_audit: bool = False  # also run the real-time safety audit (auditor.rt_audit)
    timeout_at: float = 0.0  # wall clock (time.time()) at which the orchestrator kills the worker
    # compile through <results>/artifacts (auditor.artifact_cache): reuse what was compiled
    artifact_cache: bool = False
    # a compile running longer is killed and recorded failed (auditor.artifact_cache caches
    # that failure for builds with the same or a shorter cap); None: no cap but the run's timeout
    compile_cap_s: float | None = None
    # a run whose timed window had other processes using more than this many cores is
    # flagged as measured under load (ground.quietness)
    other_busy_limit: float = 0.25
    # the conditions' window is stretched to at least this (0: the timed loop alone, whose CPU
    # figure is None when it is shorter than a jiffy); dataset build --quiet: 0.1 s
    conditions_window_s: float = 0.0

    FILE = "job.json"

    def save(self) -> Path:
        path = self.workdir / self.FILE
        path.write_text(json.dumps(asdict(self), indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: Path) -> WorkerJob:
        meta = json.loads(Path(path).read_text())
        paths = {f.name for f in fields(cls) if f.type == "Path"}
        meta.update({k: Path(meta[k]) for k in paths})
        meta["timing"] = TimingSettings(**meta["timing"])
        meta["tolerance"] = Tolerance(**meta["tolerance"])
        return cls(**meta)
