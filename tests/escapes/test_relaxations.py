"""The escape corpus against the relaxations that make snippets ordinary Python: every case is refused.

Private attributes on the snippet's own objects, ``super()``, the name dunders, ``type()``/``getattr``/``setattr``,
annotations, ``match`` and the modules ``copy``, ``dataclasses``, ``enum``, ``functools``, ``operator`` and
``typing`` each open a door; each case here aims at one of them (subclassing built-ins, library and host classes,
``super()`` on foreign objects, private and hidden names on objects the snippet did not make, class-creation hooks
through dataclasses and enum, ``attrgetter``/``methodcaller``/``partial``/``reduce`` around the guards,
``get_type_hints`` with hostile strings, format specs, ``match`` class patterns reading hidden attributes) and must
end in its one expected error. The host objects stand for what an environment hands a snippet: a client-like
object with private state, a hidden token and ``__match_args__`` naming it, a dataclass and a namedtuple that
carry a hidden field.
"""

# ruff: noqa: E501  # one case per row: a table reads better than strings wrapped over many lines

from __future__ import annotations

import collections
import dataclasses
import decimal
import json

import pytest

from sandbox.environment import Environment
from sandbox.executor import run_source
from tests.escapes.corpus import Expected, assert_corpus_size, assert_refused


class Vault:
    """A host object: private state, a hidden token, and ``__match_args__`` that names the token."""

    __match_args__ = ("token",)

    def __init__(self) -> None:
        self._secret = "s3cret"
        self.token = "tok"

    def describe(self) -> str:
        """A public method."""
        return "vault"


@dataclasses.dataclass
class Record:
    """A host dataclass with a hidden field."""

    name: str
    token: str


Secret = collections.namedtuple("Secret", "name token")


