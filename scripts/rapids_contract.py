"""The RAPIDS API contract: every cuDF / cuML / CuPy / cupyx / FAISS name and keyword gpuclust uses exists.

`import cudf, cuml, cupy` works without a GPU, so names and signatures can be checked on any machine
against the installed wheels (scripts/rapids-contract.sh makes a venv with them). The uses are derived from
the code, not from a hand-kept list: each module's AST is walked, and every expression gets a coarse *kind*
by following names to where they were bound (flow-insensitively) and reading type annotations:

  ns      a library namespace: `xp` (CuPy on the GPU), `backend.sparse` (cupyx.scipy.sparse), `backend.frame`
          or a `frame` module passed in (cuDF), a RAPIDS module or class imported by name (`CuKMeans`)
  obj     an instance of a RAPIDS class made here (`model = CuKMeans(...)`; `fit` returns the estimator)
  val     a value that may be a CuPy/cupyx array or a cuDF frame (a parameter typed Any, a call's result...),
          with its family (array, sparse, frame) where a method only that family has is used on it or made it
  acc     a cuDF accessor or group-by (`s.str`, `s.dt`, `s.cat`, `df.groupby(...)`)
  opaque  a project object or a container: its own attributes are not checked; what it holds is a val
          unless an annotation says more (`Sequence[Featurizer]`, a dataclass field `device: str`)
  host    surely not RAPIDS: NumPy/pandas/torch/... calls, literals, builtins, `-> np.ndarray` results, a name
          under `isinstance(v, np.generic)` or `type(v).__module__.startswith("torch")`

Every attribute read and call on an ns or obj receiver is resolved in the installed package, and its
keywords are bound against `inspect.signature` (Cython methods: the signature line of their docstring; a
`(*args, **kwargs)` constructor: its base's). A val or acc receiver answers to the CPU twin: where a
NumPy/SciPy/pandas class has the attribute and takes the call, a CuPy/cupyx/cuDF class of the same family
must have it, and each that has it must take the call; a call no CPU twin takes fails too (a misspelt
keyword), and so does a name no accessor or group-by has. That is checked in modules that can hold GPU
data (DEVICE_IMPORTS below). Not RAPIDS uses: a call a project class's method would take
(`reducer.transform(x, backend)`), a dict/list method on a value of unknown family, and a name no array or
frame class has on such a value (so a misspelt method on an untyped value goes unseen; the CPU tests see
it where the line runs on the CPU). A keyword only a `**kwargs` would swallow does not count as taken
(KWARGS_FORWARDING names the callables whose `**kwargs` are documented fields or another class's parameters).

A use that cannot be verified fails. A line may waive its uses with `# rapids-contract: waive <reason>`;
a waiver without a reason, or whose uses verify anyway, fails too. A keyword passed only when
`"kw" in inspect.signature(C).parameters` (or through a helper that reads C's signature, like
gpuclust.compat.accepted_kwargs) holds for the called C, or an attribute used under `hasattr`, is checked on
both branches: without it always, with it where the installed version has it. `--stand-ins` checks against
NumPy/SciPy/pandas/scikit-learn instead: that is how the test suite exercises this logic without the wheels.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import re
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Package families the contract covers: importing one of these is a RAPIDS use.
RAPIDS_ROOTS = frozenset({"cupy", "cupyx", "cudf", "cuml", "faiss", "rmm", "dask_cudf", "dask_cuda",
                          "pylibraft", "cuvs", "cugraph", "pylibcudf"})
# What the backend's namespaces are on the GPU, and which family of values each makes.
GPU_NAMESPACES = {"xp": "cupy", "sparse": "cupyx.scipy.sparse", "frame": "cudf"}
CPU_NAMESPACES = {"frame": "pandas", "xp": "numpy", "sparse": "scipy.sparse"}
FAMILY_OF_ROOT = {"xp": "array", "cupy": "array", "sparse": "sparse", "cupyx": "sparse", "frame": "frame",
                  "cudf": "frame"}
# A module's val receivers are checked when it can hold GPU data: it imports a RAPIDS package, the frame
# helpers or prepared data, anything from the backend module but what only picks a backend, or uses a
# backend namespace (`xp`, `backend.frame`). Others (reports, synthetic data, the CLI) hold host objects.
DEVICE_IMPORTS = ("gpuclust.frames", "gpuclust.preprocess")
BACKEND_MODULE, BACKEND_CHOOSERS = "gpuclust.backend", frozenset({"resolve_backend", "Backend", "DEVICE_CHOICES"})
WAIVER = re.compile(r"#\s*rapids-contract:\s*(?P<what>.*)$")
SCALARS = frozenset({"str", "int", "float", "bool", "bytes", "None", "Path", "complex"})
CONTAINERS = frozenset({"dict", "list", "tuple", "set", "frozenset", "Sequence", "Mapping", "Iterable",
                        "Iterator", "Callable", "Generator", "type"})
HOST_BUILTINS = frozenset({"len", "int", "float", "str", "bool", "repr", "round", "isinstance", "hasattr",
                           "range", "print", "type", "id", "hash", "format", "callable", "issubclass", "open"})
CONTAINER_BUILTINS = frozenset({"list", "tuple", "dict", "set", "frozenset", "sorted", "zip", "enumerate",
                                "reversed", "iter", "map", "filter"})
# Methods whose result is on the host whatever the receiver was (cuDF -> pandas, CuPy -> NumPy or a scalar).
HOST_RESULT_METHODS = frozenset({"to_pandas", "to_numpy", "tolist", "to_list", "item", "to_dict", "to_arrow"})
# A call of one of these on a value of unknown family is taken for the builtin container's (dict.get,
# list.append), not a frame's: pandas has them too, but a frame in this code comes with a frame method.
BUILTIN_METHODS = frozenset(n for t in (dict, list, set) for n in dir(t) if not n.startswith("_"))
# scikit-learn's convention, which cuML and this project follow: fit returns the estimator itself.
RETURNS_SELF = frozenset({"fit"})


# --- kinds --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    tag: str  # ns | obj | val | acc | opaque | host
    # ns: dotted name ("xp.linalg"); obj: its class; val: family ("" = any); acc: str/dt/cat/groupby;
    # opaque: "class:Name" for a project class's instance, "of:<tag>" for a container of such items
    path: str = ""


HOST, VAL, OPAQUE = Kind("host"), Kind("val"), Kind("opaque")
PENDING = Kind("pending")  # a name whose kind is being worked out: a cycle adds nothing


def val(family: str = "") -> Kind:
    return Kind("val", family)


def family(kind: Kind) -> str:
    """The value family a kind's values belong to ("" when unknown)."""
    if kind.tag in ("ns", "obj"):
        return FAMILY_OF_ROOT.get(kind.path.split(".")[0], "")
    return kind.path if kind.tag == "val" else ("frame" if kind.tag == "acc" else "")


def join(kinds: list[Kind]) -> Kind:
    """The kind of a name bound several times, or of `a or b`: the most RAPIDS-like possibility wins."""
    kinds = [k for k in kinds if k != PENDING]
    for tag in ("ns", "obj", "acc"):
        found = [k for k in kinds if k.tag == tag]
        if found and (len(set(found)) == 1 or tag == "ns"):
            return found[0]
    vals = [k for k in kinds if k.tag in ("val", "obj", "acc")]
    if vals:  # a value mixed with an array is an array: the known family wins where there is one
        families = {family(k) for k in vals} - {""}
        return val(families.pop() if len(families) == 1 else "")
    if not kinds:
        return VAL
    others = set(kinds) - {HOST}  # `X | None`, `x = None ... x = X()`: the X matters
    return HOST if not others else others.pop() if len(others) == 1 else OPAQUE


