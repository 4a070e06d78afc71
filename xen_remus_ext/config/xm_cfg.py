# -*- coding: utf-8 -*-
"""xm cfg files: Python, evaluated the way xm does, without running it.

xm (opts.py ``Opts.load``, docs/xen-facts.md section 2) executes a cfg with
locals pre-seeded with ``sys``, ``os``, ``os.path``, ``xm_file``,
``xm_help`` and ``xm_vars``; afterwards every local whose type is exactly
str, list, int or float becomes an option (unknown names too; dicts,
tuples, bools and None are dropped).

:func:`evaluate` walks the file's AST instead, and knows the idioms real
cfg files use: assignments (also ``a = b = x``, tuple unpacking, ``+=``),
``import os, re, sys`` and ``import os.path``, ``os.uname()``, the pure
``os.path`` functions, ``re.search``/``re.match``/``re.sub``, ``if``/
``elif``/``else``, conditional expressions, string ``+``, ``%``, ``*`` and
the common string methods (``join``, ``split``, ``strip``, ``replace``
...), list literals, ``append``/``extend``, integer arithmetic, and
``xm_vars.var(...)``/``xm_vars.check()``.  Anything else raises
:class:`ConfigError` naming the file, the line and the construct.
Running the file like xm does is the explicit opt-in ``allow_exec=True``.

Limits (:mod:`.limits`): whatever the file holds, an evaluation reads at
most 256 KiB, builds no value longer than 1 Mi characters or items, creates
at most 48 MiB of values, takes at most about 5 s, and refuses a regular
expression that could backtrack for long; each limit is checked BEFORE the
operation runs, and a refusal is a :class:`ConfigError` with the line.

Typographic quotes (``’ ‘ ′ ″ “ ”`` ...) pasted from web pages are
reported before anything else, with line, column, the character and the
ASCII quote to use (:func:`find_typographic_quotes`).
"""
from __future__ import absolute_import, division, print_function

import ast
import os
import posixpath
import re
import threading

import six

from xen_remus_ext.compat import binary_type, integer_types, string_types, text_type
from xen_remus_ext.config import limits
from xen_remus_ext.config import settings as settings_mod
from xen_remus_ext.config.quotes import (  # noqa: F401 - part of this module's interface
    TYPOGRAPHIC_QUOTES, asciify_quotes, find_typographic_quotes)
from xen_remus_ext.config.util import q
from xen_remus_ext.errors import ConfigError

#: names xm puts into the cfg's locals before running it
SEEDED_NAMES = ("sys", "os", "xm_file", "xm_help", "xm_vars")

#: limits that keep a hostile cfg from eating the machine (see :mod:`.limits`)
MAX_SEQUENCE = limits.MAX_SEQUENCE
MAX_RANGE = 100000
MAX_INT = 1 << 256
_LONG_NUMBER = re.compile(u"[0-9]{%d,}" % (limits.MAX_INT_DIGITS + 1))

_Constant = getattr(ast, "Constant", None)


# -- the evaluator ---------------------------------------------------------

class _Module(object):
    """A module the cfg may use; only listed attributes exist."""

    def __init__(self, name, attrs):
        self.name = name
        self.attrs = attrs

    def __repr__(self):
        return "<module %s>" % self.name


class _XmVars(object):
    """Stands in for xm's ``xen.xm.help.Vars``: ``var()`` declares a
    variable given as ``name=value`` on the xm command line, ``check()``
    verifies it is set."""

    def __init__(self, env):
        self.env = env
        self.declared = []

    def var(self, name, use=None, check=None):
        self.declared.append(name)

    def check(self):
        return None


def _text_args(fn):
    def wrapper(*args):
        for a in args:
            if not isinstance(a, string_types):
                raise TypeError("expected strings, got %s" % q(a))
        return fn(*args)
    wrapper.__name__ = fn.__name__
    return wrapper


def _re_flags(rest, flags_at):
    flags = rest[flags_at] if len(rest) > flags_at else 0
    if not isinstance(flags, integer_types) or isinstance(flags, bool):
        raise TypeError("re flags: expected an integer, got %s" % q(flags))
    return flags


