#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: tests/fuzz/seeds/<target>/<name>.

Each seed starts with the target's mode byte (see the comment at the top of each target).
Node files come from tests/vectors/ (passphrase "correct horse battery staple", the fuzz
test node's); tar streams, git objects and control messages are built here, in the layouts
docs/FORMAT.md and src/control.rs describe. Recipe modes read their input through
`Unstructured`, so any bytes will do: those seeds are fixed pseudo-random bytes.

Run it again after a format change; the output is committed (it is small), the corpus that
fuzzing grows (tests/fuzz/corpus/) is not.
"""

import hashlib
import io
import random
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent.parent
SEEDS = FUZZ / "seeds"
VECTORS = ROOT / "tests" / "vectors"
rng = random.Random(1)


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def vector(name):
    """The node bytes of tests/vectors/<name> (after its text header and blank line)."""
    raw = (VECTORS / name).read_bytes()
    return raw[raw.index(b"\n\n") + 2 :]


def noise(n):
    return bytes(rng.randrange(256) for _ in range(n))


# Git loose objects.
def git_object(kind, body):
    return b"%s %d\0" % (kind, len(body)) + body


def oid(kind, body):
    return hashlib.sha1(git_object(kind, body)).digest()


BLOB = b"AKIA-not-a-real-key\n"
TREE = b"100644 key\0" + oid(b"blob", BLOB) + b"100755 token\0" + oid(b"blob", b"t")
COMMIT = (
    b"tree %s\nparent %s\nauthor Polykey <polykey@localhost> 1700000000 +0000\n"
    b"committer Polykey <polykey@localhost> 1700000000 +0000\n\nAdd key\n"
) % (oid(b"tree", TREE).hex().encode(), oid(b"blob", b"p").hex().encode())


# Journal tar streams, as format::journal::Writer writes them (GNU headers, no end blocks).
def member(tar, path, kind, data=b"", link=None):
    info = tarfile.TarInfo(path)
    info.type = kind
    info.size = len(data)
    info.mode = 0o700 if kind == tarfile.DIRTYPE else 0o600
    info.mtime = 0
    if link is not None:
        info.linkname = link
    tar.addfile(info, io.BytesIO(data) if data else None)


def journal(members):
    buf = io.BytesIO()
    tar = tarfile.TarFile(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT)
    for m in members:
        member(tar, *m)
    # Do not close: closing writes end-of-archive blocks, which a transaction never has.
    return buf.getvalue()


def obj_path(repo, kind, body):
    h = oid(kind, body).hex()
    return "repos/%s/.git/objects/%s/%s" % (repo, h[:2], h[2:])


JOURNALS = {
    "put": [
        ("repos/aws", tarfile.DIRTYPE),
        (obj_path("aws", b"blob", BLOB), tarfile.REGTYPE, zlib.compress(git_object(b"blob", BLOB))),
        (obj_path("aws", b"tree", TREE), tarfile.REGTYPE, zlib.compress(git_object(b"tree", TREE))),
        (obj_path("aws", b"commit", COMMIT), tarfile.REGTYPE, zlib.compress(git_object(b"commit", COMMIT))),
        ("repos/aws/.git/refs/heads/main", tarfile.REGTYPE, oid(b"commit", COMMIT).hex().encode() + b"\n"),
    ],
    "tags": [
        ("tags/prod", tarfile.DIRTYPE),
        ("tags/prod/aws-key", tarfile.LNKTYPE, b"", "repos/aws/key"),
        (".polykey/remove", tarfile.REGTYPE, b"tags/prod/aws-key"),
        (".polykey/remove", tarfile.REGTYPE, b"tags/prod"),
        (".polykey/remove", tarfile.REGTYPE, b"repos/aws"),
    ],
    "long_names": [
        ("repos/" + "r" * 255, tarfile.DIRTYPE),
        ("tags/" + "t" * 200 + "/" + "e" * 255, tarfile.LNKTYPE, b"", "repos/" + "r" * 255 + "/" + "s" * 255),
    ],
}


# Control messages (src/control.rs): u32le length, opcode, fields of u32le length + bytes.
def message(op, *fields):
    body = bytes([op]) + b"".join(struct.pack("<I", len(f)) + f for f in fields)
    return struct.pack("<I", len(body)) + body


REQUESTS = [
    message(1, b""),
    message(1, b"aws"),
    message(2, b"prod"),
    message(3, b"aws", b"key", b"AKIA\0\n"),
    message(4, b"aws", b"key"),
    message(7, b"aws", b"key", b"old-key"),
    message(8, b"prod", b"aws-key", b"aws", b"key"),
    message(10, b"aws", b""),
    message(11),
    message(12, b"old", b"new"),
    message(15, b"aws", b"a", b"1", b"gcp", b"b", b"2"),
]
RESPONSES = [
    message(1),
    message(2, b"aws", b"gcp"),
    message(3, b"aws-key", b"aws", b"key"),
    message(4, b"secret bytes"),
    message(5, oid(b"commit", COMMIT), struct.pack("<q", 1700000000), b"Add key"),
    message(6, struct.pack("<I", 4242), b"/home/me/.polykey/me.node", b"/run/user/1000/polykey"),
    message(7, b"no such secret aws/key", b"\x01"),
    message(8, struct.pack("<Q", 3)),
]


def main():
    shutil.rmtree(SEEDS, ignore_errors=True)

    # header: the file as is (0), both checksums fixed and opened (0x0b); the test node itself
    # and small changes to it (0x0c, 0x0f: XOR over the test node, opened).
    for v in ["header_only", "header_slot_a_damaged", "header_version_2", "header_unknown_kdf", "header_absurd_argon2_memory"]:
        write("header", v, b"\x00" + vector(v)[:1024])
        write("header", v + "_fixed", b"\x0b" + vector(v)[:1024])
    write("header", "test_node", b"\x0c")
    write("header", "test_node_generation", b"\x0f" + bytes(40) + b"\x01")
    write("header", "test_node_slot_b", b"\x0e" + bytes(512 + 60) + b"\x80")

    # log: recipes.
    for i, n in enumerate([16, 64, 200, 600]):
        write("log", "recipe_%d" % i, noise(n))

    # journal: tar streams (0), recipes (1).
    for name, members in JOURNALS.items():
        write("journal", name, b"\x00" + journal(members))
    write("journal", "put_then_garbage", b"\x00" + journal(JOURNALS["put"]) + noise(100))
    for i, n in enumerate([32, 300]):
        write("journal", "recipe_%d" % i, b"\x01" + noise(n))

    # git: zlib (0), raw objects (1), bodies (2), trees (3), commits (4).
    for name, kind, body in [("blob", b"blob", BLOB), ("tree", b"tree", TREE), ("commit", b"commit", COMMIT)]:
        write("git", "zlib_" + name, b"\x00" + zlib.compress(git_object(kind, body)))
        write("git", "raw_" + name, b"\x01" + git_object(kind, body))
    write("git", "zlib_empty_blob", b"\x00" + zlib.compress(git_object(b"blob", b"")))
    write("git", "body", b"\x02\x00" + BLOB)
    write("git", "body_commit", b"\x02\xfe" + COMMIT)
    write("git", "tree", b"\x03" + TREE)
    write("git", "commit", b"\x04" + COMMIT)
    write("git", "commit_root", b"\x04" + COMMIT.replace(b"parent ", b"x-"))

    # name
    for i, n in enumerate([b"aws/key", b"a", b".git", b"repo/.GIT", "clé ✓/☃".encode(), b"n" * 255 + b"/" + b"s" * 255]):
        write("name", "name_%d" % i, n)

    # control: a stream of every message (0), request bodies (1), response bodies (2), recipes (3).
    write("control", "stream", b"\x00" + b"".join(REQUESTS + RESPONSES))
    for i, m in enumerate(REQUESTS):
        write("control", "request_%d" % i, b"\x01" + m[4:])
    for i, m in enumerate(RESPONSES):
        write("control", "response_%d" % i, b"\x02" + m[4:])
    write("control", "recipe", b"\x03" + noise(64))

    # node: whole files from tests/vectors (0), recipes (1).
    for v in ["header_only", "valid_node", "compaction_done", "compacted_then_saved", "torn_tail_mid_log", "frame_body_flipped"]:
        write("node", v, b"\x00" + vector(v))
    for i, n in enumerate([64, 400, 1500]):
        write("node", "recipe_%d" % i, b"\x01" + noise(n))


if __name__ == "__main__":
    main()
