"""Ordinary snippets keep working: the language wall removes reach, not everyday Python."""

# ruff: noqa: E501  # one case per row: a table reads better than strings wrapped over many lines

from __future__ import annotations

import re
from typing import Any

import pytest

from sandbox.builtins import SAFE_BUILTINS
from sandbox.executor import run_source
from sandbox.imports import STDLIB_MODULES
from tests.doc_pages import read_section

TWIML = """
body = event.get("Body", "").strip().lower()
import html
parts = ['<?xml version="1.0" encoding="UTF-8"?>', "<Response>"]
for line in ["Hello " + html.escape(event["From"]), f"You said {body!r}"]:
    parts.append(f"<Message>{html.escape(line)}</Message>")
parts.append("</Response>")
return "".join(parts)
"""

COUNTER_CLASS = """
class Counter:
    total = 0

    def __init__(self, start=0):
        self.count = start
        self.history = []

    def add(self, n=1):
        self.count += n
        self.history += [n]
        return self

    def __repr__(self):
        return f"Counter({self.count})"

c = Counter(10).add().add(5)
return [c.count, c.history, repr(c), str(c)]
"""

IDIOMS = """
def total(xs: list[int], extra: int | None = None) -> dict[str, int]:
    return {"sum": sum(xs) + (extra or 0)}
d = {"b": 2, "a": 1, "c": 3}
del d["c"]
pairs = sorted(d.items(), key=lambda kv: kv[1])
clean = [w.strip().lower() for w in " A, b ,c ".split(",") if w.strip()]
n = 0
while n < 3:
    n += 1
try:
    try:
        int("x")
    except (KeyError, ValueError) as e:
        raise RuntimeError("bad number") from e
except RuntimeError as e:
    msg = str(e)
return [total([1, 2], 3), pairs, clean[::-1], "-".join(clean), "a" in d, n, msg, divmod(7, 2)]
"""