def _re_fn(fn, search, flags_at=0, results=False):
    """A guarded ``re`` function: strings only, backtracking work bounded;
    ``results``: it returns a list of pieces of the string (findall, split)."""
    def wrapper(pattern, string, *rest):
        if not isinstance(pattern, string_types) or not isinstance(string, string_types):
            raise TypeError("expected a pattern and a string, got %s, %s" % (q(pattern), q(string)))
        for r in rest:
            if not isinstance(r, integer_types) or isinstance(r, bool):
                raise TypeError("unexpected argument %s" % q(r))
        limits.check_regex(fn.__name__, pattern, _re_flags(rest, flags_at), len(string), search)
        if results:
            # at most one piece a position; groups split a match further
            groups = re.compile(pattern, _re_flags(rest, flags_at)).groups
            _budget().ensure((len(string) + 1) * (groups + 1) * 72 + 4 * len(string) * (groups + 1),
                             "re.%s()" % fn.__name__)
        return fn(pattern, string, *rest)
    wrapper.__name__ = fn.__name__
    return wrapper


def _re_sub(pattern, repl, string, count=0, flags=0):
    for a in (pattern, repl, string):
        if not isinstance(a, string_types):
            raise TypeError("expected strings, got %s" % q(a))
    for a in (count, flags):
        if not isinstance(a, integer_types) or isinstance(a, bool):
            raise TypeError("re.sub(): expected integers for count and flags, got %s" % q(a))
    n = len(string)
    limits.check_regex("sub", pattern, flags, n, True)
    matches = n + 1 if count <= 0 else min(count, n + 1)
    refs = repl.count(u"\\")
    size = n + matches * (len(repl) + refs * n)
    if size > MAX_SEQUENCE:
        raise limits.LimitError("re.sub() could build %d characters: more than %d" % (size, MAX_SEQUENCE))
    _budget().ensure(4 * size, "re.sub()")
    return re.sub(pattern, repl, string, count=count, flags=flags)


_CURRENT = threading.local()


def _budget():
    """The budget of the evaluation running in this thread."""
    stack = getattr(_CURRENT, "stack", None)
    return stack[-1] if stack else limits.Budget()


def _safe_range(*args):
    for a in args:
        if not isinstance(a, integer_types) or isinstance(a, bool):
            raise TypeError("range() expects integers, got %s" % q(a))
    try:
        size = len(six.moves.range(*args))
    except OverflowError:
        size = MAX_RANGE + 1
    if size > MAX_RANGE:
        raise limits.LimitError("range() of %d items: more than %d" % (size, MAX_RANGE))
    return list(six.moves.range(*args))


def _to_int(value=0, *base):
    if isinstance(value, string_types) and len(value.strip()) > limits.MAX_INT_DIGITS:
        raise limits.LimitError("int() of a text of %d characters: more than %d"
                                % (len(value), limits.MAX_INT_DIGITS))
    if base and (not isinstance(base[0], integer_types) or len(base) > 1):
        raise TypeError("int(): expected an integer base, got %s" % q(base))
    return int(value, *base)


def _to_list(value=()):
    if not isinstance(value, (list, tuple, dict) + string_types):
        raise TypeError("list() of %s is not supported" % q(value))
    if len(value) > MAX_SEQUENCE:
        raise limits.LimitError("list() of %d items: more than %d" % (len(value), MAX_SEQUENCE))
    _budget().ensure(len(value) * (8 + (72 if isinstance(value, string_types) else 0)), "list()")
    return list(value)


def _bounded_minmax(fn):
    def wrapper(*args):
        for a in args:
            _compare_guard(a, a)
        return fn(*args)
    wrapper.__name__ = fn.__name__
    return wrapper


def _compare_guard(left, right, contains=False):
    """Refuse a comparison that could take long (huge values, long searches)."""
    if contains and isinstance(left, string_types) and isinstance(right, string_types):
        work = limits.search_work(len(left), len(right))
    elif contains:
        work = limits.text_bound(right, limits.MAX_SEARCH_WORK, as_repr=True)
    else:
        work = min(limits.text_bound(left, limits.MAX_SEARCH_WORK, as_repr=True),
                   limits.text_bound(right, limits.MAX_SEARCH_WORK, as_repr=True))
    if work > limits.MAX_SEARCH_WORK:
        raise limits.LimitError("a comparison of values this large could take too long")


