"""The escape corpus against the language wall: every case ends in one specific, expected error.

Each case is the source of a snippet and the error that must stop it: a ``CompileError`` message (the policy), or
the exception type and exact message a guard raises inside the snippet. Runs in-process (the language wall alone);
the process wall has its own corpus (tests/sandbox/test_bombs.py).
"""

# ruff: noqa: E501  # one case per row: a table reads better than strings wrapped over many lines

from __future__ import annotations

import importlib
import json
import types

import pytest

from sandbox.builtins import unavailable_message
from sandbox.environment import Environment
from sandbox.executor import run_source
from sandbox.imports import Importer
from tests.escapes.corpus import Expected, assert_corpus_size, assert_refused

ALLOWED = ", ".join(Importer().allowed)

#: A careless host: containers that hold a module (what #335's C-level iteration would hand out unchecked).
ENVIRONMENT = Environment(names={"things": [json], "pairs": [(json, 1)], "table": {"m": json}})


def compiled(message: str) -> Expected:
    return ("CompileError", message)


DUNDER_READS = "only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a class may define can be read."


def bad_name(line: int, name: str) -> Expected:
    """A dunder name (Python's own) used as a variable, function or import name."""
    return compiled(
        f'Line {line}: "{name}" cannot be used as a name in snippets: names that start and end with "__" belong to Python itself; choose another name.'
    )


def sandbox_name(line: int, name: str) -> Expected:
    """A name that starts and ends with ``_``: the guard hooks' and temporaries' shape."""
    return compiled(
        f'Line {line}: "{name}" cannot be used as a name in snippets: names that start and end with "_" are reserved for the sandbox; use "{name.strip("_")}" instead.'
    )


def dunder_message(attr: str) -> str:
    return f"Attribute {attr!r} is not allowed in snippets: Python's special attributes reach the interpreter's internals; {DUNDER_READS}"


def bad_attr(line: int, attr: str) -> Expected:
    """A dunder attribute outside READABLE_DUNDERS, written in the source."""
    return compiled(f"Line {line}: {dunder_message(attr)}")


def dunder(attr: str) -> Expected:
    """The same refusal at run time (format fields, getattr with a computed name, attrgetter)."""
    return ("AttributeError", dunder_message(attr))


def inspect_attr(line: int, attr: str) -> Expected:
    return compiled(
        f"Line {line}: Attribute {attr!r} is not allowed in snippets: it exposes the interpreter's frames and code; return or log the values you need instead."
    )


def inspect_runtime(attr: str) -> Expected:
    return (
        "AttributeError",
        f"Attribute {attr!r} is not allowed in snippets: it exposes the interpreter's frames and code.",
    )


def import_refused(name: str) -> Expected:
    return ("ImportError", f"Import of {name!r} is not allowed in snippets. Allowed modules: {ALLOWED}.")


def cannot_import(item: str, module: str) -> Expected:
    return ("ImportError", f"cannot import name {item!r} from {module!r} in snippets")


def no_attr(module: str, attr: str) -> Expected:
    return ("AttributeError", f"module {module!r} has no attribute {attr!r} in snippets")


def undefined(name: str) -> Expected:
    """A name a snippet does not have; the message says why for the builtins left out on purpose."""
    return ("NameError", unavailable_message(name) or f"name {name!r} is not defined")


def underscore(attr: str) -> Expected:
    """A private attribute of an object the snippet did not make."""
    return (
        "AttributeError",
        f"Attribute {attr!r} is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
    )


def iterating(module: str = "json") -> Expected:
    return ("TypeError", f"Iterating would give module {module!r}; that is not allowed in snippets.")


def read_only(what: str, target: str) -> Expected:
    return ("TypeError", f"Changing {what} of {target} is not allowed in snippets.")


REGISTER = (
    "AttributeError",
    "Attribute 'register' is not allowed in snippets: it changes a class that every run shares.",
)
MRO = ("AttributeError", "Attribute 'mro' is not allowed in snippets: it walks up to classes snippets must not reach.")
MODULE_READ = ("AttributeError", "Reading attributes of module 'json' is not allowed in snippets.")

EVAL = compiled(
    "Line 1: 'eval()' is not available in snippets: snippets cannot run code built from strings; write the code directly (json.loads() reads data)."
)
EXEC = compiled(
    "Line 1: 'exec()' is not available in snippets: snippets cannot run code built from strings; write the code directly (json.loads() reads data)."
)

