#!/usr/bin/env python3
"""The mail store, the encryptor and the verdict of scripts/demo-ransomware
(one pace on one pair of sites the script made). Every snapsite call is an
argv list; nothing goes through a shell."""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time

STORE = 400           # messages before the attack
MSG = 16 * 1024       # bytes of a message (ordinary, compressible mail)
CLEAN_SETS = 4        # ordinary sets after the full one
ATTACK_SETS = 3       # sets shipped while the encryptor runs
NEW_PER_SET = 20      # the writer's messages per set
WORDS = ["meeting", "invoice", "tomorrow", "project", "the", "and", "regards", "please",
         "attached", "review", "budget", "thanks", "schedule", "call", "report"]


def message(i):
    rnd = random.Random(i)
    s = f"From: user{i}@example.org\r\nTo: team@example.org\r\nSubject: note {i}\r\n\r\n"
    parts = [s]
    n = len(s)
    while n < MSG:
        w = rnd.choice(WORDS) + ("\n" if rnd.random() < 0.1 else " ")
        parts.append(w)
        n += len(w)
    return "".join(parts).encode()[:MSG]


class Site:
    def __init__(self, snapsite, d):
        self.snapsite, self.d = snapsite, d
        self.blob = os.path.join(d, "primary/live/blob")
        self.redolog = os.path.join(d, "primary/live/redolog/log")

    def run(self, cfg, *args):
        argv = [self.snapsite, "--config", os.path.join(self.d, cfg), *args]
        p = subprocess.run(argv, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"demo-ransomware: {' '.join(argv)} exited {p.returncode}:\n{p.stderr}")
        return p.stdout

    def set(self):
        """Take a set on the primary and ship it; its id."""
        sid = json.loads(self.run("primary.toml", "snapshot", "--json"))["id"]
        self.run("primary.toml", "ship", "--json")
        return sid

    def verdict(self, sid):
        p = os.path.join(self.d, "state-standby/verdicts", sid + ".json")
        with open(p) as f:
            return json.load(f)


class Store:
    """The writer: a message is acknowledged once its file is synced."""

    def __init__(self, site):
        self.site = site
        self.next = 0
        self.acked = {}      # id -> sha256, messages that should exist
        self.plain = []      # ids not yet encrypted
        for d in range(10):
            os.makedirs(os.path.join(site.blob, str(d)), exist_ok=True)

    def path(self, i):
        return os.path.join(self.site.blob, str(i % 10), f"{i}.msg")

    def deliver(self, n):
        for _ in range(n):
            i, body = self.next, message(self.next)
            with open(self.path(i), "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            self.acked[i] = hashlib.sha256(body).hexdigest()
            self.plain.append(i)
            self.next += 1
        with open(self.site.redolog, "a") as f:
            f.write(f"delivered up to {self.next}\n")
            f.flush()
            os.fsync(f.fileno())

    def delete(self, n):
        """The owners delete mail: those are legitimately gone."""
        for _ in range(n):
            i = self.plain.pop(7)
            os.remove(self.path(i))
            del self.acked[i]

    def encrypt(self, n, seed):
        """The encryptor: rewrite in place (same inode) with random bytes,
        then rename to `.locked`."""
        rnd = random.Random(seed)
        for _ in range(min(n, len(self.plain))):
            i = self.plain.pop(0)
            p = self.path(i)
            with open(p, "r+b") as f:
                f.write(rnd.randbytes(MSG))
                f.flush()
                os.fsync(f.fileno())
            os.rename(p, p + ".locked")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--snapsite", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--pace", choices=["fast", "slow"], required=True)
    a = ap.parse_args()
    site = Site(a.snapsite, a.dir)
    store = Store(site)
    t0 = time.monotonic()

    store.deliver(STORE)
    clean = [site.set()]
    print(f"  full set {clean[0]}: {STORE} messages")
    for k in range(CLEAN_SETS):
        store.deliver(NEW_PER_SET)
        store.delete(3)
        clean.append(site.set())
        v = site.verdict(clean[-1])
        print(f"  ordinary set {clean[-1]}: {v['verdict']} (score {v['score']:.2f})")
    before_attack = dict(store.acked)
    last_clean = clean[-1]

    per_set = max(1, len(store.plain) // 100) if a.pace == "slow" else len(store.plain) // 4
    print(f"  ATTACK ({a.pace}): {per_set} files encrypted and renamed per set, the writer going on")
    first_suspect = None
    attack = []
    for k in range(ATTACK_SETS):
        store.encrypt(per_set, seed=1000 + k)
        store.deliver(NEW_PER_SET)
        sid = site.set()
        attack.append(sid)
        v = site.verdict(sid)
        reasons = [f"{x['role']}: {'; '.join(x['reasons'])}" for x in v["volumes"] if x["reasons"]]
        print(f"  attack set {k + 1} {sid}: {v['verdict'].upper() if v['verdict'] == 'suspect' else v['verdict']}"
              f" (score {v['score']:.2f})" + "".join(f"\n      {r}" for r in reasons))
        if v["verdict"] == "suspect" and first_suspect is None:
            first_suspect = k + 1

    sets = site.run("standby.toml", "sets")
    print("  the standby's sets:\n" + "".join(f"    {l}\n" for l in sets.splitlines()), end="")
    plan = site.run("standby.toml", "failover", "--dry-run")
    print("  snapsite failover --dry-run:\n" + "".join(f"    {l}\n" for l in plan.splitlines()), end="")
    plan = json.loads(site.run("standby.toml", "failover", "--json"))["plan"]
    used = plan.get("set_id")
    skipped = [s.get("set_id") for s in (plan.get("suspect") or {}).get("skipped", [])]
    print(f"  snapsite failover: used {used}; skipped {', '.join(skipped) or 'nothing'}")

    live = os.path.join(a.dir, "standby/live/blob")
    lost = []
    for i, digest in sorted(before_attack.items()):
        p = os.path.join(live, str(i % 10), f"{i}.msg")
        try:
            with open(p, "rb") as f:
                ok = hashlib.sha256(f.read()).hexdigest() == digest
        except FileNotFoundError:
            ok = False
        if not ok:
            lost.append(i)

    verdicts = [
        ("detected within 2 sets of the attack's start",
         first_suspect is not None and first_suspect <= 2,
         f"first suspect set: {'attack set ' + str(first_suspect) if first_suspect else 'none'}"),
        ("failover recovered the newest clean set",
         used == last_clean,
         f"used {used}, the last clean set is {last_clean}"),
        ("no message acknowledged before the attack lost",
         not lost,
         f"{len(before_attack) - len(lost)} of {len(before_attack)} intact"
         + (f"; lost or damaged: {lost[:10]}" if lost else "")),
    ]
    print(f"\n  verdict ({a.pace} pace, {time.monotonic() - t0:.0f} s):")
    for what, ok, why in verdicts:
        print(f"    {'PASS' if ok else 'FAIL'}  {what}: {why}")
    with open(os.path.join(a.dir, "verdict.json"), "w") as f:
        json.dump({"pace": a.pace, "first_suspect_attack_set": first_suspect,
                   "failover_set": used, "last_clean_set": last_clean,
                   "acknowledged_before_attack": len(before_attack), "lost": lost,
                   "passed": all(ok for _, ok, _ in verdicts)}, f, indent=2)
    return 0 if all(ok for _, ok, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
