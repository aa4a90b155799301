#!/usr/bin/env python3
"""Turns the benchmark records into the table, the targets and the plot.

Usage: report.py DIR [SVG]
Reads DIR/node.json, DIR/mount.json and DIR/baselines.json (lists of records: bench, key,
size, value, unit, note), prints the table (every figure beside its baselines from the same run,
and the ratios) and the targets, and writes DIR/results.json, DIR/results.csv, DIR/table.md
and the plot (read and save latency against node size, log-log) as SVG to SVG (default
docs/perf/latency.svg). Standard library only: the SVG is written by hand.
"""

import csv
import json
import math
import os
import sys

DIR = sys.argv[1]
SVG = sys.argv[2] if len(sys.argv) > 2 else "docs/perf/latency.svg"

records = []
for f in ("node.json", "mount.json", "baselines.json"):
    p = os.path.join(DIR, f)
    if os.path.exists(p):
        with open(p) as fh:
            records += json.load(fh)
    else:
        print(f"(no {p}: its figures are missing)")

R = {(r["key"], r["size"]): r for r in records}


def get(key, size=0):
    r = R.get((key, size)) or R.get((key, 0))
    return None if r is None else r["value"]


sizes = sorted({r["size"] for r in records if r["size"] > 0 and r["key"] == "read.polykey"}) or sorted(
    {r["size"] for r in records if r["size"] > 0}
)


