"""Read the lab guest's numbered records from its disk image (dom0 side).

The guest writes record N into sector N as ``XRLREC <N> <boot> <uptime>``
(tests/xen/guest/init).  Usage:

    records.py dump IMAGE            JSON {"N": "line", ...} on stdout
    records.py max IMAGE             the highest N present (0 if none)
    records.py lost IMAGE ACKED      how many of the records 1..ACKED (acknowledged on
                                     the guest's console) IMAGE lacks, and which
    records.py check OLD.json NEW.json MIN
        every record of OLD with N > MIN is in NEW, byte for byte;
        prints a one-line summary, exit 1 if one is missing or differs
"""
import json
import sys

SECTOR = 512
MAGIC = b"XRLREC "


def read_records(path, limit=64 << 20):
    out = {}
    with open(path, "rb") as f:
        data = f.read(limit)
    for off in range(SECTOR, len(data), SECTOR):
        sec = data[off:off + SECTOR]
        if not sec.startswith(MAGIC):
            continue
        line = sec.split(b"\n", 1)[0].decode("ascii", "replace")
        fields = line.split()
        if len(fields) >= 2 and fields[1].isdigit() and int(fields[1]) == off // SECTOR:
            out[int(fields[1])] = line
    return out


def main(argv):
    if len(argv) >= 2 and argv[0] == "dump":
        recs = read_records(argv[1])
        json.dump(dict((str(k), v) for k, v in sorted(recs.items())), sys.stdout)
        print()
        return 0
    if len(argv) >= 2 and argv[0] == "max":
        recs = read_records(argv[1])
        print(max(recs) if recs else 0)
        return 0
    if len(argv) >= 3 and argv[0] == "lost":
        recs = read_records(argv[1])
        acked = int(argv[2])
        missing = [n for n in range(1, acked + 1) if n not in recs]
        spans = []
        for n in missing:
            if spans and spans[-1][1] == n - 1:
                spans[-1][1] = n
            else:
                spans.append([n, n])
        print("%d %s" % (len(missing), ",".join("%d..%d" % (a, b) if a != b else str(a) for a, b in spans) or "-"))
        return 0
    if len(argv) >= 4 and argv[0] == "check":
        with open(argv[1]) as f:
            old = dict((int(k), v) for k, v in json.load(f).items())
        with open(argv[2]) as f:
            new = dict((int(k), v) for k, v in json.load(f).items())
        floor = int(argv[3])
        want = sorted(n for n in old if n > floor)
        missing = [n for n in want if n not in new]
        differ = [n for n in want if n in new and new[n] != old[n]]
        print("records %s..%s (%d) after %d: %d missing, %d differ%s"
              % (want[0] if want else "-", want[-1] if want else "-", len(want), floor, len(missing),
                 len(differ), "; first bad %d" % (missing + differ)[0] if missing or differ else ""))
        return 1 if (missing or differ or not want) else 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