GENERATOR = "def gen():\n    yield 1\ng = gen()\n"

ADVISORIES = [
    pytest.param(
        "class Liar(str):\n    def startswith(self, prefix):\n        return False\nreturn hasattr(1, Liar('__class__'))",
        ("TypeError", "attribute name must be string, not 'Liar'"),
        id="rp-7.2-lying-str-subclass",
    ),
    pytest.param("return event.ag_frame", inspect_attr(1, "ag_frame"), id="rp-8.5-ag-frame"),
    pytest.param("return event.cr_frame", inspect_attr(1, "cr_frame"), id="rp-cr-frame"),
    pytest.param(
        GENERATOR + "return g.gi_frame.f_back.f_back.f_builtins",
        inspect_attr(4, "gi_frame"),
        id="cve-2023-37271-gi-frame",
    ),
    pytest.param(GENERATOR + "return g.gi_code", inspect_attr(4, "gi_code"), id="cve-2023-37271-gi-code"),
    pytest.param(
        GENERATOR + "return g.gi_yieldfrom", inspect_attr(4, "gi_yieldfrom"), id="cve-2023-37271-gi-yieldfrom"
    ),
    pytest.param(
        "try:\n    1 / 0\nexcept Exception as e:\n    return e.__traceback__.tb_frame",
        inspect_attr(4, "tb_frame"),
        id="cve-2023-37271-tb-frame",
    ),
    pytest.param(
        GENERATOR + "return '{0.gi_frame}'.format(g)",
        inspect_runtime("gi_frame"),
        id="cve-2023-37271-gi-frame-via-format",
    ),
    pytest.param(
        "return '{0.__class__.__base__.__subclasses__}'.format(1)", dunder("__base__"), id="cve-2023-41039-str-format"
    ),
    pytest.param(
        "return '{x.__init__.__globals__}'.format_map({'x': 1})",
        (
            "AttributeError",
            "Attribute '__init__' can be read only on the snippet's own objects, not on a 'int' object; use the operation itself (len(x), x == y, str(x)).",
        ),
        id="cve-2023-41039-format-map",
    ),
    pytest.param(
        "return str.format('{0.__class__.__mro__}', 1)", dunder("__mro__"), id="cve-2023-41039-unbound-str-format"
    ),
    pytest.param(
        "return str.format_map('{x.__class__.__dict__}', {'x': 1})",
        dunder("__dict__"),
        id="cve-2023-41039-unbound-format-map",
    ),
    pytest.param(
        "class S(str):\n    pass\nreturn S('{0.__globals__}').format(len)",
        dunder("__globals__"),
        id="cve-2023-41039-str-subclass",
    ),
    pytest.param(
        "import string\nreturn string.Formatter().format('{0.__class__}', 1)",
        no_attr("string", "Formatter"),
        id="cve-2023-41039-string-formatter",
    ),
    pytest.param(
        "import string\ntry:\n    string.Formatter\nexcept AttributeError as e:\n    return e.obj",
        ("AttributeError", "Attribute 'obj' of 'AttributeError' objects is not available in snippets."),
        id="cve-2024-47532-attributeerror-obj",
    ),
    pytest.param(
        "import json\ntry:\n    json.codecs\nexcept AttributeError as e:\n    return e.obj.codecs",
        ("AttributeError", "Attribute 'obj' of 'AttributeError' objects is not available in snippets."),
        id="cve-2024-47532-obj-behind-facade",
    ),
    pytest.param(
        "try:\n    pass\nexcept* ValueError:\n    pass",
        compiled(
            "Line 1: 'except*' is not allowed in snippets: exception groups can crash the interpreter; use 'except'."
        ),
        id="cve-2025-22153-except-star",
    ),
    pytest.param(
        "raise ExceptionGroup('x', [ValueError()])", undefined("ExceptionGroup"), id="cve-2025-22153-exceptiongroup"
    ),
    pytest.param("def f(_write_=None, /):\n    pass", sandbox_name(1, "_write_"), id="cve-2026-55830-posonly-write"),
    pytest.param("f = lambda _getattr_=None, /: 1", sandbox_name(1, "_getattr_"), id="cve-2026-55830-posonly-lambda"),
    pytest.param(
        "def f(_getiter_=list, /):\n    return 1", sandbox_name(1, "_getiter_"), id="cve-2026-55830-posonly-getiter"
    ),
    pytest.param(
        "from string import Formatter", cannot_import("Formatter", "string"), id="cve-2026-76825-import-formatter"
    ),
    pytest.param(
        "import string\nreturn string.Formatter().get_field('0.__class__', (1,), {})",
        no_attr("string", "Formatter"),
        id="cve-2026-76825-get-field",
    ),
    pytest.param(
        "import string\nreturn string.Formatter().vformat('{0.__class__}', (1,), {})",
        no_attr("string", "Formatter"),
        id="cve-2026-76825-vformat",
    ),
]

