"""The inputs an audit feeds: resolved shapes, seeded random data or the user's .npz.

Shapes come, in order of authority, from --input-shape, the user's --inputs file, the
model's own example inputs, and the model's declared shapes. A dynamic dimension left
without a value is an error that names the input and the dimension.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auditor.loaders import SCALAR_DTYPES, InputInfo, LoadedModel
from ground.errors import AuditorError, first_line
from ground.tensors import TensorSpec

SEED = 0


def parse_input_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """['x=1,16', 'y:1,8', '1,64'] -> {'x': (1, 16), 'y': (1, 8), '#2': (1, 64)} (unnamed
    ones by position). `name=dims` is unambiguous for names that contain ':' (TF-converted
    models: `serving_default_input_2:0=1,43844,1`); `name:dims` splits at the last ':'."""
    shapes: dict[str, tuple[int, ...]] = {}
    for position, spec in enumerate(specs):
        name, sep, dims = spec.rpartition("=") if "=" in spec else spec.rpartition(":")
        key = name if sep else f"#{position}"
        if sep and not name:
            raise AuditorError(f"--input-shape {spec!r}: the input name before {sep!r} is empty")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise AuditorError(f"--input-shape {spec!r}: expected [name=]d0,d1,... of integers")
        if not shape or any(d <= 0 for d in shape):
            raise AuditorError(f"--input-shape {spec!r}: dimensions must be positive integers")
        shapes[key] = shape
    return shapes


@dataclass
class InputSet:
    """What every compiler of an audit is fed: one example for timing; all for accuracy."""

    specs: list[TensorSpec]
    examples: list[list[np.ndarray]]  # examples[i] = one array per model input
    labels: np.ndarray | None
    source: str  # "seeded(0)" or the npz path

    @property
    def timing_inputs(self) -> list[np.ndarray]:
        return self.examples[0]

    @property
    def numbers(self) -> dict[str, np.ndarray]:
        """The number inputs (0-d: a sample rate, a flag) by name: what an If may branch on."""
        return {s.name: a for s, a in zip(self.specs, self.timing_inputs) if tuple(s.shape) == ()}

    def digest(self) -> str:
        h = hashlib.sha256(self.source.encode())
        for example in self.examples:
            for a in example:
                h.update(np.ascontiguousarray(a).tobytes())
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Path) -> None:
        arrays = {f"e{i}_{j}": a for i, ex in enumerate(self.examples) for j, a in enumerate(ex)}
        if self.labels is not None:
            arrays["labels"] = self.labels
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path, specs: list[TensorSpec], source: str) -> InputSet:
        with np.load(path) as z:
            count = 1 + max(int(k[1:].split("_")[0]) for k in z.files if k.startswith("e"))
            examples = [[z[f"e{i}_{j}"] for j in range(len(specs))] for i in range(count)]
            labels = z["labels"] if "labels" in z.files else None
        return cls(specs, examples, labels, source)


def _resolve_shape(info: InputInfo, position: int, given: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    user = given.get(info.name, given.get(f"#{position}"))
    if info.shape is None or (not info.shape and user is not None):
        if user is None:
            raise AuditorError(f"input {info.name!r} has no known shape; pass --input-shape {info.name}=d0,d1,...")
        return user
    if user is not None:
        if len(user) != len(info.shape) or any(
            d is not None and d != u for d, u in zip(info.shape, user)
        ):
            want = ",".join("?" if d is None else str(d) for d in info.shape)
            got = ",".join(map(str, user))
            raise AuditorError(f"--input-shape for {info.name!r} is {got} but the model takes {want}")
        return user
    for axis, d in enumerate(info.shape):
        if d is None:
            sym = info.dim_names[axis] if axis < len(info.dim_names) and info.dim_names[axis] else "?"
            example = ",".join("N" if x is None else str(x) for x in info.shape)
            raise AuditorError(
                f"input {info.name!r} dimension {axis} is dynamic ({sym}): "
                f"give it a value with --input-shape {info.name}={example}"
            )
    return tuple(int(d) for d in info.shape)


def _seeded(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    if np.issubdtype(np.dtype(spec.dtype), np.floating):
        return rng.standard_normal(spec.shape).astype(spec.dtype)
    if spec.dtype == "bool":
        return rng.integers(0, 2, spec.shape).astype(bool)
    return rng.integers(0, 4, spec.shape).astype(spec.dtype)  # small ints: safe as indices


def _read_arrays(path: Path, what: str) -> list[np.ndarray] | np.ndarray:
    if not path.is_file():
        raise AuditorError(f"{what} {path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:
        raise AuditorError(f"{what} {path}: not a readable .npy/.npz file ({first_line(e)})")
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        return [loaded[k] for k in loaded.files]


def parse_arg_values(specs: list[str]) -> dict[str, str]:
    """['sr=16000'] -> {'sr': '16000'}: values of a model's number arguments / scalar inputs."""
    values: dict[str, str] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise AuditorError(f"--arg {spec!r}: expected name=value (e.g. --arg sr=16000)")
        values[name.strip()] = text.strip()
    return values