def item_of(kind: Kind, index: int | None = None) -> Kind:
    """What iterating over a value of this kind gives, or unpacking it (the index-th of a tuple[...])."""
    if kind.tag == "host" or kind == PENDING:
        return kind
    if kind.tag == "opaque" and kind.path.startswith("of:"):
        tag, _, path = kind.path.removeprefix("of:").partition("/")
        return Kind(tag, path)
    if kind.tag == "opaque" and kind.path.startswith("tuple:") and index is not None:
        items = kind.path.removeprefix("tuple:").split(";")
        tag, _, path = items[index].partition("/") if index < len(items) else ("val", "")
        return Kind(tag, path)
    return val(family(kind)) if kind.tag == "val" else VAL


# --- uses: what the scan records ----------------------------------------------------------------

@dataclass
class Use:
    """One attribute read or call on a receiver that may be a RAPIDS object."""

    file: str
    line: int
    text: str
    receiver: Kind
    name: str  # the attribute; "" when the receiver itself is called or imported (`CuKMeans(...)`)
    call: bool = False
    n_positional: int | None = 0  # None: a *args splat, count unknown
    keywords: tuple[str, ...] = ()
    guarded_keywords: tuple[str, ...] = ()  # passed only where a run-time signature check says the callee takes them
    unknown_keywords: str = ""  # a **splat whose keys cannot be read from the code
    guarded: bool = False  # reached only under `hasattr(receiver, name)`
    waiver: str | None = None
    plain_receiver: bool = False  # the receiver is a bare name (`frame.to_datetime`: maybe a module passed in)


@dataclass
class Outcome:
    use: Use
    status: str  # ok | guarded | waived | fail | skip (not a RAPIDS use after all)
    api: str = ""
    detail: str = ""


# --- the project: its classes and what its functions return ---------------------------------------

class Project:
    """The package's classes and functions, so calls into the project get the kind their annotations say."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.trees: dict[Path, ast.Module] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        self.functions: dict[tuple[str, str], ast.FunctionDef] = {}  # (module, name)
        self.methods: dict[str, list[tuple[ast.FunctionDef, Path]]] = {}
        self.class_paths: dict[str, Path] = {}
        for path in sorted(root.rglob("*.py")) if root else []:
            tree = self.trees[path] = ast.parse(path.read_text(), str(path))
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    self.classes[node.name], self.class_paths[node.name] = node, path
                    for fn in node.body:
                        if isinstance(fn, ast.FunctionDef):
                            self.methods.setdefault(fn.name, []).append((fn, path))
                elif isinstance(node, ast.FunctionDef):
                    self.functions[(self.module_name(path), node.name)] = node

    @property
    def package(self) -> str:
        return self.root.name if self.root else ""

    def module_name(self, path: Path) -> str:
        root = self.root.resolve().parent if self.root else None
        if root is None or not path.resolve().is_relative_to(root):
            return path.stem
        parts = path.resolve().relative_to(root).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    @functools.cache  # noqa: B019 - one Project per run; asked once per annotation, a walk of the module each
    def host_names(self, path: Path) -> frozenset[str]:
        return frozenset(host_names(self.trees[path], self.package)) if path in self.trees else frozenset()

    @functools.cache  # noqa: B019 - one Project per run
    def returns(self, fn: ast.FunctionDef, path: Path) -> Kind:
        return annotation_kind(fn.returns, self.host_names(path), self.classes)

    def method_kind(self, name: str, cls: str = "") -> Kind:
        """What a method returns: the class's own if known, else what every project class defining it agrees on."""
        defs = self.methods.get(name, [])
        own = [(fn, path) for fn, path in defs if self.classes.get(cls) and fn in self.classes[cls].body]
        kinds = [self.returns(fn, path) for fn, path in own or defs]
        return join(kinds) if kinds else VAL

    def field_kind(self, cls: str, name: str) -> Kind:
        """A project class's annotated field (a dataclass field, a protocol attribute); val if not declared."""
        node = self.classes.get(cls)
        path = self.class_paths.get(cls)
        for field in node.body if node else []:
            if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and field.target.id == name:
                return annotation_kind(field.annotation, self.host_names(path), self.classes)
        return VAL