C_LEVEL_ITERATION = [
    pytest.param(f"return {call}", iterating(), id=f"issue-335-{name}")
    for name, call in [
        ("sorted", "sorted(things, key=str)"),
        ("tuple", "tuple(things)"),
        ("list", "list(things)"),
        ("set", "set(things)"),
        ("frozenset", "frozenset(things)"),
        ("zip", "list(zip(things))"),
        ("map", "list(map(str, things))"),
        ("filter", "list(filter(None, things))"),
        ("enumerate", "list(enumerate(things))"),
        ("reversed", "list(reversed(things))"),
        ("min", "min(things, key=str)"),
        ("max", "max(things, key=str)"),
        ("sum", "sum(things, [])"),
        ("any", "any(things)"),
        ("all", "all(things)"),
        ("iter", "next(iter(things))"),
        ("bytes", "bytes(things)"),
        ("dict-values", "dict(table)"),
    ]
] + [
    pytest.param("for m in things:\n    return 1", iterating(), id="issue-335-for-loop"),
    pytest.param("return [m for m in things]", iterating(), id="issue-335-comprehension"),
    pytest.param("for m, n in pairs:\n    return 1", iterating(), id="issue-335-for-unpack"),
    pytest.param("m, = things", iterating(), id="issue-335-unpack"),
    pytest.param("x = [*things]\nreturn x.pop().dumps", MODULE_READ, id="star-unpack-then-attribute"),
    pytest.param("return {**table}.pop('m').loads", MODULE_READ, id="dict-unpack-then-attribute"),
    pytest.param(
        "return things[0]",
        ("TypeError", "Item 0 would give module 'json'; that is not allowed in snippets."),
        id="getitem-module-in-list",
    ),
    pytest.param(
        "return table['m']",
        ("TypeError", "Item 'm' would give module 'json'; that is not allowed in snippets."),
        id="getitem-module-in-dict",
    ),
]

#: (module, attribute) whose real value is a module: a façade must not hand it out.
MODULE_HOPS = [
    ("base64", "binascii"), ("base64", "re"), ("base64", "struct"),
    ("collections", "abc"), ("datetime", "sys"),
    ("html", "entities"), ("json", "codecs"), ("json", "decoder"), ("json", "encoder"), ("json", "scanner"),
    ("re", "copyreg"), ("re", "enum"), ("re", "functools"),
    ("statistics", "math"), ("statistics", "numbers"), ("statistics", "random"), ("statistics", "sys"),
    ("textwrap", "re"),
    ("urllib.parse", "functools"), ("urllib.parse", "ipaddress"), ("urllib.parse", "re"), ("urllib.parse", "sys"),
    ("urllib.parse", "types"), ("urllib.parse", "warnings"),
    ("uuid", "os"), ("uuid", "platform"), ("uuid", "sys"),
]  # fmt: skip

#: Modules whose module-valued attributes are all private: the hop is refused at compile time and at run time.
PRIVATE_HOPS = [
    ("collections", "_sys"), ("hashlib", "_hashlib"), ("hmac", "_hashopenssl"), ("random", "_os"),
    ("string", "_re"), ("zoneinfo", "_common"), ("html", "_re"), ("re", "_compiler"),
]  # fmt: skip