def _to_str(value=u""):
    if isinstance(value, string_types):
        return value
    if isinstance(value, (bool, float) + integer_types):
        return text_type(value)
    raise TypeError("str() of %s is not supported" % q(value))


def _sized(fn, factor=1):
    """``fn`` over strings, refused when its result could exceed the limits."""
    def wrapper(*args):
        size = factor * sum(len(a) + 1 for a in args if isinstance(a, string_types))
        if size > MAX_SEQUENCE:
            raise limits.LimitError("%s() could build %d characters: more than %d"
                                    % (fn.__name__, size, MAX_SEQUENCE))
        return fn(*args)
    wrapper.__name__ = fn.__name__
    return wrapper


def _make_modules(uname):
    ospath = _Module("os.path", {
        "join": _sized(_text_args(posixpath.join)), "basename": _text_args(posixpath.basename),
        "dirname": _text_args(posixpath.dirname), "split": _text_args(posixpath.split),
        "splitext": _text_args(posixpath.splitext), "normpath": _text_args(posixpath.normpath),
        "isabs": _text_args(posixpath.isabs), "sep": u"/",
    })

    def os_uname():
        return tuple(uname)

    osmod = _Module("os", {"uname": os_uname, "path": ospath, "sep": u"/", "pathsep": u":",
                           "curdir": u".", "pardir": u".."})
    remod = _Module("re", {"search": _re_fn(re.search, True), "match": _re_fn(re.match, False),
                           "sub": _re_sub, "split": _re_fn(re.split, True, 1, True),
                           "findall": _re_fn(re.findall, True, 0, True),
                           "escape": _sized(_text_args(re.escape), 2), "I": re.I, "IGNORECASE": re.I})
    sysmod = _Module("sys", {"platform": u"linux2"})
    return {"os": osmod, "os.path": ospath, "re": remod, "sys": sysmod}


_BUILTINS = {"str": _to_str, "int": _to_int, "float": float, "len": len, "list": _to_list, "bool": bool,
             "min": _bounded_minmax(min), "max": _bounded_minmax(max), "range": _safe_range,
             "True": True, "False": False, "None": None}

_STR_METHODS = frozenset(("join", "split", "rsplit", "strip", "lstrip", "rstrip", "replace", "lower",
                          "upper", "startswith", "endswith", "find", "rfind", "count", "splitlines",
                          "isdigit", "isalpha", "isalnum", "partition", "rpartition"))
_LIST_METHODS = frozenset(("append", "extend", "index", "count", "insert"))
_DICT_METHODS = frozenset(("get", "keys", "values", "items"))
_MATCH_METHODS = frozenset(("group", "groups", "start", "end", "span", "groupdict"))
_MatchType = type(re.match("", ""))

_COMPARE = {
    ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b,
}

_STMT_NAMES = {
    "For": "a 'for' loop", "AsyncFor": "an 'async for' loop", "While": "a 'while' loop",
    "FunctionDef": "a function definition ('def')", "AsyncFunctionDef": "a function definition",
    "ClassDef": "a class definition", "Return": "'return'", "Delete": "'del'",
    "With": "a 'with' block", "AsyncWith": "a 'with' block", "Raise": "'raise'",
    "Try": "a 'try' block", "TryExcept": "a 'try' block", "TryFinally": "a 'try' block",
    "TryStar": "a 'try' block", "Assert": "'assert'", "Global": "'global'", "Nonlocal": "'nonlocal'",
    "Print": "a 'print' statement", "Exec": "an 'exec' statement", "Break": "'break'",
    "Continue": "'continue'", "Match": "a 'match' statement", "AnnAssign": "an annotated assignment",
    "TypeAlias": "a 'type' alias",
}
_EXPR_NAMES = {
    "Lambda": "a lambda", "ListComp": "a list comprehension", "SetComp": "a set comprehension",
    "DictComp": "a dict comprehension", "GeneratorExp": "a generator expression", "Yield": "'yield'",
    "YieldFrom": "'yield from'", "Await": "'await'", "Set": "a set literal",
    "JoinedStr": "an f-string", "Starred": "a starred expression", "NamedExpr": "':='",
    "Repr": "backquotes", "Ellipsis": "'...'",
}