_PARSER_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def host_names(tree: ast.Module, package: str) -> set[str]:
    """Names a module binds to non-RAPIDS, non-project imports (np, pd, torch, Path, ...)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            for alias in node.names:
                root = (module or alias.name).split(".")[0]
                if root not in RAPIDS_ROOTS and root != package and root != "typing":
                    out.add(alias.asname or alias.name.split(".")[0])
    return out


def annotation_kind(node: ast.AST | None, host_names: Set[str], classes: dict[str, Any]) -> Kind:
    """The kind a type annotation promises: Any and no annotation say nothing (val)."""
    if node is None:
        return VAL
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        node = ast.parse(node.value, mode="eval").body
    if isinstance(node, ast.Constant) and node.value is None:
        return HOST
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return join([annotation_kind(node.left, host_names, classes), annotation_kind(node.right, host_names, classes)])
    if isinstance(node, ast.Subscript):
        outer = ast.unparse(node.value).split(".")[-1]
        if outer in ("Optional", "Union"):
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return join([annotation_kind(p, host_names, classes) for p in parts])
        if outer in ("list", "set", "frozenset", "Sequence", "Iterable", "Iterator"):
            item = annotation_kind(node.slice, host_names, classes)
            return Kind("opaque", f"of:{item.tag}/{item.path}")
        if outer == "tuple" and isinstance(node.slice, ast.Tuple) and not any(
                isinstance(e, ast.Constant) and e.value is Ellipsis for e in node.slice.elts):
            items = [annotation_kind(e, host_names, classes) for e in node.slice.elts]
            return Kind("opaque", "tuple:" + ";".join(f"{k.tag}/{k.path}" for k in items))
        return OPAQUE if outer in CONTAINERS else annotation_kind(node.value, host_names, classes)
    root = node
    while isinstance(root, ast.Attribute):
        root = root.value
    name = node.id if isinstance(node, ast.Name) else ""
    if name == "Any" or not isinstance(root, ast.Name):
        return VAL
    if name in SCALARS:
        return HOST
    if name in classes:
        return Kind("opaque", f"class:{name}")
    if name in CONTAINERS:
        return OPAQUE
    if root.id in host_names:
        return HOST  # np.ndarray, pd.DataFrame, torch.Tensor, Path
    return VAL


# --- the scan -----------------------------------------------------------------------------------

class Scope:
    """Names bound in one function (or the module), each with how it was bound."""

    def __init__(self, node: ast.AST, parent: Scope | None) -> None:
        self.node, self.parent = node, parent
        self.bindings: dict[str, list[tuple[str, Any]]] = {}  # ("kind", Kind) | ("expr" | "item", ast node)

    def bind(self, name: str, how: str, value: Any) -> None:
        self.bindings.setdefault(name, []).append((how, value))

    def lookup(self, name: str) -> Scope | None:
        scope: Scope | None = self
        while scope is not None and name not in scope.bindings:
            scope = scope.parent
        return scope


class ModuleScan:
    """Walks one module and records its uses of receivers that may be RAPIDS objects."""

    def __init__(self, path: Path, project: Project, libraries: Libraries) -> None:
        self.path, self.project, self.lib = path, project, libraries
        source = path.read_text()
        self.tree = project.trees.get(path) or ast.parse(source, str(path))
        self.source, self.lines = source, source.splitlines()
        self.parsed_lines = _PARSER_LINE.findall(source)  # as the parser counts them: \r\n, \r or \n end a line
        self.module = project.module_name(path)
        self.host_names = host_names(self.tree, project.package)
        self.imported_modules = {a.asname or a.name: self._module_kind(a.name) for n in ast.walk(self.tree)
                                 if isinstance(n, ast.Import) for a in n.names}
        self.scopes: dict[ast.AST, Scope] = {}
        self.parents: dict[ast.AST, ast.AST] = {}
        self.memo: dict[tuple[int, str], Kind] = {}
        self.uses: list[Use] = []
        self.waivers = {i + 1: m.group("what").strip() for i, line in enumerate(self.lines) if (m := WAIVER.search(line))}
        self.used_waivers: set[int] = set()
        self._build(self.tree, None)
        self.device_module = self._holds_device_data()

    def _holds_device_data(self) -> bool:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] in RAPIDS_ROOTS for a in node.names):
                return True
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.startswith(DEVICE_IMPORTS) or node.module.split(".")[0] in RAPIDS_ROOTS
                    or node.module == BACKEND_MODULE and {a.name for a in node.names} - BACKEND_CHOOSERS):
                return True
            if isinstance(node, ast.Attribute | ast.Name) and self.kind(node).tag == "ns":
                return True
        return False

    # scopes and bindings

    def _build(self, node: ast.AST, scope: Scope | None) -> None:
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            scope = Scope(node, scope)
            if not isinstance(node, ast.Module):
                for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                    scope.bind(arg.arg, "kind", self._parameter_kind(arg))
                for arg in (node.args.vararg, node.args.kwarg):
                    if arg is not None:
                        scope.bind(arg.arg, "kind", OPAQUE)
        self.scopes[node] = scope
        for child in ast.iter_child_nodes(node):
            self.parents[child] = node
            self._bind(child, scope)
            self._build(child, scope)

    def _parameter_kind(self, arg: ast.arg) -> Kind:
        """By name, then annotation: `xp` is the array namespace, a ModuleType `frame` the frame library."""
        annotation = ast.unparse(arg.annotation) if arg.annotation else ""
        if arg.arg == "xp":
            return Kind("ns", "xp")
        if arg.arg in RAPIDS_ROOTS:
            return Kind("ns", arg.arg)  # accelerators' probes take the module itself
        if arg.arg in self.imported_modules and (not annotation or "ModuleType" in annotation):
            return self.imported_modules[arg.arg]  # `def probe(torch)`, where the file imports torch
        if "ModuleType" in annotation:
            return Kind("ns", arg.arg if arg.arg in GPU_NAMESPACES else f"?{arg.arg}")
        if arg.arg in ("self", "cls"):
            return OPAQUE
        return annotation_kind(arg.annotation, self.host_names, self.project.classes)

    def _bind(self, node: ast.AST, scope: Scope) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            scope.bind(node.name, "kind", Kind("host", "def"))
        elif isinstance(node, ast.ClassDef):
            scope.bind(node.name, "kind", Kind("opaque", f"class:{node.name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                scope.bind(bound, "kind", self._module_kind(alias.name if alias.asname else bound))
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                scope.bind(alias.asname or alias.name, "kind", self._from_import_kind(node.module, alias.name))
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                self._bind_target(target, node.value, scope, "expr")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and (declared := annotation_kind(node.annotation, self.host_names, self.project.classes)) != VAL:
            scope.bind(node.target.id, "declared", declared)  # `q: torch.Tensor = ...`: the annotation says what it is
        elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None:
            self._bind_target(node.target, node.value, scope, "expr")
        elif isinstance(node, ast.For | ast.comprehension):
            self._bind_target(node.target, node.iter, scope, "item")
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            self._bind_target(node.optional_vars, node.context_expr, scope, "expr")
        elif isinstance(node, ast.ExceptHandler) and node.name:
            scope.bind(node.name, "kind", HOST)

    def _bind_target(self, target: ast.AST, value: ast.AST, scope: Scope, how: str) -> None:
        if isinstance(target, ast.Name):
            scope.bind(target.id, how, value)
        elif isinstance(target, ast.Tuple | ast.List):
            pairwise = isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(target.elts)
            for i, element in enumerate(target.elts):
                element = element.value if isinstance(element, ast.Starred) else element
                self._bind_target(element, value.elts[i] if pairwise else value, scope,
                                  how if pairwise else "item" if how == "item" else f"item:{i}")

    def _module_kind(self, name: str) -> Kind:
        root = name.split(".")[0]
        if root in RAPIDS_ROOTS:
            return Kind("ns", name)
        return OPAQUE if root == self.project.package else Kind("host", "module")

    def _from_import_kind(self, module: str, name: str) -> Kind:
        root = module.split(".")[0]
        if root in RAPIDS_ROOTS:
            return Kind("ns", f"{module}.{name}")
        if root != self.project.package:
            return Kind("host", "module")
        if name in self.project.classes:
            return Kind("opaque", f"class:{name}")  # the class itself: calling it makes an instance
        return Kind("host", f"def:{module}") if (module, name) in self.project.functions else OPAQUE

    # kinds of expressions

    def kind(self, node: ast.AST) -> Kind:
        if isinstance(node, ast.Name):
            return self._name_kind(node)
        if isinstance(node, ast.Constant | ast.JoinedStr | ast.Lambda):
            return HOST
        if isinstance(node, ast.Dict | ast.List | ast.Tuple | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp
                      | ast.GeneratorExp):
            return OPAQUE
        if isinstance(node, ast.Attribute):
            return self._attribute_kind(node)
        if isinstance(node, ast.Subscript):
            base = self.kind(node.value)
            if base.tag == "host":
                return HOST
            return base if base == Kind("acc", "groupby") else val(family(base))
        if isinstance(node, ast.Call):
            return self._call_kind(node)
        if isinstance(node, ast.IfExp | ast.BoolOp):
            return join([self.kind(n) for n in ([node.body, node.orelse] if isinstance(node, ast.IfExp) else node.values)])
        if isinstance(node, ast.BinOp | ast.Compare | ast.UnaryOp):
            parts = {ast.BinOp: lambda n: [n.left, n.right], ast.Compare: lambda n: [n.left, *n.comparators],
                     ast.UnaryOp: lambda n: [n.operand]}[type(node)](node)
            kinds = [k for k in map(self.kind, parts) if k.tag != "host"]
            return val(family(join(kinds))) if kinds else HOST
        if isinstance(node, ast.NamedExpr | ast.Starred | ast.Await):
            return self.kind(node.value)
        return VAL

    def _name_kind(self, node: ast.Name) -> Kind:
        if node.id == "xp":
            return Kind("ns", "xp")
        if narrowed := self._narrowed(node):
            return narrowed
        scope = self._scope_of(node).lookup(node.id)
        if scope is None:
            return HOST if node.id in dir(__builtins__) else VAL
        key = (id(scope), node.id)
        if key not in self.memo:
            self.memo[key] = PENDING
            bindings = scope.bindings[node.id]
            declared = [value for how, value in bindings if how == "declared"]  # an annotation beats inference
            kinds = declared or [value if how == "kind" else self.kind(value) if how == "expr" else
                                 item_of(self.kind(value), int(how[5:]) if how.startswith("item:") else None)
                                 for how, value in bindings]
            self.memo[key] = join(kinds)
            if self.memo[key] == VAL:
                self.memo[key] = val(self._duck_family(node.id, scope))
        return self.memo[key]

    def _duck_family(self, name: str, scope: Scope) -> str:
        """The one family whose classes alone have the methods called on this name (`ev.merge(...)`: a
        frame), leaving out names the project's own classes define too (`f.transform(...)`)."""
        found = set()
        for node in ast.walk(scope.node):
            func = node.func if isinstance(node, ast.Call) else None
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == name
                    and func.attr not in self.project.methods and self._scope_of(func).lookup(name) is scope):
                families = self.lib.families_of(func.attr)
                found |= families if len(families) == 1 else set()
        return found.pop() if len(found) == 1 else ""

    def _attribute_kind(self, node: ast.Attribute) -> Kind:
        base = self.kind(node.value)
        if base.tag == "host" or base == PENDING:
            return base
        if base.tag == "ns":
            return Kind("ns", f"{base.path}.{node.attr}")
        if node.attr in GPU_NAMESPACES and base.tag in ("opaque", "val"):
            return Kind("ns", node.attr)  # backend.xp, self.backend.frame, ...
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return self._self_attribute_kind(node)
        if base.tag == "opaque":
            return self.project.field_kind(base.path.removeprefix("class:"), node.attr)
        if node.attr in ("str", "dt", "cat") and family(base) in ("", "frame"):
            return Kind("acc", node.attr)
        return val("array") if node.attr == "values" and family(base) == "frame" else val(family(base))

    def _self_attribute_kind(self, node: ast.Attribute) -> Kind:
        """`self.x`: what the class assigns to it (or its dataclass annotation)."""
        cls = self._enclosing(node, ast.ClassDef)
        if cls is None:
            return VAL
        key = (id(cls), node.attr)
        if key not in self.memo:
            self.memo[key] = VAL
            kinds = []
            for n in ast.walk(cls):
                if isinstance(n, ast.Assign | ast.AnnAssign) and n.value is not None:
                    for target in n.targets if isinstance(n, ast.Assign) else [n.target]:
                        pairs = zip(target.elts, n.value.elts, strict=False) if isinstance(target, ast.Tuple) and \
                            isinstance(n.value, ast.Tuple) else [(target, n.value)]
                        kinds += [self.kind(v) for t, v in pairs if isinstance(t, ast.Attribute) and t.attr == node.attr
                                  and isinstance(t.value, ast.Name) and t.value.id == "self"]
            kinds += [annotation_kind(n.annotation, self.host_names, self.project.classes) for n in cls.body
                      if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.target.id == node.attr]
            self.memo[key] = join(kinds) if kinds else VAL
        return self.memo[key]

    def _call_kind(self, node: ast.Call) -> Kind:
        func = node.func
        if isinstance(func, ast.Name) and self._scope_of(node).lookup(func.id) is None:
            if func.id in HOST_BUILTINS:
                return HOST
            if func.id in CONTAINER_BUILTINS:  # list(x), sorted(x): what x holds, in a container
                item = item_of(self.kind(node.args[0])) if len(node.args) == 1 and func.id != "dict" else VAL
                return Kind("opaque", f"of:{item.tag}/{item.path}")
        if _is_import_module(node):
            arg = node.args[0]
            return self._module_kind(arg.value) if isinstance(arg, ast.Constant) else OPAQUE
        callee = self.kind(func)
        if callee == PENDING:
            return PENDING
        if callee.tag == "opaque" and callee.path.startswith("class:") and isinstance(func, ast.Name):
            return callee  # a project class called: an instance of it
        if callee.tag == "ns":
            dotted = _gpu_dotted(callee.path)
            return Kind("obj", dotted) if self.lib.is_class(dotted) else val(family(callee))
        if callee.tag == "host":
            return self._project_function_kind(func, callee) if callee.path.startswith("def") else HOST
        if not isinstance(func, ast.Attribute):
            return OPAQUE if callee.tag == "opaque" and isinstance(func, ast.Name) else VAL
        base = self.kind(func.value)
        if base == PENDING:
            return PENDING
        if func.attr in HOST_RESULT_METHODS and base.tag != "opaque":
            return HOST
        if func.attr in RETURNS_SELF and base.tag in ("obj", "opaque"):
            return base
        if base.tag == "opaque":
            if isinstance(func.value, ast.Name) and func.value.id == "self":
                cls = self._enclosing(node, ast.ClassDef)
                fn = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == func.attr), None) \
                    if cls else None
                if fn is not None:
                    return self.project.returns(fn, self.path)
            return self.project.method_kind(func.attr, base.path.removeprefix("class:"))
        if func.attr == "groupby" and family(base) in ("", "frame"):
            return Kind("acc", "groupby")
        if func.attr == "to_cupy":
            return val("array")
        if family(base):
            return val(family(base))
        only = self.lib.families_of(func.attr) if func.attr not in self.project.methods else frozenset()
        # `.merge(...)` answers a frame whatever it was called on
        sparse_result = func.attr.startswith("to") or func.attr in ("astype", "copy", "transpose", "multiply")
        return val(next(iter(only))) if len(only) == 1 and (only != {"sparse"} or sparse_result) else VAL

    def _project_function_kind(self, func: ast.AST, callee: Kind) -> Kind:
        if not isinstance(func, ast.Name):
            return VAL
        module = callee.path.removeprefix("def:") or self.module
        fn = self.project.functions.get((module, func.id))
        if fn is None:  # a nested def
            fn = next((n for n in ast.walk(self.tree) if isinstance(n, ast.FunctionDef) and n.name == func.id), None)
            if fn is None or fn.returns is None:
                return VAL
            return annotation_kind(fn.returns, self.host_names, self.project.classes)
        path = next((p for p in self.project.trees if self.project.module_name(p) == module), self.path)
        return self.project.returns(fn, path)

    # facts that hold where a node is evaluated: if-tests, and/or chains

    def _facts(self, node: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
        """(test, truth) pairs known to hold at `node`."""
        child = node
        while child in self.parents:
            parent = self.parents[child]
            if isinstance(parent, ast.If | ast.IfExp | ast.While) and child is not parent.test:
                in_body = child in parent.body if isinstance(parent, ast.If | ast.While) else child is parent.body
                yield from _conjuncts(parent.test, in_body)
            elif isinstance(parent, ast.BoolOp) and child in parent.values:
                for before in parent.values[:parent.values.index(child)]:
                    yield from _conjuncts(before, isinstance(parent.op, ast.And))
            child = parent

    def _narrowed(self, name: ast.Name) -> Kind | None:
        """What an enclosing test says a name is: under `isinstance(v, np.generic)` a host object; under
        `type(v).__module__.startswith("cupy")` (directly or through a local) a value of that library."""
        for test, truth in self._facts(name):
            if not truth or not isinstance(test, ast.Call) or not test.args:
                continue
            func, first = test.func, test.args[0]
            if (isinstance(func, ast.Name) and func.id == "isinstance" and isinstance(first, ast.Name)
                    and first.id == name.id and annotation_kind(test.args[1], self.host_names, {}).tag == "host"):
                return HOST
            if (isinstance(func, ast.Attribute) and func.attr == "startswith" and isinstance(first, ast.Constant)
                    and self._type_module_of(func.value) == name.id):
                root = str(first.value).split(".")[0]
                return val(FAMILY_OF_ROOT.get(root, "")) if root in RAPIDS_ROOTS else HOST
        return None

    def _type_module_of(self, node: ast.AST) -> str | None:
        """n for `type(n).__module__`, also through a local bound once to it."""
        if isinstance(node, ast.Name) and (scope := self._scope_of(node).lookup(node.id)):
            bindings = scope.bindings[node.id]
            node = bindings[0][1] if len(bindings) == 1 and bindings[0][0] == "expr" else node
        if (isinstance(node, ast.Attribute) and node.attr == "__module__" and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "type" and node.value.args
                and isinstance(node.value.args[0], ast.Name)):
            return node.value.args[0].id
        return None

    def _under_hasattr(self, node: ast.Attribute) -> bool:
        want = (ast.unparse(node.value), node.attr)
        return any(truth and isinstance(t, ast.Call) and isinstance(t.func, ast.Name) and t.func.id == "hasattr"
                   and isinstance(t.args[1], ast.Constant) and (ast.unparse(t.args[0]), t.args[1].value) == want
                   for t, truth in self._facts(node))

    def _scope_of(self, node: ast.AST) -> Scope:
        while node not in self.scopes:
            node = self.parents[node]
        return self.scopes[node]

    def _enclosing(self, node: ast.AST, kind: type) -> Any:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, kind):
                return node
        return None

    # the walk

    def scan(self) -> list[Use]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                self._import_uses(node)
            elif isinstance(node, ast.Attribute):
                self._attribute_use(node)
            elif isinstance(node, ast.Call):
                self._call_use(node)
        return self.uses

    def _record(self, node: ast.AST, receiver: Kind, name: str, **extra: Any) -> None:
        lines = range(node.lineno, (getattr(node, "end_lineno", None) or node.lineno) + 1)
        waiver_line = next((n for n in lines if n in self.waivers), None)
        if waiver_line is not None:
            self.used_waivers.add(waiver_line)
        text = " ".join((self._segment(node) or name).split())
        self.uses.append(Use(str(self.path), node.lineno, text[:90], receiver, name,
                             waiver=self.waivers.get(waiver_line) if waiver_line else None, **extra))

    def _segment(self, node: ast.AST) -> str | None:
        """`ast.get_source_segment` over lines split once per module: it splits the whole source on every
        call (12 s of the contract's 25 s)."""
        end_line, end_col = getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)
        if end_line is None or end_col is None:
            return None
        first, last = self.parsed_lines[node.lineno - 1].encode(), self.parsed_lines[end_line - 1].encode()
        if end_line == node.lineno:
            return first[node.col_offset:end_col].decode()
        return "".join([first[node.col_offset:].decode(), *self.parsed_lines[node.lineno:end_line - 1],
                        last[:end_col].decode()])

    def _import_uses(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in RAPIDS_ROOTS:
                    self._record(node, Kind("ns", alias.name), "")
        elif node.module and node.module.split(".")[0] in RAPIDS_ROOTS:
            for alias in node.names:
                self._record(node, Kind("ns", node.module), alias.name)

    def _attribute_use(self, node: ast.Attribute) -> None:
        parent = self.parents.get(node)
        if isinstance(parent, ast.Call) and parent.func is node:
            return  # checked as a call
        receiver = self.kind(node.value)
        if receiver.tag == "ns" and isinstance(parent, ast.Attribute) and self.kind(parent).tag == "ns":
            return  # a namespace chain counts once, by its full dotted name
        if receiver.tag in ("ns", "obj") or (receiver.tag in ("val", "acc") and self.device_module):
            self._record(node, receiver, node.attr, guarded=self._under_hasattr(node),
                         plain_receiver=isinstance(node.value, ast.Name))

    def _call_use(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute):
            receiver, name = self.kind(node.func.value), node.func.attr
        else:
            receiver, name = self.kind(node.func), ""
            if receiver.tag != "ns":
                return
        if receiver.tag not in ("ns", "obj", "val", "acc") or _is_import_module(node):
            return
        if receiver.tag in ("val", "acc") and not self.device_module:
            return
        keywords, guarded, unknown = self._keywords(node)
        star = any(isinstance(a, ast.Starred) for a in node.args)
        if receiver == VAL and self._project_method_takes(name, len(node.args), keywords):
            return  # `reducer.transform(x, backend)`: a project object's method, though pandas has one too
        self._record(node, receiver, name, call=True, n_positional=None if star else len(node.args),
                     keywords=keywords, guarded_keywords=guarded, unknown_keywords=unknown,
                     guarded=isinstance(node.func, ast.Attribute) and self._under_hasattr(node.func),
                     plain_receiver=isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name))

    def _signature_guard_keys(self, test: ast.AST, callee: ast.AST) -> set[str]:
        """k for each `"k" in inspect.signature(C).parameters` in a test, or `helper(C, "k")` where the helper
        (a function of this module or the project) reads a signature; C must be what the call calls."""
        keys = set()
        for node in ast.walk(test):
            if (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In)
                    and isinstance(node.left, ast.Constant)):
                checked = next((n.args[0] for n in ast.walk(node.comparators[0]) if isinstance(n, ast.Call)
                                and ast.unparse(n.func).endswith("signature") and n.args), None)
                key = node.left.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and self._reads_signature(node.func.id):
                checked = next((a for a in node.args if not isinstance(a, ast.Constant)), None)
                key = next((a.value for a in node.args if isinstance(a, ast.Constant)), None)
            else:
                continue
            if checked is not None and self._same_callable(checked, callee):
                keys.add(key)
        return keys

    def _keywords_passed_to(self, function: str) -> list[str] | None:
        """Every keyword the module's calls of a local function pass; None if one passes a **splat."""
        keys: list[str] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function:
                if any(k.arg is None for k in node.keywords):
                    return None
                keys += [k.arg for k in node.keywords if k.arg not in keys]
        return keys

    def _same_callable(self, a: ast.AST, b: ast.AST) -> bool:
        return ast.unparse(a) == ast.unparse(b) or (self.kind(a) == self.kind(b) and self.kind(a).tag == "ns")

    def _reads_signature(self, name: str) -> bool:
        defs = [n for n in ast.walk(self.tree) if isinstance(n, ast.FunctionDef) and n.name == name]
        defs += [fn for (_, fn_name), fn in self.project.functions.items() if fn_name == name]
        return bool(defs) and any("signature(" in ast.unparse(fn) for fn in defs)

    def _project_method_takes(self, name: str, n_positional: int, keywords: tuple[str, ...]) -> bool:
        for fn, _ in self.project.methods.get(name, []):
            sig = ast_signature(fn.args)
            try:
                sig.replace(parameters=list(sig.parameters.values())[1:]).bind(*[None] * n_positional,
                                                                                **dict.fromkeys(keywords))
                return True
            except TypeError:
                continue
        return False

    # keyword arguments, including **dicts built in the same function

    def _keywords(self, call: ast.Call) -> tuple[tuple[str, ...], tuple[str, ...], str]:
        plain: list[str] = []
        guarded: list[str] = []
        unknown = ""
        for kw in call.keywords:
            if kw.arg is not None:
                plain.append(kw.arg)
            elif (keys := self._splat_keys(kw.value, call)) is None:
                unknown = ast.unparse(kw.value)
            else:
                plain += keys[0]
                guarded += keys[1]
        return tuple(plain), tuple(guarded), unknown

    def _splat_keys(self, value: ast.AST, call: ast.Call) -> tuple[list[str], list[str]] | None:
        """(always, guarded) keys of a `**value`: a dict literal, an if-expression, or a local dict variable."""
        if isinstance(value, ast.Dict):
            keys = [k.value for k in value.keys if isinstance(k, ast.Constant)]
            return (keys, []) if len(keys) == len(value.keys) else None
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and self._reads_signature(value.func.id):
            # `**accepted_kwargs(C, kw=...)`: a helper that passes on the keywords C's signature names
            checked = next((a for a in value.args if not isinstance(a, ast.Constant)), None)
            if checked is None or not self._same_callable(checked, call.func) or any(k.arg is None for k in value.keywords):
                return None
            return [], [k.arg for k in value.keywords]
        if isinstance(value, ast.IfExp):
            body, orelse = self._splat_keys(value.body, call), self._splat_keys(value.orelse, call)
            guard = self._signature_guard_keys(value.test, call.func)
            if body is None or orelse is None or not guard:
                return None
            return orelse[0], [k for k in body[0] + body[1] if k not in orelse[0]]
        scope = self._scope_of(call).lookup(value.id) if isinstance(value, ast.Name) else None
        if scope is None:
            return None
        if isinstance(scope.node, ast.FunctionDef) and scope.node.args.kwarg and scope.node.args.kwarg.arg == value.id:
            passed = self._keywords_passed_to(scope.node.name)  # def parse(values, **options): its callers'
            return None if passed is None else (passed, [])
        always: list[str] = []
        guarded: list[str] = []
        for how, bound in scope.bindings[value.id]:
            branches = [bound.body, bound.orelse] if isinstance(bound, ast.IfExp) else [bound]  # either may come
            for branch in branches:
                if how != "expr" or not isinstance(branch, ast.Dict) or (keys := self._splat_keys(branch, call)) is None:
                    return None
                always += keys[0]
        for node in ast.walk(scope.node):  # d["key"] = ... adds a key; under a signature check, a guarded one
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
            if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == value.id:
                if not isinstance(target.slice, ast.Constant):
                    return None
                key = target.slice.value
                checked = any(truth and key in self._signature_guard_keys(t, call.func) for t, truth in self._facts(node))
                (guarded if checked else always).append(key)
        return always, guarded