MODULE_GRAPH = (
    [pytest.param(f"import {m}\nreturn {m}.{a}", no_attr(m, a), id=f"hop-{m}.{a}") for m, a in MODULE_HOPS]
    + [pytest.param(f"import {m}\nreturn {m}.{a}", underscore(a), id=f"hop-{m}.{a}") for m, a in PRIVATE_HOPS]
    + [
        pytest.param(f"import {m}\nreturn '{{0.{a}}}'.format({m})", underscore(a), id=f"hop-format-{m}.{a}")
        for m, a in PRIVATE_HOPS[:4]
    ]
    + [
        pytest.param(
            "import json\nreturn json.codecs.builtins.eval", no_attr("json", "codecs"), id="hop-json.codecs.builtins"
        ),
        pytest.param("import re\nreturn re.enum.bltns", no_attr("re", "enum"), id="hop-re.enum.bltns"),
        pytest.param(
            "import datetime\nreturn datetime.sys.modules['os']",
            no_attr("datetime", "sys"),
            id="hop-datetime.sys.modules",
        ),
        pytest.param("import base64\nreturn base64.re.enum.bltns", no_attr("base64", "re"), id="hop-base64.re.enum"),
        pytest.param(
            "import math\nreturn '{0.__self__}'.format(math.sqrt)", dunder("__self__"), id="hop-math.sqrt.self"
        ),
        pytest.param(
            "import itertools\nreturn '{0.__self__}'.format(itertools.chain.from_iterable)",
            dunder("__self__"),
            id="hop-itertools-self",
        ),
        pytest.param("import time\nreturn time.sleep.__self__", bad_attr(2, "__self__"), id="hop-time.sleep.self"),
        pytest.param(
            "import decimal\nreturn decimal.Decimal.__module__", bad_attr(2, "__module__"), id="hop-decimal-module-name"
        ),
        pytest.param(
            "import json\nreturn json.dumps.__globals__['sys']", bad_attr(2, "__globals__"), id="hop-json.dumps.globals"
        ),
        pytest.param("from json import codecs", cannot_import("codecs", "json"), id="from-json-import-codecs"),
        pytest.param("from uuid import os", cannot_import("os", "uuid"), id="from-uuid-import-os"),
        pytest.param("from urllib import request", cannot_import("request", "urllib"), id="from-urllib-import-request"),
        pytest.param("import urllib\nreturn urllib.request", no_attr("urllib", "request"), id="hop-urllib.request"),
        pytest.param("import json.decoder", import_refused("json.decoder"), id="import-json.decoder"),
        pytest.param("import urllib.request", import_refused("urllib.request"), id="import-urllib.request"),
        pytest.param("import uuid\nreturn uuid.getnode()", no_attr("uuid", "getnode"), id="uuid-getnode-mac"),
        pytest.param("import time\ntime.tzset()", no_attr("time", "tzset"), id="time-tzset"),
        pytest.param(
            "import decimal\ndecimal.setcontext(decimal.Context(prec=1))",
            no_attr("decimal", "setcontext"),
            id="decimal-setcontext",
        ),
        pytest.param(
            "import zoneinfo\nzoneinfo.reset_tzpath(['/'])",
            no_attr("zoneinfo", "reset_tzpath"),
            id="zoneinfo-reset-tzpath",
        ),
        pytest.param(
            "import zoneinfo\nreturn str(zoneinfo.ZoneInfo('../../../../etc/passwd'))",
            ("ValueError", "ZoneInfo keys must refer to subdirectories of TZPATH, got: ../../../../etc/passwd"),
            id="zoneinfo-path-traversal",
        ),
        pytest.param(
            "import zoneinfo\nreturn str(zoneinfo.ZoneInfo('/etc/passwd'))",
            ("ValueError", "ZoneInfo keys may not be absolute paths, got: /etc/passwd"),
            id="zoneinfo-absolute-path",
        ),
        pytest.param(
            "return Exception.mro()",
            (
                "AttributeError",
                "Attribute 'mro' is not allowed in snippets: it walks up to classes snippets must not reach.",
            ),
            id="mro-to-baseexception",
        ),
    ]
)

