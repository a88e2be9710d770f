"""Compile-time policy: RestrictedPython's transformer, adjusted for snippets that are function bodies.

RestrictedPython rewrites attribute, item, iteration, unpacking, print and in-place operations into calls to the
hooks in :mod:`sandbox.guards`. Its generic visitor denies every AST node it does not know, which is the structural
safety net we keep. On top of it this policy:

- wraps the snippet's statements in a function (``return`` gives the result) and rejects a top-level ``yield``;
- rewrites augmented assignment on attributes and subscripts (``self.count += 1``, ``totals[k] += 1``) into the
  guarded form instead of refusing it;
- allows ``nonlocal``, ``global``, annotations (``total: int = 0``) and ``match``; class patterns and dotted value
  patterns are rewritten so the class and the attributes a pattern reads pass the guards (see :meth:`visit_Match`);
- allows private names (``_helper``, ``self._count``) and a few dunder attributes (:data:`READABLE_DUNDERS`). The
  compile-time rule only says which *names* may appear; which *objects* they may be read on is decided at run time
  by :func:`sandbox.guards.make_getattr` (private state only on the snippet's own objects) and by the
  ``_write_private_`` hook (private attributes are written only on the snippet's own objects);
- keeps every name that starts *and* ends with ``_`` (``_getattr_``, ``_write_``, ``__builtins__``, the temporaries
  this policy makes) out of snippet code, so no guard hook can be read, shadowed or rebound;
- reports every refusal in plain words: what is not allowed, why, and what to write instead.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Final, cast

from RestrictedPython.transformer import (
    ALLOWED_FUNC_NAMES,
    FORBIDDEN_FUNC_NAMES,
    INSPECT_ATTRIBUTES,
    IOPERATOR_TO_STR,
    RestrictingNodeTransformer,
    copy_locations,
)

#: File name of snippet code; tracebacks keep only frames with this name, and functions compiled from it are the
#: snippet's own.
SNIPPET_FILENAME: Final = "<snippet>"

#: Name of the function the snippet's body is compiled into. It ends with ``_`` so a snippet cannot name it.
ENTRY_POINT: Final = "_snippet_"

#: Dunder methods a snippet class may define, beyond RestrictedPython's ``__init__``/``__contains__``/comparisons.
#: Each is only called on the snippet's own objects, and runs the snippet's own (guarded) code. Left out on purpose:
#: ``__getattr__``/``__getattribute__``/``__setattr__`` (they would run inside our guards), ``__get__``/``__set__``
#: (descriptors on foreign classes), ``__del__`` (runs at garbage collection, outside the run),
#: ``__init_subclass__``/``__set_name__``/``__class_getitem__``/``__mro_entries__`` (class-creation hooks),
#: ``__format__``/``__index__``/``__reduce__``/``__reduce_ex__``/``__copy__`` (called by C code on the host's
#: behalf), ``__slots__``/``__match_args__`` (they steer C code that reads attributes without our guards).
EXTRA_DUNDER_METHODS: Final = frozenset(
    {
        "__repr__",
        "__str__",
        "__len__",
        "__iter__",
        "__next__",
        "__getitem__",
        "__setitem__",
        "__delitem__",
        "__missing__",
        "__reversed__",
        "__bool__",
        "__hash__",
        "__enter__",
        "__exit__",
        "__call__",
        "__add__",
        "__radd__",
        "__sub__",
        "__rsub__",
        "__mul__",
        "__rmul__",
        "__truediv__",
        "__floordiv__",
        "__mod__",
        "__pow__",
        "__neg__",
        "__pos__",
        "__abs__",
        "__and__",
        "__or__",
        "__xor__",
        "__post_init__",
    }
)

#: Every dunder method a snippet class may define (and read back, on its own objects, e.g. ``Base.__init__``).
DUNDER_METHODS: Final = ALLOWED_FUNC_NAMES | EXTRA_DUNDER_METHODS

#: Dunder attributes that only name things: always a ``str`` (or ``None`` for ``__doc__``), checked at run time.
NAME_DUNDERS: Final = frozenset({"__name__", "__qualname__", "__doc__"})

#: An exception's cause and context (``raise ... from e``): another exception or ``None``, checked at run time.
EXCEPTION_DUNDERS: Final = frozenset({"__cause__", "__context__"})

#: Enum hooks a snippet's enum may define (``_missing_`` for lookups of unknown values, ...): called by the enum
#: module with the snippet's own class; they end with ``_`` like the sandbox's names, so they are allowed as
#: method names only.
ENUM_HOOKS: Final = frozenset({"_missing_", "_generate_next_value_"})

#: Dunder attributes a snippet may read. ``__class__`` gives what ``type(x)`` gives (foreign classes as a
#: read-only view); the methods are refused on foreign objects at run time (``Base.__init__(foreign)`` would
#: re-initialise a host object).
READABLE_DUNDERS: Final = NAME_DUNDERS | EXCEPTION_DUNDERS | DUNDER_METHODS | {"__class__"}

_Visit = ast.AST | list[ast.AST] | None

#: Why some syntax is refused, and what to write instead, by AST node class (never shown: the node's name).
_REFUSED_SYNTAX: Final = {
    "TryStar": "'except*' is not allowed in snippets: exception groups can crash the interpreter; use 'except'.",
    "AsyncFunctionDef": "'async def' is not allowed in snippets: a snippet runs synchronously; use 'def'.",
    "Await": "'await' is not allowed in snippets: a snippet runs synchronously; call the function directly.",
    "AsyncFor": "'async for' is not allowed in snippets: a snippet runs synchronously; use 'for'.",
    "AsyncWith": "'async with' is not allowed in snippets: a snippet runs synchronously; use 'with'.",
}


def is_dunder(name: str) -> bool:
    """Return whether *name* starts and ends with ``__`` (Python's own special names)."""
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def attribute_name_problem(name: str, *, store: bool) -> str | None:
    """Return why ``obj.<name>`` may never appear in a snippet (read, or written when *store*), or ``None``.

    The same rules apply to attribute syntax at compile time and to ``getattr``/``setattr``/``hasattr``/
    ``delattr`` with a computed name at run time.
    """
    if name in INSPECT_ATTRIBUTES:
        return (
            f"Attribute {name!r} is not allowed in snippets: it exposes the interpreter's frames and code; "
            "return or log the values you need instead."
        )
    if name.endswith("__roles__"):
        return f"Attribute {name!r} is not allowed in snippets: names ending in '__roles__' are reserved."
    if is_dunder(name) and (store or name not in READABLE_DUNDERS):
        if store:
            return (
                f"Changing attribute {name!r} is not allowed in snippets: Python's special attributes steer the "
                "interpreter; store your data under an ordinary name."
            )
        return (
            f"Attribute {name!r} is not allowed in snippets: Python's special attributes reach the interpreter's "
            "internals; only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a "
            "class may define can be read."
        )
    return None


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(name, ast.Load()), args=list(args), keywords=[])