def _conjuncts(test: ast.AST, truth: bool) -> Iterator[tuple[ast.AST, bool]]:
    """Facts from a test known to be `truth`: `a and b` true gives both; `a or b` false gives both false."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        yield from _conjuncts(test.operand, not truth)
    elif isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And if truth else ast.Or):
        for value in test.values:
            yield from _conjuncts(value, truth)
    else:
        yield test, truth


def _is_import_module(node: ast.Call) -> bool:
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module" and isinstance(f.value, ast.Name)
            and f.value.id == "importlib" and len(node.args) == 1)


def _gpu_dotted(path: str) -> str:
    """xp.linalg.norm -> cupy.linalg.norm: the backend namespaces by their GPU names."""
    head, _, rest = path.partition(".")
    return ".".join(filter(None, [GPU_NAMESPACES.get(head, head), rest]))


# --- the libraries: what the uses are checked against ---------------------------------------------

class Libraries:
    """Resolves dotted names and CPU/GPU class pairs in the installed packages (RAPIDS, or CPU stand-ins)."""

    # (CPU class, GPU counterpart) by family: what a val receiver may be.
    PAIRS = {"array": [("numpy.ndarray", "cupy.ndarray"), ("numpy.random.Generator", "cupy.random.Generator")],
             "sparse": [("scipy.sparse.csr_matrix", "cupyx.scipy.sparse.csr_matrix"),
                        ("scipy.sparse.coo_matrix", "cupyx.scipy.sparse.coo_matrix")],
             "frame": [("pandas.DataFrame", "cudf.DataFrame"), ("pandas.Series", "cudf.Series"),
                       ("pandas.Index", "cudf.Index")]}
    GROUPBY = [("pandas.api.typing.DataFrameGroupBy", "cudf.core.groupby.groupby.DataFrameGroupBy"),
               ("pandas.api.typing.SeriesGroupBy", "cudf.core.groupby.groupby.SeriesGroupBy")]
    STAND_INS = {"cupyx.scipy": "scipy", "cupy": "numpy", "cudf": "pandas", "cuml": "sklearn"}

    def __init__(self, stand_ins: bool = False, renames: dict[str, str] | None = None) -> None:
        self.stand_ins = stand_ins
        self.renames = {**(self.STAND_INS if stand_ins else {}), **(renames or {})}
        self.pairs = {fam: [(self.resolve(cpu), self.resolve(gpu)) for cpu, gpu in pairs]
                      for fam, pairs in self.PAIRS.items()}
        self._families: dict[str, frozenset[str]] = {}
        groupby = [(self.resolve(cpu), self.resolve(cpu if stand_ins else gpu)) for cpu, gpu in self.GROUPBY]
        self.accessors = {"groupby": groupby}
        import pandas

        gpu_series = self.resolve("cudf.Series")
        for name in ("str", "dt", "cat"):
            cpu = inspect.getattr_static(pandas.Series, name)._accessor
            self.accessors[name] = [(cpu, gpu) for gpu in accessor_classes(gpu_series, name)]

    def rename(self, dotted: str) -> str:
        """The module a RAPIDS name is checked in: itself, or its CPU stand-in."""
        for old, new in self.renames.items():
            if dotted == old or dotted.startswith(old + "."):
                return new + dotted[len(old):]
        return dotted

    def resolve(self, dotted: str) -> Any:
        """The object a dotted name refers to, importing submodules as needed; LookupError if there is none."""
        parts = self.rename(dotted).split(".")
        try:
            obj = importlib.import_module(parts[0])
        except ImportError as exc:
            raise LookupError(f"{parts[0]} is not installed here ({exc}); add it to scripts/rapids-contract.sh") from None
        for i, part in enumerate(parts[1:], 1):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                try:
                    obj = importlib.import_module(".".join(parts[: i + 1]))
                except ImportError:
                    raise LookupError(f"{'.'.join(parts[:i])} has no attribute {part!r}") from None
        return obj

    def families_of(self, name: str) -> frozenset[str]:
        """The value families with a class (CPU or GPU) that has this attribute."""
        if name not in self._families:
            self._families[name] = frozenset(fam for fam, pairs in self.pairs.items()
                                             if any(has_member(c, name) or has_member(g, name) for c, g in pairs))
        return self._families[name]

    def is_class(self, dotted: str) -> bool:
        try:
            return isinstance(self.resolve(dotted), type)
        except LookupError:
            return False

    def versions(self) -> str:
        dists = ({"pandas": "pandas", "numpy": "numpy", "scipy": "scipy", "scikit-learn": "sklearn"} if self.stand_ins
                 else {"cudf-cu12": "cudf", "cuml-cu12": "cuml", "cupy-cuda12x": "cupy", "faiss-gpu-cu12": "faiss",
                       "faiss-cpu": "faiss"})
        found = {}
        for dist, name in dists.items():
            try:
                found.setdefault(name, f"{name} {importlib.metadata.version(dist)}")
            except importlib.metadata.PackageNotFoundError:
                continue
        return ", ".join(found.values())


def accessor_classes(owner: type, name: str) -> list[type]:
    """The class(es) an accessor property returns: pandas says so; for cuDF, read the property's source."""
    static = inspect.getattr_static(owner, name)
    if hasattr(static, "_accessor"):
        return [static._accessor]
    fget = static.fget
    made = {n.func.id for n in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(fget))))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    classes = [fget.__globals__[n] for n in sorted(made) if isinstance(fget.__globals__.get(n), type)]
    if not classes:
        raise LookupError(f"cannot tell what {owner.__name__}.{name} returns")
    return classes