FORMAT_STRINGS = [
    pytest.param(
        "import json\nreturn '{0.__globals__}'.format(json.dumps)", dunder("__globals__"), id="format-globals"
    ),
    pytest.param("return '{0:{1.__globals__}}'.format(1, len)", dunder("__globals__"), id="format-nested-spec"),
    pytest.param("return '{0[x].__code__}'.format({'x': len})", dunder("__code__"), id="format-index-then-attr"),
    pytest.param("return 'a{0._＿class__}'.format(1)", underscore("_＿class__"), id="format-fullwidth-underscore"),
    pytest.param(
        "f = '{0.__class__.__bases__}'.format\nreturn f(1)", dunder("__bases__"), id="format-bound-method-alias"
    ),
    pytest.param("import logging", import_refused("logging"), id="logging-formatter-import"),
    pytest.param("from logging import Formatter", import_refused("logging"), id="logging-formatter-from-import"),
    pytest.param("return f'{(1).__class__.__base__}'", bad_attr(1, "__base__"), id="fstring-dunder"),
]

UNICODE = [
    pytest.param("return ｅｖａｌ('1')", EVAL, id="fullwidth-eval"),
    pytest.param("return ｅｘｅｃ('1')", EXEC, id="fullwidth-exec"),
    pytest.param("return 𝐞𝐯𝐚𝐥('1')", EVAL, id="math-bold-eval"),
    pytest.param("return (len)._＿globals__", bad_attr(1, "__globals__"), id="fullwidth-underscore-attr"),
    pytest.param("return _＿import＿_('os')", bad_name(1, "__import__"), id="fullwidth-import"),
    pytest.param("return ｇｌｏｂａｌｓ()", undefined("globals"), id="fullwidth-globals"),
    pytest.param("return ｏｐｅｎ('/etc/passwd').read()", undefined("open"), id="fullwidth-open"),
    pytest.param("return _﹍builtins﹍﹍", bad_name(1, "__builtins__"), id="dashed-low-line-builtins"),
]

CLASS_BODIES = [
    pytest.param("class X:\n    __slots__ = ()", bad_name(2, "__slots__"), id="class-slots"),
    pytest.param(
        "class X(metaclass=object):\n    pass",
        compiled(
            "Line 1: Class keywords (metaclass=..., ...) are not allowed in snippets: they run class-creation hooks; set what you need in the class body."
        ),
        id="class-metaclass",
    ),
    pytest.param(
        "class X:\n    def __getattr__(self, n):\n        return 1", bad_name(2, "__getattr__"), id="class-getattr"
    ),
    pytest.param("class X:\n    def __del__(self):\n        pass", bad_name(2, "__del__"), id="class-del"),
    pytest.param(
        "class X:\n    def __init_subclass__(cls):\n        pass",
        bad_name(2, "__init_subclass__"),
        id="class-init-subclass",
    ),
    pytest.param(
        "class X:\n    def __format__(self, spec):\n        return ''", bad_name(2, "__format__"), id="class-format"
    ),
    pytest.param(
        "class X:\n    def __class_getitem__(cls, item):\n        pass",
        bad_name(2, "__class_getitem__"),
        id="class-class-getitem",
    ),
    pytest.param(
        "class X:\n    def __set_name__(self, o, n):\n        pass", bad_name(2, "__set_name__"), id="class-set-name"
    ),
    pytest.param("def __init__(self):\n    pass", bad_name(1, "__init__"), id="top-level-dunder-def"),
    pytest.param("class X:\n    x = locals()", undefined("locals"), id="class-locals"),
    pytest.param("class X:\n    vars()['y'] = 1", undefined("vars"), id="class-vars"),
    pytest.param(
        "class M(type):\n    pass",
        ("TypeError", "Only classes can be base classes in snippets; 'guarded_type' is not a class."),
        id="class-subclass-type",
    ),
    pytest.param("class E(BaseException):\n    pass", undefined("BaseException"), id="class-subclass-baseexception"),
    pytest.param("class X:\n    pass\nreturn X.__bases__", bad_attr(3, "__bases__"), id="class-bases"),
    pytest.param("return object.__subclasses__()", bad_attr(1, "__subclasses__"), id="object-subclasses"),
    pytest.param("return [].__class__.__base__", bad_attr(1, "__base__"), id="list-class-base"),
    pytest.param("return __metaclass__", bad_name(1, "__metaclass__"), id="metaclass-name"),
    pytest.param("return __build_class__", bad_name(1, "__build_class__"), id="build-class-name"),
    pytest.param(
        "x = ValueError()\nx.__class__ = KeyError",
        compiled(
            "Line 2: Changing attribute '__class__' is not allowed in snippets: Python's special attributes steer the interpreter; store your data under an ordinary name."
        ),
        id="assign-class",
    ),
    pytest.param("import collections\ncollections.UserDict.register(int)", REGISTER, id="abc-register"),
    pytest.param(
        "import collections\nreturn '{0.register}'.format(collections.UserDict)", REGISTER, id="abc-register-via-format"
    ),
    pytest.param("return '{0.mro}'.format(int)", MRO, id="mro-via-format"),
]

