"""A signed witness of the audit chains and of the history archive, kept outside the database's reach.

The audit log is one hash chain per household: editing a row breaks it, but someone with the database
owner's rights can rewrite a household's chain *consistently* (every hash recomputed) and the chain check
passes. A checkpoint pins what the chains and the archive were: the heads (each household's last row's seq and
hash) that changed since the checkpoint before, a root over ALL the heads, the number of rows, and a hash
over every archived run (seq, workflow id, run id, SHA-256). It is signed with the witness ring, an Ed25519
key the database never holds (core/signing.py, the one key file format of core/keyfiles.py), and linked to
the checkpoint before it, as the audit rows are.

Each checkpoint is stored in `witness_checkpoints` (append-only) and written, signed, to the folder the
operator publishes (WITNESS_DIR): `checkpoint-<seq>.json`, `latest.json` and the public key,
`witness-key.pub` ({key id: URL-safe base64 of the raw 32-byte Ed25519 public key}).

A checkpoint's body: {"seq", "made_at", "chains": {"households", "rows", "root"}, "changed": {code: [seq,
hash]}, "full", "archive": {"histories", "last_seq", "root", "gaps"}, "prev_hash"}; the roots are SHA-256
over one JSON array a line ([code, seq, hash] by code; [seq, workflow_id, run_id, sha256] by seq). Its hash
is SHA-256 over canonical JSON (sorted keys, no spaces, UTF-8), its signature Ed25519 over the same bytes.

Its size follows the activity since the checkpoint before, not the size of the province: `changed` holds
only the heads that moved (a new household, or new rows). The heads at checkpoint n are the `changed` maps
of checkpoints 1..n folded in order, and `chains.root` is the root over those folded heads. A checkpoint
with `"full": true` carries every head and starts the fold afresh; the witness writes one (the first, too)
when it cannot fold what it wrote before: the last checkpoint is not one its ring signed, the checkpoints
it folds from the database do not give the last one's root (rows lost), or a household's chain vanished
from the audit log (no delta can say so). The witness keeps the heads it folded in memory and reads only
the checkpoints written since; a head that went back or vanished under it (a chain rewritten or cut) is
logged (`witness.chain_went_back`), and `audit verify` still names it: a checkpoint that signs a head at
the same or a lower seq than an earlier one does not replace the earlier one in the comparison.

`check_witness` (run by `audit verify`) takes the public key from a FILE, never from the database, and
judges the latest checkpoint that verifies, the database's or the published one, whichever is newer:

- a published checkpoint newer than the database's (or not the one the database holds at its seq), or a
  published checkpoint-<seq>.json the database holds with another hash: `checkpoint_missing` (the database
  lost or hid checkpoints: a rollback);
- a checkpoint whose signature, hash or key does not verify: `checkpoint_invalid`; a link or seq that does
  not follow the one before: `checkpoint_broken`; no public key file, or no latest.json in the published
  folder given: `checkpoint_unverifiable` (a discrepancy, not a note: a witness nobody can check proves
  nothing). No checkpoint at all, in the database or published, is not judged (no witness yet);
- the heads folded from checkpoints 1..n not hashing to checkpoint n's `chains.root` although every
  checkpoint before it was there, linked and verified: `checkpoint_broken` naming n (a checkpoint before it
  altered or removed consistently). A checkpoint that is missing or does not verify is not folded (it is
  named already); the fold takes it from the published folder's checkpoint-<seq>.json when that verifies;
- a household's row at its folded head seq missing or with another hash: `checkpoint_chain_differs`
  (its chain was rewritten or cut since the checkpoint that signed that head);
- the archived runs the checkpoint covered no longer hashing to its root: `checkpoint_archive_differs`.

The fold compares only what it can fold. Every head in a checkpoint that verifies is a signed fact (that
row had that hash, and audit rows are append-only), so the heads folded from the checkpoints that could be
read are all compared, even when some are lost: when the newest checkpoint is the published one and the
database lost older checkpoints that the published folder does not hold either, the heads it can fold (the
database's, the published ones, the newest's own `changed`) are compared against the audit log, and,
unless the fold still gives the newest's root, `checkpoint_unverifiable` names the checkpoints it could not
fold: a household whose last change was only in those is compared at an older head, or not at all. A
household that vanished from the audit log stays in the fold (its last signed head), and is named.

Rows and archived runs added after a checkpoint are growth, not a discrepancy. The archive's seq is a
bigserial: a run whose transaction began before a checkpoint may commit after it with a lower seq, so a
checkpoint records the seqs below its last one it did not see (`gaps`, as ranges) and verification leaves
those out, rather than name a late commit as tampering.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import fcntl
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from archive.store import ArchiveEntry, HistoryArchive
from core import keyfiles
from core.signing import SigningRing, new_key_id, new_ring, read_ring, write_ring
from db import witness as witness_db
from db.audit import GENESIS
from db.engine import Sessions

log = structlog.get_logger("witness")

KEY_PREFIX = "witness-"
PUBLIC_KEY_FILE = "witness-key.pub"
LATEST_FILE = "latest.json"

# The discrepancies check_witness names (explained in auditor/verify.py's KINDS).
MISSING = "checkpoint_missing"
INVALID = "checkpoint_invalid"
BROKEN = "checkpoint_broken"
UNVERIFIABLE = "checkpoint_unverifiable"
CHAIN_DIFFERS = "checkpoint_chain_differs"
ARCHIVE_DIFFERS = "checkpoint_archive_differs"
WITNESS_KINDS = (MISSING, INVALID, BROKEN, UNVERIFIABLE, CHAIN_DIFFERS, ARCHIVE_DIFFERS)


class Finding(NamedTuple):
    """One discrepancy, as auditor/verify.py's report takes it: `verify(..., witness=findings)`."""

    kind: str
    household: str
    where: str
    detail: str