def has_member(owner: Any, name: str) -> bool:
    """An attribute of the class, one its Python code sets on `self`, or one its docstring lists."""
    return hasattr(owner, name) or (isinstance(owner, type) and name in instance_attributes(owner))


@functools.cache
def instance_attributes(cls: type) -> frozenset[str]:
    names: set[str] = set()
    for base in cls.__mro__:
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(base)))
        except (OSError, TypeError, SyntaxError):
            continue
        names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                  and isinstance(n.value, ast.Name) and n.value.id == "self"}
    documented = re.search(r"^\s*Attributes\n\s*-+\n(.*?)(?:\n\s*\n\s*[A-Z][\w ]*\n\s*-+\n|\Z)", cls.__doc__ or "",
                           re.S | re.M)
    return frozenset(names | set(re.findall(r"^\s*(\w+)\s*:", documented.group(1) if documented else "", re.M)))


# --- signatures -----------------------------------------------------------------------------------

def signature(obj: Any) -> inspect.Signature | None:
    """inspect.signature, following `(*args, **kwargs)` constructors to the base class that names its
    parameters; else the `name(params)` line Cython puts first in a docstring; None if there is neither."""
    if isinstance(obj, type):
        return constructor_signature(obj)
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        pass
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    line = re.sub(r"\[,[^\]]*\]", "", doc[0].replace("\\*", "*")) if doc else ""  # `\*`, `[, signature]`
    match = re.match(r"^[\w.]*\((.*)\)(\s*->.*)?$", line)
    try:
        args = ast.parse(f"def f({match.group(1)}): pass").body[0].args if match else None  # type: ignore[attr-defined]
    except SyntaxError:
        return None
    return ast_signature(args) if args else None


