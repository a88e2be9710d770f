"""Compile-time policy: RestrictedPython's transformer, adjusted for snippets that are function bodies.

RestrictedPython rewrites attribute, item, iteration, unpacking, print and in-place operations into calls to the
hooks in :mod:`sandbox.guards`, and rejects names and attributes that start with ``_``. Its generic visitor denies
every AST node it does not know, which is the structural safety net we keep. On top of it this policy:

- wraps the snippet's statements in a function (``return`` gives the result) and rejects a top-level ``yield``;
- rewrites augmented assignment on attributes and subscripts (``self.count += 1``, ``totals[k] += 1``) into the
  guarded form instead of refusing it;
- allows ``nonlocal`` (closures over the snippet's own variables) and a few more dunder methods in classes;
- rejects relative and ``__future__`` imports and keyword arguments that start with ``_``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Final, cast

from RestrictedPython.transformer import (
    INSPECT_ATTRIBUTES,
    IOPERATOR_TO_STR,
    RestrictingNodeTransformer,
    copy_locations,
)

#: Name of the function the snippet's body is compiled into. It starts with ``_`` so a snippet cannot name it.
ENTRY_POINT: Final = "_snippet_"

#: Dunder methods a snippet class may define, beyond RestrictedPython's ``__init__``/``__contains__``/comparisons.
#: Each is only called on the snippet's own objects. Left out on purpose: ``__getattr__``/``__getattribute__``/
#: ``__setattr__`` (they would run inside our guards), ``__del__`` (runs at garbage collection, outside the run),
#: ``__init_subclass__``/``__set_name__``/``__class_getitem__``/``__mro_entries__`` (class-creation hooks),
#: ``__format__``/``__index__``/``__reduce__`` (called by C code on the host's behalf).
EXTRA_DUNDER_METHODS: Final = frozenset(
    {
        "__repr__",
        "__str__",
        "__len__",
        "__iter__",
        "__next__",
        "__getitem__",
        "__bool__",
        "__hash__",
        "__enter__",
        "__exit__",
        "__call__",
        "__add__",
        "__sub__",
        "__mul__",
        "__truediv__",
    }
)

_Visit = ast.AST | list[ast.AST] | None


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(name, ast.Load()), args=list(args), keywords=[])


class SnippetPolicy(RestrictingNodeTransformer):
    """RestrictedPython's policy for a snippet: a function body with guarded attribute, item and iteration access."""

    def transform(self, module: ast.Module) -> ast.Module:
        """Check and rewrite *module* (a parsed snippet) and return it wrapped in the :data:`ENTRY_POINT` function."""
        self._reject_top_level_yield(module.body)
        checked = cast(ast.Module, self.visit(module))
        body = checked.body or [ast.Pass()]
        function = ast.FunctionDef(
            name=ENTRY_POINT,
            args=ast.arguments(
                posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]
            ),
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

    def check_name(self, node: ast.AST, name: str | None, allow_magic_methods: bool = False) -> None:
        """Check a name, also allowing :data:`EXTRA_DUNDER_METHODS` as method names inside a class."""
        if allow_magic_methods and name in EXTRA_DUNDER_METHODS and getattr(node, "col_offset", 0) != 0:
            return
        super().check_name(node, name, allow_magic_methods)  # type: ignore[arg-type]  # RP types node as T_pos_ast

    def _check_attribute_name(self, node: ast.AST, attr: str) -> None:
        """The checks RestrictedPython applies to ``a.attr`` (we build guarded nodes for augmented assignment)."""
        if attr.startswith("_") and attr != "_":
            self.error(node, f'"{attr}" is an invalid attribute name because it starts with "_".')
        if attr.endswith("__roles__"):
            self.error(node, f'"{attr}" is an invalid attribute name because it ends with "__roles__".')
        if attr in INSPECT_ATTRIBUTES:
            self.error(node, f'"{attr}" is a restricted name, that is forbidden to access in RestrictedPython.')

    def visit_AugAssign(self, node: ast.AugAssign) -> _Visit:
        """Rewrite ``obj.attr op= v`` and ``obj[key] op= v`` into guarded reads and writes (names: as upstream).

        ``self.count += 1`` becomes, with ``obj`` evaluated once::

            _tmp0 = self
            _write_(_tmp0).count = _inplacevar_('+=', _getattr_(_tmp0, 'count'), 1)
            del _tmp0
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
            self._check_attribute_name(node, target.attr)
            current: ast.expr = _call("_getattr_", ast.Name(obj_name, ast.Load()), ast.Constant(target.attr))
            store: ast.expr = ast.Attribute(_call("_write_", ast.Name(obj_name, ast.Load())), target.attr, ast.Store())
        else:
            assert isinstance(target, ast.Subscript)
            if isinstance(target.slice, ast.Slice):
                self.error(node, "Augmented assignment of slices is not allowed; assign the new slice instead.")
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

    def visit_ImportFrom(self, node: ast.ImportFrom) -> _Visit:
        """Reject relative imports and ``from __future__`` (a snippet is not a module); check the rest upstream."""
        if node.level:
            self.error(node, "Relative imports are not allowed in a snippet.")
        if node.module and node.module.startswith("_"):
            self.error(node, f'"{node.module}" is an invalid module name because it starts with "_".')
        return cast(_Visit, super().visit_ImportFrom(node))

    def visit_keyword(self, node: ast.keyword) -> _Visit:
        """Reject keyword arguments that start with ``_`` (they could reach a host function's private parameters)."""
        if node.arg is not None and node.arg.startswith("_"):
            self.error(node, f'"{node.arg}" is an invalid keyword argument because it starts with "_".')
        return cast(_Visit, super().visit_keyword(node))