UNREACHABLE_BASE_EXCEPTIONS = [
    pytest.param("raise SystemExit(1)", undefined("SystemExit"), id="systemexit"),
    pytest.param("raise KeyboardInterrupt", undefined("KeyboardInterrupt"), id="keyboardinterrupt"),
    pytest.param("raise BaseException('x')", undefined("BaseException"), id="baseexception"),
    pytest.param("raise GeneratorExit", undefined("GeneratorExit"), id="generatorexit"),
    pytest.param("exit(1)", undefined("exit"), id="exit"),
    pytest.param("quit()", undefined("quit"), id="quit"),
]

IMPORTS = [
    pytest.param(f"import {name}", import_refused(name), id=f"import-{name}")
    for name in [
        "os", "sys", "gc", "subprocess", "importlib", "ctypes", "socket", "io", "pickle", "marshal", "threading",
        "signal", "types", "inspect", "asyncio", "multiprocessing", "shutil", "pathlib", "tempfile",
        "code", "pty", "posix", "http.client", "os.path", "twilio", "requests",
    ]
] + [
    pytest.param("from os import system", import_refused("os"), id="from-os-import-system"),
    pytest.param("import builtins", compiled('Line 1: "builtins" is a reserved name in snippets; choose another name.'), id="import-builtins"),
    pytest.param("__import__('os')", bad_name(1, "__import__"), id="dunder-import"),
    pytest.param("return __builtins__['eval']", bad_name(1, "__builtins__"), id="dunder-builtins"),
    pytest.param("import json as _getattr_", sandbox_name(1, "_getattr_"), id="import-as-guard"),
    pytest.param("from . import x", compiled("Line 1: Relative imports are not allowed in snippets: a snippet is not part of a package; import the module by its full name."), id="relative-import"),
    pytest.param("from __future__ import braces", compiled("Line 1: Module '__future__' cannot be imported in snippets: modules whose names start with '_' are private; import a public module."), id="future-import"),
    pytest.param("import _strptime", compiled("Line 1: Module '_strptime' cannot be imported in snippets: modules whose names start with '_' are private; import a public module."), id="private-module-import"),
    pytest.param("from json import *", compiled("Line 1: 'from module import *' is not allowed in snippets: it binds names nobody checked; import the names you use."), id="star-import"),
]  # fmt: skip

MISSING_BUILTINS = [
    pytest.param(f"return {name}", undefined(name), id=f"no-{name}")
    for name in [
        "vars", "dir", "globals", "locals", "open", "compile", "input", "help", "id", "memoryview", "eval", "exec",
    ]
] + [
    pytest.param("return eval('1')", EVAL, id="eval-call"),
    pytest.param("return exec('1')", EXEC, id="exec-call"),
    pytest.param("breakpoint()", compiled('Line 1: "breakpoint" is a reserved name in snippets; choose another name.'), id="breakpoint"),
]  # fmt: skip

MUTATION = [
    pytest.param(
        "import json\njson.dumps = len", read_only("attribute 'dumps'", "<module 'json'>"), id="facade-assign"
    ),
    pytest.param("import json\ndel json.dumps", read_only("attribute 'dumps'", "<module 'json'>"), id="facade-delete"),
    pytest.param("import math\nmath.pi += 1", read_only("attribute 'pi'", "<module 'math'>"), id="facade-augassign"),
    pytest.param(
        "import json\njson.JSONEncoder.default = len",
        read_only("attribute 'default'", "a 'type' object"),
        id="facade-class-assign",
    ),
    pytest.param(
        "import json\njson.dumps.x = 1", read_only("attribute 'x'", "a 'function' object"), id="facade-function-assign"
    ),
    pytest.param(
        "import hashlib\nhashlib.algorithms_available.add('x')",
        ("AttributeError", "'frozenset' object has no attribute 'add'"),
        id="facade-constant-set",
    ),
    pytest.param(
        "import hashlib\nhashlib.algorithms_guaranteed.clear()",
        ("AttributeError", "'frozenset' object has no attribute 'clear'"),
        id="facade-constant-clear",
    ),
    pytest.param(
        "import string\nstring.Template.delimiter = '%'",
        read_only("attribute 'delimiter'", "a 'type' object"),
        id="facade-class-attribute",
    ),
    pytest.param("log.info = print", read_only("attribute 'info'", "<snippet log>"), id="log-object"),
]