def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "B":
        return f"{v / 1024:.1f} KiB" if v >= 10 * 1024 else f"{v:.0f} B"
    if unit == "KiB":
        return f"{v / 1024:.1f} MiB"
    if unit == "us":
        return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.1f} µs"
    if unit == "ms":
        return f"{v / 1000:.2f} s" if v >= 10_000 else (f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms")
    return f"{v:g}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def rfmt(x):
    if x is None:
        return "–"
    return f"{x:.3f}×" if x < 0.1 else (f"{x:.2f}×" if x < 10 else f"{x:.0f}×")


# Figure blocks: title, unit, Polykey rows [(label, key)], baseline rows [(label, key)], and
# the ratios to print (Polykey key, baseline key, label).
BLOCKS = [
    ("read: open+read+close of one secret, repeated", "us",
     [("Polykey mount", "read.polykey")],
     [("tmpfs", "read.tmpfs"), ("minimal FUSE fs (hello.rs)", "read.hello"), ("gocryptfs", "read.gocryptfs")],
     [("read.polykey", "read.hello", "Polykey / minimal FUSE"), ("read.polykey", "read.tmpfs", "Polykey / tmpfs"),
      ("read.polykey", "read.gocryptfs", "Polykey / gocryptfs")]),
    ("read: each secret once (cold), per secret", "us",
     [("Polykey mount", "read.cold")], [],
     [("read.cold", "read.hello", "Polykey cold / minimal FUSE repeated")]),
    ("save: open(O_TRUNC)+write+fsync+close, durable", "us",
     [("Polykey mount", "save.polykey"), ("Polykey library (put+save)", "save.lib")],
     [("plain write+fsync, same disk", "save.disk"), ("append 4 KiB+fdatasync, same disk", "save.disk_append"),
      ("gocryptfs", "save.gocryptfs")],
     [("save.polykey", "save.disk", "Polykey / plain write+fsync"), ("save.polykey", "save.disk_append", "Polykey / append+fdatasync"),
      ("save.polykey", "save.gocryptfs", "Polykey / gocryptfs")]),
    ("save with the node file on tmpfs: the cost besides the disk", "us",
     [("Polykey mount, node on tmpfs", "save.polykey_nodeontmpfs")], [("write+fsync on tmpfs", "save.tmpfs_nodeontmpfs")],
     [("save.polykey_nodeontmpfs", "save.tmpfs_nodeontmpfs", "Polykey / tmpfs")]),
    ("bytes appended to the node per save", "B",
     [("Polykey mount", "save.bytes")], [], []),
    ("unlock: polykey mount → ready (Argon2 at 8 KiB)", "ms",
     [("Polykey mount", "mount.polykey"), ("Node::open (library)", "open.node")],
     [("Argon2id, default cost (added to every unlock)", "argon2.default")], []),
    ("CLI on a mounted node (wall)", "ms",
     [("polykey get", "cli.get"), ("polykey get, least", "cli.get_min"), ("polykey ls (all repositories)", "cli.ls"),
      ("polykey ls, least", "cli.ls_min"), ("polykey ls REPO", "cli.ls_repo")],
     [("polykey --help", "cli.help"), ("polykey --help, least", "cli.help_min"), ("/bin/true", "cli.true"), ("pass show", "pass.show"), ("gopass show", "gopass.show"),
      ("pass ls", "pass.ls"), ("polykey get, not mounted (default Argon2)", "cli.get_unmounted")],
     [("pass.show", "cli.get", "pass show / polykey get"), ("pass.ls", "cli.ls", "pass ls / polykey ls")]),
    ("ls -R of the mount", "ms",
     [("Polykey, first", "lsR.polykey"), ("Polykey, again", "lsR.polykey_again")],
     [("tmpfs", "lsR.tmpfs"), ("gocryptfs", "lsR.gocryptfs")],
     [("lsR.polykey", "lsR.tmpfs", "Polykey / tmpfs"), ("lsR.polykey", "lsR.gocryptfs", "Polykey / gocryptfs")]),
    ("cp -r of the secrets into an empty mount", "ms",
     [("Polykey, cp alone", "cp.polykey"), ("Polykey, until all saved", "cp.polykey_committed")],
     [("tmpfs", "cp.tmpfs"), ("gocryptfs (not synced)", "cp.gocryptfs")],
     [("cp.polykey", "cp.tmpfs", "cp alone / tmpfs"), ("cp.polykey_committed", "cp.tmpfs", "until saved / tmpfs")]),
    ("bulk import", "ms",
     [("polykey import DIR", "import.cli"), ("tar | polykey import -", "import.cli_tar"), ("Node::put_many (library)", "import.put_many")],
     [("pass insert × N (extrapolated)", "pass.import_extrapolated")],
     [("pass.import_extrapolated", "import.cli", "pass / polykey import")]),
    ("daemon memory", "KiB",
     [("RSS after mount", "rss.mounted"), ("peak RSS by the end of mount", "rss.peak_mount"), ("peak RSS (VmHWM), end", "rss.peak")],
     [("target: 2 × plaintext + 30 MiB", "rss.target")], [("rss.peak", "rss.target", "peak / target")]),
    ("size", "B",
     [("node file", "node.bytes")], [("plaintext (names + values)", "plaintext.bytes")], []),
    ("one repository holding every secret", "us",
     [("save through the mount", "save.polykey_onerepo"), ("save, library", "save.lib_onerepo")],
     [("plain write+fsync", "save.disk_onerepo")],
     [("save.polykey_onerepo", "save.disk_onerepo", "Polykey / plain write+fsync")]),
]

# Derived records.
for n in sizes:
    pt = get("plaintext.bytes", n)
    if pt is not None:
        R[("rss.target", n)] = {"key": "rss.target", "size": n, "value": (2 * pt) / 1024 + 30 * 1024, "unit": "KiB", "note": "2 × plaintext + 30 MiB"}


def cells(key, unit):
    return [fmt(R[(key, n)]["value"], R[(key, n)]["unit"]) if (key, n) in R else (fmt(get(key), unit) if (key, 0) in R else "–") for n in sizes]


lines = []
head = ["figure"] + [f"{n:,}" for n in sizes]
lines.append("| " + " | ".join(head) + " |")
lines.append("|" + "---|" * len(head))
for title, unit, mine, bases, ratios in BLOCKS:
    rows = []
    for label, key in mine + bases:
        c = cells(key, unit)
        if all(x == "–" for x in c):
            continue
        rows.append([label if (label, key) not in bases else f"baseline: {label}"] + c)
    for a, b, label in ratios:
        rs = [rfmt(ratio(get(a, n) if (a, n) in R else None, get(b, n))) for n in sizes]
        if all(x == "–" for x in rs):
            continue
        rows.append([f"ratio {label}"] + rs)
    if "one repository" in title:
        rows = [r for r in rows if any(x != "–" for x in r[1:])]
    if not rows:
        continue
    lines.append("| **" + title + "** |" + " |" * len(sizes))
    for r in rows:
        lines.append("| " + " | ".join(r) + " |")
table = "\n".join(lines)

# Targets.
T = []


def target(what, measured, ok, note=""):
    verdict = ok if isinstance(ok, str) else ("met" if ok else ("not met" if ok is not None else "not measured"))
    T.append((what, measured, verdict, note))


big = max((n for n in sizes if n <= 10_000), default=None)
small = min(sizes) if sizes else None
if big:
    worst_fuse = max((ratio(get("read.polykey", n), get("read.hello", n)) or 0) for n in sizes)
    r = ratio(get("read.polykey", big), get("read.hello", big))
    target("read ≤ minimal FUSE fs", f"{rfmt(r)} at {big:,} (worst {rfmt(worst_fuse)})", r is not None and worst_fuse <= 1.0)
    r = ratio(get("read.polykey", big), get("read.tmpfs", big))
    worst = max((ratio(get("read.polykey", n), get("read.tmpfs", n)) or 0) for n in sizes)
    target("read, repeated, ≤ 3× tmpfs", f"{rfmt(r)} at {big:,} (worst {rfmt(worst)})", r is not None and worst <= 3.0)
    r = ratio(get("save.polykey", big), get("save.disk", big))
    worst = max((ratio(get("save.polykey", n), get("save.disk", n)) or 0) for n in sizes)
    target("save ≤ 3× plain write+fsync", f"{rfmt(r)} at {big:,} (worst {rfmt(worst)})", None if r is None else worst <= 3.0,
           f"{rfmt(ratio(get('save.polykey', big), get('save.disk_append', big)))} an append+fdatasync of the same size at {big:,}")
    raw = ratio(get("save.polykey", big), get("save.polykey", small))
    norm = ratio(ratio(get("save.polykey", big), get("save.disk", big)), ratio(get("save.polykey", small), get("save.disk", small)))
    verdict = None if raw is None else ("met" if raw <= 1.5 and (norm is None or norm <= 1.5) else
                                        "met relative to the disk" if norm is not None and norm <= 1.5 else "not met")
    target(f"save flat: {big:,} within 1.5× of {small:,}", f"{rfmt(raw)} raw, {rfmt(norm)} relative to the disk in the same loop", verdict)
    worst_b = max((get("save.bytes", n) or 0) for n in sizes)
    target("< 16 KiB written per save", f"{fmt(worst_b, 'B')} (worst size)", worst_b < 16 * 1024)
    ob = get("save.bytes_onerepo", big)
    if ob is not None:
        target(f"(reported) one repository of {big:,}: bytes per save", fmt(ob, "B"), ob < 16 * 1024,
               f"save {fmt(get('save.polykey_onerepo', big), 'us')}")
    for key, label, lim in (("cli.get", "polykey get", 5), ("cli.ls", "polykey ls", 5)):
        v = get(key, big)
        worst = max((get(key, n) or 0) for n in sizes)
        target(f"{label} on a mounted node < {lim} ms", f"{fmt(v, 'ms')} at {big:,} (worst size {fmt(worst, 'ms')}; least {fmt(get(key + '_min', big), 'ms')})",
               None if v is None else worst < lim)
    v = get("cli.help")
    target("polykey --help < 2 ms", f"{fmt(v, 'ms')} (least {fmt(get('cli.help_min'), 'ms')})", None if v is None else v < 2,
           f"/bin/true {fmt(get('cli.true'), 'ms')}")
    v = get("mount.polykey", big)
    target(f"unlock at {big:,} = Argon2id + ≤ 50 ms", f"Argon2id {fmt(get('argon2.default'), 'ms')} + {fmt(v, 'ms')}", None if v is None else v <= 50)
    v, how = (get("import.cli", big), "polykey import") if ("import.cli", big) in R else (get("import.put_many", big), "Node::put_many (no polykey import yet)")
    target(f"import {big:,} secrets < 2 s", f"{fmt(v, 'ms')} ({how})", None if v is None else v < 2000)
    r = ratio(get("lsR.polykey", big), get("lsR.tmpfs", big))
    target(f"ls -R of {big:,} within 3× tmpfs", rfmt(r), None if r is None else r <= 3)
    r = ratio(get("cp.polykey_committed", big), get("cp.tmpfs", big))
    target(f"(reported) cp -r of {big:,} into the mount", f"{fmt(get('cp.polykey', big), 'ms')} cp, {fmt(get('cp.polykey_committed', big), 'ms')} until saved = {rfmt(r)} tmpfs", None if r is None else r <= 3)
    worst = max((ratio(get("rss.peak", n), R[("rss.target", n)]["value"]) or 0) for n in sizes if ("rss.target", n) in R)
    target("daemon RSS ≤ 2 × plaintext + 30 MiB", f"{fmt(get('rss.peak', max(sizes)), 'KiB')} peak at {max(sizes):,} (worst {rfmt(worst)} of the bound)", worst <= 1.0)

# Growth: exponent k in value ∝ n^k between successive sizes (1 = linear, 0 = flat).
GROWTH = [("open.node", "Node::open"), ("mount.polykey", "polykey mount"), ("import.put_many", "import (put_many)"),
          ("import.cli", "polykey import"), ("lsR.polykey", "ls -R"), ("rss.peak", "peak RSS"), ("node.bytes", "node file"),
          ("read.polykey", "read, repeated"), ("read.cold", "read, cold"), ("save.polykey", "save"), ("save.bytes", "bytes per save"),
          ("cli.get", "polykey get"), ("cli.ls", "polykey ls")]
gsizes = [n for n in sizes if n >= 100]
growth = []
for key, label in GROWTH:
    ks = []
    for a, b in zip(gsizes, gsizes[1:]):
        va, vb = (R.get((key, a)) or {}).get("value"), (R.get((key, b)) or {}).get("value")
        ks.append(None if not va or not vb else math.log(vb / va) / math.log(b / a))
    if any(k is not None for k in ks):
        growth.append((label, ks))

out = []
out.append(table)
out.append("")
out.append("| target | measured | verdict | note |")
out.append("|---|---|---|---|")
for what, measured, verdict, note in T:
    out.append(f"| {what} | {measured} | {verdict} | {note} |")
if growth:
    out.append("")
    out.append("| growth exponent k (value ∝ n^k) | " + " | ".join(f"{a:,}→{b:,}" for a, b in zip(gsizes, gsizes[1:])) + " |")
    out.append("|---|" + "---|" * (len(gsizes) - 1))
    for label, ks in growth:
        out.append(f"| {label} | " + " | ".join("–" if k is None else f"{k:.2f}" for k in ks) + " |")
text = "\n".join(out)
print(text)
with open(os.path.join(DIR, "table.md"), "w") as fh:
    fh.write(text + "\n")

# Raw numbers.
flat = sorted(R.values(), key=lambda r: (r["key"], r["size"]))
with open(os.path.join(DIR, "results.json"), "w") as fh:
    json.dump(flat, fh, indent=1)
with open(os.path.join(DIR, "results.csv"), "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["key", "size", "value", "unit", "note"])
    for r in flat:
        w.writerow([r["key"], r["size"], f"{r['value']:.6g}", r["unit"], r.get("note", "")])

# The plot: two log-log panels, read latency and save latency against node size.
W, H = 980, 470
PW, PH = 380, 300
panels = [
    ("Read latency (open+read+close)", [
        ("Polykey, repeated", "read.polykey", "#d62728", True),
        ("Polykey, each secret once", "read.cold", "#ff7f0e", True),
        ("minimal FUSE fs", "read.hello", "#7f7f7f", False),
        ("gocryptfs", "read.gocryptfs", "#2ca02c", False),
        ("tmpfs", "read.tmpfs", "#1f77b4", False),
    ]),
    ("Save latency (write+fsync, durable)", [
        ("Polykey", "save.polykey", "#d62728", True),
        ("Polykey, one repository", "save.polykey_onerepo", "#ff7f0e", True),
        ("Polykey, node on tmpfs", "save.polykey_nodeontmpfs", "#8c564b", True),
        ("gocryptfs", "save.gocryptfs", "#2ca02c", False),
        ("append 4 KiB+fdatasync", "save.disk_append", "#9467bd", False),
        ("plain write+fsync", "save.disk", "#1f77b4", False),
    ]),
]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
       'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
xs = [n for n in sizes]
if xs:
    x0, x1 = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
    if x1 == x0:
        x1 += 1
for i, (title, series) in enumerate(panels):
    ox, oy = 80 + i * (PW + 110), 40
    # A baseline measured once (size 0) is drawn flat across the sizes.
    for _, k, _, _ in series:
        if (k, 0) in R and not any((k, n) in R for n in sizes):
            for n in sizes:
                R[(k, n)] = dict(R[(k, 0)], size=n, derived=True)
    vals = [R[(k, n)]["value"] for _, k, _, _ in series for n in sizes if (k, n) in R]
    if not vals or not xs:
        continue
    y0, y1 = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
    if y1 == y0:
        y1 += 1

    def X(n):
        return ox + (math.log10(n) - x0) / (x1 - x0) * PW

    def Y(v):
        return oy + PH - (math.log10(v) - y0) / (y1 - y0) * PH

    svg.append(f'<text x="{ox + PW / 2}" y="{oy - 16}" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>')
    svg.append(f'<rect x="{ox}" y="{oy}" width="{PW}" height="{PH}" fill="none" stroke="#333"/>')
    for e in range(x0, x1 + 1):
        x = X(10 ** e)
        svg.append(f'<line x1="{x:.1f}" y1="{oy}" x2="{x:.1f}" y2="{oy + PH}" stroke="#ddd"/>')
        svg.append(f'<text x="{x:.1f}" y="{oy + PH + 16}" text-anchor="middle">{10 ** e:,}</text>')
    for e in range(y0, y1 + 1):
        y = Y(10 ** e)
        lab = f"{10 ** e:g} µs" if e < 3 else (f"{10 ** (e - 3):g} ms" if e < 6 else f"{10 ** (e - 6):g} s")
        svg.append(f'<line x1="{ox}" y1="{y:.1f}" x2="{ox + PW}" y2="{y:.1f}" stroke="#ddd"/>')
        svg.append(f'<text x="{ox - 6}" y="{y + 4:.1f}" text-anchor="end">{lab}</text>')
    svg.append(f'<text x="{ox + PW / 2}" y="{oy + PH + 34}" text-anchor="middle">secrets in the node (log scale)</text>')
    ly = oy + PH + 50
    for j, (label, key, color, mine) in enumerate(series):
        pts = [(X(n), Y(R[(key, n)]["value"])) for n in sizes if (key, n) in R]
        if not pts:
            continue
        dash = "" if mine else ' stroke-dasharray="5,4"'
        width = 2.5 if mine else 1.5
        if len(pts) > 1:
            svg.append(f'<polyline fill="none" stroke="{color}" stroke-width="{width}"{dash} points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{3.5 if mine else 2.5}" fill="{color}"/>')
        lx = ox + (j % 2) * (PW / 2)
        lyy = ly + (j // 2) * 16
        svg.append(f'<line x1="{lx}" y1="{lyy - 4}" x2="{lx + 22}" y2="{lyy - 4}" stroke="{color}" stroke-width="{width}"{dash}/>')
        svg.append(f'<text x="{lx + 28}" y="{lyy}">{label}</text>')
svg.append(f'<text x="{W - 10}" y="{H - 8}" text-anchor="end" font-size="10" fill="#666">'
           'medians; each figure interleaved with its baselines in one run; scripts/bench/all.sh</text>')
svg.append("</svg>")
os.makedirs(os.path.dirname(SVG) or ".", exist_ok=True)
with open(SVG, "w") as fh:
    fh.write("\n".join(svg) + "\n")
print(f"\n(raw numbers: {DIR}/results.csv, {DIR}/results.json; table: {DIR}/table.md; plot: {SVG})")