# ------------------------------------------------------------------------------------------ the document


def canonical_bytes(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def body_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def _line(item: list[Any]) -> bytes:
    # One JSON array a line: JSON escapes newlines inside strings, so the lines cannot be confused.
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def heads_root(heads: Mapping[str, Any]) -> str:
    """SHA-256 over the heads `[code, seq, hash]` sorted by household code, one a line."""
    h = hashlib.sha256()
    for code in sorted(heads):
        seq, head = heads[code]
        h.update(_line([code, int(seq), head]))
    return h.hexdigest()


def archive_root(entries: Iterable[ArchiveEntry]) -> str:
    """SHA-256 over the archived runs `[seq, workflow_id, run_id, sha256]` in seq order, one a line."""
    h = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.seq):
        h.update(_line([e.seq, e.workflow_id, e.run_id, e.sha256.strip()]))
    return h.hexdigest()


def _gaps(seqs: list[int]) -> list[list[int]]:
    """The seqs from 1 to the last one that are not in `seqs` (sorted), as [first, last] ranges."""
    gaps, expected = [], 1
    for s in seqs:
        if s > expected:
            gaps.append([expected, s - 1])
        expected = s + 1
    return gaps


def _in_gaps(seq: int, gaps: list[list[int]]) -> bool:
    return any(a <= seq <= b for a, b in gaps)