CASES: list[Any] = [
    pytest.param(
        IDIOMS,
        None,
        [{"sum": 6}, [["a", 1], ["b", 2]], ["c", "b", "a"], "a-b-c", True, 3, "bad number", [3, 1]],
        id="everyday-idioms",
    ),
    pytest.param(
        TWIML,
        {"From": "+1555", "Body": " Hi <b> "},
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Hello +1555</Message><Message>You said &#x27;hi &lt;b&gt;&#x27;</Message></Response>',
        id="twiml-strings",
    ),
    pytest.param(
        "import json\ndata = json.loads(event['raw'])\nreturn json.dumps({'n': data['n'] + 1}, sort_keys=True)",
        {"raw": '{"n": 1}'},
        '{"n": 2}',
        id="json",
    ),
    pytest.param(
        "import datetime\nd = datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)\nreturn [d.isoformat(), (d + datetime.timedelta(days=1)).strftime('%Y-%m-%d'), d]",
        None,
        ["2026-01-02T03:04:00+00:00", "2026-01-03", "2026-01-02T03:04:00+00:00"],
        id="datetime",
    ),
    pytest.param(
        "from zoneinfo import ZoneInfo\nimport datetime\nd = datetime.datetime(2026, 7, 1, 12, tzinfo=ZoneInfo('Europe/Paris'))\nreturn d.utcoffset().total_seconds()",
        None,
        7200.0,
        id="zoneinfo",
    ),
    pytest.param(
        "import re\nm = re.match(r'(?P<cc>\\+\\d)(\\d+)', event['to'])\nreturn [m.group('cc'), m[2], re.sub(r'\\d', '#', 'a1b22'), re.findall('[a-z]', 'a1b2')]",
        {"to": "+15551234"},
        ["+1", "5551234", "a#b##", ["a", "b"]],
        id="regex",
    ),
    pytest.param(
        "xs = [3, 1, 2]\nreturn [[x * 2 for x in xs if x > 1], {x: x * x for x in xs}, sorted({x % 2 for x in xs}), sum(x for x in xs)]",
        None,
        [[6, 4], {"3": 9, "1": 1, "2": 4}, [0, 1], 6],
        id="comprehensions",
    ),
    pytest.param(
        "def gen(n):\n    for i in range(n):\n        yield i * i\n    yield from [99]\nreturn list(gen(3))",
        None,
        [0, 1, 4, 99],
        id="generators",
    ),
    pytest.param(COUNTER_CLASS, None, [16, [1, 5], "Counter(16)", "Counter(16)"], id="class-augassign"),
    pytest.param(
        "totals = {'a': 1}\ntotals['a'] += 2\nitems = [1, 2]\nitems[0] *= 10\nreturn [totals, items]",
        None,
        [{"a": 3}, [10, 2]],
        id="subscript-augassign",
    ),
    pytest.param(
        "out = []\ntry:\n    1 / 0\nexcept ZeroDivisionError as e:\n    out.append(str(e))\nelse:\n    out.append('else')\nfinally:\n    out.append('finally')\nreturn out",
        None,
        ["division by zero", "finally"],
        id="try-except-finally",
    ),
    pytest.param(
        "class AppError(Exception):\n    pass\ntry:\n    raise AppError('bad')\nexcept Exception as e:\n    return [isinstance(e, AppError), str(e)]",
        None,
        [True, "bad"],
        id="custom-exception",
    ),
    pytest.param(
        "name = 'Ada'\nn = 3.14159\nreturn [f'{name}: {n:.2f}', f'{name!r:>6}', '{} {x}'.format(1, x=2), '%s=%d' % ('a', 1)]",
        None,
        ["Ada: 3.14", " 'Ada'", "1 2", "a=1"],
        id="f-strings-and-format",
    ),
    pytest.param(
        "first, *rest = [1, 2, 3]\n(a, b), c = (1, 2), 3\ndef f(*args, **kw):\n    return [args, kw]\nreturn [first, rest, a + b + c, f(*rest, **{'k': 1}), [*rest, 4], {**{'x': 1}, 'y': 2}]",
        None,
        [1, [2, 3], 6, [[2, 3], {"k": 1}], [2, 3, 4], {"x": 1, "y": 2}],
        id="star-unpacking",
    ),
    pytest.param(
        "people = [{'n': 'b', 'age': 30}, {'n': 'a', 'age': 20}]\nreturn [p['n'] for p in sorted(people, key=lambda p: p['age'])] + [max(people, key=lambda p: p['age'])['n']]",
        None,
        ["a", "b", "b"],
        id="sorted-key-lambda",
    ),
    pytest.param(
        "d = {'a': 1}\nd.update(b=2)\nd.setdefault('c', 3)\nxs = [3, 1]\nxs.append(2)\nxs.sort()\nxs.extend([4])\nreturn [d, d.get('z', 0), list(d.items()), xs, xs.pop(), xs.index(2)]",
        None,
        [{"a": 1, "b": 2, "c": 3}, 0, [["a", 1], ["b", 2], ["c", 3]], [1, 2, 3], 4, 1],
        id="dict-list-methods",
    ),
    pytest.param(
        "from decimal import Decimal, ROUND_HALF_UP, localcontext\nx = Decimal('1.005').quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)\nwith localcontext(prec=3) as ctx:\n    y = Decimal(1) / Decimal(3)\nreturn [str(x), x, str(y)]",
        None,
        ["1.01", "1.01", "0.333"],
        id="decimal",
    ),
    pytest.param(
        "import statistics\nxs = [1, 2, 3, 4]\nreturn [statistics.mean(xs), statistics.median(xs), round(statistics.stdev(xs), 3)]",
        None,
        [2.5, 2.5, 1.291],
        id="statistics",
    ),
    pytest.param(
        "from collections import Counter, defaultdict, OrderedDict, namedtuple, deque\nc = Counter('abca')\nc['z'] += 1\ndd = defaultdict(list)\ndd['k'].append(1)\nP = namedtuple('P', 'x y')\nq = deque([1])\nq.appendleft(0)\nreturn [c.most_common(1), dict(dd), P(1, 2).x, list(q), list(OrderedDict(a=1))]",
        None,
        [[["a", 2]], {"k": [1]}, 1, [0, 1], ["a"]],
        id="collections",
    ),
    pytest.param(
        "import itertools\nreturn [list(itertools.chain([1], [2])), list(itertools.islice(itertools.count(), 3)), [list(g) for k, g in itertools.groupby('aab')], list(itertools.product('ab', repeat=1))]",
        None,
        [[1, 2], [0, 1, 2], [["a", "a"], ["b"]], [["a"], ["b"]]],
        id="itertools",
    ),
    pytest.param(
        "import hashlib, hmac, base64, uuid\nh = hashlib.sha256(b'x').hexdigest()[:8]\nmac = hmac.new(b'k', b'm', hashlib.sha1).hexdigest()[:8]\nb = base64.b64encode(b'hi').decode()\nu = uuid.uuid5(uuid.NAMESPACE_DNS, 'example.com')\nreturn [h, mac, b, str(u), len(str(uuid.uuid4())), hmac.compare_digest('a', 'a')]",
        None,
        ["2d711642", "772b71c8", "aGk=", "cfbff0d1-9375-5685-968c-48ce8b15ae17", 36, True],
        id="hashlib-hmac-base64-uuid",
    ),
    pytest.param(
        "from urllib.parse import urlencode, quote, urlparse, parse_qs\nimport urllib.parse\nu = urlparse('https://x.test/p?a=1&a=2')\nreturn [urlencode({'a': 'b c'}), quote('a/b c'), u.netloc, parse_qs(u.query), urllib.parse.unquote('%41')]",
        None,
        ["a=b+c", "a/b%20c", "x.test", {"a": ["1", "2"]}, "A"],
        id="urllib-parse",
    ),
    pytest.param(
        "import html\nreturn [html.escape('<a & b>'), html.unescape('&lt;&amp;')]",
        None,
        ["&lt;a &amp; b&gt;", "<&"],
        id="html",
    ),
    pytest.param(
        "import textwrap\nreturn [textwrap.shorten('hello big world', width=12), textwrap.wrap('aa bb cc', 5), textwrap.dedent('  x\\n  y')]",
        None,
        ["hello [...]", ["aa bb", "cc"], "x\ny"],
        id="textwrap",
    ),
    pytest.param(
        "import math, random, time, string\nrandom.seed(1)\nr = random.randint(1, 6)\nreturn [math.sqrt(16), 1 <= r <= 6, time.time() > 0, string.Template('$who').substitute(who='you'), string.ascii_lowercase[:3]]",
        None,
        [4.0, True, True, "you", "abc"],
        id="math-random-time-string",
    ),
    pytest.param(
        "print('hello', 'world', sep=', ')\nlog.info('sent', sid='SM1', n=2)\nreturn printed",
        None,
        "hello, world\n",
        id="print-and-log",
    ),
    pytest.param(
        "count = 0\ndef inc():\n    nonlocal count\n    count += 1\ninc()\ninc()\nreturn count",
        None,
        2,
        id="nonlocal-closure",
    ),
    pytest.param(
        "xs = [1, 2, 3]\nreturn [list(enumerate(xs, 1))[0], list(zip(xs, 'ab')), list(map(str, xs)), list(filter(None, [0, 1])), list(reversed(xs)), any(xs), all(xs), min(xs), max(3, 4), isinstance(xs, list), isinstance({}, (list, dict)), hasattr(xs, 'append'), dict.fromkeys('ab', 0), tuple(xs), bytes([104, 105]).decode(), list[int] is not None]",
        None,
        [
            [1, 1],
            [[1, "a"], [2, "b"]],
            ["1", "2", "3"],
            [1],
            [3, 2, 1],
            True,
            True,
            1,
            4,
            True,
            True,
            True,
            {"a": 0, "b": 0},
            [1, 2, 3],
            "hi",
            True,
        ],
        id="builtins",
    ),
    pytest.param(
        "class Base:\n    def hello(self):\n        return 'base'\nclass Child(Base, object):\n    @property\n    def name(self):\n        return 'child'\n    @staticmethod\n    def s():\n        return 1\n    @classmethod\n    def c(cls):\n        return cls.s() + 1\nx = Child()\nreturn [x.hello(), x.name, Child.c(), isinstance(x, Base)]",
        None,
        ["base", "child", 2, True],
        id="inheritance-decorators",
    ),
    pytest.param(
        "class MyList(list):\n    def total(self):\n        return sum(self)\nm = MyList([1, 2])\nm.append(3)\nreturn [m.total(), len(m)]",
        None,
        [6, 3],
        id="subclass-builtin-type",
    ),
    pytest.param(
        "with_walrus = [y for x in [1, 2, 3] if (y := x * 2) > 2]\nreturn with_walrus", None, [4, 6], id="walrus"
    ),
    pytest.param("event['seen'] = True\nreturn event", {"a": 1}, {"a": 1, "seen": True}, id="mutate-event"),
    pytest.param("return", None, None, id="empty-return"),
    pytest.param("", None, None, id="empty-snippet"),
    pytest.param(
        "assert 1 + 1 == 2, 'math'\nx = None\nreturn x is None and not False", None, True, id="assert-and-logic"
    ),
]


