"""Stand-in for ``ssh HOST COMMAND`` in the relay tests: runs COMMAND with
``sh -c`` and carries its stdin and stdout through two pipes of its own, as
ssh carries them through its connection.  When the file BREAK appears it
exits at once (the connection broke): the command's stdin then ends and its
stdout has no reader, while the command itself runs on, as a command of a
dead ssh session does.

usage: fake_ssh.py BREAK [--] HOST COMMAND   (``--`` ends the options, as for ssh)
"""
from __future__ import absolute_import, division, print_function

import os
import select
import subprocess
import sys
import time


def main(brk, _host, command):
    child = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    ends = {0: child.stdin.fileno(), child.stdout.fileno(): 1}
    while ends:
        if os.path.exists(brk):
            os._exit(255)
        ready = select.select(list(ends), [], [], 0.05)[0]
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                if ends[fd] != 1:
                    os.close(ends[fd])
                del ends[fd]
                continue
            os.write(ends[fd], data)
    while child.poll() is None and not os.path.exists(brk):
        time.sleep(0.05)
    return child.returncode if child.returncode is not None else 255


if __name__ == "__main__":
    words = sys.argv[2:]
    if words[:1] == ["--"]:
        words = words[1:]
    sys.exit(main(sys.argv[1], *words[:2]))