@dataclass(frozen=True)
class Checkpoint:
    """A signed checkpoint: `body` is the document, `hash` its SHA-256 over canonical JSON, `signature` the
    witness key's Ed25519 signature over the same canonical bytes (URL-safe base64)."""

    body: dict[str, Any]
    hash: str
    key_id: str
    signature: str

    @property
    def seq(self) -> int:
        return int(self.body["seq"])

    @property
    def prev_hash(self) -> str:
        return str(self.body["prev_hash"])

    @property
    def made_at(self) -> datetime:
        return datetime.fromisoformat(self.body["made_at"])

    @property
    def changed(self) -> dict[str, list[Any]]:
        """The heads that changed since the checkpoint before (every head when `full`)."""
        return self.body["changed"]

    @property
    def full(self) -> bool:
        return bool(self.body.get("full", False))

    def as_dict(self) -> dict[str, Any]:
        """The published form (checkpoint-<seq>.json, latest.json)."""
        return {
            "seq": self.seq,
            "hash": self.hash,
            "key_id": self.key_id,
            "signature": self.signature,
            "body": self.body,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Checkpoint:
        return cls(
            body=dict(d["body"]), hash=str(d["hash"]).strip(), key_id=str(d["key_id"]), signature=str(d["signature"])
        )

    @classmethod
    def signed(cls, body: dict[str, Any], ring: SigningRing) -> Checkpoint:
        data = canonical_bytes(body)
        signature = Ed25519PrivateKey.from_private_bytes(ring.keys[ring.active]).sign(data)
        return cls(
            body=body, hash=hashlib.sha256(data).hexdigest(), key_id=ring.active, signature=keyfiles.b64(signature)
        )

    def problem(self, public_keys: Mapping[str, bytes]) -> str | None:
        """Why this checkpoint does not verify under `public_keys`, or None when it does."""
        if body_hash(self.body) != self.hash:
            return "its content does not match its hash (the checkpoint was edited)"
        public = public_keys.get(self.key_id)
        if public is None:
            return f"signed by key {self.key_id!r}, which the witness public key file does not hold"
        try:
            key = Ed25519PublicKey.from_public_bytes(public)
            key.verify(keyfiles.unb64(self.signature), canonical_bytes(self.body))
        except (InvalidSignature, ValueError):
            return f"its signature does not verify under the witness key {self.key_id!r}"
        chains = self.body.get("chains", {})
        whole = heads_root(self.changed) == chains.get("root") and len(self.changed) == chains.get("households")
        if self.full and not whole:
            return "it carries every head, but they do not hash to its chains' root"
        return None


def _from_row(row: Mapping[str, Any]) -> Checkpoint:
    body = row["body"] if isinstance(row["body"], dict) else {}  # anything else: named unreadable
    return Checkpoint(body=dict(body), hash=row["hash"].strip(), key_id=row["key_id"], signature=row["signature"])


def _head(value: Any) -> list[Any]:
    seq, head = value
    return [int(seq), str(head).strip()]


class _Fold:
    """The heads as of the last checkpoint folded in: `exact`, the `changed` maps folded in seq order (afresh
    at a full checkpoint), what its chains' root is over; `seen`, every household's furthest signed head
    (never dropped, even when a full checkpoint no longer has the household; not replaced by a later one at
    the same or a lower seq, the mark of a chain rewritten under the witness), compared with the audit log.
    `sound`: whether `exact` gives the last checkpoint's root. `lost`: the seqs that could not be folded, as
    [first, last] ranges."""

    def __init__(self) -> None:
        self.exact: dict[str, list[Any]] = {}
        self.seen: dict[str, list[Any]] = {}
        self.origin: dict[str, int] = {}  # the checkpoint that signed each head in `seen`
        self.at, self.hash, self.sound = 0, GENESIS, True
        self.last: Checkpoint | None = None
        self.where = ""  # how the last one folded in is named
        self.lost: list[tuple[int, int]] = []

    def copy(self) -> _Fold:
        other = copy.copy(self)
        other.exact, other.seen, other.origin = dict(self.exact), dict(self.seen), dict(self.origin)
        other.lost = [*self.lost]
        return other

    def lose(self, first: int, last: int) -> None:
        """Checkpoints `first` to `last` cannot be folded (missing, or they do not verify)."""
        self.lost.append((first, last))
        self.at, self.sound = last, False

    def add(self, cp: Checkpoint, where: str = "") -> str | None:
        """Fold a checkpoint that verifies in (named `where`); why the fold does not give its chains' root
        although every checkpoint before it was folded, or None."""
        known = self.sound and cp.seq == self.at + 1 and cp.prev_hash == self.hash
        changed = {str(code): _head(h) for code, h in cp.changed.items()}
        if cp.full:
            self.exact = dict(changed)
        else:
            self.exact.update(changed)
        for code, head in changed.items():
            if code not in self.seen or head[0] > self.seen[code][0]:  # a head that does not move on: kept
                self.seen[code], self.origin[code] = head, cp.seq
        self.at, self.hash, self.last, self.where = cp.seq, cp.hash, cp, where
        chains = cp.body["chains"]
        self.sound = heads_root(self.exact) == chains.get("root") and len(self.exact) == chains.get("households")
        if self.sound or not known:
            return None
        return (
            f"the heads folded from the checkpoints up to {cp.seq} do not hash to its chains' root: a checkpoint "
            "before it was altered or removed"
        )


@dataclass(frozen=True)
class _State:
    chains: dict[str, Any]
    heads: dict[str, list[Any]]
    archive: dict[str, Any]

    def same_as(self, body: Mapping[str, Any]) -> bool:
        return self.chains == body.get("chains") and self.archive == body.get("archive")


async def chain_heads(sessions: Sessions) -> tuple[dict[str, list[Any]], int]:
    """Each household's head [seq, hash] (its last audit row) and the number of rows, in one query."""
    heads: dict[str, list[Any]] = {}
    total = 0
    async with sessions() as session:
        for code, seq, head, n in await witness_db.chain_heads(session):
            heads[code], total = [seq, head.strip()], n
    return heads, total


async def current_state(sessions: Sessions, archive: HistoryArchive) -> _State:
    heads, rows = await chain_heads(sessions)
    entries = await archive.entries()
    seqs = [e.seq for e in entries]
    chains = {"households": len(heads), "rows": rows, "root": heads_root(heads)}
    archived = {
        "histories": len(entries),
        "last_seq": max(seqs, default=0),
        "root": archive_root(entries),
        "gaps": _gaps(sorted(seqs)),
    }
    return _State(chains, heads, archived)


# ------------------------------------------------------------------------------------------- publishing


def public_keys_of(ring: SigningRing) -> dict[str, str]:
    """The witness public key file's content: {key id: URL-safe base64 raw public key}, the active first."""
    return {k: keyfiles.b64(ring.public(k)) for k in [ring.active, *(k for k in ring.keys if k != ring.active)]}


def read_public_keys(path: Path) -> dict[str, bytes]:
    """The witness public keys from a `witness-key.pub` file; ValueError naming what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path.name}: not a witness public key file ({err})") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path.name}: expected {{key id: base64 public key}}")
    keys = {}
    for key_id, encoded in data.items():
        try:
            keys[str(key_id)] = raw = keyfiles.unb64(str(encoded))
        except ValueError:
            raise ValueError(f"{path.name}, key {key_id!r}: not base64") from None
        if len(raw) != 32:
            raise ValueError(f"{path.name}, key {key_id!r}: an Ed25519 public key has 32 bytes")
    return keys


def _write_public(path: Path, text: str) -> None:
    """Write a file meant to be published (readable by all), replacing it in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_public_key_file(path: Path, ring: SigningRing) -> None:
    """The ring's public keys to `path` (only when they differ from what is there)."""
    text = json.dumps(public_keys_of(ring), indent=1) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        _write_public(path, text)


def read_published(folder: Path) -> Checkpoint | None:
    """The checkpoint in `folder`/latest.json, or None when there is none."""
    path = folder / LATEST_FILE
    if not path.exists():
        return None
    return Checkpoint.from_dict(json.loads(path.read_text(encoding="utf-8")))


def _published_hash(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["hash"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def publish(folder: Path, cp: Checkpoint, ring: SigningRing | None = None) -> None:
    """Write checkpoint-<seq>.json, and latest.json unless it already holds a later one; with `ring`, the
    public key file too. Workers on one machine take turns (a lock file); each file is replaced in one step."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(cp.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ring is not None:
            write_public_key_file(folder / PUBLIC_KEY_FILE, ring)
        one = folder / f"checkpoint-{cp.seq:06d}.json"
        if not one.exists():
            _write_public(one, text)
        elif (held := _published_hash(one)) != cp.hash:
            # The published copy is the evidence: never replaced. The database's checkpoints went back (a restore
            # or a rollback) and `audit verify` names it (checkpoint_missing).
            log.warning("witness.published_differs", seq=cp.seq, published=held, database=cp.hash, folder=str(folder))
        try:
            latest = read_published(folder)
        except (ValueError, KeyError):
            latest = None  # unreadable: replaced by this one
        if latest is None or latest.seq < cp.seq:
            _write_public(folder / LATEST_FILE, text)


# ---------------------------------------------------------------------------------------------- writing


@dataclass
class Witness:
    """Writes checkpoints (call `checkpoint()` after each archive sweep; it writes only when needed)."""

    sessions: Sessions
    archive: HistoryArchive
    ring: SigningRing
    publish_dir: Path
    interval: timedelta = timedelta(hours=24)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _fold: _Fold | None = field(default=None, init=False, repr=False, compare=False)  # as of the last written

    def public_keys(self) -> dict[str, bytes]:
        return {k: self.ring.public(k) for k in self.ring.keys}

    async def _folded(self, up_to: int) -> _Fold:
        """The heads folded from the database's checkpoints up to seq `up_to` that this ring signed: from the
        one kept in memory on, when the database still holds it; else from the first."""
        keys, base = self.public_keys(), self._fold
        after = None
        async with self.sessions() as session:
            if base is not None and base.at <= up_to:
                held = await witness_db.hash_of(session, base.at)
                if held is not None and held.strip() == base.hash:
                    fold, after = base.copy(), base.at
                else:
                    fold = _Fold()
            else:
                fold = _Fold()
            async for row in witness_db.checkpoints(session, up_to=up_to, after=after, yield_per=50):
                cp = _from_row(row)
                if _unreadable(cp) is None and cp.problem(keys) is None and cp.seq == row["seq"]:
                    fold.add(cp)
                else:
                    fold.lose(row["seq"], row["seq"])
                    fold.hash = row["hash"].strip()
        return fold

    async def latest(self) -> Checkpoint | None:
        async with self.sessions() as session:
            row = await witness_db.latest(session)
        return _from_row(row) if row else None

    async def checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        """Write a new checkpoint when the chains or the archive changed since the last one, when the last is
        older than the interval, or with `force`; returns it, or None when none was needed or another worker
        wrote that seq at the same moment. Either way the newest checkpoint is (re)published."""
        async with self.sessions() as session:
            row = await witness_db.latest(session)
        state = await current_state(self.sessions, self.archive)
        now = self.clock()
        last = _from_row(row) if row else None
        ours = last is not None and _unreadable(last) is None and last.problem(self.public_keys()) is None
        if last is not None and not ours:
            # Not a checkpoint of this ring (forged, or the ring was replaced): linked to all the same, as the
            # audit rows are, and named by `audit verify`.
            log.warning("witness.last_not_verified", seq=row["seq"], key_id=row["key_id"])
        if not force and ours and state.same_as(last.body) and now - row["made_at"] < self.interval:
            await asyncio.to_thread(publish, self.publish_dir, last, self.ring)  # a copy lost meanwhile comes back
            return None
        fold = await self._folded(row["seq"]) if row else _Fold()
        vanished = sorted(set(fold.exact) - set(state.heads))
        went_back = sorted(
            c
            for c, h in state.heads.items()
            if c in fold.exact and h != fold.exact[c] and int(h[0]) <= int(fold.exact[c][0])
        )
        if vanished or went_back:
            log.warning("witness.chain_went_back", vanished=vanished[:20], rewritten=went_back[:20])
        full = last is None or not ours or not fold.sound or fold.at != last.seq or bool(vanished)
        changed = dict(state.heads) if full else {c: h for c, h in state.heads.items() if fold.exact.get(c) != h}
        body = {
            "seq": (row["seq"] if row else 0) + 1,
            "made_at": now.astimezone(UTC).isoformat(timespec="microseconds"),
            "chains": state.chains,
            "changed": changed,
            "full": full,
            "archive": state.archive,
            "prev_hash": row["hash"].strip() if row else GENESIS,
        }
        cp = Checkpoint.signed(body, self.ring)
        try:
            async with self.sessions() as session, session.begin():
                row = dict(
                    seq=cp.seq,
                    made_at=now,
                    body=cp.body,
                    prev_hash=cp.prev_hash,
                    hash=cp.hash,
                    key_id=cp.key_id,
                    signature=cp.signature,
                )
                await witness_db.insert(session, row)
        except witness_db.CheckpointTaken:
            return None  # another worker wrote checkpoint `seq` meanwhile: it covers the same moment
        fold.add(cp)
        self._fold = fold
        await asyncio.to_thread(publish, self.publish_dir, cp, self.ring)
        return cp


def ensure_witness_keys(settings) -> SigningRing:
    """The witness ring (WITNESS_KEYS_FILE, default `witness-keys` in the state folder), created readable by
    its owner only on first use; its public key written to the published folder (witness-key.pub). A
    WITNESS_PUBLIC_KEY_FILE elsewhere is the auditors' own copy and is never written here.

    Several workers may start at once: the ring is written whole to a file of its own, then linked into
    place only if none is there yet, so they all end up with the one ring (not each with one of its own)."""
    path = settings.witness_keys_path
    if not path.exists():
        ring = new_ring(new_key_id(KEY_PREFIX))
        tmp = path.with_name(f".{path.name}-{uuid.uuid4().hex}.new")  # its own name, and its own .tmp
        write_ring(tmp, ring)  # core/keyfiles.py's format, readable by its owner only
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: theirs is the ring
        finally:
            tmp.unlink(missing_ok=True)
    ring = read_ring(path)
    write_public_key_file(settings.witness_path / PUBLIC_KEY_FILE, ring)
    return ring


def load_witness(settings, sessions: Sessions, archive: HistoryArchive) -> Witness | None:
    """The worker's witness: None when there is no ring file and WITNESS_KEYS_FILE is not set (the witness
    is off); the ring is created when WITNESS_KEYS_FILE names a file not there yet."""
    if settings.witness_keys_file is None and not settings.witness_keys_path.exists():
        return None
    ring = ensure_witness_keys(settings) if settings.witness_keys_file else read_ring(settings.witness_keys_path)
    return Witness(sessions, archive, ring, settings.witness_path, timedelta(hours=settings.witness_interval_hours))


# ----------------------------------------------------------------------------------------- verification


async def _anything_to_witness(sessions: Sessions) -> bool:
    async with sessions() as session:
        return await witness_db.any_audit_row(session)


def _unreadable(cp: Checkpoint) -> str | None:
    """What a checkpoint's content lacks to be judged at all, or None."""
    b = cp.body
    try:
        int(b["seq"]), datetime.fromisoformat(b["made_at"]), str(b["prev_hash"])
        if not all(isinstance(b[part], dict) for part in ("changed", "chains", "archive")):
            return "its changed heads, chains and archive are not objects"
        if not isinstance(b.get("full", False), bool):
            return "its 'full' is not true or false"
        if not all(isinstance(h, list) and len(h) == 2 for h in b["changed"].values()):
            return "a head is not [seq, hash]"
        for h in b["changed"].values():
            _head(h)
    except KeyError as err:
        return f"no {err}"
    except (TypeError, ValueError) as err:
        return str(err)
    return None


def _where(cp: Checkpoint, source: str) -> str:
    return f"{source} checkpoint {cp.seq} (made {cp.body.get('made_at')})"


def _published_files(folder: Path | None) -> dict[int, Path]:
    """The published folder's checkpoint-<seq>.json files, by seq."""
    files: dict[int, Path] = {}
    for path in folder.glob("checkpoint-*.json") if folder is not None and folder.is_dir() else ():
        number = path.name.removeprefix("checkpoint-").removesuffix(".json")
        if number.isdigit():
            files[int(number)] = path
    return files


def _published_at(path: Path, seq: int, keys: Mapping[str, bytes]) -> Checkpoint | None:
    """The published checkpoint-<seq>.json, when it is readable, is that seq and verifies; else None."""
    try:
        cp = Checkpoint.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _unreadable(cp) is not None or cp.seq != seq or cp.problem(keys) is not None:
        return None
    return cp


async def check_witness(
    sessions: Sessions,
    archive: HistoryArchive,
    *,
    public_keys: Mapping[str, bytes] | Path | None,
    published: Path | None = None,
) -> list[Finding]:
    """Judge the audit chains and the archive against the latest checkpoint that verifies (see the module's
    docstring); `public_keys` from a file (witness-key.pub) or given as {key id: raw bytes}, never from the
    database; `published`, the folder the checkpoints were published to (its latest.json)."""
    found: list[Finding] = []
    keys: Mapping[str, bytes] | None = None
    no_keys: Finding | None = None  # reported only when there is a checkpoint to verify
    if isinstance(public_keys, Path):
        try:
            keys = read_public_keys(public_keys)
        except ValueError as err:
            said = "no witness public key file" if not public_keys.exists() else str(err)
            no_keys = Finding(UNVERIFIABLE, "-", str(public_keys), f"{said}: no checkpoint can be verified")
    elif public_keys is not None:
        keys = dict(public_keys)
    else:
        no_keys = Finding(UNVERIFIABLE, "-", "witness public key", "none given: no checkpoint can be verified")

    pub: Checkpoint | None = None
    if published is not None:
        try:
            pub = read_published(published)
            if pub is not None and (why := _unreadable(pub)) is not None:
                raise ValueError(why)
        except (ValueError, KeyError, TypeError) as err:
            found.append(Finding(INVALID, "-", str(published / LATEST_FILE), f"not a readable checkpoint ({err})"))
            pub = None

    # The database's checkpoints, in order: each linked to the one before and signed by the witness key, its
    # `changed` folded in (one that is missing or does not verify: from the published folder, if there).
    db_hashes: dict[int, str] = {}
    db_latest: Checkpoint | None = None  # the newest that verifies
    db_max = 0
    prev: tuple[int, str] | None = None  # the seq and hash of the row before
    fold = _Fold()
    files = _published_files(published) if keys is not None else {}
    numbers = sorted(files)

    def fill(up_to: int) -> None:
        """Fold the checkpoints after the fold's last one and before `up_to` from the published folder."""
        if up_to <= fold.at + 1:
            return
        for s in numbers[bisect.bisect_right(numbers, fold.at) : bisect.bisect_left(numbers, up_to)]:
            if (cp := _published_at(files[s], s, keys)) is None:
                continue  # lost (below)
            if s > fold.at + 1:
                fold.lose(fold.at + 1, s - 1)
            if (why := fold.add(cp, where := _where(cp, "published"))) is not None:
                found.append(Finding(BROKEN, "-", where, why))
        if up_to > fold.at + 1:
            fold.lose(fold.at + 1, up_to - 1)

    async with sessions() as session:
        async for row in witness_db.checkpoints(session, yield_per=20):
            cp, seq = _from_row(row), row["seq"]
            db_hashes[seq], db_max = row["hash"].strip(), seq
            where = f"database checkpoint {seq} (made {row['made_at'].isoformat()})"
            expected_seq, expected_prev = (prev[0] + 1, prev[1]) if prev else (1, GENESIS)
            prev = (seq, row["hash"].strip())
            if (why := _unreadable(cp)) is not None:
                found.append(Finding(INVALID, "-", where, f"not a readable checkpoint ({why})"))
                continue
            if seq != expected_seq or cp.seq != seq:
                found.append(
                    Finding(
                        BROKEN,
                        "-",
                        where,
                        f"expected checkpoint {expected_seq}, found {seq} (its "
                        f"content says {cp.seq}): checkpoints are missing",
                    )
                )
            elif cp.prev_hash != expected_prev or row["prev_hash"].strip() != cp.prev_hash:
                found.append(Finding(BROKEN, "-", where, "prev_hash does not match the hash of the checkpoint before"))
            if keys is None:
                continue
            if (why := cp.problem(keys)) is not None:
                found.append(Finding(INVALID, "-", where, why))
            elif row["key_id"] != cp.key_id:
                found.append(Finding(INVALID, "-", where, "its key_id column differs from the key that signed it"))
            elif cp.seq == seq and seq > fold.at:
                db_latest = cp
                fill(seq)
                if (why := fold.add(cp, where)) is not None:
                    found.append(Finding(BROKEN, "-", where, why))
    if db_max == 0 and pub is None:
        if keys is not None and await _anything_to_witness(sessions):
            # A witness key is configured and there is something to witness, but no checkpoint anywhere: the
            # witness never ran, or every checkpoint and the published folder were removed.
            found.append(
                Finding(
                    MISSING,
                    "-",
                    "witness",
                    "a witness key is configured, but there is no checkpoint "
                    "in the database nor a published one: none written yet, or all removed",
                )
            )
        return found
    if keys is None:
        return [*found, no_keys] if no_keys else found

    if published is not None and pub is None and not (published / LATEST_FILE).exists():
        found.append(
            Finding(
                UNVERIFIABLE,
                "-",
                str(published),
                f"no {LATEST_FILE} in the published folder: a rollback of the database's checkpoints cannot be seen",
            )
        )
    judged = db_latest
    if pub is not None:
        where = _where(pub, "published")
        if (why := pub.problem(keys)) is not None:
            found.append(Finding(INVALID, "-", where, why))
        else:
            if pub.seq > db_max:
                found.append(
                    Finding(
                        MISSING,
                        "-",
                        where,
                        f"the database's checkpoints end at {db_max}: it lost "
                        f"or hides {db_max + 1} to {pub.seq} (restored or rolled back?)",
                    )
                )
            elif db_hashes.get(pub.seq) != pub.hash:
                held = db_hashes.get(pub.seq, "none")
                found.append(
                    Finding(
                        MISSING,
                        "-",
                        where,
                        f"the database holds another checkpoint {pub.seq} "
                        f"(hash {held[:16]}…, published {pub.hash[:16]}…)",
                    )
                )
            if judged is None or pub.seq > judged.seq:
                judged = pub
            if pub.seq > fold.at:
                fill(pub.seq)
                if (why := fold.add(pub, where)) is not None:
                    found.append(Finding(BROKEN, "-", where, why))
    # The published copies are the evidence: one the database holds with another hash was replaced there.
    differ = sorted(
        s
        for s, path in files.items()
        if s in db_hashes and (pub is None or s != pub.seq) and (_published_hash(path) or "").strip() != db_hashes[s]
    )
    if differ:
        more = f" (and {len(differ) - 1} more, up to {differ[-1]})" if len(differ) > 1 else ""
        found.append(
            Finding(
                MISSING,
                "-",
                str(files[differ[0]]),
                f"the database holds another checkpoint "
                f"{differ[0]}{more} than the published one: its checkpoints were rewritten",
            )
        )
    if judged is None:
        return found
    if fold.last is not None:
        last = fold.where
        if not fold.sound and fold.lost:
            lost = [str(a) if a == b else f"{a} to {b}" for a, b in fold.lost]
            said = ", ".join(lost[:10]) + (f" and {len(lost) - 10} more" if len(lost) > 10 else "")
            found.append(
                Finding(
                    UNVERIFIABLE,
                    "-",
                    last,
                    f"its heads cannot be folded whole: checkpoint(s) {said} "
                    "are in neither the database nor the published folder (or do not verify); only the "
                    f"{len(fold.seen)} households' heads the other checkpoints signed are compared, a "
                    "household changed only in those at an older head or not at all",
                )
            )
        found += await _compare_chains(sessions, fold, last)
    source = "published" if judged is pub else "database"
    found += await _compare_archive(archive, judged, _where(judged, source))
    return found


async def _compare_chains(sessions: Sessions, fold: _Fold, where: str) -> list[Finding]:
    heads = fold.seen
    codes = sorted(heads)
    async with sessions() as session:
        now = await witness_db.heads_at(session, {c: int(heads[c][0]) for c in codes})
    found = []
    for code in codes:
        seq, expected = heads[code]
        actual = now.get(code)
        if actual == expected:
            continue
        said = (
            f"the audit log has no row {seq} for it (rows removed)"
            if actual is None
            else f"the audit log's row {seq} has hash {actual[:16]}…"
        )
        found.append(
            Finding(
                CHAIN_DIFFERS,
                code,
                f"audit row seq {seq}",
                f"{where} holds hash {expected[:16]}… for "
                f"the household's row {seq} (signed in checkpoint {fold.origin[code]}); {said}: its "
                "chain was rewritten since",
            )
        )
    return found


async def _compare_archive(archive: HistoryArchive, cp: Checkpoint, where: str) -> list[Finding]:
    covered = cp.body.get("archive", {})
    last, gaps = int(covered.get("last_seq", 0)), covered.get("gaps", [])
    entries = [e for e in await archive.entries(up_to=last) if not _in_gaps(e.seq, gaps)] if last else []
    if archive_root(entries) == covered.get("root") and len(entries) == covered.get("histories"):
        return []
    count = (
        f"{covered.get('histories')} archived runs up to seq {last}, the archive now has {len(entries)} of them"
        if len(entries) != covered.get("histories")
        else f"the {len(entries)} archived runs up to seq {last} are there, but one or more differ"
    )
    return [
        Finding(
            ARCHIVE_DIFFERS,
            "-",
            "workflow_histories",
            f"{where} covers {count}: the archive was altered since (histories removed, replaced or edited)",
        )
    ]