def _writer(attr: str) -> str:
    """The hook that guards a write of *attr*: private attributes only on the snippet's own objects."""
    return "_write_private_" if attr.startswith("_") else "_write_"


class SnippetPolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy for a snippet: a function body with guarded attribute, item and iteration access."""

    def __init__(self, errors: list[str], warnings: list[str], used_names: dict[str, bool]) -> None:
        super().__init__(errors, warnings, used_names)
        self._classes: list[str] = []  # enclosing class names, innermost last (private-name mangling)
        self._matches: list[tuple[str, list[tuple[str, ast.expr, int | None, tuple[str, ...]]]]] = []

    def gen_tmp_name(self) -> str:
        """A temporary name ending in ``_``: snippet code can never name it (see :meth:`check_name`)."""
        return f"{super().gen_tmp_name()}_"

    def transform(self, module: ast.Module) -> ast.Module:
        """Check and rewrite *module* (a parsed snippet) and return it wrapped in the :data:`ENTRY_POINT` function."""
        self._reject_top_level_yield(module.body)
        checked = cast(ast.Module, self.visit(module))
        body = checked.body or [ast.Pass()]
        function = ast.FunctionDef(
            name=ENTRY_POINT,
            args=_no_arguments(),
            body=body,
            decorator_list=[],
            returns=None,
            type_comment=None,
        )
        function.lineno, function.col_offset = 1, 0
        function.end_lineno, function.end_col_offset = 1, 0
        wrapped = ast.Module(body=[function], type_ignores=[])
        return ast.fix_missing_locations(wrapped)

    def _reject_top_level_yield(self, body: Iterable[ast.stmt]) -> None:
        """A snippet body is not a generator: ``yield`` outside a ``def`` would make the result a generator."""
        stack: list[ast.AST] = list(body)
        while stack:
            node = stack.pop()
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
                continue
            if isinstance(node, ast.Yield | ast.YieldFrom):
                self.error(node, "'yield' is only allowed inside a def; a snippet returns its result with 'return'.")
            stack.extend(ast.iter_child_nodes(node))

    def not_allowed(self, node: ast.AST) -> None:
        """Refuse syntax the policy does not know, in words a snippet author understands."""
        message = _REFUSED_SYNTAX.get(type(node).__name__)
        self.error(node, message or "This syntax is not supported in snippets; write it with plain statements.")

    def check_name(self, node: ast.AST, name: str | None, allow_magic_methods: bool = False) -> None:
        """Check a name a snippet binds or reads.

        Private names (``_helper``) are the snippet's own. Names that start *and* end with ``_`` are the sandbox's
        (guard hooks, temporaries) or Python's (dunders), except the dunder methods a class may define.
        """
        if name is None or name == "_":
            return
        if name in FORBIDDEN_FUNC_NAMES:
            self.error(node, f'"{name}" is a reserved name in snippets; choose another name.')
        elif name.endswith("__roles__"):
            self.error(node, f'"{name}" cannot be used in snippets: names ending in "__roles__" are reserved.')
        elif is_dunder(name):
            if allow_magic_methods and name in DUNDER_METHODS and getattr(node, "col_offset", 0) != 0:
                return
            self.error(
                node,
                f'"{name}" cannot be used as a name in snippets: names that start and end with "__" belong to '
                "Python itself; choose another name.",
            )
        elif allow_magic_methods and name in ENUM_HOOKS and getattr(node, "col_offset", 0) != 0:
            return
        elif name.startswith("_") and (name.endswith("_") or name == "_print"):
            self.error(
                node,
                f'"{name}" cannot be used as a name in snippets: names that start and end with "_" are reserved '
                f'for the sandbox; use "{name.strip("_") or "value"}" instead.',
            )

    def check_import_names(self, node: ast.ImportFrom | ast.Import) -> ast.AST:
        """Check the names an import binds (so no guard hook can be rebound by ``import x as _write_``)."""
        if getattr(node, "is_lazy", 0):
            self.error(node, "'lazy import' is not allowed in snippets: it bypasses the import check; use 'import'.")
        for alias in node.names:
            if "*" in alias.name:
                self.error(
                    node,
                    "'from module import *' is not allowed in snippets: it binds names nobody checked; import the "
                    "names you use.",
                )
            self.check_name(node, alias.name)
            if alias.asname:
                self.check_name(node, alias.asname)
        return self.node_contents_visit(node)

    def _mangle(self, name: str) -> str:
        """Mangle ``__private`` names inside a class, as CPython does (``self.__x`` reads ``_Class__x``)."""
        if not self._classes or not name.startswith("__") or name.endswith("__"):
            return name
        owner = self._classes[-1].lstrip("_")
        return f"_{owner}{name}" if owner else name

    def visit_Attribute(self, node: ast.Attribute) -> _Visit:
        """``a.b`` becomes ``_getattr_(a, 'b')``; ``a.b = c`` becomes ``_write_(a).b = c`` (private: own objects)."""
        attr = self._mangle(node.attr)
        is_load = isinstance(node.ctx, ast.Load)
        problem = attribute_name_problem(attr, store=not is_load)
        if problem:
            self.error(node, problem)
        node = self.node_contents_visit(node)
        if is_load:
            read = _call("_getattr_", node.value, ast.Constant(attr))
            copy_locations(read, node)
            return read
        node.value = _call(_writer(attr), node.value)
        node.attr = attr
        copy_locations(node.value, node)
        return node

    def visit_Call(self, node: ast.Call) -> _Visit:
        """Refuse ``eval``/``exec``; route calls with ``*args``/``**kwargs`` through ``_apply_``."""
        if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
            self.error(
                node,
                f"'{node.func.id}()' is not available in snippets: snippets cannot run code built from strings; "
                "write the code directly (json.loads() reads data).",
            )
        needs_apply = any(isinstance(arg, ast.Starred) for arg in node.args) or any(
            keyword.arg is None for keyword in node.keywords
        )
        node = self.node_contents_visit(node)
        if not needs_apply:
            return node
        node.args.insert(0, node.func)
        node.func = ast.Name("_apply_", ast.Load())
        copy_locations(node.func, node.args[0])
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> _Visit:
        """Classes are built by the ``__metaclass__`` hook (:class:`sandbox.guards.ClassBuilder`); no keywords."""
        if node.keywords:
            self.error(
                node,
                "Class keywords (metaclass=..., ...) are not allowed in snippets: they run class-creation hooks; "
                "set what you need in the class body.",
            )
            node.keywords = []
        self._classes.append(node.name)
        try:
            return cast(_Visit, super().visit_ClassDef(node))
        finally:
            self._classes.pop()

    def visit_AnnAssign(self, node: ast.AnnAssign) -> _Visit:
        """Allow annotations (``total: int = 0``): the target, annotation and value are checked like any code."""
        return cast(_Visit, self.node_contents_visit(node))

    def visit_AugAssign(self, node: ast.AugAssign) -> _Visit:
        """Rewrite ``obj.attr op= v`` and ``obj[key] op= v`` into guarded reads and writes.

        ``self.count += 1`` becomes, with ``obj`` evaluated once::

            _tmp0_ = self
            _write_(_tmp0_).count = _inplacevar_('+=', _getattr_(_tmp0_, 'count'), 1)
            del _tmp0_
        """
        target = node.target
        if isinstance(target, ast.Name):
            return cast(_Visit, super().visit_AugAssign(node))
        operator = ast.Constant(IOPERATOR_TO_STR[type(node.op)])
        value = cast(ast.expr, self.visit(node.value))
        obj_name = self.gen_tmp_name()
        statements: list[ast.stmt] = [ast.Assign([ast.Name(obj_name, ast.Store())], self.visit(target.value))]
        temporaries = [obj_name]
        if isinstance(target, ast.Attribute):
            attr = self._mangle(target.attr)
            problem = attribute_name_problem(attr, store=True)
            if problem:
                self.error(node, problem)
            current: ast.expr = _call("_getattr_", ast.Name(obj_name, ast.Load()), ast.Constant(attr))
            store: ast.expr = ast.Attribute(_call(_writer(attr), ast.Name(obj_name, ast.Load())), attr, ast.Store())
        else:
            assert isinstance(target, ast.Subscript)
            if isinstance(target.slice, ast.Slice):
                self.error(
                    node,
                    "Augmented assignment of slices is not allowed in snippets; assign the new slice instead "
                    "(xs[1:3] = xs[1:3] + more).",
                )
                return node
            key_name = self.gen_tmp_name()
            temporaries.append(key_name)
            statements.append(ast.Assign([ast.Name(key_name, ast.Store())], self.visit(target.slice)))
            key = ast.Name(key_name, ast.Load())
            current = _call("_getitem_", ast.Name(obj_name, ast.Load()), key)
            store = ast.Subscript(_call("_write_", ast.Name(obj_name, ast.Load())), key, ast.Store())
        statements.append(ast.Assign([store], _call("_inplacevar_", operator, current, value)))
        statements.append(ast.Delete([ast.Name(name, ast.Del()) for name in temporaries]))
        for statement in statements:
            copy_locations(statement, node)
        return cast(_Visit, statements)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> _Visit:
        """Allow ``nonlocal`` (a closure over the snippet's own variables); the names are checked like any other."""
        for name in node.names:
            self.check_name(node, name)
        return node

    def visit_Global(self, node: ast.Global) -> _Visit:
        """Allow ``global`` with checked names, so a guard hook can never be rebound."""
        for name in node.names:
            self.check_name(node, name)
        return node

    def visit_Import(self, node: ast.Import) -> _Visit:
        """Refuse private modules (``import _strptime``); check the names upstream."""
        for alias in node.names:
            self._check_module_name(node, alias.name)
        return cast(_Visit, super().visit_Import(node))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> _Visit:
        """Reject relative imports and ``from __future__`` (a snippet is not a module); check the rest upstream."""
        if node.level:
            self.error(
                node,
                "Relative imports are not allowed in snippets: a snippet is not part of a package; import the "
                "module by its full name.",
            )
        if node.module:
            self._check_module_name(node, node.module)
        return cast(_Visit, super().visit_ImportFrom(node))

    def _check_module_name(self, node: ast.AST, module: str) -> None:
        if any(part.startswith("_") for part in module.split(".")):
            self.error(
                node,
                f"Module {module!r} cannot be imported in snippets: modules whose names start with '_' are "
                "private; import a public module.",
            )

    def visit_keyword(self, node: ast.keyword) -> _Visit:
        """Reject keyword arguments that start with ``_`` (they could reach a host function's private parameters)."""
        if node.arg is not None and node.arg.startswith("_"):
            self.error(
                node,
                f'"{node.arg}" cannot be passed as a keyword argument in snippets: keywords starting with "_" can '
                "reach a function's private parameters; pass the value by position.",
            )
        return cast(_Visit, self.node_contents_visit(node))

    # ``match``: CPython reads a class pattern's attributes (and ``__match_args__``) in C, without ``_getattr_``.
    # Every class in a class pattern and every dotted value is therefore evaluated lazily through a holder the
    # policy creates before the statement (``_match0_ = _match_({...})``): a value pattern reads the guarded
    # value, and a class pattern gets a stand-in class whose isinstance check first reads, through the guard,
    # every attribute the pattern will read (sandbox.guards.make_match).

    def visit_Match(self, node: ast.Match) -> _Visit:
        """Allow ``match``, with class and dotted value patterns routed through the guards."""
        holder = f"_match{self._tmp_idx}_"
        self._tmp_idx += 1
        thunks: list[tuple[str, ast.expr, int | None, tuple[str, ...]]] = []
        self._matches.append((holder, thunks))
        try:
            node = self.node_contents_visit(node)
        finally:
            self._matches.pop()
        if not thunks:
            return node
        spec = ast.Dict(
            keys=[ast.Constant(key) for key, _, _, _ in thunks],
            values=[
                ast.Tuple(
                    [
                        ast.Lambda(args=_no_arguments(), body=expr),
                        ast.Constant(positional),
                        ast.Tuple([ast.Constant(name) for name in keywords], ast.Load()),
                    ],
                    ast.Load(),
                )
                for _, expr, positional, keywords in thunks
            ],
        )
        assign = ast.Assign([ast.Name(holder, ast.Store())], _call("_match_", spec))
        copy_locations(assign, node)
        return [assign, node]

    def _deferred(self, expr: ast.expr, positional: int | None, keywords: tuple[str, ...]) -> ast.Attribute:
        """Record *expr* (guarded) in the current match's holder and return the holder attribute that reads it."""
        holder, thunks = self._matches[-1]
        key = f"p{len(thunks)}"
        thunks.append((key, cast(ast.expr, self.visit(expr)), positional, keywords))
        read = ast.Attribute(ast.Name(holder, ast.Load()), key, ast.Load())
        copy_locations(read, expr)
        return read

    def visit_match_case(self, node: ast.match_case) -> _Visit:
        """A case: its pattern, guard and body are checked like any code."""
        return cast(_Visit, self.node_contents_visit(node))

    def visit_MatchValue(self, node: ast.MatchValue) -> _Visit:
        """``case 1:`` stays; ``case Color.RED:`` reads ``Color.RED`` through the guard."""
        if isinstance(node.value, ast.Attribute):
            node.value = self._deferred(node.value, None, ())
            return node
        return cast(_Visit, self.node_contents_visit(node))

    def visit_MatchSingleton(self, node: ast.MatchSingleton) -> _Visit:
        """``case None:``, ``case True:``."""
        return node

    def visit_MatchSequence(self, node: ast.MatchSequence) -> _Visit:
        """``case [a, b, *rest]:``."""
        return cast(_Visit, self.node_contents_visit(node))

    def visit_MatchStar(self, node: ast.MatchStar) -> _Visit:
        """``*rest`` in a sequence pattern binds a checked name."""
        self.check_name(node, node.name)
        return node

    def visit_MatchAs(self, node: ast.MatchAs) -> _Visit:
        """``case x:``, ``case [1, _] as pair:`` bind checked names."""
        self.check_name(node, node.name)
        return cast(_Visit, self.node_contents_visit(node))

    def visit_MatchOr(self, node: ast.MatchOr) -> _Visit:
        """``case 1 | 2:``."""
        return cast(_Visit, self.node_contents_visit(node))

    def visit_MatchMapping(self, node: ast.MatchMapping) -> _Visit:
        """``case {"k": v, **rest}:``; dotted keys are read through the guard."""
        node.keys = [
            self._deferred(key, None, ()) if isinstance(key, ast.Attribute) else cast(ast.expr, self.visit(key))
            for key in node.keys
        ]
        node.patterns = [cast(ast.pattern, self.visit(pattern)) for pattern in node.patterns]
        self.check_name(node, node.rest)
        return node

    def visit_MatchClass(self, node: ast.MatchClass) -> _Visit:
        """``case Point(x, y=0):``: the class comes from the holder, which checks the attributes the case reads."""
        for attr in node.kwd_attrs:
            problem = attribute_name_problem(attr, store=False)
            if problem:
                self.error(node, problem)
        node.cls = self._deferred(node.cls, len(node.patterns), tuple(node.kwd_attrs))
        node.patterns = [cast(ast.pattern, self.visit(pattern)) for pattern in node.patterns]
        node.kwd_patterns = [cast(ast.pattern, self.visit(pattern)) for pattern in node.kwd_patterns]
        return node


def _no_arguments() -> ast.arguments:
    return ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[])
