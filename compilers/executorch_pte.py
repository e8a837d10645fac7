"""ExecuTorch: a .pte program run by the ExecuTorch runtime, with the XNNPACK delegate or none.

Compile: the bundle's torch.export program -> `to_edge_transform_and_lower` (XnnpackPartitioner,
or no partitioner: every op stays an ExecuTorch CPU kernel) -> `to_executorch` -> `model.pte`
plus `model.etrecord` (the edge graphs and debug handles the Inspector needs).

Without a delegate the ops run on the kernel library linked into the pip runtime
(`libexecutorch_kernels_optimized.so`: optimized kernels for about twenty ops, e.g. add, mm,
linear; portable kernels for the rest, e.g. addmm, convolution, relu, tanh).

Kernels are what the runtime's ETDump names: an instruction `<op>.<overload> #k` (a kernel call,
k-th of that name), a delegate call `XnnpackBackend call #k` (its time outside XNNPACK's
operators), and each XNNPACK operator inside it (`Fully Connected (NC, F32) GEMM #1`: XNNPACK's
own names, which only the built runtime knows, so compile() runs the program once with ETDump on
to read them). Each kernel is mapped to ONNX nodes through debug handles: ETDump events carry the
edge graph's handles, whose nodes' `from_node` chains end at the torch.export FX nodes that
`ground.fx_nodes.fx_node_map` joins to canonical ONNX nodes. XNNPACK operators carry no handle:
they are aligned, in order and by kind, with the serialized XNNPACK graph's nodes (read from the
delegate blob with the flatc that ships with executorch), which do. `kernels.json` keeps the chain.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compilers.base import TORCH_EXPORT_LOADER, Artifact, Compiler, OptionSpec, Runnable
from ground.children import run_child
from ground.op_timing import OpProfile, OpTiming

BACKENDS = ("xnnpack", "portable")
PTE, ETRECORD, KERNELS = "model.pte", "model.etrecord", "kernels.json"
PROFILE_MAX_RUNS = 50  # ETDump holds every event of every run: ~50 runs keep it small
PROFILE_WARMUP = 10  # recorded too (the dump cannot be reset), left out of the figures
NO_HANDLE = 65535  # the debug handle XNNPACK's passes give the nodes they insert


# ---------------------------------------------------------------- the runtime's threadpool

_threads_in_use: int | None = None


def _use_threads(threads: int) -> None:
    """Size ExecuTorch's shared threadpool (XNNPACK and threaded kernels) before any program
    loads. The only handle is pybindings' `_unsafe_reset_threadpool`: resizing it under a
    live XNNPACK runtime leaves that runtime a dangling pool, so one process gets one size."""
    global _threads_in_use
    if threads < 1:
        raise ValueError(f"threads={threads}: need at least one thread")
    if _threads_in_use == threads:
        return
    if _threads_in_use is not None:
        raise RuntimeError(f"ExecuTorch's threadpool already serves {_threads_in_use} threads in this "
                           f"process; threads={threads} needs a process of its own")
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    _threads_in_use = threads


def _load_program(pte: Path, etdump: bool):
    from executorch.runtime import Runtime

    if etdump:
        return Runtime.get().load_program(str(pte), enable_etdump=True, debug_buffer_size=0)
    return Runtime.get().load_program(str(pte))


# ---------------------------------------------------------------- the runnable

class ExecuTorchRunnable(Runnable):
    def __init__(self, program, bundle, memory: dict[str, int] | None = None):
        # The Program must stay referenced while its method runs: freeing it segfaults.
        self.program = program
        self.method = program.load_method("forward")
        # The pybind method under the public wrapper: `Method.execute` calls it with
        # clone_outputs=True, which allocates fresh output tensors and copies into them on every
        # call. Here the outputs stay in the program's planned memory until outputs() copies them.
        self._call = self.method._method
        self.bundle = bundle
        self._memory = memory or {}
        self._inputs: list = []

    def set_inputs(self, arrays):
        import torch

        self._arrays = [np.array(a, order="C", copy=True) for a in arrays]  # the tensors alias these
        self._inputs = [torch.from_numpy(a) for a in self._arrays]

    def run(self):
        # Inputs are copied into the planned input buffers on every call: the memory planner
        # reuses an input's slot once the input is dead, so a second call without them
        # reads garbage (seen with the portable MLP).
        self._call(self._inputs, False)

    def outputs(self):
        return [t.detach().numpy().copy() for t in self._call.get_outputs(clone_outputs=True)
                if hasattr(t, "detach")]

    def memory_info(self):
        return dict(self._memory)

    def close(self):
        self._call = None
        self.method = None
        self.program = None


# ---------------------------------------------------------------- graph provenance

def _handles(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _fx_roots(node) -> list[str]:
    """The torch.export FX nodes a node descends from: the ends of its `from_node` chains."""
    roots: list[str] = []

    def walk(sources):
        for src in sources or ():
            parents = getattr(src, "from_node", None)
            if parents:
                walk(parents)
            elif src.name not in roots:
                roots.append(src.name)

    walk(node.meta.get("from_node"))
    return roots


@dataclass
class _Partition:
    backend: str
    blob: bytes
    nodes: dict  # call_function node of the partition's edge graph -> its debug handles
    handles: set[int] = field(default_factory=set)


def _edge_provenance(edge_program) -> tuple[dict[int, list[str]], list[_Partition]]:
    """Debug handle -> FX node names, over the edge graph and every delegated partition."""
    from executorch.exir.lowered_backend_module import LoweredBackendModule

    origins: dict[int, list[str]] = {}

    def note(node):
        for h in _handles(node.meta.get("debug_handle")):
            names = origins.setdefault(h, [])
            names.extend(n for n in _fx_roots(node) if n not in names)

    partitions = []
    gm = edge_program.graph_module
    for node in gm.graph.nodes:
        note(node)
        if node.op == "get_attr":
            sub = getattr(gm, node.target, None)
            if isinstance(sub, LoweredBackendModule):
                nodes = {n: _handles(n.meta.get("debug_handle"))
                         for n in sub.original_module.graph.nodes if n.op == "call_function"}
                for n in nodes:
                    note(n)
                part = _Partition(sub.backend_id, bytes(sub.processed_bytes), nodes)
                part.handles = {h for hs in nodes.values() for h in hs}
                partitions.append(part)
    return origins, partitions


# ---------------------------------------------------------------- the XNNPACK graph in a delegate blob

def _xnnpack_nodes(blob: bytes) -> list[tuple[str, int]]:
    """(node type, debug handle) of every node of a serialized XNNPACK graph, in order."""
    import executorch
    from executorch.backends.xnnpack import serialization
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader

    try:
        header = XNNHeader.from_bytes(blob[:XNNHeader.EXPECTED_LENGTH])
        flatbuffer = blob[header.flatbuffer_offset:header.flatbuffer_offset + header.flatbuffer_size]
    except ValueError:  # blobs without the header are the bare flatbuffer
        flatbuffer = blob
    schema = Path(list(serialization.__path__)[0]) / "schema.fbs"
    shipped = Path(list(executorch.__path__)[0]) / "data" / "bin" / "flatc"
    flatc = str(shipped) if shipped.exists() else shutil.which("flatc")
    if flatc is None or not schema.exists():
        raise RuntimeError("flatc or the XNNPACK schema is missing")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "graph.bin").write_bytes(flatbuffer)
        done = run_child([flatc, "--json", "--strict-json", "--defaults-json", "--raw-binary",
                          "-o", tmp, str(schema), "--", str(Path(tmp) / "graph.bin")])
        if done.returncode != 0:
            raise RuntimeError(f"reading the XNNPACK graph: {done.failure('flatc')}")
        text = (Path(tmp) / "graph.json").read_text()
    # flatc writes non-finite floats (clamp bounds) bare: make them JSON's spelling
    text = re.sub(r'(?<![\w"])(-?)inf(?![\w"])', r"\1Infinity", text)
    text = re.sub(r'(?<![\w"])-?nan(?![\w"])', "NaN", text)
    graph = json.loads(text)
    return [(x.get("xnode_union_type", "?"), int(x.get("debug_handle", NO_HANDLE)))
            for x in graph.get("xnodes", [])]


# XNNPACK operator names (text before " (") -> serialized node kinds they can come from
_UNARY = {"tanh", "sigmoid", "abs", "negate", "square", "squareroot", "reciprocalsquareroot",
          "floor", "ceiling", "exp", "log", "gelu", "sin", "cos", "hardswish", "elu", "leakyrelu",
          "clamp", "convert", "copy"}
_BINARY = {"add", "subtract", "multiply", "div", "minimum", "maximum", "prelu"}
_KINDS = {
    "convolution": {"conv", "depthwiseconv"},
    "fullyconnected": {"fullyconnected", "conv", "depthwiseconv"},  # 1x1 convolutions become GEMMs
    "deconvolution": {"convtranspose"},
    "copy": {"copy", "reshape"},
    "reshape": {"reshape", "copy"},
    "divide": {"div"},
    "sine": {"sin"},
    "cosine": {"cos"},
    "averagepooling": {"avgpooling"},
    "globalaveragepooling": {"globalavgpooling"},
    "constantpad": {"constantpad"},
    "unaryelementwise": _UNARY,
    "binaryelementwise": _BINARY,
}


def _op_kind(name: str) -> str:
    head = re.sub(r" #\d+$", "", name).split(" (")[0]
    return re.sub(r"[^a-z0-9]", "", head.lower()).removeprefix("static")


def _node_kind(xtype: str) -> str:
    kind = xtype.removeprefix("XNN").removeprefix("Static")
    return re.sub(r"(2d|2D|\d+)$", "", kind).lower()


def _compatible(op_name: str, xtype: str) -> bool:
    op, node = _op_kind(op_name), _node_kind(xtype)
    return op == node or node in _KINDS.get(op, ())


def _align(op_names: list[str], xnodes: list[tuple[str, int]]) -> tuple[list[list[int]], list[bool]]:
    """Which serialized nodes each runtime operator stands for. XNNPACK keeps node order but
    fuses some nodes into a neighbour (consecutive reshapes, clamps into their producer): an
    operator takes the next node of a compatible kind; nodes skipped on the way were fused into
    the operator before (into this one if none came before)."""
    groups: list[list[int]] = [[] for _ in op_names]
    matched = [False] * len(op_names)
    j, last = 0, None
    for i, name in enumerate(op_names):
        k = next((k for k in range(j, len(xnodes)) if _compatible(name, xnodes[k][0])), None)
        if k is None:
            continue
        groups[i if last is None else last].extend(range(j, k))
        groups[i].append(k)
        matched[i], last, j = True, i, k + 1
    if last is not None:
        groups[last].extend(range(j, len(xnodes)))
    return groups, matched


def _attach_fused(part: _Partition, op_handles: list[set[int]]) -> None:
    """Edge nodes with no serialized node of their own (an activation folded into its producer's
    output clamp) join the operator that computes their nearest covered producer (or consumer)."""
    covered = {h: i for i, hs in enumerate(op_handles) for h in hs}
    for node, own in part.nodes.items():
        hs = [h for h in own if h not in covered]
        if not hs:
            continue
        owner = None
        for direction in ("up", "down"):
            seen, frontier = set(), [node]
            while frontier and owner is None:
                nxt = []
                for n in frontier:
                    around = n.all_input_nodes if direction == "up" else list(n.users)
                    for m in around:
                        if m in seen:
                            continue
                        seen.add(m)
                        known = [covered[h] for h in part.nodes.get(m, ()) if h in covered]
                        if known:
                            owner = known[0]
                            break
                        nxt.append(m)
                    if owner is not None:
                        break
                frontier = nxt
            if owner is not None:
                break
        if owner is not None:
            op_handles[owner].update(hs)


# ---------------------------------------------------------------- ETDump events -> kernels

@dataclass
class _Kernel:
    name: str
    op_type: str
    kind: str  # "op" (a kernel call), "delegate" (a delegate call), "delegated" (inside one)
    instruction: int
    provider: str
    handles: tuple[int, ...] = ()
    plus: list = field(default_factory=list)  # events whose durations add up to this kernel's
    minus: list = field(default_factory=list)  # events whose durations are taken off
    call: int | None = None  # delegate call number (1-based) for delegate/delegated kernels
    op_name: str | None = None  # the runtime's own name of a delegated operator

    def per_run(self, start: int) -> np.ndarray:
        values = sum(np.asarray(e.perf_data.raw[start:], dtype=np.float64) for e in self.plus)
        for e in self.minus:
            values = values - np.asarray(e.perf_data.raw[start:], dtype=np.float64)
        return values


def _inspector(etdump: Path, etrecord: Path):
    from executorch.devtools import Inspector
    from executorch.devtools.inspector import TimeScale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Inspector(etdump_path=str(etdump), etrecord=str(etrecord),
                         source_time_scale=TimeScale.NS, target_time_scale=TimeScale.US)


def _kernels(inspector) -> tuple[list[_Kernel], Any]:
    """The kernels of one inference, in execution order, and the `Method::execute` event."""
    blocks = [b for b in inspector.event_blocks if any(e.name == "Method::execute" for e in b.events)]
    if len(blocks) != 1:
        raise RuntimeError(f"ETDump has {len(blocks)} blocks of method executions, expected 1")
    whole = None
    by_instruction: dict[int, list] = {}
    for event in blocks[0].events:
        if event.perf_data is None:
            continue
        if event.name == "Method::execute":
            whole = event
        elif event._instruction_id is not None:
            by_instruction.setdefault(event._instruction_id, []).append(event)
    delegate_calls = sum(any(e.name == "DELEGATE_CALL" for e in evs) for evs in by_instruction.values())
    kernels: list[_Kernel] = []
    names: Counter = Counter()
    calls = 0
    for instruction in sorted(by_instruction):
        events = by_instruction[instruction]
        delegate = next((e for e in events if e.name == "DELEGATE_CALL"), None)
        if delegate is not None:
            calls += 1
            backend = delegate.delegate_backend_name or "delegate"
            inner = [e for e in events if e.is_delegated_op]
            prefix = f"{backend} call #{calls}: " if delegate_calls > 1 else ""
            for e in inner:
                kernels.append(_Kernel(
                    name=prefix + e.name, op_type=re.sub(r" #\d+$", "", e.name), kind="delegated",
                    instruction=instruction, provider=backend, plus=[e], call=calls, op_name=e.name))
            kernels.append(_Kernel(
                name=f"{backend} call #{calls}", op_type=f"{backend} delegate call (outside its operators)",
                kind="delegate", instruction=instruction, provider=backend,
                handles=_handles(delegate.debug_handles), plus=[delegate], minus=inner, call=calls))
            continue
        timed = next((e for e in events if e.name == "OPERATOR_CALL"), None)
        native = next((e for e in events if e.name.startswith("native_call_")), None)
        timed = timed or native or events[0]
        if native is not None:
            op = native.name.removeprefix("native_call_")
        elif timed.op_types:
            op = timed.op_types[0]
        else:
            op = timed.name
        names[op] += 1
        kernels.append(_Kernel(
            name=f"{op} #{names[op]}", op_type=op, kind="op", instruction=instruction,
            provider="executorch kernels", handles=_handles(timed.debug_handles), plus=[timed]))
    return kernels, whole


# ---------------------------------------------------------------- kernels -> ONNX nodes

def _kernel_map(kernels: list[_Kernel], origins: dict[int, list[str]], partitions: list[_Partition],
                fx_map: dict[str, list[str]]) -> tuple[dict[str, list[str]], list[dict], list[str]]:
    """kernel -> canonical ONNX nodes, the per-kernel record for kernels.json, and notes."""
    notes: list[str] = []
    kernel_handles: dict[str, set[int]] = {}
    graphs: dict[int, list[tuple[str, int]] | None] = {}  # partition -> its XNNPACK nodes, read once

    for k in kernels:
        if k.kind != "delegated":
            kernel_handles[k.name] = set(k.handles)
    for call in sorted({k.call for k in kernels if k.kind == "delegate"}):
        delegate = next(k for k in kernels if k.kind == "delegate" and k.call == call)
        inner = [k for k in kernels if k.kind == "delegated" and k.call == call]
        part = max(partitions, key=lambda p: len(p.handles & set(delegate.handles)), default=None)
        if part is None or not part.handles & set(delegate.handles):
            part = partitions[call - 1] if call - 1 < len(partitions) else None
        if part is None:
            notes.append(f"{delegate.name}: no partition found; its operators map to nothing")
            continue
        kernel_handles[delegate.name] = set(part.handles)  # a delegate call covers its partition
        if not inner:
            continue
        op_handles: list[set[int]] = [set() for _ in inner]
        if id(part) not in graphs:
            try:
                graphs[id(part)] = _xnnpack_nodes(part.blob) if part.backend == "XnnpackBackend" else None
            except Exception as e:  # noqa: BLE001 - an unreadable blob only coarsens the map
                graphs[id(part)] = None
                notes.append(f"{delegate.name}: XNNPACK graph unreadable ({type(e).__name__}: {e})")
        xnodes = graphs[id(part)]
        if xnodes is not None:
            groups, matched = _align([k.op_name or k.name for k in inner], xnodes)
            for i, group in enumerate(groups):
                op_handles[i] = {xnodes[g][1] for g in group if xnodes[g][1] != NO_HANDLE}
            _attach_fused(part, op_handles)
            for k, ok in zip(inner, matched):
                if not ok:
                    notes.append(f"{k.name}: matches no XNNPACK graph node; mapped to its whole partition")
        else:
            matched = [False] * len(inner)
        for i, k in enumerate(inner):
            kernel_handles[k.name] = op_handles[i] if matched[i] else set(part.handles)

    kernel_map: dict[str, list[str]] = {}
    records = []
    for k in kernels:
        handles = sorted(kernel_handles.get(k.name, set()))
        fx_nodes: list[str] = []
        for h in handles:
            fx_nodes.extend(n for n in origins.get(h, []) if n not in fx_nodes)
        onnx_nodes: list[str] = []
        for fx in fx_nodes:
            onnx_nodes.extend(n for n in fx_map.get(fx, []) if n not in onnx_nodes)
        kernel_map[k.name] = onnx_nodes
        records.append({"kernel": k.name, "kind": k.kind, "op_type": k.op_type, "provider": k.provider,
                        "instruction": k.instruction, "debug_handles": handles, "fx_nodes": fx_nodes,
                        "onnx_nodes": onnx_nodes})
    return kernel_map, records, notes


def _probe(pte: Path, etrecord: Path, bundle, workdir: Path) -> list[_Kernel]:
    """Run the program once with ETDump on: the kernel names as the runtime will report them."""
    program = _load_program(pte, etdump=True)
    runnable = ExecuTorchRunnable(program, bundle)
    runnable.set_inputs([np.zeros(s.shape, dtype=s.dtype) for s in bundle.inputs])
    runnable.run()
    dump = workdir / "probe.etdp"
    program.write_etdump_result_to_file(str(dump), str(workdir / "probe.debug.bin"))
    runnable.close()
    del program
    kernels, _ = _kernels(_inspector(dump, etrecord))
    return kernels


# ---------------------------------------------------------------- the adapter

class ExecuTorch(Compiler):
    name = "executorch"
    description = "ExecuTorch runtime (.pte): XNNPACK delegate, or no delegate (CPU kernel library)"
    accepts = ("torch-export",)
    options = {
        "backend": OptionSpec("xnnpack", "xnnpack: XnnpackPartitioner delegates what it supports; "
                              "portable: no partitioner, every op an ExecuTorch CPU kernel", BACKENDS),
        "threads": OptionSpec(1, "ExecuTorch threadpool size, XNNPACK's threads (the board has one core)"),
    }
    default_variants = ({}, {"backend": "portable"})
    per_op_method = "executorch-etdump"
    install_hint = "pip install executorch==1.5.1"
    compile_imports = (TORCH_EXPORT_LOADER, "executorch.exir",
                       "executorch.backends.xnnpack.partition.xnnpack_partitioner")

    @classmethod
    def warm_compile(cls):
        super().warm_compile()
        # XNNPACK's lowering traces its pattern graphs on first use (~8 s, lru_cached)
        from executorch.backends.xnnpack.partition.graphs import bilinear_2d, sdpa

        bilinear_2d.get_graphs_dict()
        sdpa.get_graphs()

    @classmethod
    def available(cls):
        import importlib.util
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = importlib.util.find_spec("executorch") is not None
            v = version("executorch") if found else None
            runtime = found and importlib.util.find_spec("executorch.extension.pybindings._C") is not None
        except (ImportError, ValueError, PackageNotFoundError) as e:
            return False, f"executorch is not usable: {e}"
        if not found:
            return False, "executorch is not installed"
        if not runtime:
            return False, "executorch is installed without its runtime pybindings (_C)"
        return True, v

    def compile(self, bundle, target, options, workdir):
        import torch
        from executorch.exir import to_edge_transform_and_lower

        from ground.fx_nodes import fx_node_map

        partitioner = None
        if options["backend"] == "xnnpack":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

            partitioner = [XnnpackPartitioner()]
        ep = torch.export.load(str(bundle.path("torch-export")))
        edge = to_edge_transform_and_lower(ep, partitioner=partitioner, generate_etrecord=True)
        # read before to_executorch(), which renumbers the debug handles of the graph it shares
        origins, partitions = _edge_provenance(edge.exported_program())
        program = edge.to_executorch()
        pte, etrecord = workdir / PTE, workdir / ETRECORD
        pte.write_bytes(program.buffer)
        program.get_etrecord().save(str(etrecord))
        plan = program.executorch_program.execution_plan[0]
        memory = {"pte_bytes": pte.stat().st_size,
                  "planned_arena_bytes": int(sum(plan.non_const_buffer_sizes))}

        _use_threads(options["threads"])
        kernels = _probe(pte, etrecord, bundle, workdir)
        fx_map: dict[str, list[str]] = {}
        notes_missing = None
        if "onnx" in bundle.files:
            import onnx

            fx_map = fx_node_map(onnx.load(str(bundle.path("onnx"))))
        else:
            notes_missing = "the bundle has no ONNX graph: every kernel maps to no ONNX node"
        kernel_map, records, notes = _kernel_map(kernels, origins, partitions, fx_map)

        delegated = sum(len(p.nodes) for p in partitions)
        left = sum(1 for k in kernels if k.kind == "op")
        notes.insert(0, f"{len(partitions)} delegated partition(s) covering {delegated} edge op(s); "
                        f"{left} kernel call(s) outside any delegate, run by the kernel library "
                        "linked into the runtime (optimized kernels where it has one, else portable)")
        if notes_missing:
            notes.append(notes_missing)
        notes.append(f"threadpool of {options['threads']} thread(s); kernel names read from one "
                     "ETDump-instrumented run of the program (included in compile time)")
        (workdir / KERNELS).write_text(json.dumps(
            {"backend": options["backend"], "memory": memory, "kernels": records, "notes": notes},
            indent=2))
        return Artifact(
            compiler=self.name, compiler_version=self.version(), target=target, options=options,
            directory=workdir, files={"pte": PTE, "etrecord": ETRECORD, "kernels": KERNELS},
            kernel_map=kernel_map, notes=notes,
        )

    def load(self, artifact, bundle):
        _use_threads(artifact.options["threads"])
        memory = json.loads(artifact.path("kernels").read_text()).get("memory", {})
        return ExecuTorchRunnable(_load_program(artifact.path("pte"), etdump=False), bundle, memory)

    def profile_ops(self, artifact, bundle, inputs, runs):
        _use_threads(artifact.options["threads"])
        runs = max(1, min(runs, PROFILE_MAX_RUNS))
        program = _load_program(artifact.path("pte"), etdump=True)
        runnable = ExecuTorchRunnable(program, bundle)
        runnable.set_inputs(inputs)
        clock = time.perf_counter_ns
        walls = []
        for _ in range(PROFILE_WARMUP + runs):
            t0 = clock()
            runnable.run()
            walls.append(clock() - t0)
        dump = artifact.directory / "profile.etdp"
        program.write_etdump_result_to_file(str(dump), str(artifact.directory / "profile.debug.bin"))
        runnable.close()
        del program
        kernels, whole = _kernels(_inspector(dump, artifact.path("etrecord")))
        recorded = len(whole.perf_data.raw)
        if recorded != PROFILE_WARMUP + runs:
            raise RuntimeError(f"ETDump recorded {recorded} executions, expected {PROFILE_WARMUP + runs}")
        ops, missing = [], []
        for k in kernels:
            values = k.per_run(PROFILE_WARMUP)
            if k.name not in artifact.kernel_map:
                missing.append(k.name)
            ops.append(OpTiming.from_runs(k.name, k.op_type, artifact.kernel_map.get(k.name, []), 1,
                                          values, provider=k.provider))
        execute = np.asarray(whole.perf_data.raw[PROFILE_WARMUP:], dtype=np.float64)
        per_op = sum(op.mean_us for op in ops)
        notes = [
            f"ExecuTorch ETDump (a second program loaded with enable_etdump=True), {runs} runs after "
            f"{PROFILE_WARMUP} warm-up runs, parsed with devtools.Inspector; not rescaled",
            "kernel calls: OPERATOR_CALL events (ns clock)",
        ]
        if any(k.kind == "delegated" for k in kernels):
            notes.append("XNNPACK operators: XNNPACK's own per-operator timings, whole microseconds "
                         "(sub-µs operators read 0); a delegate call's row is its DELEGATE_CALL event "
                         "minus its operators' times (setup, copies, and what the µs rounding lost)")
        notes.append(f"Method::execute median {np.median(execute):.2f} µs (mean {execute.mean():.2f}); "
                     f"per-op sum {per_op:.2f} µs; instrumented whole is the Python-timed call")
        if missing:
            notes.append(f"not in the compile-time kernel map: {', '.join(missing)}")
        return OpProfile(
            method=self.per_op_method, ops=ops, runs=runs,
            instrumented_whole_us=float(np.median(walls[PROFILE_WARMUP:])) / 1e3,
            notes="; ".join(notes),
        )