def ast_signature(args: ast.arguments) -> inspect.Signature:
    """A Signature from parsed parameters (defaults as None: only names and kinds matter here)."""
    P = inspect.Parameter
    params = [P(a.arg, P.POSITIONAL_ONLY) for a in args.posonlyargs]
    first_default = len(args.args) - len(args.defaults)
    params += [P(a.arg, P.POSITIONAL_OR_KEYWORD, default=None if i >= first_default else P.empty)
               for i, a in enumerate(args.args)]
    params += [P(args.vararg.arg, P.VAR_POSITIONAL)] if args.vararg else []
    params += [P(a.arg, P.KEYWORD_ONLY, default=P.empty if d is None else None)
               for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    params += [P(args.kwarg.arg, P.VAR_KEYWORD)] if args.kwarg else []
    return inspect.Signature(params)


def constructor_signature(cls: type) -> inspect.Signature | None:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return None
    kinds = {p.kind for p in sig.parameters.values()}
    if not {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} <= kinds:
        return sig
    extra = [p for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]
    for base in cls.__mro__[1:]:  # the first base __init__ with named parameters gets *args, **kwargs
        init = base.__dict__.get("__init__")
        if init is None or base is object:
            continue
        params = list(signature(init).parameters.values())[1:] if signature(init) else []
        if params and not any(p.kind is p.VAR_POSITIONAL for p in params):
            names = {p.name for p in params}
            return inspect.Signature([p for p in params if p.kind is not p.VAR_KEYWORD]
                                     + [p for p in extra if p.name not in names])
    return sig


def drop_self(sig: inspect.Signature, owner: Any, name: str) -> inspect.Signature:
    """A method looked up on its class: without the instance parameter (static methods have none)."""
    params = list(sig.parameters.values())
    static = isinstance(inspect.getattr_static(owner, name, None), staticmethod)
    if isinstance(owner, type) and not static and params and params[0].name in ("self", "cls"):
        return sig.replace(parameters=params[1:])
    return sig


def bind(sig: inspect.Signature, use: Use, keywords: tuple[str, ...], lenient: bool = False) -> str:
    """'' if the call binds; else why not. A keyword only **kwargs would take does not bind, except where
    **kwargs is a callable's only keyword parameter (DataFrame.assign: there, keywords are data), or for
    a CPU twin (`lenient`: ndarray.sum passes keepdims on through **kwargs, and the CPU tests run it)."""
    try:
        if use.n_positional is None:
            bound = sig.bind_partial(**dict.fromkeys(keywords))
        else:
            bound = sig.bind(*[None] * use.n_positional, **dict.fromkeys(keywords))
    except TypeError as exc:
        return str(exc)
    var_kw = next((p.name for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD), None)
    swallowed = sorted(bound.arguments.get(var_kw, {})) if var_kw else []
    return f"only **{var_kw} would take {', '.join(swallowed)}" if swallowed and not (takes_any_keyword(sig) or lenient) \
        else ""


def takes_any_keyword(sig: inspect.Signature) -> bool:
    """**kwargs is the only keyword parameter (DataFrame.assign): whatever the keywords are, they are data."""
    kinds = {p.kind for p in sig.parameters.values()}
    return inspect.Parameter.VAR_KEYWORD in kinds and not kinds & {inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                                  inspect.Parameter.KEYWORD_ONLY}


# How a few callables use their **kwargs: a keyword is fine if it is one of these names or a field of the
# class named. faiss.Kmeans passes its keywords on to ClusteringParameters ("if this raises an exception,
# it means that it is a non-existent field", says its source).
KWARGS_FORWARDING = {
    "faiss.Kmeans": ("faiss.ClusteringParameters", ("gpu", "progressive_dim_steps")),
    # dask-cuda's cluster hands what it does not take to distributed's LocalCluster; cuml.dask's KMeans
    # hands its estimator keywords to the single-GPU cuml KMeans it runs on each worker.
    "dask_cuda.LocalCUDACluster": ("distributed.LocalCluster", ()),
    "cuml.dask.cluster.KMeans": ("cuml.cluster.KMeans", ()),
}


# --- verification ---------------------------------------------------------------------------------

class Verifier:
    def __init__(self, libraries: Libraries) -> None:
        self.lib = libraries

    def check(self, use: Use) -> Outcome:
        api = _gpu_dotted(use.receiver.path) if use.receiver.tag == "ns" else ""
        try:
            outcome = self._check(use)
        except LookupError as exc:
            outcome = Outcome(use, "fail", api, str(exc))
        except Exception as exc:  # noqa: BLE001 - a use the checker cannot handle is a use it cannot verify
            outcome = Outcome(use, "fail", api, f"the checker could not verify this: {type(exc).__name__}: {exc}")
        if outcome.status == "fail" and use.guarded:
            outcome = Outcome(use, "guarded", outcome.api, f"absent here, used under hasattr: {outcome.detail}")
        if use.waiver is None or outcome.status == "skip":
            return outcome
        reason = use.waiver.removeprefix("waive").strip()
        if not use.waiver.startswith("waive") or not reason:
            return Outcome(use, "fail", outcome.api, "a waiver reads `# rapids-contract: waive <reason>`")
        if outcome.status in ("ok", "guarded"):
            return Outcome(use, "fail", outcome.api, "a waiver no longer needed: the use verifies; remove it")
        return Outcome(use, "waived", outcome.api, f"{reason} (unwaived: {outcome.status} {outcome.detail})".strip())

    def _check(self, use: Use) -> Outcome:
        receiver = use.receiver
        if receiver.tag == "ns":
            if receiver.path.startswith("?"):
                return Outcome(use, "fail", receiver.path, "a ModuleType parameter the contract cannot place: "
                                                            "name it xp, sparse or frame")
            api = ".".join(filter(None, [_gpu_dotted(receiver.path), use.name]))
            obj = self.lib.resolve(api)
            return self._check_call(use, obj, api) if use.call else Outcome(use, "ok", api)
        if receiver.tag == "obj":
            owner = self.lib.resolve(receiver.path)
            api = f"{receiver.path}.{use.name}"
            if not has_member(owner, use.name):
                return Outcome(use, "fail", api, f"{receiver.path} has no attribute {use.name!r}")
            return self._check_call(use, inspect.getattr_static(owner, use.name, None), api, owner) if use.call \
                else Outcome(use, "ok", api)
        if receiver.tag == "acc":
            return self._check_pairs(use, {receiver.path: self.lib.accessors[receiver.path]})
        families = [family(receiver)] if family(receiver) else list(self.lib.pairs)
        pairs = {fam: self.lib.pairs[fam] for fam in families}
        if use.plain_receiver and not any(has_member(c, use.name) or has_member(g, use.name)
                                          for fam in pairs.values() for c, g in fam):
            for ns, cpu_module in CPU_NAMESPACES.items():  # `frame.to_datetime` on a `frame: Any` parameter
                if hasattr(importlib.import_module(cpu_module), use.name):
                    return self._check(dataclasses.replace(use, receiver=Kind("ns", ns)))
        return self._check_pairs(use, pairs)

    def _check_call(self, use: Use, obj: Any, api: str, owner: Any = None, lenient: bool = False) -> Outcome:
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
        if isinstance(obj, property):
            return Outcome(use, "fail", api, "a property, not a method")
        sig = signature(obj) if obj is not None else None  # None: an attribute set on instances only
        if sig is None:
            if use.keywords or use.guarded_keywords or use.unknown_keywords:
                return Outcome(use, "fail", api, "no signature to check the keywords against")
            return Outcome(use, "ok", api, "name only: no signature")
        if owner is not None:
            sig = drop_self(sig, owner, use.name)
        if use.unknown_keywords and not takes_any_keyword(sig):
            return Outcome(use, "fail", api, f"cannot read the keys of **{use.unknown_keywords} from the code")
        why = self._bind(sig, use, use.keywords, api, lenient)
        if why:
            return Outcome(use, "fail", api, why)
        if not use.guarded_keywords:
            return Outcome(use, "ok", api)
        absent = [k for k in use.guarded_keywords if self._bind(sig, use, (*use.keywords, k), api)]
        taken = [k for k in use.guarded_keywords if k not in absent]
        return Outcome(use, "guarded", api, "; ".join(filter(None, [
            f"{', '.join(taken)}: taken by the installed version" if taken else "",
            f"{', '.join(absent)}: not taken by the installed version, so the run-time check leaves it out"
            if absent else "", "the call without it binds"])))

    def _bind(self, sig: inspect.Signature, use: Use, keywords: tuple[str, ...], api: str, lenient: bool = False) -> str:
        why = bind(sig, use, keywords, lenient)
        forwarding = KWARGS_FORWARDING.get(self.lib.rename(api)) if why.startswith("only **") else None
        if forwarding is None:
            return why
        fields, extra = self.lib.resolve(forwarding[0]), forwarding[1]
        taken = set(inspect.signature(fields).parameters) if inspect.isclass(fields) else set()
        bad = [k for k in keywords
               if k not in sig.parameters and k not in extra and k not in taken and not hasattr(fields, k)]
        return f"{forwarding[0]} has no field {', '.join(bad)}" if bad else ""

    def _check_pairs(self, use: Use, families: dict[str, list[tuple[type, type]]]) -> Outcome:
        """A val use answers to the GPU twins of the CPU classes that take it.

        In each family where a CPU class takes the use with named parameters, one GPU class must have the
        name (the receiver may be a Series where the DataFrame lacks it) and every GPU class that has it must
        take the call; a GPU-only name (CuPy's .get, cuDF's .to_cupy) makes its class a candidate by itself.
        Where CPU classes take it only through **kwargs (ndarray.sum passes keepdims on), one GPU twin must
        take it with named parameters. A call no CPU class takes fails (a misspelt keyword of a frame method);
        a name no class has is not a RAPIDS use.
        """
        if use.call and use.name in BUILTIN_METHODS and len(families) > 1:
            return Outcome(use, "skip")
        verdicts, apis, loose = [], [], []
        hint = " (a receiver that is no array or frame: give it a type annotation, e.g. `meta: dict`)"
        for pairs in families.values():
            candidates = []
            for cpu, gpu in pairs:
                if use.call and not callable(inspect.getattr_static(cpu, use.name, None)):
                    continue  # `.values()` is no call of the property DataFrame.values
                if has_member(cpu, use.name):
                    if self._takes(cpu, use) == "":
                        candidates.append(gpu)
                    elif self._takes(cpu, use, lenient=True) == "":
                        loose.append(gpu)
                elif cpu is not gpu and has_member(gpu, use.name):
                    candidates.append(gpu)
            having = [gpu for gpu in candidates if has_member(gpu, use.name)]
            apis += [f"{_name(gpu)}.{use.name}" for gpu in having or candidates]
            if candidates and not having:
                verdicts.append(f"{' / '.join(map(_name, candidates))}: no attribute {use.name!r} (the CPU twin has it)")
            verdicts += [f"{_name(gpu)}: {why}" for gpu in having if (why := self._takes(gpu, use))]
        if not apis and loose:
            taking = [gpu for gpu in loose if has_member(gpu, use.name) and self._takes(gpu, use) == ""]
            apis = [f"{_name(gpu)}.{use.name}" for gpu in taking or loose]
            verdicts = [] if taking else [f"{' / '.join(map(_name, loose))}: none takes this call{hint}"]
        if not apis:
            named = [cpu for pairs in families.values() for cpu, _ in pairs
                     if callable(inspect.getattr_static(cpu, use.name, None))]
            if use.receiver.tag == "acc" and not any(has_member(c, use.name) or has_member(g, use.name)
                                                     for c, g in next(iter(families.values()))):
                what = " / ".join(_name(c) for c, _ in next(iter(families.values())))
                return Outcome(use, "fail", f".{use.name}", f"{what} has no attribute {use.name!r}, and the receiver is "
                               f"taken for one{hint}")
            if named and use.call:
                return Outcome(use, "fail", f".{use.name}",
                               f"{' / '.join(map(_name, named))} has {use.name!r} but takes no such call{hint}")
            return Outcome(use, "skip")
        api = " | ".join(dict.fromkeys(apis))
        return Outcome(use, "fail", api, "; ".join(verdicts)) if verdicts else Outcome(use, "ok", api)

    def _takes(self, owner: type, use: Use, lenient: bool = False) -> str:
        if not use.call:
            return ""
        outcome = self._check_call(use, inspect.getattr_static(owner, use.name, None), _name(owner), owner, lenient)
        return "" if outcome.status in ("ok", "guarded") else outcome.detail


def _name(cls: Any) -> str:
    return f"{cls.__module__.split('.')[0]}.{cls.__qualname__}"


# --- running it -----------------------------------------------------------------------------------

def check(paths: list[Path], project_root: Path | None, libraries: Libraries) -> tuple[list[Outcome], list[str], str]:
    """Outcomes of every RAPIDS use in the files, markers no use needed, and the versions checked against."""
    project = Project(project_root)
    verifier = Verifier(libraries)
    outcomes, stale = [], []
    for file in sorted(p for path in paths for p in ([path] if path.is_file() else path.rglob("*.py"))):
        module = ModuleScan(file, project, libraries)
        outcomes += [o for o in map(verifier.check, module.scan()) if o.status != "skip"]
        stale += [f"{file}:{line}" for line in module.waivers if line not in module.used_waivers]
    return outcomes, stale, libraries.versions()


def report(outcomes: list[Outcome], stale: list[str], versions: str, verbose: bool = False) -> tuple[int, list[str]]:
    lines = []
    for o in sorted(outcomes, key=lambda o: (o.status != "fail", o.use.file, o.use.line)):
        if verbose or o.status != "ok":
            lines.append(f"{o.status.upper():8} {o.use.file}:{o.use.line}: {o.api or o.use.name}  [{o.use.text}]"
                         + (f"\n         {o.detail}" if o.detail else ""))
    lines += [f"FAIL     {where}: a rapids-contract marker with no RAPIDS use on its line" for where in stale]
    counts = Counter(o.status for o in outcomes)
    verified = [o for o in outcomes if o.status in ("ok", "guarded")]
    calls = sum(o.use.call for o in verified)
    failing = counts["fail"] + len(stale)
    by_twin = sum(o.use.receiver.tag in ("val", "acc") for o in verified)
    lines.append(f"{len(verified)} uses verified ({calls} calls, {len(verified) - calls} attributes and imports) of "
                 f"{len({o.api for o in verified})} APIs: {len(verified) - by_twin} on RAPIDS modules, classes and "
                 f"estimators, {by_twin} on values taken for arrays or frames by their CPU twin; "
                 f"{counts['guarded']} under a run-time check")
    lines.append(f"{counts['waived']} waived, {failing} failing")
    if failing:
        lines.append(f"rapids contract: FAILED: {failing} of {len(outcomes)} uses ({versions})")
    else:
        lines.append(f"rapids contract: {calls} calls ok ({versions})")
    return (1 if failing else 0), lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path("gpuclust")], help="files or folders to check")
    parser.add_argument("--project", type=Path, default=Path("gpuclust"), help="the package the code belongs to")
    parser.add_argument("--stand-ins", action="store_true", help="check against NumPy/SciPy/pandas/scikit-learn")
    parser.add_argument("--verbose", "-v", action="store_true", help="list every use, not only the notable ones")
    args = parser.parse_args(argv)
    project = args.project if args.project.is_dir() else None
    code, lines = report(*check(args.paths, project, Libraries(args.stand_ins)), verbose=args.verbose)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