class _Unsupported(Exception):
    def __init__(self, node, construct):
        Exception.__init__(self, construct)
        self.node = node
        self.construct = construct


class _Evaluator(object):
    def __init__(self, path, env, modules, budget):
        self.budget = budget
        self.path = path
        self.env = env
        self.modules = modules
        self.lines = {}
        self.item_lines = {}
        self.cur_line = None

    def unsupported(self, node, construct):
        raise _Unsupported(node, construct)

    # statements
    def run(self, body):
        for stmt in body:
            self.stmt(stmt)

    def stmt(self, node):
        self.cur_line = node.lineno
        self.budget.tick()
        kind = type(node).__name__
        if kind == "Assign":
            value = self.expr(node.value)
            for target in node.targets:
                self.assign(target, value, node)
        elif kind == "AugAssign":
            if not isinstance(node.target, ast.Name):
                self.unsupported(node, "augmented assignment to %s" % type(node.target).__name__)
            if not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Mod)):
                self.unsupported(node, "the operator %s=" % type(node.op).__name__)
            old = self.lookup(node.target.id, node)
            new = self.binop(node.op, old, self.expr(node.value), node)
            if isinstance(old, list) and isinstance(node.op, ast.Add):
                old[:] = new
                new = old
            self.assign(node.target, new, node)
        elif kind == "If":
            branch = node.body if self.truth(self.expr(node.test)) else node.orelse
            self.run(branch)
        elif kind == "Import":
            for alias in node.names:
                self.do_import(alias.name, alias.asname, node)
        elif kind == "ImportFrom":
            mod = node.module or ""
            if node.level or mod not in self.modules:
                self.unsupported(node, "'from %s import ...' (only os, os.path, re and sys are known)" % mod)
            for alias in node.names:
                attrs = self.modules[mod].attrs
                if alias.name not in attrs:
                    self.unsupported(node, "'from %s import %s'" % (mod, alias.name))
                self.bind(alias.asname or alias.name, attrs[alias.name], node)
        elif kind == "Expr":
            value = node.value
            if self.is_const(value):
                return  # a docstring or a bare constant
            if isinstance(value, ast.Call):
                self.expr(value)
                return
            self.unsupported(node, "an expression statement (%s)" % type(value).__name__)
        elif kind == "Pass":
            return
        else:
            self.unsupported(node, _STMT_NAMES.get(kind, "the statement %s" % kind))

    def do_import(self, name, asname, node):
        if name not in self.modules:
            self.unsupported(node, "'import %s' (only os, os.path, re and sys are known)" % name)
        if asname:
            self.bind(asname, self.modules[name], node)
        else:
            top = name.split(".")[0]
            self.bind(top, self.modules[top], node)

    def bind(self, name, value, node):
        self.env[name] = value
        self.lines[name] = node.lineno
        self.item_lines.pop(name, None)

    def assign(self, target, value, node):
        if isinstance(target, ast.Name):
            self.bind(target.id, value, node)
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.Tuple)):
                self.item_lines[target.id] = [getattr(e, "lineno", node.lineno) for e in node.value.elts]
        elif isinstance(target, (ast.Tuple, ast.List)):
            if not isinstance(value, (list, tuple)) or len(value) != len(target.elts):
                raise ValueError("cannot unpack %s into %d names" % (q(value), len(target.elts)))
            for t, v in zip(target.elts, value):
                self.assign(t, v, node)
        else:
            self.unsupported(node, "assignment to %s" % type(target).__name__)

    # expressions
    def is_const(self, node):
        if _Constant is not None and isinstance(node, _Constant):
            return True
        return type(node).__name__ in ("Num", "Str", "Bytes", "NameConstant")

    def const(self, value):
        if isinstance(value, binary_type) and six.PY2:
            value = value.decode("utf-8")
        if isinstance(value, binary_type) or isinstance(value, complex):
            raise TypeError("%s literals are not supported" % type(value).__name__)
        self.check_size(value)
        return value

    def lookup(self, name, node):
        if name in self.env:
            return self.env[name]
        if name in _BUILTINS:
            return _BUILTINS[name]
        raise NameError("name '%s' is not defined" % name)

    def truth(self, value):
        return bool(value)

    def expr(self, node):
        self.cur_line = getattr(node, "lineno", self.cur_line)
        self.budget.tick()
        if self.is_const(node):
            for field in ("value", "n", "s"):
                if hasattr(node, field):
                    return self.const(getattr(node, field))
            return None  # pragma: no cover
        kind = type(node).__name__
        if kind == "Name":
            return self.lookup(node.id, node)
        if kind == "List":
            return self.new([self.expr(e) for e in node.elts])
        if kind == "Tuple":
            return self.new(tuple(self.expr(e) for e in node.elts))
        if kind == "Dict":
            if any(k is None for k in node.keys):
                self.unsupported(node, "'**' in a dict literal")
            return self.new(dict((self.expr(k), self.expr(v)) for k, v in zip(node.keys, node.values)))
        if kind == "BinOp":
            return self.binop(node.op, self.expr(node.left), self.expr(node.right), node)
        if kind == "UnaryOp":
            val = self.expr(node.operand)
            if isinstance(node.op, ast.Not):
                return not val
            if isinstance(node.op, ast.USub) and isinstance(val, (float,) + integer_types):
                return -val
            if isinstance(node.op, ast.UAdd) and isinstance(val, (float,) + integer_types):
                return +val
            self.unsupported(node, "the unary operator %s" % type(node.op).__name__)
        if kind == "BoolOp":
            result = None
            for v in node.values:
                result = self.expr(v)
                if isinstance(node.op, ast.And) and not result:
                    return result
                if isinstance(node.op, ast.Or) and result:
                    return result
            return result
        if kind == "Compare":
            left = self.expr(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = self.expr(comp)
                if not isinstance(op, (ast.Is, ast.IsNot)):
                    _compare_guard(left, right, contains=isinstance(op, (ast.In, ast.NotIn)))
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if kind == "IfExp":
            return self.expr(node.body) if self.truth(self.expr(node.test)) else self.expr(node.orelse)
        if kind == "Subscript":
            return self.subscript(node)
        if kind == "Attribute":
            return self.attribute(self.expr(node.value), node.attr, node)
        if kind == "Call":
            return self.call(node)
        self.unsupported(node, _EXPR_NAMES.get(kind, "the expression %s" % kind))

    def subscript(self, node):
        value = self.expr(node.value)
        sl = node.slice
        if type(sl).__name__ == "Index":
            sl = sl.value
        if type(sl).__name__ == "Slice":
            parts = [self.expr(p) if p is not None else None for p in (sl.lower, sl.upper, sl.step)]
            for p in parts:
                if p is not None and (not isinstance(p, integer_types) or isinstance(p, bool)):
                    raise TypeError("slice indices must be integers, got %s" % q(p))
            index = slice(*parts)
        elif type(sl).__name__ == "ExtSlice":
            self.unsupported(node, "an extended slice")
        else:
            index = self.expr(sl)
        if not isinstance(value, (list, tuple, dict) + string_types):
            raise TypeError("%s is not subscriptable" % q(value))
        if isinstance(index, slice):
            self.budget.ensure(limits.new_bytes(value), "a slice")
            return self.new(value[index])
        return value[index]

    def attribute(self, obj, attr, node):
        if isinstance(obj, _Module):
            if attr in obj.attrs:
                return obj.attrs[attr]
            self.unsupported(node, "%s.%s (xm would allow it; use --exec)" % (obj.name, attr))
        if isinstance(obj, _XmVars) and attr in ("var", "check"):
            return getattr(obj, attr)
        allowed = ()
        if isinstance(obj, string_types):
            allowed = _STR_METHODS
        elif isinstance(obj, list):
            allowed = _LIST_METHODS
        elif isinstance(obj, tuple):
            allowed = ("index", "count")
        elif isinstance(obj, dict):
            allowed = _DICT_METHODS
        elif isinstance(obj, _MatchType):
            allowed = _MATCH_METHODS
        if attr in allowed:
            return getattr(obj, attr)
        self.unsupported(node, "the attribute .%s of %s" % (attr, type(obj).__name__))

    def call(self, node):
        if getattr(node, "starargs", None) or getattr(node, "kwargs", None):
            self.unsupported(node, "*args or **kwargs in a call")
        fn = self.expr(node.func)
        args = []
        for a in node.args:
            if type(a).__name__ == "Starred":
                self.unsupported(node, "*args in a call")
            args.append(self.expr(a))
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                self.unsupported(node, "**kwargs in a call")
            kwargs[str(kw.arg)] = self.expr(kw.value)
        if not callable(fn):
            raise TypeError("%s is not callable" % q(fn))
        if kwargs and not getattr(fn, "__module__", "").startswith("xen_remus_ext"):
            self.unsupported(node, "keyword arguments to %s()" % getattr(fn, "__name__", "this function"))
        self.guard_call(fn, args)
        result = fn(*args, **kwargs)
        self.check_size(result)
        self.budget.charge(limits.new_bytes(result, fresh_items=True))
        return result

    def new(self, value):
        """Account for a value just built (literal, slice)."""
        self.check_size(value)
        self.budget.charge(limits.new_bytes(value))
        return value

    def check_size(self, value):
        if isinstance(value, (list, tuple, dict) + string_types) and len(value) > MAX_SEQUENCE:
            raise limits.LimitError("a value of %d items: more than %d" % (len(value), MAX_SEQUENCE))
        if isinstance(value, integer_types) and abs(value) > MAX_INT:
            raise limits.LimitError("an integer of more than %d bits" % MAX_INT.bit_length())

    def guard_call(self, fn, args):
        """Refuse a method call whose result would be too large to build or
        whose work too long, before it runs."""
        owner = getattr(fn, "__self__", None)
        name = getattr(fn, "__name__", "")
        if isinstance(owner, list):
            if name in ("append", "insert", "extend"):
                more = len(args[-1]) if name == "extend" and args and hasattr(args[-1], "__len__") else 1
                if len(owner) + more > MAX_SEQUENCE:
                    raise limits.LimitError("%s() would make a list of %d items: more than %d"
                                            % (name, len(owner) + more, MAX_SEQUENCE))
                self.budget.ensure(8 * more, "%s()" % name)
                self.budget.charge(8 * more)
            elif name in ("index", "count") and args:
                _compare_guard(args[0], owner, contains=True)
            return
        if isinstance(owner, tuple):
            if args:
                _compare_guard(args[0], owner, contains=True)
            return
        if isinstance(owner, dict):
            if name == "items":
                self.budget.ensure(len(owner) * 72, "items()")
            return
        if not isinstance(owner, string_types):
            return
        texts = [a for a in args if isinstance(a, string_types)]
        if name == "join" and args and isinstance(args[0], (list, tuple, dict) + string_types):
            parts = list(args[0])
            total = sum(len(x) for x in parts if isinstance(x, string_types))
            total += len(owner) * max(len(parts) - 1, 0)
            if total > MAX_SEQUENCE:
                raise limits.LimitError("join() of %d characters: more than %d" % (total, MAX_SEQUENCE))
            self.budget.ensure(4 * total, "join()")
        elif name == "replace" and len(args) >= 2 and all(isinstance(a, string_types) for a in args[:2]):
            worst = (len(owner) + 1) * len(args[1]) if not args[0] else (len(owner) // len(args[0])) * len(args[1])
            worst += len(owner)
            if worst > MAX_SEQUENCE:
                raise limits.LimitError("replace() could build more than %d characters" % MAX_SEQUENCE)
            self.search_guard(owner, args[0])
            self.budget.ensure(4 * worst, "replace()")
        elif name in ("split", "rsplit", "splitlines", "partition", "rpartition"):
            if texts:
                self.search_guard(owner, texts[0])
            # at most one piece per character, each a new object
            self.budget.ensure((len(owner) + 1) * 72 + 4 * len(owner), "%s()" % name)
        elif name in ("find", "rfind", "count", "index", "startswith", "endswith") and texts:
            self.search_guard(owner, texts[0])
        else:
            self.budget.ensure(limits.new_bytes(owner), "%s()" % name)

    def search_guard(self, hay, needle):
        if limits.search_work(len(needle), len(hay)) > limits.MAX_SEARCH_WORK:
            raise limits.LimitError("searching %d characters for %d characters could take too long"
                                    % (len(hay), len(needle)))

    def binop(self, op, left, right, node):
        num = (float,) + integer_types
        if isinstance(op, ast.Add):
            ok = ((isinstance(left, string_types) and isinstance(right, string_types))
                  or (isinstance(left, list) and isinstance(right, list))
                  or (isinstance(left, tuple) and isinstance(right, tuple))
                  or (isinstance(left, num) and isinstance(right, num)))
            if not ok:
                raise TypeError("cannot add %s and %s" % (q(left), q(right)))
            if not isinstance(left, num):
                size = len(left) + len(right)
                if size > MAX_SEQUENCE:
                    raise limits.LimitError("a value of %d items: more than %d" % (size, MAX_SEQUENCE))
                self.budget.ensure(4 * size + 56, "'+'")
            result = left + right
        elif isinstance(op, ast.Mod):
            if isinstance(left, string_types):
                size = limits.format_bound(left, right, MAX_SEQUENCE)
                if size > MAX_SEQUENCE:
                    raise limits.LimitError("a %% format that could build more than %d characters: %s"
                                            % (MAX_SEQUENCE, q(left, 40)))
                self.budget.ensure(4 * size + 56, "'%'")
                result = left % right
            elif isinstance(left, num) and isinstance(right, num):
                result = left % right
            else:
                raise TypeError("cannot apply %% to %s and %s" % (q(left), q(right)))
        elif isinstance(op, ast.Mult):
            if isinstance(left, num) and isinstance(right, num):
                result = left * right
            elif (isinstance(left, (list, tuple) + string_types) and isinstance(right, integer_types)) or \
                    (isinstance(right, (list, tuple) + string_types) and isinstance(left, integer_types)):
                seq, n = (left, right) if isinstance(right, integer_types) else (right, left)
                if len(seq) * max(n, 0) > MAX_SEQUENCE:
                    raise limits.LimitError("a value of %d items: more than %d" % (len(seq) * n, MAX_SEQUENCE))
                self.budget.ensure(4 * len(seq) * max(n, 0) + 56, "'*'")
                result = seq * n
            else:
                raise TypeError("cannot multiply %s and %s" % (q(left), q(right)))
        elif isinstance(op, (ast.Sub, ast.Div, ast.FloorDiv)):
            if not (isinstance(left, num) and isinstance(right, num)):
                raise TypeError("arithmetic on %s and %s" % (q(left), q(right)))
            if isinstance(op, ast.Sub):
                result = left - right
            elif isinstance(op, ast.FloorDiv) or (isinstance(left, integer_types)
                                                  and isinstance(right, integer_types)):
                result = left // right  # xm ran on Python 2: int / int floors
            else:
                result = left / right
        else:
            self.unsupported(node, "the operator %s" % type(op).__name__)
        return self.new(result)


def _xm_option_value(value):
    """xm's filter: exactly str, list, int or float (no bool, dict, tuple)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (list, float) + string_types + integer_types)


def _parse_ast(text, path):
    source = text.encode("utf-8") if six.PY2 else text
    try:
        return ast.parse(source, path or "<input>")
    except SyntaxError as exc:
        msg = exc.msg or "invalid syntax"
        raise ConfigError(path, exc.lineno, "Python syntax: %s" % msg, column=exc.offset or None)
    except (ValueError, TypeError, MemoryError, RuntimeError) as exc:
        # null bytes (ValueError), nesting too deep (RecursionError is a RuntimeError)
        raise ConfigError(path, None, "Python syntax: %s" % (exc,))


def _default_uname():
    try:
        return tuple(text_type(x) for x in os.uname())
    except AttributeError:  # pragma: no cover - not on POSIX
        return (u"Linux", u"localhost", u"", u"", u"x86_64")


def check_source(text, path=None):
    """Errors that stop xm before it runs anything: typographic quotes
    first, then (on the text with ASCII quotes) a Python syntax error.

    :returns: list of :class:`ConfigError`
    """
    try:
        check_length(text, path)
    except ConfigError as exc:
        return [exc]
    errors = find_typographic_quotes(text, path)
    try:
        _parse_ast(asciify_quotes(text), path)
    except ConfigError as exc:
        if errors:
            exc = ConfigError(path, exc.line, exc.reason + " (found after reading the typographic "
                              "quotes as ASCII ones)", column=exc.column)
        errors.append(exc)
    return errors


def evaluate(text, path=None, allow_exec=False, uname=None, extra_vars=None):
    """Evaluate an xm cfg and return the settings xm would take from it.

    :param text: the file's text
    :param allow_exec: run the file with ``exec`` exactly as xm does
        (opts.py), instead of the AST evaluator
    :param uname: what ``os.uname()`` returns (default: this host's)
    :param extra_vars: xm's ``name=value`` command-line variables
    :returns: :class:`settings.Settings` with ``fmt`` ``xm``
    :raises ConfigError: typographic quote, syntax error, unsupported
        construct, or an error while evaluating (with its line)
    """
    if isinstance(text, binary_type):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(path, text[:exc.start].count(b"\n") + 1,
                              "expected UTF-8 text, got byte 0x%02x" % bytearray(text)[exc.start])
    check_length(text, path)
    quotes = find_typographic_quotes(text, path)
    if quotes:
        raise quotes[0]
    tree = _parse_ast(text, path)
    if allow_exec:
        from xen_remus_ext.config import xm_exec
        return xm_exec.execute(text, path, extra_vars, tree)
    modules = _make_modules(uname or _default_uname())
    env = dict((k, v) for k, v in (extra_vars or {}).items())
    env.update({"sys": modules["sys"], "os": modules["os"], "xm_file": text_type(path or ""), "xm_help": 0})
    env["xm_vars"] = _XmVars(env)
    ev = _Evaluator(path, env, modules, limits.Budget())
    stack = _CURRENT.__dict__.setdefault("stack", [])
    stack.append(ev.budget)
    try:
        ev.run(tree.body)
    except _Unsupported as exc:
        raise ConfigError(path, getattr(exc.node, "lineno", None),
                          "unsupported construct: %s (the evaluator knows literal assignments, "
                          "imports of os/re/sys, if/else, string and list operations; "
                          "--exec runs the file as xm does)" % limits.cut(exc.construct),
                          column=(getattr(exc.node, "col_offset", -1) + 1) or None)
    except limits.LimitError as exc:
        raise ConfigError(path, ev.cur_line, "evaluating the cfg: refused: %s" % limits.cut(_text(exc), 300))
    except (NameError, TypeError, ValueError, KeyError, IndexError, ZeroDivisionError,
            AttributeError, OverflowError, UnicodeError, re.error, RuntimeError, MemoryError) as exc:
        raise ConfigError(path, ev.cur_line, "evaluating the cfg: %s: %s"
                          % (type(exc).__name__, limits.cut(_text(exc), 300)))
    finally:
        stack.pop()
    return _settings_from_env(env, ev.lines, ev.item_lines, extra_vars)


def _text(exc):
    """The message of an exception as text (2.7: unicode or bytes args)."""
    try:
        return text_type(exc)
    except UnicodeError:
        return text_type(repr(exc))


def check_length(text, path):
    """:raises ConfigError: a file longer than any real cfg, or a number
    literal whose conversion alone would take long."""
    if len(text) > limits.MAX_FILE_BYTES:
        raise ConfigError(path, None, "the file has %d characters: more than %d (an xm cfg is a few KiB)"
                          % (len(text), limits.MAX_FILE_BYTES))
    m = _LONG_NUMBER.search(text)
    if m:
        raise ConfigError(path, text.count(u"\n", 0, m.start()) + 1, "a number of %d digits: more than %d"
                          % (m.end() - m.start(), limits.MAX_INT_DIGITS))


def _settings_from_env(env, lines, item_lines, extra_vars):
    options = {}
    for k, v in env.items():
        if k in SEEDED_NAMES or (extra_vars and k in extra_vars):
            continue
        if _xm_option_value(v):
            options[k] = v
    return settings_mod.Settings(options, dict(lines), dict(item_lines), "xm")


def parse(text, path=None, allow_exec=False, uname=None, extra_vars=None):
    """:returns: the :class:`model.DomainConfig` of an xm cfg."""
    return settings_mod.domain_config(evaluate(text, path, allow_exec, uname, extra_vars), path)