@pytest.mark.parametrize(("source", "event", "expected"), CASES)
def test_ordinary_snippet_works(source: str, event: Any, expected: Any) -> None:
    """An everyday snippet runs and returns exactly what plain Python would."""
    result = run_source(source, event=event)
    assert result.error is None, result.error
    assert result.value == expected


def test_print_and_log_are_captured() -> None:
    """print goes to stdout and log records keep their level, message and fields."""
    result = run_source("print('a')\nlog.warning('careful', n=1)\nreturn 1")
    assert result.stdout == "a\n"
    assert result.logs == ({"level": "warning", "message": "careful", "fields": {"n": 1}},)


def test_readme_snippet_example_runs() -> None:
    """The snippet shown on the documentation's home page runs and returns TwiML."""
    source = read_section("index", "snippet").split("```python\n", 1)[1].split("```", 1)[0]
    result = run_source(source, event={"form": {"From": "+15551234567", "Body": "hello there"}})
    assert result.error is None, result.error
    assert result.value.startswith("<Response><Message>Got 2 word(s) at ")


def test_readme_lists_every_allowed_module_and_builtin() -> None:
    """The Snippets page names every allowed module and every builtin (datasette-style docs check)."""
    section = read_section("snippets", "snippets")
    missing_modules = [name for name in STDLIB_MODULES if f"`{name}`" not in section]
    documented = set(re.findall(r"[A-Za-z_]+", section))
    missing_builtins = [name for name in SAFE_BUILTINS if not name.startswith("_") and name not in documented]
    assert (missing_modules, missing_builtins) == ([], [])