class Meter:
    """A host object whose hidden property has a side effect (it counts its reads)."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def secret(self) -> str:
        """Hidden from snippets; every read is counted."""
        self.reads += 1
        return "s"


ENVIRONMENT = Environment(
    names={
        "vault": Vault(),
        "Vault": Vault,
        "record": Record("n", "t"),
        "secret_nt": Secret("n", "t"),
        "things": [json],
        "meter": Meter(),
    },
    hidden_attributes={
        Vault: frozenset({"token"}),
        Record: frozenset({"token"}),
        Secret: frozenset({"token"}),
        Meter: frozenset({"secret"}),
    },
)

CASES = [
    pytest.param(
        "import random\nclass R(random.Random):\n    def peek(self):\n        return self._randbelow\nreturn R(1).peek()",
        (
            "AttributeError",
            "Attribute '_randbelow' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="subclass-stdlib-private-method",
    ),
    pytest.param(
        "class Sub(Vault):\n    def steal(self):\n        return self._secret\nreturn Sub().steal()",
        (
            "AttributeError",
            "Attribute '_secret' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="subclass-host-private-state",
    ),
    pytest.param(
        "class Sub(Vault):\n    pass\nreturn Sub().token",
        ("AttributeError", "Attribute 'token' of 'Sub' objects is not available in snippets."),
        id="subclass-host-hidden",
    ),
    pytest.param(
        "class Sub(Vault):\n    def plant(self):\n        self._secret = 'mine'\nSub().plant()",
        (
            "TypeError",
            "Changing private attributes of a 'Sub' object is not allowed in snippets: only the snippet's own objects keep private state; use the object's public methods.",
        ),
        id="subclass-host-private-write",
    ),
    pytest.param(
        "import json\nclass X(type(json)):\n    pass",
        ("TypeError", "Only classes can be base classes in snippets; 'ClassView' is not a class."),
        id="subclass-classview",
    ),
    pytest.param(
        "class X(super):\n    pass",
        ("TypeError", "Subclassing 'super' is not allowed in snippets."),
        id="subclass-super",
    ),
    pytest.param(
        "from enum import Enum\nclass C(Enum):\n    A = 1\nreturn type(C)('X', (), {})",
        ("TypeError", "'ClassView' object is not callable"),
        id="subclass-metaclass-of-enum",
    ),
    pytest.param(
        "return type('X', (), {'__getattr__': len})",
        (
            "TypeError",
            "type() with three arguments builds a class, which is not available in snippets; write a class statement instead.",
        ),
        id="type-three-args",
    ),
    pytest.param(
        "import json\nreturn type(json)('x', {})",
        ("TypeError", "'ClassView' object is not callable"),
        id="classview-call",
    ),
    pytest.param(
        "import json\nreturn getattr(type(json), '__init__')",
        ("AttributeError", "<class 'sandbox.imports.Facade'> is not available in snippets; only its name can be read."),
        id="classview-attribute",
    ),
    pytest.param(
        "return list._type",
        (
            "AttributeError",
            "Attribute '_type' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="guarded-type-private",
    ),
    pytest.param(
        "import json\nreturn json._attributes",
        (
            "AttributeError",
            "Attribute '_attributes' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="facade-private",
    ),
    pytest.param(
        "import json\njson._label = 'x'",
        (
            "TypeError",
            "Changing private attributes of <module 'json'> is not allowed in snippets: only the snippet's own objects keep private state; use the object's public methods.",
        ),
        id="facade-private-write",
    ),
    pytest.param(
        "return super(Vault, vault).describe()",
        (
            "AttributeError",
            "super() is available only inside the snippet's own classes, on their own objects; call the method on the object itself.",
        ),
        id="super-foreign-class",
    ),
    pytest.param(
        "return super(int, 1).real",
        (
            "AttributeError",
            "super() is available only inside the snippet's own classes, on their own objects; call the method on the object itself.",
        ),
        id="super-builtin",
    ),
    pytest.param(
        "return super(int, 1).__init__",
        (
            "AttributeError",
            "super() is available only inside the snippet's own classes, on their own objects; call the method on the object itself.",
        ),
        id="super-builtin-init",
    ),
    pytest.param(
        "return super(type(vault), vault).describe()",
        (
            "AttributeError",
            "super() is available only inside the snippet's own classes, on their own objects; call the method on the object itself.",
        ),
        id="super-classview",
    ),
    pytest.param(
        "class Sub(Vault):\n    pass\ns = Sub()\nreturn super(Sub, s).token",
        ("AttributeError", "Attribute 'token' of 'super' objects is not available in snippets."),
        id="super-subclass-hidden",
    ),
    pytest.param(
        "class Mine:\n    pass\nreturn super(Mine, Mine).__init__(vault)",
        (
            "TypeError",
            "__init__() of another class can be called only on the snippet's own objects, not on a 'Vault' object; use the operation itself (len(x), x == y, str(x)).",
        ),
        id="super-class-unbound-init",
    ),
    pytest.param(
        "return vault._secret",
        (
            "AttributeError",
            "Attribute '_secret' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="private-read",
    ),
    pytest.param(
        "return getattr(vault, '_secret')",
        (
            "AttributeError",
            "Attribute '_secret' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="private-getattr",
    ),
    pytest.param(
        "return '{0._secret}'.format(vault)",
        (
            "AttributeError",
            "Attribute '_secret' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="private-format",
    ),
    pytest.param(
        "setattr(vault, '_secret', 1)",
        (
            "TypeError",
            "Changing private attributes of a 'Vault' object is not allowed in snippets: only the snippet's own objects keep private state; use the object's public methods.",
        ),
        id="private-setattr",
    ),
    pytest.param(
        "vault._secret = 1",
        (
            "TypeError",
            "Changing private attributes of a 'Vault' object is not allowed in snippets: only the snippet's own objects keep private state; use the object's public methods.",
        ),
        id="private-assign",
    ),
    pytest.param(
        "del vault._secret",
        (
            "TypeError",
            "Changing private attributes of a 'Vault' object is not allowed in snippets: only the snippet's own objects keep private state; use the object's public methods.",
        ),
        id="private-delete",
    ),
    pytest.param(
        "return '{0.token}'.format(vault)",
        ("AttributeError", "Attribute 'token' of 'Vault' objects is not available in snippets."),
        id="hidden-format",
    ),
    pytest.param(
        "return getattr(1, '__glo' + 'bals__')",
        (
            "AttributeError",
            "Attribute '__globals__' is not allowed in snippets: Python's special attributes reach the interpreter's internals; only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a class may define can be read.",
        ),
        id="dunder-computed-getattr",
    ),
    pytest.param(
        "class Own:\n    pass\nsetattr(Own(), '__class__', Vault)",
        (
            "AttributeError",
            "Changing attribute '__class__' is not allowed in snippets: Python's special attributes steer the interpreter; store your data under an ordinary name.",
        ),
        id="dunder-computed-setattr",
    ),
    pytest.param(
        "return getattr(vault, '__reduce_ex__')(4)",
        (
            "AttributeError",
            "Attribute '__reduce_ex__' is not allowed in snippets: Python's special attributes reach the interpreter's internals; only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a class may define can be read.",
        ),
        id="dunder-reduce-ex",
    ),
    pytest.param(
        "Vault.__init__(vault)",
        (
            "TypeError",
            "__init__() of another class can be called only on the snippet's own objects, not on a 'Vault' object; use the operation itself (len(x), x == y, str(x)).",
        ),
        id="foreign-init-reinit",
    ),
    pytest.param(
        "class Sub(Vault):\n    pass\nSub.__init__(vault)",
        (
            "TypeError",
            "__init__() of another class can be called only on the snippet's own objects, not on a 'Vault' object; use the operation itself (len(x), x == y, str(x)).",
        ),
        id="foreign-init-via-subclass",
    ),
    pytest.param(
        "object.__init__(vault)",
        (
            "TypeError",
            "__init__() of another class can be called only on the snippet's own objects, not on a 'Vault' object; use the operation itself (len(x), x == y, str(x)).",
        ),
        id="builtin-init-on-host",
    ),
    pytest.param(
        "return vault.__init__",
        (
            "AttributeError",
            "Attribute '__init__' can be read only on the snippet's own objects, not on a 'Vault' object; use the operation itself (len(x), x == y, str(x)).",
        ),
        id="foreign-bound-dunder",
    ),
    pytest.param(
        "dict.__setitem__(vault, 'k', 1)",
        (
            "TypeError",
            "__setitem__() of another class can be called only on the snippet's own objects, not on a 'Vault' object; use the operation itself (len(x), x == y, str(x)).",
        ),
        id="builtin-dunder-setitem",
    ),
    pytest.param(
        "return secret_nt._asdict()",
        (
            "AttributeError",
            "Attribute '_asdict' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="namedtuple-api-hidden",
    ),
    pytest.param(
        "from enum import Enum\nclass E(Enum):\n    A = 1\nreturn E._new_member_(Vault)",
        ("AttributeError", "Attribute '_new_member_' would give a class's '__new__'; that is not allowed in snippets."),
        id="enum-new-member",
    ),
    pytest.param(
        "from enum import Enum\nreturn Enum._missing_",
        (
            "AttributeError",
            "Attribute '_missing_' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="enum-facade-private",
    ),
    pytest.param(
        "import operator\nreturn operator.attrgetter('__class__.__init__.__globals__')(vault)",
        (
            "AttributeError",
            "Attribute '__globals__' is not allowed in snippets: Python's special attributes reach the interpreter's internals; only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a class may define can be read.",
        ),
        id="attrgetter-dunder",
    ),
    pytest.param(
        "import operator\nreturn operator.attrgetter('token')(vault)",
        ("AttributeError", "Attribute 'token' of 'Vault' objects is not available in snippets."),
        id="attrgetter-hidden",
    ),
    pytest.param(
        "import operator\nreturn operator.attrgetter('_secret')(vault)",
        (
            "AttributeError",
            "Attribute '_secret' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="attrgetter-private",
    ),
    pytest.param(
        "import operator\nreturn operator.methodcaller('__reduce_ex__', 4)(vault)",
        (
            "AttributeError",
            "Attribute '__reduce_ex__' is not allowed in snippets: Python's special attributes reach the interpreter's internals; only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a class may define can be read.",
        ),
        id="methodcaller-dunder",
    ),
    pytest.param(
        "import operator\nreturn operator.methodcaller('describe', **{'_x': 1})(vault)",
        ("TypeError", "Keyword argument '_x' is not allowed in snippets because it starts with '_'."),
        id="methodcaller-private-keyword",
    ),
    pytest.param(
        "import operator\nreturn operator.itemgetter(0)(things)",
        ("TypeError", "Item 0 would give module 'json'; that is not allowed in snippets."),
        id="itemgetter-module",
    ),
    pytest.param(
        "import operator\noperator.setitem(vault, 'k', 1)",
        ("TypeError", "Changing items of a 'Vault' object is not allowed in snippets."),
        id="operator-setitem-readonly",
    ),
    pytest.param(
        "import functools\nreturn functools.partial(getattr, vault)('_secret')",
        (
            "AttributeError",
            "Attribute '_secret' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="partial-getattr",
    ),
    pytest.param(
        "import functools\nreturn functools.reduce(getattr, ['__class__', '__base__'], 1)",
        (
            "AttributeError",
            "Attribute '__base__' is not allowed in snippets: Python's special attributes reach the interpreter's internals; only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a class may define can be read.",
        ),
        id="reduce-getattr-chain",
    ),
    pytest.param(
        "import functools\nreturn functools.reduce(lambda a, b: b, things)",
        ("TypeError", "Iterating would give module 'json'; that is not allowed in snippets."),
        id="reduce-module-iteration",
    ),
    pytest.param(
        "return list(map(getattr, [vault], ['token']))",
        ("AttributeError", "Attribute 'token' of 'Vault' objects is not available in snippets."),
        id="map-getattr-hidden",
    ),
    pytest.param(
        "import functools\nreturn functools.wraps(vault)(lambda: 0).token",
        (
            "TypeError",
            "functools.wraps() copies the wrapped object's attributes; in snippets it can wrap only the snippet's own functions and functions without attributes.",
        ),
        id="wraps-host-dict",
    ),
    pytest.param(
        "import functools, json\nfunctools.update_wrapper(json.dumps, len)",
        ("TypeError", "functools.update_wrapper() can change only the snippet's own functions in snippets."),
        id="update-wrapper-foreign",
    ),
    pytest.param(
        "import functools\nfunctools.total_ordering(Vault)",
        ("TypeError", "functools.total_ordering() works only on the snippet's own classes in snippets."),
        id="total-ordering-host",
    ),
    pytest.param(
        "import copy\nreturn copy.copy(vault)",
        (
            "TypeError",
            "copy.copy() cannot copy a 'Vault' object in snippets: only plain data and the snippet's own objects can be copied; build a new object instead.",
        ),
        id="copy-host-object",
    ),
    pytest.param(
        "import copy\nreturn copy.deepcopy([vault])",
        (
            "TypeError",
            "copy.deepcopy() cannot copy a 'Vault' object in snippets: only plain data and the snippet's own objects can be copied; build a new object instead.",
        ),
        id="deepcopy-host-in-list",
    ),
    pytest.param(
        "import copy\nclass Box:\n    pass\nb = Box()\nb.v = vault\nreturn copy.deepcopy(b)",
        (
            "TypeError",
            "copy.deepcopy() cannot copy a 'Vault' object in snippets: only plain data and the snippet's own objects can be copied; build a new object instead.",
        ),
        id="deepcopy-host-in-own-object",
    ),
    pytest.param(
        "import typing\nclass A:\n    x: \"__import__('os').system('id')\"\nreturn typing.get_type_hints(A)",
        ("AttributeError", "module 'typing' has no attribute 'get_type_hints' in snippets"),
        id="typing-get-type-hints",
    ),
    pytest.param(
        "from typing import ForwardRef",
        ("ImportError", "cannot import name 'ForwardRef' from 'typing' in snippets"),
        id="typing-forwardref",
    ),
    pytest.param(
        "import typing\nreturn typing.no_type_check(len)",
        ("AttributeError", "module 'typing' has no attribute 'no_type_check' in snippets"),
        id="typing-no-type-check",
    ),
    pytest.param(
        "import typing\ntyping.reveal_type(1)",
        ("AttributeError", "module 'typing' has no attribute 'reveal_type' in snippets"),
        id="typing-reveal-type",
    ),
    pytest.param(
        "import dataclasses\ndataclasses.dataclass(Vault)",
        ("TypeError", "dataclass() works only on the snippet's own classes in snippets."),
        id="dataclass-host-class",
    ),
    pytest.param(
        "import dataclasses\nreturn dataclasses.asdict(record)",
        ("TypeError", "dataclasses.asdict() works only on the snippet's own classes in snippets."),
        id="dataclass-asdict-host",
    ),
    pytest.param(
        "import dataclasses\nreturn dataclasses.fields(record)",
        ("TypeError", "dataclasses.fields() works only on the snippet's own classes in snippets."),
        id="dataclass-fields-host",
    ),
    pytest.param(
        "import dataclasses\nreturn dataclasses.replace(record, token='x')",
        ("TypeError", "dataclasses.replace() works only on the snippet's own classes in snippets."),
        id="dataclass-replace-host",
    ),
    pytest.param(
        "from dataclasses import make_dataclass",
        ("ImportError", "cannot import name 'make_dataclass' from 'dataclasses' in snippets"),
        id="make-dataclass",
    ),
    pytest.param(
        "import dataclasses\nreturn dataclasses.make_dataclass('X', [], namespace={'__getattr__': len})",
        ("AttributeError", "module 'dataclasses' has no attribute 'make_dataclass' in snippets"),
        id="make-dataclass-attr",
    ),
    pytest.param(
        "from enum import Enum\nE = Enum('E', [('__getattr__', len)])",
        (
            "ValueError",
            "Enum member name '__getattr__' is not allowed in snippets: names starting with '_' belong to Python and the enum module; choose a plain name.",
        ),
        id="enum-functional-dunder",
    ),
    pytest.param(
        "from enum import Enum\nclass Base(Enum):\n    pass\nE = Base('E', {'__init_subclass__': 1})",
        (
            "ValueError",
            "Enum member name '__init_subclass__' is not allowed in snippets: names starting with '_' belong to Python and the enum module; choose a plain name.",
        ),
        id="enum-functional-dunder-own-base",
    ),
    pytest.param(
        "from enum import Enum\nE = Enum('E', '_ignore_ A')",
        (
            "ValueError",
            "Enum member name '_ignore_' is not allowed in snippets: names starting with '_' belong to Python and the enum module; choose a plain name.",
        ),
        id="enum-functional-string",
    ),
    pytest.param(
        "from enum import Enum\nclass E(Enum):\n    __set_name__ = 1",
        (
            "CompileError",
            'Line 3: "__set_name__" cannot be used as a name in snippets: names that start and end with "__" belong to Python itself; choose another name.',
        ),
        id="enum-class-dunder-attribute",
    ),
    pytest.param(
        "from enum import EnumType",
        ("ImportError", "cannot import name 'EnumType' from 'enum' in snippets"),
        id="enum-metaclass-import",
    ),
    pytest.param(
        "import enum\nreturn enum.global_enum",
        ("AttributeError", "module 'enum' has no attribute 'global_enum' in snippets"),
        id="enum-global",
    ),
    pytest.param(
        "from typing import NamedTuple\nclass P(NamedTuple):\n    x: int\n    def __getattr__(self, n):\n        return 1",
        (
            "CompileError",
            'Line 4: "__getattr__" cannot be used as a name in snippets: names that start and end with "__" belong to Python itself; choose another name.',
        ),
        id="namedtuple-dunder-method",
    ),
    pytest.param(
        "class D:\n    def __get__(self, obj, owner):\n        return 1",
        (
            "CompileError",
            'Line 2: "__get__" cannot be used as a name in snippets: names that start and end with "__" belong to Python itself; choose another name.',
        ),
        id="descriptor-get",
    ),
    pytest.param(
        "import decimal\nreturn decimal.BasicContext",
        ("AttributeError", "module 'decimal' has no attribute 'BasicContext' in snippets"),
        id="decimal-shared-context",
    ),
    pytest.param(
        "import typing\n@typing.runtime_checkable\nclass P(typing.Protocol):\n    secret: str\nreturn isinstance(meter, P)",
        ("AttributeError", "module 'typing' has no attribute 'runtime_checkable' in snippets"),
        id="protocol-hasattr-probe",
    ),
    pytest.param(
        "import json\nmatch json:\n    case object(codecs=c):\n        return c",
        ("AttributeError", "module 'json' has no attribute 'codecs' in snippets"),
        id="match-facade-module-attribute",
    ),
    pytest.param(
        "match vault:\n    case object(token=t):\n        return t",
        ("AttributeError", "Attribute 'token' of 'Vault' objects is not available in snippets."),
        id="match-hidden-keyword",
    ),
    pytest.param(
        "match vault:\n    case object(_secret=s):\n        return s",
        (
            "AttributeError",
            "Attribute '_secret' is not available here: names starting with '_' are private, and snippets can read them only on their own objects; use the object's public attributes.",
        ),
        id="match-private-keyword",
    ),
    pytest.param(
        "match vault:\n    case object(__dict__=d):\n        return d",
        (
            "CompileError",
            "Line 2: Attribute '__dict__' is not allowed in snippets: Python's special attributes reach the interpreter's internals; only __name__, __qualname__, __doc__, __class__, __cause__, __context__ and the methods a class may define can be read.",
        ),
        id="match-dunder-keyword",
    ),
    pytest.param(
        "match vault:\n    case Vault(t):\n        return t",
        ("AttributeError", "Attribute 'token' of 'Vault' objects is not available in snippets."),
        id="match-args-hidden",
    ),
    pytest.param(
        "class P:\n    __match_args__ = ('x',)",
        (
            "CompileError",
            'Line 2: "__match_args__" cannot be used as a name in snippets: names that start and end with "__" belong to Python itself; choose another name.',
        ),
        id="match-class-match-args-body",
    ),
    pytest.param(
        "match 1:\n    case int(x, real=r):\n        return r",
        (
            "TypeError",
            "A pattern of 'int' cannot mix positional and keyword sub-patterns in snippets; match the keywords in a second pattern.",
        ),
        id="match-self-mixed",
    ),
    pytest.param(
        "return _match0_",
        (
            "CompileError",
            'Line 1: "_match0_" cannot be used as a name in snippets: names that start and end with "_" are reserved for the sandbox; use "match0" instead.',
        ),
        id="match-holder-name",
    ),
    pytest.param(
        "return _write_private_(vault)",
        (
            "CompileError",
            'Line 1: "_write_private_" cannot be used as a name in snippets: names that start and end with "_" are reserved for the sandbox; use "write_private" instead.',
        ),
        id="write-private-hook-name",
    ),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_relaxation_attack_is_refused(source: str, expected: Expected) -> None:
    """Each attack ends in its one expected error (a compile error, or the exception and message a guard raises)."""
    assert_refused(run_source(source, environment=ENVIRONMENT), expected)


def test_corpus_is_large_enough() -> None:
    """At least 80 distinct attacks on the relaxations."""
    assert_corpus_size(CASES, 80)


def test_host_objects_are_untouched_after_the_attacks() -> None:
    """Refused writes leave nothing behind: the host object keeps its private state and its token."""
    vault = ENVIRONMENT.names["vault"]
    assert isinstance(vault, Vault)
    for source in ("vault._secret = 1", "setattr(vault, '_secret', 1)", "Vault.__init__(vault)", "del vault._secret"):
        assert not run_source(source, environment=ENVIRONMENT).ok
    assert (vault._secret, vault.token) == ("s3cret", "tok")


def test_match_never_runs_a_refused_attribute() -> None:
    """A class pattern on a hidden property is refused before any read: the property's code never runs."""
    meter = ENVIRONMENT.names["meter"]
    assert isinstance(meter, Meter)
    result = run_source("match meter:\n    case object(secret=s):\n        return s", environment=ENVIRONMENT)
    assert result.error is not None
    assert result.error.message == "Attribute 'secret' of 'Meter' objects is not available in snippets."
    assert meter.reads == 0