MISC = [
    pytest.param(
        "print(1, file=event)",
        ("TypeError", "print(file=...) is not supported in snippets; output is captured."),
        id="print-file",
    ),
    pytest.param(
        "def f(**k):\n    return k\nreturn f(**{'_x': 1})",
        ("TypeError", "Keyword argument '_x' is not allowed in snippets because it starts with '_'."),
        id="apply-private-keyword",
    ),
    pytest.param(
        "f(_x=1)",
        compiled(
            """Line 1: "_x" cannot be passed as a keyword argument in snippets: keywords starting with "_" can reach a function's private parameters; pass the value by position."""
        ),
        id="private-keyword",
    ),
    pytest.param("global _getattr_", sandbox_name(1, "_getattr_"), id="global-guard"),
    pytest.param("def f():\n    nonlocal _write_", sandbox_name(2, "_write_"), id="nonlocal-guard"),
    pytest.param("return (_getiter_ := list)", sandbox_name(1, "_getiter_"), id="walrus-guard"),
    pytest.param("_print_ = 1", sandbox_name(1, "_print_"), id="assign-print-hook"),
    pytest.param("return (lambda: 0).__code__", bad_attr(1, "__code__"), id="lambda-code"),
    pytest.param("return print.__self__", bad_attr(1, "__self__"), id="print-self"),
    pytest.param(
        "async def f():\n    pass",
        compiled("Line 1: 'async def' is not allowed in snippets: a snippet runs synchronously; use 'def'."),
        id="async-def",
    ),
    pytest.param(
        "x = yield 1",
        compiled("Line 1: 'yield' is only allowed inside a def; a snippet returns its result with 'return'."),
        id="top-level-yield",
    ),
    pytest.param(
        "return " + "+".join(["1"] * 6000),
        compiled("Line 1: The snippet is too deeply nested or too large to compile (RecursionError)."),
        id="compile-recursion",
    ),
    pytest.param(
        "return " + "[" * 150 + "]" * 150,
        compiled("Line 1: The snippet nests more than 100 levels deep; split it into smaller steps."),
        id="deep-nesting",
    ),
    pytest.param(
        "x = 1\n" * 60_000,
        compiled("Line 1: The snippet is 360000 bytes long; the limit is 262144 bytes."),
        id="source-too-large",
    ),
    pytest.param(
        'x = "\0"',
        compiled("Line 1: SyntaxError: source code string cannot contain null bytes at statement: None"),
        id="null-byte",
    ),
]

CASES = ADVISORIES + C_LEVEL_ITERATION + MODULE_GRAPH + FORMAT_STRINGS + UNICODE + CLASS_BODIES
CASES += UNREACHABLE_BASE_EXCEPTIONS + IMPORTS + MISSING_BUILTINS + MUTATION + MISC


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_escape_attempt_is_stopped(source: str, expected: Expected) -> None:
    """Each escape attempt ends in its one expected error, never in a result."""
    assert_refused(run_source(source, event={"x": 1}, environment=ENVIRONMENT), expected)


def test_corpus_is_large_enough() -> None:
    """The corpus keeps at least 80 distinct cases."""
    assert_corpus_size(CASES, 80)


@pytest.mark.parametrize(("module", "attribute"), MODULE_HOPS + PRIVATE_HOPS, ids=lambda v: str(v))
def test_module_hop_cases_are_real(module: str, attribute: str) -> None:
    """Each module hop in the corpus names an attribute whose real value IS a module (so the case means something)."""
    assert isinstance(getattr(importlib.import_module(module), attribute), types.ModuleType)


def test_facade_mutation_does_not_persist() -> None:
    """A refused write to a façade leaves nothing behind for the next run."""
    assert not run_source("import json\njson.dumps = len").ok
    assert run_source("import json\nreturn json.dumps([1])").value == "[1]"
