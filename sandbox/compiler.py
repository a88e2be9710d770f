"""Compile a snippet under the policy: size and depth caps, every error at once, cached by source hash."""

from __future__ import annotations

import ast
import hashlib
import marshal
import threading
import types
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from sandbox.errors import CompileError
from sandbox.policy import ENTRY_POINT, SNIPPET_FILENAME, SnippetPolicy

__all__ = [
    "ENTRY_POINT",
    "MAX_AST_DEPTH",
    "MAX_SOURCE_BYTES",
    "SNIPPET_FILENAME",
    "CompiledSnippet",
    "adopt_compiled",
    "compile_snippet",
    "compile_to_bytes",
]

#: Threat: parser and compiler CPU/memory bombs in the host, which compiles before any process starts.
MAX_SOURCE_BYTES: Final = 256 * 1024

#: Threat: RestrictedPython's recursive transformer raises RecursionError on deep ASTs (a 6000-term ``1+1+...``
#: expression crashes ``compile_restricted_exec``). Real code stays far below this depth.
MAX_AST_DEPTH: Final = 100

#: Threat: a small source that expands into a huge AST (and a slow transform) is cut off here.
MAX_AST_NODES: Final = 100_000

#: Threat: CPython 3.11 parses an f-string in time quadratic in its replacement fields: one 256 KiB f-string of
#: ``{a:{b}}`` fields costs the host about ten seconds of CPU before any check can run. Every field needs a ``{``.
MAX_BRACES: Final = 10_000

_CACHE_SIZE: Final = 1024


@dataclass(frozen=True, slots=True, eq=False)
class CompiledSnippet:
    """A snippet that passed the policy, ready to run.

    Compared and hashed by identity: the compile cache hands out one object per source, and hashing a code object
    walks all its constants (host-side caches key on the snippet once per run).

    Attributes:
        source: The snippet's source text (tracebacks quote its lines).
        digest: sha256 of the source (hex); the cache key.
        code: Module code that defines the :data:`ENTRY_POINT` function; marshal-able, so it can be sent to a child.
    """

    source: str
    digest: str
    code: types.CodeType

    def to_bytes(self) -> bytes:
        """Serialise for a child process (``marshal``; only ever read back from our own host)."""
        return marshal.dumps((self.source, self.digest, self.code))

    @classmethod
    def from_bytes(cls, data: bytes) -> CompiledSnippet:
        """Rebuild from :meth:`to_bytes` output. Never call this on bytes that did not come from our host."""
        source, digest, code = marshal.loads(data)  # noqa: S302  # bytes come from our own host over a private socket
        if not (isinstance(source, str) and isinstance(digest, str) and isinstance(code, types.CodeType)):
            raise ValueError("Not a compiled snippet.")
        return cls(source=source, digest=digest, code=code)


# Keyed by the source text itself, not its digest: a str caches its own hash, so a hit is one dict lookup, where a
# sha256 runs OpenSSL's code on every run (about 40 µs of a cold CPU's run latency). Sources over
# MAX_SOURCE_BYTES are never cached, so the keys hold at most what the cached snippets hold anyway.
_cache: OrderedDict[str, CompiledSnippet | tuple[str, ...]] = OrderedDict()
_cache_lock = threading.Lock()


def compile_snippet(source: str) -> CompiledSnippet:
    """Compile *source* (a function body) under :class:`~sandbox.policy.SnippetPolicy`.

    Results, including rejections, are cached by source text (up to :data:`MAX_SOURCE_BYTES`).

    Raises:
        CompileError: The source is too large or too deep, is not valid Python, or breaks the policy; ``errors``
            holds every ``Line N: ...`` message.
    """
    if not isinstance(source, str):
        raise TypeError(f"A snippet's source must be str, got {type(source).__name__!r}.")
    with _cache_lock:
        cached = _cache.get(source)
        if cached is not None:
            _cache.move_to_end(source)
    if cached is None:
        encoded = source.encode("utf-8", "surrogatepass")
        cached = _compile(source, hashlib.sha256(encoded).hexdigest(), size=len(encoded))
        if len(encoded) <= MAX_SOURCE_BYTES:
            with _cache_lock:
                _cache[source] = cached
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
    if isinstance(cached, tuple):
        raise CompileError(cached)
    return cached


def compile_to_bytes(source: str) -> bytes | tuple[str, ...]:
    """Compile *source* for another process (a compile pool): the snippet as bytes, or its error messages.

    A large source holds the GIL for seconds in ``compile()``; a host that must stay responsive (an event loop)
    compiles in another process with this and hands the outcome to :func:`adopt_compiled`.
    """
    try:
        return compile_snippet(source).to_bytes()
    except CompileError as exc:
        return exc.errors


def adopt_compiled(source: str, outcome: bytes | tuple[str, ...]) -> None:
    """Cache the :func:`compile_to_bytes` *outcome* for *source*, so :func:`compile_snippet` finds it.

    Never call this with bytes that did not come from our own host (see :meth:`CompiledSnippet.from_bytes`).
    """
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        return  # never cached (compile_snippet refuses it at once)
    cached = outcome if isinstance(outcome, tuple) else CompiledSnippet.from_bytes(outcome)
    with _cache_lock:
        _cache[source] = cached
        _cache.move_to_end(source)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def _compile(source: str, digest: str, *, size: int) -> CompiledSnippet | tuple[str, ...]:
    """Compile without the cache; return the snippet or the error messages."""
    if size > MAX_SOURCE_BYTES:
        return (f"Line 1: The snippet is {size} bytes long; the limit is {MAX_SOURCE_BYTES} bytes.",)
    braces = source.count("{")
    if braces > MAX_BRACES:
        return (f"Line 1: The snippet has {braces} '{{' characters; the limit is {MAX_BRACES}. Make it smaller.",)
    try:
        module = ast.parse(source, SNIPPET_FILENAME, "exec")
    except SyntaxError as exc:
        return (_syntax_error(exc),)
    except ValueError as exc:  # null bytes in the source
        return (f"Line 1: SyntaxError: {exc}",)
    except (RecursionError, MemoryError) as exc:
        return (_too_complex(exc),)
    too_deep = _check_shape(module)
    if too_deep:
        return (too_deep,)
    errors: list[str] = []
    try:
        wrapped = SnippetPolicy(errors, [], {}).transform(module)
        if errors:
            return tuple(errors)
        code = compile(wrapped, SNIPPET_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:  # found by the compiler's symbol table, e.g. nonlocal without a binding
        return (_syntax_error(exc),)
    except (RecursionError, MemoryError) as exc:
        return (_too_complex(exc),)
    return CompiledSnippet(source=source, digest=digest, code=code)


def _check_shape(module: ast.Module) -> str | None:
    """Return an error when the AST is deeper than MAX_AST_DEPTH or larger than MAX_AST_NODES (iteratively)."""
    stack: list[tuple[ast.AST, int]] = [(module, 0)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_AST_DEPTH:
            line = getattr(node, "lineno", 1)
            return f"Line {line}: The snippet nests more than {MAX_AST_DEPTH} levels deep; split it into smaller steps."
        if count > MAX_AST_NODES:
            return f"Line 1: The snippet has more than {MAX_AST_NODES} syntax nodes; make it smaller."
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return None


def _syntax_error(exc: SyntaxError) -> str:
    statement = exc.text.strip() if exc.text else None
    return f"Line {exc.lineno or 1}: SyntaxError: {exc.msg} at statement: {statement!r}"


def _too_complex(exc: BaseException) -> str:
    return f"Line 1: The snippet is too deeply nested or too large to compile ({type(exc).__name__})."