def test_hasattr_answers_like_a_refused_read() -> None:
    """``hasattr`` on a private or hidden attribute of a host object is False; on the snippet's own, True."""
    source = (
        "class Own:\n    def __init__(self):\n        self._mine = 1\n"
        "return [hasattr(vault, '_secret'), hasattr(vault, 'token'), hasattr(vault, 'describe'), hasattr(Own(), '_mine')]"
    )
    assert run_source(source, environment=ENVIRONMENT).value == [False, False, True, True]


def test_decimal_context_changes_stay_in_the_run() -> None:
    """``getcontext().prec = 2`` in one run leaves the next run (and the host's thread) at the default precision."""
    assert (
        run_source("import decimal\ndecimal.getcontext().prec = 2\nreturn str(decimal.Decimal(1) / 3)").value == "0.33"
    )
    assert run_source("import decimal\nreturn decimal.getcontext().prec").value == 28
    assert decimal.getcontext().prec == 28


def test_classes_from_type_are_views_for_foreign_types() -> None:
    """``type(x)`` gives usable classes for builtins, façade classes and the snippet's own; a name-only view else."""
    source = (
        "import json, datetime\nclass Own:\n    pass\n"
        "return [type([]) is list, type(datetime.date(2020, 1, 1)) is datetime.date, type(Own()) is Own,"
        " type(json).__name__, type(len).__name__, repr(type(json)) == repr(type(json)), callable(type(json))]"
    )
    assert run_source(source, environment=ENVIRONMENT).value == [
        True,
        True,
        True,
        "Facade",
        "builtin_function_or_method",
        True,
        False,
    ]
