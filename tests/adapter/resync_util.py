"""Helpers of the resync adapter tests: small random images, keys, venvs."""
from __future__ import absolute_import, division, print_function

import os
import random

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_PY = {"py3": os.path.join(REPO, ".venv", "py3", "bin", "python"),
           "py27": os.path.join(REPO, ".venv", "py27", "bin", "python")}


def make_image(path, size, seed=1):
    """A random image from ``os.urandom`` (fast); ``seed`` only names it."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path


def mutate(path, changes, seed=0, zero=False):
    """Overwrite ``changes`` random ranges; :returns: list of (offset, length)."""
    rng = random.Random(seed)
    size = os.path.getsize(path)
    done = []
    with open(path, "r+b") as f:
        for _ in range(changes):
            length = rng.choice([1, 512, 4096, 65536, 70000, 200000])
            length = min(length, size)
            off = rng.randrange(0, size - length + 1)
            f.seek(off)
            f.write(b"\0" * length if zero else os.urandom(length))
            done.append((off, length))
    return done


def copy(src, dst):
    with open(src, "rb") as a, open(dst, "wb") as b:
        while True:
            buf = a.read(1 << 20)
            if not buf:
                break
            b.write(buf)
    return dst


def same(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def write_key(path, data=b"0123456789abcdef0123456789abcdef"):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, data)
    os.close(fd)
    os.chmod(path, 0o600)
    return path