def _number(name: str, text: str, dtype: str) -> np.ndarray:
    """A 0-d array of the argument's dtype from the --arg text."""
    kind = np.dtype(dtype).kind
    try:
        if kind == "b":
            if text.lower() not in ("0", "1", "true", "false"):
                raise ValueError(text)
            return np.array(text.lower() in ("1", "true"), dtype=bool)
        if kind in "iu":
            return np.array(int(text), dtype=dtype)
        return np.array(float(text), dtype=dtype)
    except ValueError:
        raise AuditorError(f"--arg {name}={text}: not a {np.dtype(dtype).name} value") from None


def _scalar_slots(model: LoadedModel, values: dict[str, str]) -> list[InputInfo | None]:
    """The model's arguments in call order: None for a tensor, an InputInfo for a number
    (a torch model's int/float/bool argument, or an ONNX input of rank 0)."""
    if not model.is_torch:
        return [i if i.shape == () else None for i in model.inputs]
    slots: list[InputInfo | None] = [i if i.scalar else None for i in model.inputs]
    start = len(model.inputs) if model.inputs or model.example_inputs is not None else 0
    if start == 0:  # nothing declared (TorchScript, pickle): the tensors come from --input-shape
        slots = []
    for p in model.params[start:]:
        if not p.scalar:
            if start == 0:
                slots.append(None)
            continue
        if p.required or p.name in values:
            slots.append(InputInfo(p.name, (), SCALAR_DTYPES[p.kind], scalar=True))
    return slots


