#!/usr/bin/env python3
"""Fuzz the wire decoders for a while and grow the replay corpus.

    python tools/fuzz_corpus.py [--seconds 60] [--seed N] [--save] [TARGET ...]

Mutates the real-traffic seeds of ``tests/fuzz_targets.py`` (the same mutations
as the hypothesis test, driven by ``random`` so a run can be long).  Prints each
input that makes a decoder raise anything but rsync's error, and with ``--save``
writes to ``tests/fixtures/fuzz/TARGET/`` one input for each outcome (each
distinct error message, each "ok" shape) not yet in the corpus, recording its
outcome in ``outcomes.json``; ``tests/test_fuzz_decoders.py`` replays them.
Crashers are saved too (their outcome is left for you to fill in once fixed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import fuzz_targets as F  # noqa: E402

_EDGE = (0x00, 0x01, 0x7F, 0x80, 0xBF, 0xC0, 0xDF, 0xE0, 0xF0, 0xFE, 0xFF)
_WORDS = (b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff\xff\xff\xff", b"\x00\x00\x01\x00",
          b"\xfc\xff\xff\xff\xff", b"\xff" * 9)


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        if not data:
            data += rng.randbytes(rng.randint(1, 16))
            continue
        i = rng.randrange(len(data))
        op = rng.choice(("flip", "edge", "word", "insert", "delete", "truncate"))
        if op == "flip":
            data[i] ^= 1 << rng.randrange(8)
        elif op == "edge":
            data[i] = rng.choice(_EDGE)
        elif op == "word":
            w = rng.choice(_WORDS)
            data[i:i + len(w)] = w
        elif op == "insert":
            data[i:i] = rng.randbytes(rng.randint(1, 32))
        elif op == "delete":
            del data[i:i + rng.randint(1, 32)]
        else:
            del data[i:]
    return bytes(data)


def shape(outcome: str) -> str:
    """An outcome's first words, numbers blanked: about one corpus entry per code
    path (the rest of a message names what was received)."""
    words = re.sub(r"\d+", "N", outcome.split(": ", 1)[0]).split()
    return " ".join(words[:6])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="time per target")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", action="store_true", help="add new outcomes to the corpus")
    ap.add_argument("targets", nargs="*")
    args = ap.parse_args()
    targets = F.targets()
    names = args.targets or sorted(targets)
    manifest = F.manifest()
    known = {(k.split("/")[0], shape(v)) for k, v in manifest.items()}
    crashes = 0
    for name in names:
        target, seed_fn = targets[name]
        seed = seed_fn()
        rng = random.Random(f"{args.seed}:{name}")
        end = time.monotonic() + args.seconds
        runs = new = 0
        while time.monotonic() < end:
            data = mutate(rng, seed) if rng.random() < 0.9 else rng.randbytes(rng.randint(0, 600))
            runs += 1
            try:
                outcome = target(data)
            except Exception:
                crashes += 1
                print(f"CRASH {name} {data.hex()}\n{traceback.format_exc()}", file=sys.stderr)
                outcome = None
            key = (name, shape(outcome) if outcome is not None else f"crash {runs}")
            if key in known:
                continue
            known.add(key)
            new += 1
            if args.save:
                d = F.CORPUS / name
                d.mkdir(parents=True, exist_ok=True)
                fname = hashlib.sha1(data).hexdigest()[:16] + ".bin"
                (d / fname).write_bytes(data)
                if outcome is not None:
                    manifest[f"{name}/{fname}"] = outcome
        print(f"{name}: {runs} runs, {new} new outcomes")
    if args.save:
        F.CORPUS.mkdir(parents=True, exist_ok=True)
        (F.CORPUS / "outcomes.json").write_text(json.dumps(manifest, indent=1, sort_keys=True)
                                               + "\n")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