def _scalar_value(model: LoadedModel, info: InputInfo, values: dict[str, str],
                  named: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    if info.name in values:
        return _number(info.name, values[info.name], info.dtype)
    if info.name in named:
        return np.asarray(named[info.name]).astype(info.dtype)
    position = next((k for k, i in enumerate(model.inputs) if i is info), None)
    if position is not None and model.example_inputs is not None and position < len(model.example_inputs):
        return np.array(model.example_inputs[position], dtype=info.dtype)
    if not model.is_torch and np.dtype(info.dtype).kind == "f":
        return rng.standard_normal(()).astype(info.dtype)
    if model.is_torch:
        raise AuditorError(f"forward() argument {info.name!r} is a Python number, not a tensor: "
                           f"give its value with --arg {info.name}=VALUE")
    raise AuditorError(f"input {info.name!r} ({info.dtype} scalar) selects what the model computes "
                       f"(e.g. a sample rate) and is never filled at random: give it with "
                       f"--arg {info.name}=VALUE")


def build_inputs(
    model: LoadedModel,
    shape_specs: list[str],
    inputs_file: Path | None = None,
    labels_file: Path | None = None,
    arg_specs: list[str] = (),
) -> InputSet:
    """Tensors (seeded, the model's examples or the user's .npz) and the model's number
    arguments (--arg name=value, or 0-d arrays of that name in the .npz), in call order."""
    values = parse_arg_values(list(arg_specs))
    slots = _scalar_slots(model, values)
    scalars = [i for i in slots if i is not None]
    unknown = sorted(set(values) - {i.name for i in scalars})
    if unknown:
        takes = ", ".join(i.name for i in scalars) or "none"
        raise AuditorError(f"--arg {unknown[0]}: the model has no number argument of that name "
                           f"(number arguments: {takes})")
    named: dict[str, np.ndarray] = {}  # numbers from the .npz: 0-d arrays of their names
    number_keys: set[str] = set()
    if inputs_file is not None and scalars:
        loaded = _read_named(inputs_file)
        named = {k: a for k, a in loaded.items() if a.ndim == 0 and k in {i.name for i in scalars}}
        if not named and len(loaded) == len(slots):  # unnamed: the numbers in their places
            named = {i.name: a for i, a in zip(slots, loaded.values()) if i is not None}
            number_keys = {k for i, k in zip(slots, loaded) if i is not None}
        number_keys |= set(named) & set(loaded)
    tensors = _build_tensors(model, shape_specs, inputs_file, labels_file, number_keys)
    if not scalars:
        return tensors
    rng = np.random.default_rng(SEED + 1)
    numbers = {i.name: _scalar_value(model, i, values, named, rng) for i in scalars}
    order = iter(range(len(tensors.specs)))
    places = [next(order, None) if i is None else i for i in slots]
    places += list(order)  # tensors beyond the declared arguments keep their order
    specs, examples = [], [[] for _ in tensors.examples]
    for place in places:
        if isinstance(place, InputInfo):
            specs.append(TensorSpec(place.name, (), numbers[place.name].dtype.name, place.scalar))
            for example in examples:
                example.append(numbers[place.name])
        elif place is not None:
            specs.append(tensors.specs[place])
            for example, given in zip(examples, tensors.examples):
                example.append(given[place])
    source = tensors.source + "; " + ", ".join(f"{k}={v.item()}" for k, v in numbers.items())
    return InputSet(specs, examples, tensors.labels, source)


def _read_named(path: Path) -> dict[str, np.ndarray]:
    arrays = _read_arrays(path, "--inputs")
    if isinstance(arrays, np.ndarray):
        return {"arr_0": arrays}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _build_tensors(model, shape_specs, inputs_file, labels_file, number_keys: set[str]) -> InputSet:
    given = parse_input_shapes(shape_specs)
    infos = [i for i in model.inputs if not (i.scalar or (not model.is_torch and i.shape == ()))]
    if inputs_file is not None:
        arrays = [a for k, a in _read_named(inputs_file).items() if k not in number_keys]
        return _from_user_arrays(model, infos, arrays, given, inputs_file, labels_file)
    if labels_file is not None:
        raise AuditorError("--labels needs --inputs (the examples the labels belong to)")
    if not infos and model.example_inputs is None:
        # TorchScript/pickle models declare nothing: one input per --input-shape.
        if not given:
            raise AuditorError(
                f"{model.source}: the model does not declare its input shapes; "
                "pass --input-shape d0,d1,... (once per input)"
            )
        names = [p.name for p in model.params if not p.scalar]  # TorchScript's forward() says them
        infos = [InputInfo(names[i] if i < len(names) else f"input_{i}", None) for i in range(len(given))]
    if model.example_inputs is not None and not given:
        arrays = [t.detach().cpu().numpy() for t in model.example_inputs if hasattr(t, "detach")]
        specs = [TensorSpec(i.name, a.shape, a.dtype.name) for i, a in zip(infos, arrays)]
        return InputSet(specs, [arrays], None, "model-example")
    specs = [
        TensorSpec(info.name, _resolve_shape(info, p, given), info.dtype)
        for p, info in enumerate(infos)
    ]
    rng = np.random.default_rng(SEED)
    return InputSet(specs, [[_seeded(s, rng) for s in specs]], None, f"seeded({SEED})")


def _from_user_arrays(model, infos, arrays, given, inputs_file, labels_file) -> InputSet:
    if infos and len(arrays) != len(infos):
        raise AuditorError(f"--inputs {inputs_file} holds {len(arrays)} arrays; the model takes {len(infos)}")
    if not infos:
        infos = [InputInfo(f"input_{i}", None) for i in range(len(arrays))]
    labels = None
    if labels_file is not None:
        loaded = _read_arrays(labels_file, "--labels")
        labels = loaded if isinstance(loaded, np.ndarray) else loaded[0]
    # With labels, arrays carry a leading example axis: example i is arrays[k][i:i+1]
    # when the model takes a batch of one, arrays[k][i] otherwise.
    if labels is not None:
        count = len(labels)
        if any(len(a) != count for a in arrays):
            raise AuditorError(f"--labels has {count} entries but --inputs arrays have {[len(a) for a in arrays]}")
        examples = []
        for i in range(count):
            examples.append([_one_example(a, i, info, given, p) for p, (a, info) in enumerate(zip(arrays, infos))])
    else:
        examples = [list(arrays)]
    specs = []
    for p, (a, info) in enumerate(zip(examples[0], infos)):
        if info.shape is not None and info.shape:
            _check_fits(info, a.shape)
        specs.append(TensorSpec(info.name, tuple(a.shape), a.dtype.name))
    return InputSet(specs, examples, labels, str(inputs_file))


def _one_example(array: np.ndarray, i: int, info: InputInfo, given, position) -> np.ndarray:
    want = given.get(info.name, given.get(f"#{position}"))
    rank = len(info.shape) if info.shape else (len(want) if want else array.ndim)
    return array[i : i + 1] if array.ndim == rank else array[i]


def _check_fits(info: InputInfo, shape: tuple[int, ...]) -> None:
    if len(shape) != len(info.shape) or any(d is not None and d != s for d, s in zip(info.shape, shape)):
        want = ",".join("?" if d is None else str(d) for d in info.shape)
        raise AuditorError(f"--inputs array for {info.name!r} has shape {list(shape)}; the model takes {want}")
