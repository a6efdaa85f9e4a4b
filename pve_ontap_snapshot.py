#!/usr/bin/env python3
# PYTHON_ARGCOMPLETE_OK
"""pve-ontap-snapshot: NetApp ONTAP cloning for the NFS storage behind Proxmox VE.

Proxmox can snapshot a raw disk on NFS only by falling back to slow qcow2 chains.
ONTAP can do better underneath it, and this tool asks it to:

  vm create        file-clone every disk image of a VM on the storage itself (instant, no
                   extra space, raw or qcow2): a VM snapshot, named by its UTC stamp,
                   with a manifest, the VM's config in it, saved beside the clones.
                   Optionally pause, freeze, suspend or shut down the guest for it.
  vm list          list a VM's snapshots, and how consistent each is, which are held.
  vm delete        delete one of them.
  vm hold          hold one, as zfs hold: -keep never counts or deletes it, vm delete
                   refuses it without -force; vm release lets it go again.
  vm restore       put a VM's disks (-with-config: and its config) back to a VM snapshot,
                   or to their state in a storage snapshot, leaving every other VM alone;
                   -as-new NEWID: a new VM from one, also of a VM destroyed since.
  vm verify        prove a VM's snapshots restorable without restoring them: every file
                   there with the size its manifest records, qcow2 headers and backing
                   files sound, the manifest passing its check (-all: every VM).
  ct create|list|delete|hold|release|restore|verify
                   the same for LXC containers (-ct ID): the root disk and each mount point
                   file-cloned; -shutdown, or -pause (its cgroup freezer, on its own node).
  storage create   take an ONTAP snapshot of the volume behind a PVE NFS storage, with
                   a manifest, its config in it, of every guest on it.
  storage list     list this tool's snapshots of that volume (oldest first), and how
                   many guests each holds, how consistent, which are held.
  storage show     show the backing volume's metadata.
  storage delete   delete one snapshot.
  storage hold     hold one, as zfs hold: storage create -keep and -min-age pass it over,
                   storage delete refuses it without -force; storage release lets it go.
  storage restore  revert the whole volume to a snapshot (every VM on it!).
  storage mount    make a FlexClone volume of a snapshot and add it to PVE as the NFS
                   storage <id>-CLONE (or another id, with -name).
  storage unmount  remove such a clone storage and its FlexClone again.
  storage verify   prove a storage's snapshots restorable without restoring them: each
                   there, its record and manifests sound, every recorded disk in it with
                   its size (-all: every storage).
  doctor           check config.ini, PVE, each ONTAP cluster and each storage, and say
                   what to fix (-try: also clone a test file on each storage).

Global options: -config FILE, -loglevel LEVEL, -output text|json, -dry-run (print the
changes, make none), -wait SECONDS (for another run on the same storage), -local-lock
(off a PVE node or without quorum: lock on this node only), -version.

A change holds a lock per ONTAP volume for the whole cluster (in /etc/pve/priv/lock). Every
change ONTAP or PVE is asked to make ends done, failed or unknown; an unknown one (a job
past its bound, a lost answer) is followed and read back, never rolled back on a guess.

Configuration is read from -config FILE, else ./config.ini, else
/etc/pve-ontap-snapshot/config.ini: a [proxmox] section for the PVE API and one section
per PVE storage id with the ONTAP cluster that exports it (see config.ini.example).

Examples:
  pve-ontap-snapshot doctor
  pve-ontap-snapshot vm create -vm 100 -suspend -keep 7
  pve-ontap-snapshot vm restore -vm 100 -snapshot 2024-03-13_14:42:47+0000 -shutdown
  0 3 * * *  root  pve-ontap-snapshot -loglevel warn storage create -storage ONTAP01 -min-age 12h -keep 7

Exit codes: 0 done, 1 the operation failed, 2 usage or configuration error.
Each command has its own --help.
"""

import argparse
import base64
import concurrent.futures
import configparser
import contextlib
import dataclasses
import datetime
import errno
import fcntl
import functools
import glob
import itertools
import json
import logging
import math
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse

# ==== Map ======================================================================================
# One file, read top-down; each chapter a few classes, most of them namespaces (no instances).
#
#  1. Names            what the tool names things on the storage (stamps, snapshot files, manifests,
#                      captures, clones): the original's names, kept so that no snapshot is lost
#  2. Errors           Failure and its kinds (main prints one line and exits); Outcome: done, failed
#                      or unknown; StopSignals (STOP): Ctrl-C and SIGTERM held off around a change
#  3. Config           Config and its records; ConfigFile finds, checks and reads config.ini
#  4. HTTP             Http: the libraries, connection errors, polling, the urllib3 pools
#  5. ONTAP            Ontap (one cluster: transport, jobs, volumes) and Volume (a volume as a handle:
#                      its files, snapshots, clones)
#  6. Proxmox          PveSession (proxmoxer's transport), Pve (the API: guests, configs, power, tasks,
#                      storage.cfg), Node (this node) and Freezer (a container's cgroup freezer, on its node)
#  7. Pure logic       Kind (VM or CT), Guest (a config as PVE writes it), Identity, Qcow2, Consistency, RestoreRules
#                      (what a restore may put back), Manifest, Hold (what a held VM snapshot's hold says),
#                      VmSnapshots (-keep), Output
#  8. Run              Context (what a run shares), PrivateFiles, Locks, VolumeLock, Holder, Parallel
#     infrastructure   (the one helper for parallel work), Clones, and the guest windows: Guests,
#                      VmWindow (vm create, vm restore), GuestsWindow (storage create)
#  9. Commands         one class per command, its entry command(ctx, args):
#                      vm: VmCreate (+ Captures), VmList, VmDelete, VmHold (hold, release), VmRestore
#                      (+ NewVm: -as-new), VmVerify
#                      storage: StorageCreate, StorageView (list, show, delete), StorageHold (hold,
#                      release), StorageRestore, StorageVerify, StorageMount (mount, unmount)
#                      ct: the vm commands' classes, parametrized by Kind (a CT's -pause: Freezer);
#                      a `monitor` command goes after the storage commands, reading what runs record
#                      (it changes nothing).
# 10. doctor           Doctor: every check of the setup, one writer
# 11. CLI              Arg (value types, shared options), build_parser (the parser, its --help), main
#
# Glossary (one name per concept, in code and messages alike)
#   VM snapshot       the file clones of a VM's disks made by one run, named for its UTC stamp, with
#                     a manifest beside them (SnapshotFile; the original's "set"); a pre-restore
#                     snapshot is the same, made of the live disks just before a restore
#   storage snapshot  an ONTAP volume snapshot named proxmox_snapshot_<stamp>, with each guest's
#                     manifest in its record directory (Names.STORAGE_RECORD_DIR)
#   capture           a short-lived volume snapshot vm create clones a running VM's disks from; a
#                     leftover is a capture ONTAP kept busy, deleted by a later run
#   manifest          a snapshot's record of one guest (Manifest); "record" alone is an ONTAP REST
#                     record; a lock record is a VolumeLock's text (its holder, stamps, held guests)
#   hold              what a guest window does to a guest (pause, freeze, suspend, shut down) until
#                     it is returned ("held guest"); and what vm hold and storage hold put on a
#                     snapshot until it is released, as zfs hold ("held snapshot": Hold, Names.HOLD_FILE,
#                     Names.HELD_SUFFIX): always said which; "deferred" is what StopSignals does to a signal
#   cluster           ONTAP's cluster (Ontap) or PVE's (pmxcfs, the cluster lock): always said which
#   settle            find out how an unknown outcome ended (follow the job, read the state back)
#   guest             a VM or a container (CT); vmid is PVE's id of either
# ===============================================================================================


# ---- 1. Names shared with the original pve-ontap-snapshot.py ---------------------------------
# Changing one of these loses access to the snapshots the original (or we) made.

class Names:
    """What the tool names things on the storage, as the original did, so that no snapshot made
    before is lost: stamps, VM snapshot files and manifests, storage snapshots, captures, clones."""

    STAMP_FORMAT = '%Y-%m-%d_%H:%M:%S+0000'
    STAMP_PATTERN = r'\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\+0000'
    STORAGE_SNAPSHOT_PREFIX = 'proxmox_snapshot_'
    STORAGE_SNAPSHOT_COMMENT = 'Snapshot of Proxmox storage {storage}'
    FLEXCLONE_SUFFIX = '_clone'
    CLONE_STORAGE_SUFFIX = '-CLONE'
    # A VM snapshot is the set of disk clones of one run: <stem>-snapshot-<stamp><ext> (the
    # original's name). Before a restore, the live disks are cloned to a pre-restore set.
    SNAPSHOT_KINDS = {'snapshot': 'snapshot', 'prerestore': 'pre-restore'}
    # A storage snapshot's records: each guest's manifest (its config in it), at the volume's root.
    STORAGE_RECORD_DIR = 'pve-ontap-snapshot'

    # vm create takes a running VM's disks from short-lived volume snapshots, one per volume
    # (`capture`: the VM's own, or with several VMs and no pause one the run's running VMs share),
    # and deletes them once cloned; one that ONTAP keeps busy past Captures.DELETE_WAIT
    # seconds is renamed to a leftover, which a later vm create on the volume deletes once it is
    # LEFTOVER_AGE seconds old. Never proxmox_snapshot_*: storage list, -keep and storage restore
    # never take them for storage snapshots.
    CAPTURE_PREFIX = 'pve_ontap_capture_'
    LEFTOVER_PREFIX = 'pve_ontap_leftover_'
    CAPTURE_COMMENT = 'pve-ontap-snapshot: the disks of {guest} at one instant for {tree} create, deleted once cloned'
    SHARED_CAPTURE_COMMENT = ('pve-ontap-snapshot: the disks of the running VMs of one vm create at one instant, deleted '
                              'once cloned')
    LEFTOVER_COMMENT = 'pve-ontap-snapshot: still busy after its clones; the next vm create on this volume deletes it'

    # Beside a VM snapshot's clones: its manifest, which holds the VM's config (snapshots made
    # by earlier builds of this tool have the config in a .conf file of their own), named for the set's stamp, so
    # that it goes with it. Never an image name (PVE lists only *.raw|qcow2|vmdk|subvol in
    # images/<vmid>/: pve-storage src/PVE/Storage/Plugin.pm, list_images), never snap-* (PVE 9's
    # volume-chain snapshots). The manifest's name carries the consistency: vm list reads it from
    # the directory listing it makes anyway, with no request per snapshot.
    CONSISTENCIES = ('running', 'atomic', 'paused', 'frozen', 'suspended', 'shutdown')

    SNAPSHOT_FILE = re.compile(r'^(?P<stem>.+)-(?P<kind>' + '|'.join(SNAPSHOT_KINDS) + r')-(?P<stamp>' + STAMP_PATTERN +
                               r')(?P<ext>\.(?:raw|qcow2|vmdk))$')

    # The manifest's name also carries the identity of the VM it was taken of (Identity.tag), so that
    # -keep tells a destroyed VM's snapshots from those of the VM that has its id now, unread.
    MANIFEST_FILE = re.compile(r'^(?P<stem>vm-\d+)-(?P<kind>' + '|'.join(SNAPSHOT_KINDS) + r')-(?P<stamp>' + STAMP_PATTERN +
                               r')(?P<ext>\.conf|\.(?P<consistency>' + '|'.join(CONSISTENCIES) +
                               r')(?:\.(?P<identity>[cuh][0-9a-f]{1,32}))?\.manifest\.json)$')

    # What a storage snapshot holds: every guest with a disk on the storage has a manifest (its
    # config in it; earlier builds wrote a .conf beside it) in STORAGE_RECORD_DIR/ at the volume's
    # root (outside images/, so PVE never takes them for volumes), written just before the
    # snapshot, so that `.snapshot/<name>/pve-ontap-snapshot/` says what each snapshot holds and
    # how consistent each guest is in it.
    STORAGE_MANIFEST_FILE = re.compile(r'^(?P<prefix>vm|ct)-(?P<vmid>\d+)(?:\.conf|\.(?P<consistency>'
                                       + '|'.join(CONSISTENCIES) + r')\.manifest\.json)$')
    # Now a storage snapshot holds one record, every guest's manifest in it, at the volume's root
    # (STORAGE_RECORD), written over the one before just ahead of the snapshot: one request
    # whatever the number of guests; and the snapshot's comment says how many guests it holds and
    # how consistent each is (GUESTS_COMMENT), so that storage list reads that from the snapshot
    # listing itself. ONTAP keeps a comment of up to 255 characters (the ONTAP CLI's `volume
    # snapshot create -comment`; FSx for ONTAP's API reference, OntapSnapshot Comment).
    STORAGE_RECORD = 'pve-ontap-snapshot.manifest.json'
    GUESTS_COMMENT = re.compile(r'; guests: (?P<counts>none|\d+ [a-z]+(?:, \d+ [a-z]+)*)(?:; held)?$')

    # A held snapshot (vm hold, storage hold, as zfs hold: -keep and -min-age pass it over, a delete
    # refuses it without -force) is marked where the snapshot is, so that the mark goes with it to
    # every node and into a SnapMirror copy, and is seen in the listing vm list or storage list
    # makes anyway. A VM snapshot's is one more file of its set, named as its manifest is, with
    # .hold: it goes with the set; its text says who held it, since when, why (Hold). A storage
    # snapshot's is the end of its comment, HELD_SUFFIX, set by PATCH …/snapshots/{uuid} (ONTAP
    # keeps up to COMMENT_MAX characters, see GUESTS_COMMENT).
    HOLD_FILE = re.compile(r'^(?P<stem>vm-\d+)-(?P<kind>' + '|'.join(SNAPSHOT_KINDS) + r')-(?P<stamp>' + STAMP_PATTERN +
                           r')(?P<ext>\.hold)$')
    HELD_SUFFIX = '; held'
    COMMENT_MAX = 255

    @staticmethod
    def utc_stamp(now=None):
        """The original's timestamp: UTC, `YYYY-mm-dd_HH:MM:SS+0000`."""
        now = now or datetime.datetime.now(datetime.UTC)
        return now.astimezone(datetime.UTC).strftime(Names.STAMP_FORMAT)

    @staticmethod
    def stamp_older_than(stamp, seconds, now=None):
        """Whether a stamp (utc_stamp's format) lies more than `seconds` back; one that cannot be
        read counts as old."""
        try:
            then = datetime.datetime.strptime(stamp, Names.STAMP_FORMAT).replace(tzinfo=datetime.UTC)
        except ValueError:
            return True
        return ((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds() > seconds

    @staticmethod
    def capture_name(stamp, vmid):
        """The snapshot vm create takes a running VM's disks on one volume from."""
        return f'{Names.CAPTURE_PREFIX}{stamp}_vm{vmid}'

    @staticmethod
    def shared_capture_name(stamp):
        """The snapshot a vm create of several VMs takes the disks on one volume of all its running VMs from."""
        return f'{Names.CAPTURE_PREFIX}{stamp}_all'

    @staticmethod
    def leftover_name(capture):
        """What a capture snapshot is renamed to when ONTAP keeps it busy after its clones."""
        return Names.LEFTOVER_PREFIX + capture.removeprefix('pve_ontap_')

    @staticmethod
    def capture_of(name):
        """The name a leftover had as a capture snapshot (a capture's own name stays)."""
        return 'pve_ontap_' + name.removeprefix(Names.LEFTOVER_PREFIX) if name.startswith(Names.LEFTOVER_PREFIX) else name

    @staticmethod
    def storage_snapshot_name(stamp):
        return Names.STORAGE_SNAPSHOT_PREFIX + stamp

    @staticmethod
    def snapshot_file_path(path, stamp, kind='snapshot'):
        """images/100/vm-100-disk-0.raw -> images/100/vm-100-disk-0-snapshot-<stamp>.raw"""
        directory, file = path.rsplit('/', 1)
        stem, ext = os.path.splitext(file)
        return f'{directory}/{stem}-{kind}-{stamp}{ext}'

    @staticmethod
    def snapshot_file(storage, directory, name, size=0):
        """The SnapshotFile a file name in images/<vmid>/ stands for (a clone, a saved config or
        manifest, or a hold), or None."""
        found = Names.SNAPSHOT_FILE.match(name) or Names.MANIFEST_FILE.match(name) or Names.HOLD_FILE.match(name)
        if not found:
            return None
        return SnapshotFile(storage=storage, path=f'{directory}/{name}', stem=found['stem'], kind=found['kind'],
                            stamp=found['stamp'], ext=found['ext'], size=size or 0)

    @staticmethod
    def manifest_path(vmid, stamp, consistency, kind='snapshot', identity=None):
        """The manifest of a VM snapshot: images/<vmid>/vm-<vmid>-snapshot-<stamp>.<consistency>[.<identity
        tag>].manifest.json (…-prerestore-… for a pre-restore snapshot)."""
        tag = f'.{identity}' if identity else ''
        return f'images/{vmid}/vm-{vmid}-{kind}-{stamp}.{consistency}{tag}.manifest.json'

    @staticmethod
    def hold_path(vmid, stamp, kind='snapshot'):
        """The hold of a VM snapshot (vm hold): images/<vmid>/vm-<vmid>-snapshot-<stamp>.hold, beside its manifest."""
        return f'images/{vmid}/vm-{vmid}-{kind}-{stamp}.hold'

    @staticmethod
    def storage_record_dir(name):
        """Where the storage snapshot `name` holds its guests' records (STORAGE_RECORD_DIR at the volume's root)."""
        return f'.snapshot/{name}/{Names.STORAGE_RECORD_DIR}'

    @staticmethod
    def storage_manifest_name(guest, consistency):
        """The manifest of a guest in STORAGE_RECORD_DIR: vm-<id>.<consistency>.manifest.json,
        ct-… for a container. (Earlier builds wrote the config to vm-<id>.conf beside it.)"""
        return f'{"ct" if guest.get("type") == "lxc" else "vm"}-{guest["vmid"]}.{consistency}.manifest.json'

    @staticmethod
    def storage_snapshot_comment(storage, counts):
        """The comment of a storage snapshot: the original's, and how many guests it holds, by
        consistency ({consistency: count})."""
        return (f'{Names.STORAGE_SNAPSHOT_COMMENT.format(storage=storage)}; guests: '
                f'{Consistency.summary(counts) if counts else "none"}')

    @staticmethod
    def guest_counts(comment):
        """{consistency: count} of the guests a storage snapshot's comment says it holds, or None
        where it says none of that (made by the original, or by an earlier build of this tool)."""
        found = Names.GUESTS_COMMENT.search(comment or '')
        if not found:
            return None
        pairs = [item.split(' ') for item in found['counts'].split(', ') if item != 'none']
        return {word: int(count) for count, word in pairs}

    @staticmethod
    def is_held(comment):
        """Whether a storage snapshot's comment says it is held (storage hold)."""
        return (comment or '').endswith(Names.HELD_SUFFIX)

    @staticmethod
    def held_comment(comment, held=True):
        """A storage snapshot's comment with (`held`) or without the hold at its end."""
        comment = (comment or '').removesuffix(Names.HELD_SUFFIX)
        return comment + Names.HELD_SUFFIX if held else comment

    @staticmethod
    def recorded_guests(names):
        """[{'vmid', 'type', 'consistency'}] by vmid, from the file names in a snapshot's
        STORAGE_RECORD_DIR (a guest counts by its manifest)."""
        found = [Names.STORAGE_MANIFEST_FILE.match(name) for name in names]
        return sorted(({'vmid': int(m['vmid']), 'type': Guest.GUEST_TYPES[m['prefix']], 'consistency': m['consistency']}
                       for m in found if m and m['consistency']), key=lambda guest: (guest['vmid'], guest['type']))

    @staticmethod
    def flexclone_name(volume, storage=None):
        """<volume>_clone (the original's name), or <volume>_clone_<storage id> for a -name mount."""
        if storage is None:
            return volume + Names.FLEXCLONE_SUFFIX
        return f'{volume}{Names.FLEXCLONE_SUFFIX}_{re.sub(r"[^A-Za-z0-9_]", "_", storage)}'

    @staticmethod
    def clone_volume_names(volume, storage, parent):
        """The FlexClone names `storage mount` gives a mount named `storage` of `parent`'s volume."""
        names = [Names.flexclone_name(volume, storage)]
        if storage == Names.clone_storage_id(parent):
            names.insert(0, Names.flexclone_name(volume))
        return names

    @staticmethod
    def clone_storage_id(storage):
        return storage + Names.CLONE_STORAGE_SUFFIX

# ---- 2. Errors, and how a run stops ----------------------------------------------------------
# Every failure a user can cause or meet ends as one line on stderr and an exit code; a change
# ends done, failed or unknown (Outcome). Stop signals are held off while a change is on its way.

class Failure(Exception):
    """An operation failed; main() prints the message as one line and exits 1."""
    exit_code = 1

    @staticmethod
    def joined(failure, *more):
        """One Failure for `failure` and whatever else went wrong with it (None: nothing)."""
        return Failure('; and '.join(str(problem) for problem in (failure, *more) if problem))


class NotFound(Failure):
    """A VM, storage, volume or snapshot the command names does not exist."""


class InUse(Failure):
    """A snapshot that must stay: a VM uses one of its files as a disk."""


class FrozenTooLong(Failure):
    """A guest gave up its file-system freeze by itself before the thaw (Windows VSS): it runs
    again, but what was taken after that is crash-consistent only."""


class Terminated(Exception):
    """SIGINT, SIGTERM or SIGHUP (Ctrl-C, systemctl stop, shutdown, `timeout`), raised in the
    main thread so that every `finally` runs. No Failure: it ends the whole run, not one VM of it."""

    def __init__(self, signum, done=None):
        self.signal = signal.Signals(signum)
        super().__init__(f'stopped by {self.signal.name}' + (f' ({done})' if done else ''))


class LockLost(Failure):
    """The cluster-wide lock could not be refreshed (pmxcfs refused: no quorum, or the lock was
    taken over): another run may work on the volume now, so this run changes nothing more."""


class ConfigError(Failure):
    """config.ini is missing, malformed or lacks what a command needs; or bad usage (exit 2)."""
    exit_code = 2


class OntapError(Failure):
    """An ONTAP REST call failed: HTTP error, job failure, timeout or no connection."""

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        self.status = status
        self.code = code


class OutcomeUnknown(Failure):
    """A change asked of ONTAP or PVE that may or may not happen: its job or task still ran
    when the bound ended (`job`: its uuid or UPID), or the answer was lost or unreadable after
    the request went out. Never handled as a failure: nothing is rolled back, deleted or
    started over it. `where` names the server: `ONTAP <host>` or `Proxmox <host>`."""

    def __init__(self, message, what, job=None, where=None):
        super().__init__(message)
        self.what = what
        self.job = job
        self.where = where


class ProxmoxError(Failure):
    """A Proxmox API call or task failed."""


class ManifestError(Failure):
    """A snapshot's manifest that cannot be read, or that its signature says was changed: named
    as such, never taken for a snapshot without one."""


class ClusterLockUnavailable(Failure):
    """The cluster-wide lock cannot be taken: off a PVE node, or /etc/pve read-only (no quorum)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one change of a batch ended: done (no error), failed, or unknown (an OutcomeUnknown)."""
    item: object
    error: Failure = None

    @property
    def state(self):
        if self.error is None:
            return 'done'
        return 'unknown' if isinstance(self.error, OutcomeUnknown) else 'failed'

    @staticmethod
    def items_in(outcomes, state):
        return [outcome.item for outcome in outcomes if outcome.state == state]

    @staticmethod
    def said(subject, what, done, change, shown_by):
        """change(), one change of `what` (`snapshot X` of `subject`, `VM 100`) to be `done` (held,
        released), settled as it does (its answer lost: read back): done; failed, a Failure saying
        `what` is not `done`; or unknown, a Failure saying so and that `shown_by` shows it later."""
        try:
            change()
        except OutcomeUnknown as exc:
            raise Failure(f'{subject}: whether {what} is {done} is unknown: {exc}; {shown_by} shows it once ONTAP has '
                          'ended the change') from exc
        except Failure as exc:
            raise Failure(f'{subject}: {what} is not {done}: {exc}') from exc

    @staticmethod
    def pending_jobs(outcomes):
        """The phrase naming each change still unknown: what it does and its job (uuid), or, its
        answer lost, all that is known of it."""
        return '; '.join(f'{o.error.what}: job {o.error.job} still running on {o.error.where}' if o.error.job
                         else str(o.error) for o in outcomes if o.state == 'unknown')


class StopSignals:
    """Turns SIGINT, SIGTERM and SIGHUP into Terminated — except while a VM is paused, frozen
    or restored (`deferred`): then the signal waits until that is done, and the run stops at its
    next `check`. A VM is never left suspended, shut down or frozen by a stopped run, and a
    second Ctrl-C does not change that.

    Python runs signal handlers in the main thread only, so Terminated is raised there and
    nowhere else: a thread working on one VM is never cut short. Threads hold signals off too
    (a VM's window), and read `pending` to start nothing new once a signal came."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.deferring = 0
        self.pending = None
        self.lost = None        # LockLost: a lock of the run may be lost; nothing more is changed
        # Threads count up and down at once. The handler only reads the count: it may run in
        # the main thread while that holds this lock.
        self._counting = threading.Lock()

    @property
    def stopping(self):
        """Whether the run is to begin nothing new: a stop signal came, or a lock may be lost."""
        return bool(self.pending or self.lost)

    def lose(self, failure):
        """A lock of the run may be lost (LockLost): no change is asked of ONTAP or PVE any more
        but those that return a guest to its state (check_change), and the run stops with it."""
        if self.lost is None:
            self.lost = failure
            log.warning('%s', failure)

    def check_change(self, what, returning=False):
        """Raise LockLost before a change `what` unless it returns a guest to its state."""
        if self.lost is not None and not returning:
            raise LockLost(f'{what}: not asked, as a lock of this run may be lost')

    def handle(self, signum, frame):
        self.pending = signum
        if not self.deferring:
            self.check()
        log.warning('%s: finishing first what must not be cut short (a VM paused, frozen or being restored); '
                    'the run stops right after', signal.Signals(signum).name)

    @contextlib.contextmanager
    def deferred(self):
        with self._counting:
            self.deferring += 1
        try:
            yield
        finally:
            with self._counting:
                self.deferring -= 1

    def check(self, done=None):
        """Stop here if a signal came or a lock may be lost; `done` says what the run got done first."""
        if self.pending:
            raise Terminated(self.pending, done)
        if self.lost is not None:
            raise LockLost(f'{self.lost}' + (f' ({done})' if done else ''))

STOP = StopSignals()

# ---- 3. Config -------------------------------------------------------------------------------
# config.ini in the original's format, read once into plain records.

@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds; each is `<name>_timeout` in the optional [defaults] section."""
    connect: float = 10.0   # TCP/TLS connect of every HTTP request
    read: float = 120.0     # waiting for an answer to every HTTP request
    job: float = 600.0      # an ONTAP job
    task: float = 600.0     # a PVE task
    freeze: float = 10.0    # the longest a guest stays frozen (vm create -freeze)


@dataclasses.dataclass(frozen=True)
class ProxmoxConfig:
    """The PVE API: a password login, or an API token (no login, no ticket to expire)."""
    host: str
    user: str
    password: str = dataclasses.field(default=None, repr=False)
    token_name: str = None
    token_value: str = dataclasses.field(default=None, repr=False)
    verify: object = True


@dataclasses.dataclass(frozen=True)
class OntapConfig:
    """The ONTAP cluster behind one PVE storage (a config section named after it)."""
    section: str
    host: str
    user: str
    password: str = dataclasses.field(default=None, repr=False)
    cert: str = None    # a client certificate and its key instead of a password
    key: str = None
    verify: object = True
    svm: str = None
    snapmirror_label: str = None    # storage create's default -label
    warn_age: int = None            # monitor's -warn and -crit for this storage, seconds
    crit_age: int = None


@dataclasses.dataclass(frozen=True)
class Config:
    """config.ini as read (ConfigFile.read): the PVE login, the ONTAP cluster of each storage."""
    path: str
    proxmox: ProxmoxConfig
    storages: dict
    timeouts: Timeouts
    local_lock: bool = False    # [defaults] local_lock: -local-lock for every run

    def ontap_for(self, storage):
        """The ONTAP section serving a PVE storage; `X-CLONE` is served by `[X]`."""
        if storage in self.storages:
            return self.storages[storage]
        parent = storage.removesuffix(Names.CLONE_STORAGE_SUFFIX)
        if parent != storage and parent in self.storages:
            return self.storages[parent]
        raise ConfigError(f'{self.path}: no section [{storage}] for storage {storage}: add one with host, '
                          'user and pass of the ONTAP cluster that exports it')


class ConfigFile:
    """config.ini: found, checked (who may change it), parsed once into a Config; what doctor
    asks of each section."""

    SEARCH_PATH = ('config.ini', '/etc/pve-ontap-snapshot/config.ini')
    PROXMOX_SECTION = 'proxmox'
    DEFAULTS_SECTION = 'defaults'
    PVE_ROOT_CA = '/etc/pve/pve-root-ca.pem'

    @staticmethod
    def find(explicit):
        """The config file to read: -config, else the first of SEARCH_PATH that exists."""
        if explicit:
            if os.path.isdir(explicit):
                raise ConfigError(f'config file {explicit} is a directory: give the file in it (-config '
                                  f'{os.path.join(explicit, "config.ini")})')
            if not os.path.isfile(explicit):
                raise ConfigError(f'config file {explicit} not found')
            return explicit
        for candidate in ConfigFile.SEARCH_PATH:
            if os.path.isfile(candidate):
                return candidate
        raise ConfigError(f'no config file: none of {", ".join(ConfigFile.SEARCH_PATH)} exists (use -config FILE)')

    @staticmethod
    def risk(path, info):
        """Why another user could change config.ini (its os.stat result), or None: it must be owned by
        the user running the tool or by root, and writable by nobody else — it says which hosts get
        the passwords, and what is trusted. (fix, problem) as phrases."""
        if stat.S_ISREG(info.st_mode) and info.st_uid in (0, os.geteuid()) and not info.st_mode & 0o022:
            return None
        where = (f' (found in the current directory, {os.getcwd()})' if path == ConfigFile.SEARCH_PATH[0] else '')
        owner = 'root' if os.geteuid() == 0 else PrivateFiles.user_name(os.geteuid())
        problem = (f'config file {path}{where} is {PrivateFiles.describe_owner(info)}: another user could change it, and with it '
                   'which hosts get the passwords and what is trusted')
        return problem, f'chown {owner} {path} && chmod 600 {path}, or give another file with -config'

    @staticmethod
    def load(path):
        """(text, os.stat result) of config.ini, both of one open file (no name looked up twice)."""
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(f'cannot read config file {path}: {exc.strerror}') from exc
        with open(descriptor, 'rb') as handle:
            info = os.fstat(handle.fileno())
            data = handle.read()
        try:
            # utf-8-sig: Notepad starts a UTF-8 file with a byte-order mark
            return data.decode('utf-8-sig'), info
        except UnicodeDecodeError as exc:
            raise ConfigError(f'cannot read config file {path}: {exc}') from exc

    @staticmethod
    def read_text(path):
        """config.ini's text, once its owner and mode are checked (risk): a risk is an
        error for root, else a warning; one readable by group or others is a warning (it holds passwords)."""
        text, info = ConfigFile.load(path)
        risk = ConfigFile.risk(path, info)
        if risk and os.geteuid() == 0:
            raise ConfigError(f'{risk[0]}; as root this tool refuses it: {risk[1]}')
        if risk:
            log.warning('%s: %s', *risk)
        elif info.st_mode & 0o077:
            log.warning('%s is readable by group or others (mode %s) and holds passwords: chmod 600 %s', path,
                        oct(info.st_mode & 0o777)[2:], path)
        return text

    @staticmethod
    def parse_verify(value, where):
        """`verify` is true/false (any of configparser's spellings) or the path of a CA bundle."""
        value = value.strip()
        if value.lower() in configparser.ConfigParser.BOOLEAN_STATES:
            return configparser.ConfigParser.BOOLEAN_STATES[value.lower()]
        if not os.path.isfile(value):
            raise ConfigError(f'{where}: verify = {value}: neither true/false nor an existing CA file')
        return value

    @staticmethod
    def is_local_host(host, hostname):
        """True if `host` (maybe with :port) names this machine, whose name is `hostname`."""
        name = re.sub(r':\d+$', '', host).strip('[]').lower()
        return name in ('localhost', '127.0.0.1', '::1', hostname.lower(), hostname.split('.')[0].lower())

    @staticmethod
    def default_pve_verify(host):
        """Without proxmox_verify: the cluster's own CA when talking to this very node, else the
        system CAs. PVE's node certificate is signed by /etc/pve/pve-root-ca.pem."""
        if ConfigFile.is_local_host(host, socket.getfqdn()) and os.path.isfile(ConfigFile.PVE_ROOT_CA):
            return ConfigFile.PVE_ROOT_CA
        return True

    @staticmethod
    def check_host(host, where):
        """A host is a name or an address, maybe with :port, not a URL. The value is not quoted:
        a URL may carry user:password@."""
        scheme = re.match(r'[A-Za-z][A-Za-z0-9+.-]*://', host)
        if scheme:
            raise ConfigError(f'{where} starts with {scheme.group(0)}: write the host alone, optionally with :port '
                              '(like 192.168.38.50 or 192.168.38.50:8006)')
        return host

    @staticmethod
    def describe_parse_error(exc):
        """Where config.ini stops being INI — by line number only: the line may hold a password."""
        if isinstance(exc, configparser.MissingSectionHeaderError):
            return f'line {exc.lineno} comes before the first [section]'
        if isinstance(exc, configparser.ParsingError):
            return f'line {", ".join(str(number) for number, _ in exc.errors)} is neither [section] nor key = value'
        if isinstance(exc, configparser.DuplicateSectionError):
            return f'line {exc.lineno}: section [{exc.section}] appears twice'
        if isinstance(exc, configparser.DuplicateOptionError):
            return f'line {exc.lineno}: [{exc.section}] sets {exc.option} twice'
        return type(exc).__name__

    @staticmethod
    def parse(path, text):
        """config.ini's text as a ConfigParser; a ConfigError naming the line where it stops being INI."""
        # The original used ConfigParser's default interpolation: `%%` stays a literal `%`.
        parser = configparser.ConfigParser()
        try:
            parser.read_string(text, source=path)
        except configparser.Error as exc:
            raise ConfigError(f'config file {path} is malformed: {ConfigFile.describe_parse_error(exc)}') from None
        return parser

    @staticmethod
    def read(path, parser=None):
        """Read and check config.ini (`parser`: as parse made it, if it was parsed already);
        every error names the file, section and key."""
        parser = parser or ConfigFile.parse(path, ConfigFile.read_text(path))

        def get(section, key, default=None, required=True):
            try:
                return parser.get(section, key)
            except configparser.NoOptionError:
                if required:
                    raise ConfigError(f'{path}: [{section}] lacks {key}') from None
                return default
            except configparser.InterpolationError:
                raise ConfigError(f'{path}: [{section}] {key}: the value has a % that is not %% '
                                  '(write %% for a literal %)') from None

        def get_file(section, key):
            value = get(section, key, required=False)
            if value is not None and not os.path.isfile(value):
                raise ConfigError(f'{path}: [{section}] {key} = {value}: no such file')
            return value

        if not parser.has_section(ConfigFile.PROXMOX_SECTION):
            raise ConfigError(f'{path}: no [{ConfigFile.PROXMOX_SECTION}] section')
        host = ConfigFile.check_host(get(ConfigFile.PROXMOX_SECTION, 'proxmox_host'),
                                     f'{path}: [{ConfigFile.PROXMOX_SECTION}] proxmox_host')
        token_name = get(ConfigFile.PROXMOX_SECTION, 'proxmox_token_name', required=False)
        if token_name and parser.has_option(ConfigFile.PROXMOX_SECTION, 'proxmox_pass'):
            log.warning('%s: [%s] has proxmox_token_name and proxmox_pass: the API token is used, proxmox_pass is '
                        'ignored', path, ConfigFile.PROXMOX_SECTION)
        verify = get(ConfigFile.PROXMOX_SECTION, 'proxmox_verify', required=False)
        proxmox = ProxmoxConfig(
            host=host,
            user=get(ConfigFile.PROXMOX_SECTION, 'proxmox_user'),
            password=None if token_name else get(ConfigFile.PROXMOX_SECTION, 'proxmox_pass'),
            token_name=token_name,
            token_value=get(ConfigFile.PROXMOX_SECTION, 'proxmox_token_value') if token_name else None,
            verify=ConfigFile.parse_verify(verify, f'{path}: [{ConfigFile.PROXMOX_SECTION}]') if verify is not None
            else ConfigFile.default_pve_verify(host))

        storages = {}
        for section in parser.sections():
            if section in (ConfigFile.PROXMOX_SECTION, ConfigFile.DEFAULTS_SECTION):
                continue
            cert = get_file(section, 'cert')
            storages[section] = OntapConfig(
                section=section,
                host=ConfigFile.check_host(get(section, 'host'), f'{path}: [{section}] host'),
                user=get(section, 'user'),
                password=None if cert else get(section, 'pass'),
                cert=cert,
                key=get_file(section, 'key') if cert else None,
                verify=ConfigFile.parse_verify(get(section, 'verify', 'true', required=False), f'{path}: [{section}]'),
                svm=get(section, 'svm', required=False),
                snapmirror_label=ConfigFile.checked_label(get(section, 'snapmirror_label', required=False), f'{path}: [{section}]'),
                warn_age=ConfigFile.checked_age(get(section, 'warn_age', required=False), f'{path}: [{section}] warn_age'),
                crit_age=ConfigFile.checked_age(get(section, 'crit_age', required=False), f'{path}: [{section}] crit_age'))

        timeouts = {}
        for field in dataclasses.fields(Timeouts):
            key = f'{field.name}_timeout'
            has_defaults = parser.has_section(ConfigFile.DEFAULTS_SECTION)
            raw = get(ConfigFile.DEFAULTS_SECTION, key, required=False) if has_defaults else None
            if raw is None:
                continue
            try:
                timeouts[field.name] = float(raw)
            except ValueError:
                timeouts[field.name] = math.nan
            if not 0 < timeouts[field.name] < math.inf:
                raise ConfigError(
                    f'{path}: [{ConfigFile.DEFAULTS_SECTION}] {key} = {raw}: not a positive number of seconds')
        try:
            local_lock = parser.has_section(ConfigFile.DEFAULTS_SECTION) and parser.getboolean(ConfigFile.DEFAULTS_SECTION, 'local_lock',
                                                                                               fallback=False)
        except ValueError:
            raise ConfigError(f'{path}: [{ConfigFile.DEFAULTS_SECTION}] local_lock: not yes or no') from None
        return Config(path=path, proxmox=proxmox, storages=storages, timeouts=Timeouts(**timeouts),
                      local_lock=local_lock)

    # The keys ConfigFile.read takes from each kind of section: any other is ignored, so doctor names it.
    PROXMOX_KEYS = ('proxmox_host', 'proxmox_user', 'proxmox_pass', 'proxmox_token_name', 'proxmox_token_value',
                    'proxmox_verify')
    STORAGE_KEYS = ('host', 'user', 'pass', 'cert', 'key', 'verify', 'svm', 'snapmirror_label', 'warn_age', 'crit_age')
    DEFAULTS_KEYS = tuple(f'{field.name}_timeout' for field in dataclasses.fields(Timeouts)) + ('local_lock',)

    # A snapmirror label: up to 31 characters (FSx for ONTAP's API reference, SnapmirrorLabel in
    # OntapSnapshotConfiguration; NetApp's REST reference gives no length), no blanks.
    SNAPMIRROR_LABEL = re.compile(r'\S{1,31}')

    @staticmethod
    def checked_label(label, where):
        """config.ini's snapmirror_label, checked as -label is; None stays None."""
        if label is not None and not ConfigFile.SNAPMIRROR_LABEL.fullmatch(label):
            raise ConfigError(
                f'{where} snapmirror_label = {label}: no snapmirror label (1 to 31 characters, no blanks)')
        return label

    @staticmethod
    def checked_age(text, where):
        """warn_age or crit_age of a storage's section (monitor's -warn, -crit) as seconds; None stays None."""
        if text is None:
            return None
        seconds = Arg.parse_duration(text.strip())
        if not seconds:
            raise ConfigError(f'{where} = {text}: no duration (like 26h, 2d, 90m)')
        return seconds

    @staticmethod
    def section_gaps(section, keys):
        """What a config.ini section with these keys lacks for read, as phrases."""
        if section == ConfigFile.DEFAULTS_SECTION:
            return []
        if section == ConfigFile.PROXMOX_SECTION:
            needed = {'proxmox_host': 'proxmox_host', 'proxmox_user': 'proxmox_user'}
            if 'proxmox_token_name' in keys:
                needed['proxmox_token_value'] = 'proxmox_token_value'
            else:
                needed['proxmox_pass'] = 'proxmox_pass (or proxmox_token_name and proxmox_token_value)'
        else:
            needed = {'host': 'host', 'user': 'user'}
            if 'cert' not in keys:
                needed['pass'] = 'pass (or cert and key)'
        return [phrase for key, phrase in needed.items() if key not in keys]

    @staticmethod
    def unknown_keys(section, keys):
        """The keys of a config.ini section that read never reads (a typo, say)."""
        known = {ConfigFile.PROXMOX_SECTION: ConfigFile.PROXMOX_KEYS,
                 ConfigFile.DEFAULTS_SECTION: ConfigFile.DEFAULTS_KEYS}.get(section, ConfigFile.STORAGE_KEYS)
        return sorted(set(keys) - set(known))

# ---- 4. HTTP ---------------------------------------------------------------------------------
# What both APIs share; the libraries are loaded only when a command runs. Both go through bare
# urllib3 pools (PVE's as the session proxmoxer sends through, PveSession): requests' own work on
# each request (preparing it, merging settings, encoding its URL again) was about half of the
# tool's CPU time in a whole-cluster vm create (tests/bench.py). requests still reads the
# environment's proxy settings for them.

log = logging.getLogger('pve_ontap_snapshot')


# requests, urllib3 and proxmoxer are imported by Http.load_libraries() when a command
# runs, never at import time: bash tab completion imports this module on every <TAB>.
requests = urllib3 = proxmoxer = Retry = None


class Http:
    """What both APIs share: the HTTP libraries (imported when a command runs, never for a <TAB>),
    connection errors as phrases, redirects refused, polling, the retries; the urllib3 pools of
    both, their request targets and bodies."""

    # The statuses of a redirect, as requests tells one (requests models.py, REDIRECT_STATI).
    REDIRECTS = frozenset((301, 302, 303, 307, 308))
    # A percent-escape of an unreserved character (RFC 3986: letters, digits, - . _ ~).
    UNRESERVED_ESCAPE = re.compile(r'%(2[DE]|3[0-9]|[46][1-9A-F]|[57][0-9A]|5F|7E)', re.IGNORECASE)

    @staticmethod
    def load_libraries():
        """Import the HTTP stack (deferred so that tab completion stays instant)."""
        global requests, urllib3, proxmoxer, Retry
        import proxmoxer as _proxmoxer
        import requests as _requests
        import urllib3 as _urllib3
        from urllib3.util.retry import Retry as _Retry
        requests, urllib3, proxmoxer, Retry = _requests, _urllib3, _proxmoxer, _Retry
        # One warning per run and side says that a certificate is not checked (Ontap, Pve), not one
        # per request; proxmoxer turns urllib3's off anyway when it is imported.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    @staticmethod
    def poll_until(done, bound, longest, timed_out):
        """Call done() until it is true, 50 ms apart at first, backing off to `longest` seconds;
        raise timed_out() when the next try would pass `bound` seconds."""
        deadline = time.monotonic() + bound
        interval = 0.05
        while not done():
            if time.monotonic() + interval > deadline:
                raise timed_out()
            time.sleep(interval)
            interval = min(interval * 2, longest)

    @staticmethod
    def describe_connection_error(exc):
        """The one useful phrase inside a urllib3 connection error's nested message."""
        if Http.tls_failed(exc):
            return 'TLS certificate verification failed (set verify to a CA file, or false)'
        text = str(exc)
        # urllib3 names the bound that ran out, "(connect timeout=10)", "(read timeout=120)",
        # also inside the retries' MaxRetryError.
        found = re.search(r'(connect|read) timeout=([\d.]+)', text)
        if found and found[1] == 'connect':
            return f'no connection within {float(found[2]):g} s (connect_timeout)'
        if found:
            return f'no answer within {float(found[2]):g} s (read_timeout)'
        for pattern in (r'\[Errno -?\d+\] ([^\'")]+)',
                        r'(Connection aborted|Connection reset[^\'")]*|Remote end closed connection[^\'")]*)'):
            found = re.search(pattern, text)
            if found:
                return found.group(1).strip().rstrip('.')
        # Last: urllib3's NewConnectionError (a refused connect, told above) is a TimeoutError too.
        if isinstance(Http.urllib3_failure(exc), urllib3.exceptions.TimeoutError):
            return 'timed out'
        return 'connection failed'

    @staticmethod
    def redirect_refused(response):
        """The phrase for a redirect that was not followed: credentials go to the configured host only."""
        location = response.headers.get('Location', 'elsewhere') if response is not None else 'elsewhere'
        return f'answered with a redirect to {location}, not followed: the credentials go to the configured host only'

    @staticmethod
    def may_have_arrived(exc):
        """Whether a request that raised `exc` (a urllib3 error) may have reached the server:
        anything but a failed connect (refused, timed out, TLS handshake) leaves its outcome unknown."""
        return not isinstance(Http.urllib3_failure(exc), (urllib3.exceptions.NewConnectionError,
                                                          urllib3.exceptions.ConnectTimeoutError,
                                                          urllib3.exceptions.SSLError))

    @staticmethod
    def failed_connection(exc):
        """Why a Failure of a call never reached the server: 'tls' (its certificate was not
        trusted), 'network' (no connection, no answer); None if the server answered."""
        cause = exc.__cause__
        if Http.tls_failed(cause):
            return 'tls'
        if isinstance(cause, urllib3.exceptions.HTTPError):
            return 'network'
        return None

    @staticmethod
    def tls_failed(exc):
        """Whether a urllib3 error is a failed TLS handshake or certificate check, also one that
        ended the retries."""
        return (isinstance(exc, urllib3.exceptions.HTTPError)
                and isinstance(Http.urllib3_failure(exc), urllib3.exceptions.SSLError))

    @staticmethod
    def urllib3_failure(exc):
        """What failed in a urllib3 error: the last failure of the retries that `exc` ended
        (MaxRetryError.reason), else `exc` itself."""
        return exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc

    @staticmethod
    def environment_ca():
        """The CA bundle the environment names, as requests reads it (REQUESTS_CA_BUNDLE, else
        CURL_CA_BUNDLE), read once per run; None if neither is set."""
        return os.environ.get('REQUESTS_CA_BUNDLE') or os.environ.get('CURL_CA_BUNDLE') or None

    @staticmethod
    def trusted(verify, ca):
        """What a connection verifies with: a config's `verify`, except that `true` (the system CAs)
        yields to a CA bundle from the environment (`ca`), as in every requests-based tool."""
        return ca if verify is True and ca else verify

    @staticmethod
    def retries():
        """What urllib3 asks again, on both sides: a failed connect for any method (nothing reached
        the server), but read errors and 502/503/504 only for GET: a POST is never repeated blindly.
        A 3xx is answered as it is, never followed (redirect=False on every request)."""
        return Retry(total=3, connect=3, read=2, status=3, backoff_factor=0.2, allowed_methods=frozenset(['GET']),
                     status_forcelist=(502, 503, 504), raise_on_status=False)

    @staticmethod
    def log_request(side, method, path, status, seconds):
        """At -loglevel debug: method, path, status and duration of one request (never its headers)."""
        log.debug('%s %s %s -> %s (%.0f ms)', side, method, path, status, seconds * 1000)

    @staticmethod
    def pool(base, verify, cert, timeouts, where, failure):
        """A urllib3 connection pool to the host of `base` (https://host[:port]) for all of a run's
        threads (urllib3's pools are thread-safe), set up as a requests Session would set up its
        own for each request (requests adapters.py: _urllib3_request_context, cert_verify,
        proxy_manager_for): `verify` true is the system CAs (urllib3 loads them where it is given
        no CA: util/ssl_.py, ssl_wrap_socket), false none, else a CA file (or directory); `cert`
        (cert, key) a client certificate; through the proxy the environment names for the host.
        A proxy it cannot use is a `failure` (a Failure class) naming `where`."""
        tls = {'cert_reqs': 'CERT_NONE' if verify is False else 'CERT_REQUIRED'}
        if isinstance(verify, str):
            tls['ca_cert_dir' if os.path.isdir(verify) else 'ca_certs'] = verify
        if cert:
            tls['cert_file'], tls['key_file'] = cert
        try:
            manager = Http.pool_manager(Http.environment_proxy(base), num_pools=1,
                                        maxsize=Parallel.CONNECTIONS_PER_HOST, block=False,
                                        timeout=urllib3.Timeout(connect=timeouts.connect, read=timeouts.read),
                                        retries=Http.retries(), **tls)
        except (ValueError, ImportError) as exc:
            raise failure(f'{where}: the proxy the environment names for it cannot be used: {exc}') from exc
        return manager.connection_from_url(base)

    @staticmethod
    def environment_proxy(url):
        """The proxy requests would take for `url` from the environment (HTTPS_PROXY, ALL_PROXY,
        NO_PROXY and their lower-case forms), read once, or None: requests' own reading of it
        (utils.py: get_environ_proxies, select_proxy; a proxy without a scheme is http://)."""
        proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
        return requests.utils.prepend_scheme_if_needed(proxy, 'http') if proxy else None

    @staticmethod
    def pool_manager(proxy, **pool):
        """The urllib3 manager whose pools go through `proxy` (None: straight to the host), as
        requests makes it (adapters.py, proxy_manager_for): a CONNECT tunnel through an HTTP(S)
        proxy, whose credentials in its URL go to the proxy alone; SOCKS only with PySocks, as
        for requests. A proxy URL urllib3 cannot use raises a ValueError (LocationValueError)."""
        if not proxy:
            return urllib3.PoolManager(**pool)
        user, password = requests.utils.get_auth_from_url(proxy)
        if proxy.lower().startswith('socks'):
            from urllib3.contrib.socks import SOCKSProxyManager  # ImportError without PySocks
            return SOCKSProxyManager(proxy, username=user, password=password, **pool)
        # Basic auth as requests encodes it for a proxy (latin-1: auth.py, _basic_auth_str).
        token = base64.b64encode(f'{user}:{password}'.encode('latin-1')).decode()
        return urllib3.ProxyManager(proxy, proxy_headers={'Proxy-Authorization': 'Basic ' + token} if user else None,
                                    **pool)

    @staticmethod
    def target(path, params=None):
        """The request target of `path` (percent-encoded, maybe with a query of its own: an ONTAP
        `next` link) and `params`, exactly as requests sent it: requests re-quotes a URL and
        decodes every escape of an unreserved character on the way (utils.py: requote_uri,
        unquote_unreserved; files_url's %2E went out as "."), and encodes params with
        urlencode(doseq=True), leaving out those that are None (models.py, _encode_params). What
        neither may carry (a space, "[", a non-ASCII character) urllib3's pool then
        percent-encodes, as it did behind requests (connectionpool.py, urlopen: _encode_target)."""
        if '%' in path:
            path = Http.UNRESERVED_ESCAPE.sub(lambda escape: chr(int(escape[1], 16)), path)
        query = Http.encode_params(params) if params else ''
        if not query:
            return path
        path, _, own = path.partition('?')
        return f'{path}?{own}&{query}' if own else f'{path}?{query}'

    @staticmethod
    def encode_params(params):
        """Params as requests encodes them, for a query or a form body: urlencode(doseq=True),
        leaving out those that are None (models.py, _encode_params)."""
        return urllib.parse.urlencode({key: value for key, value in params.items() if value is not None}, doseq=True)

    @staticmethod
    def form_data(name, data):
        """(body, content type) of a multipart/form-data body of one file, `data` (bytes), as the
        form field `name` with the file name `name`: what requests sends for files={name: (name,
        data)}, a part without a Content-Type of its own (requests models.py, _encode_files)."""
        field = urllib3.fields.RequestField(name=name, data=data, filename=name)
        field.make_multipart()
        return urllib3.encode_multipart_formdata([field])

# ---- 5. ONTAP --------------------------------------------------------------------------------
# Ontap: the transport to one cluster (one urllib3 pool per cluster and run), its jobs, and
# what is the cluster's. Volume: one of its volumes, as a handle: the calls on the volume's
# files, snapshots and clones are its methods.

class Ontap:
    """Transport to one ONTAP cluster: base URL, auth, verify, timeouts, job waits.
    With dry_run, every call that would change something is printed instead of sent."""

    JOB_POLL_MAX = 2.0
    FILE_NOT_FOUND = '6684674'
    # How ONTAP refuses a field of `fields` that its release does not know (a snapshot's `size` or a
    # job's `error` on 9.8, both "Introduced in: 9.9"): HTTP 400, code 262197, `The value "size" is
    # invalid for field "fields" (<field,...>)` (NetApp/harvest#3639 on 9.9.1, netapp.ontap#189).
    INVALID_VALUE = '262197'
    UNKNOWN_FIELD = re.compile(r'The value "([^"]+)" is invalid for field "fields"')
    SNAPSHOT_LOCKED = '1638555'     # "has not expired or is locked": a FlexClone uses it
    # GET /api/snapmirror/policies/{uuid}, "Introduced In: 9.6" (ontap-restapi-9131
    # get-snapmirror-policies-): `type` (async, sync; continuous in NetApp's 9.19 client) and
    # `retention`, the rules [{label, count}] that select and keep labelled snapshots on the
    # destination (ontap-restapi-96 post-snapmirror-policies). copy_all_source_snapshots (a mirror
    # of every snapshot; the CLI's async-mirror with the all_source_snapshots rule: netapp_ontap
    # resources/snapmirror_policy.py) is in ontap-restapi-9101, not in -98: a 9.8 or 9.9 cluster
    # refuses the field and Ontap.read drops it, and the rule itself is looked for in `retention`
    # (that older releases list it there is unconfirmed). `count` is a string in NetApp's client
    # (netapp_ontap models/snapmirror_policy_rule.py), a number in the reference's examples.
    SNAPMIRROR_POLICY_FIELDS = 'name,type,retention,copy_all_source_snapshots'
    UUID_SEGMENT = re.compile(r'/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?=/|$)')

    def __init__(self, cluster, timeouts, dry_run=False, ca=None):
        self.host = cluster.host
        self.section = cluster.section
        self.user = cluster.user
        self.verify = Http.trusted(cluster.verify, ca)
        if self.verify is False:
            log.warning('ONTAP %s: verify = false in [%s]: its certificate is not checked, so anyone on the way can '
                        'pose as the cluster and read the credentials of %s', cluster.host, cluster.section,
                        cluster.user)
        self.cert = (cluster.cert, cluster.key) if cluster.cert else None
        self.timeouts = timeouts
        self.dry_run = dry_run
        self.where = f'ONTAP {cluster.host}'
        self.pool = Http.pool(f'https://{cluster.host}', self.verify, self.cert, timeouts, self.where, OntapError)
        # Sent with every request: no ~/.netrc, no cookie, nothing the environment adds. The
        # encodings requests asks for, so that ONTAP answers as it did (urllib3 decodes them).
        self.headers = {'Accept': 'application/json', 'Accept-Encoding': requests.utils.default_headers()['Accept-Encoding']}
        if not self.cert:
            # Basic auth in UTF-8 (requests would encode it as latin-1); ONTAP passwords may be any UTF-8.
            token = base64.b64encode(f'{cluster.user}:{cluster.password}'.encode()).decode()
            self.headers['Authorization'] = 'Basic ' + token
        # (resource, field) this cluster's release said it does not know, asked for no more in
        # this run: a field is the resource's own (9.8 knows a file's size, not a snapshot's).
        # Threads that poll jobs add to it too: a race costs at most one more refused GET each.
        self.unknown_fields = set()

    def send(self, method, path, params=None, body=None, what=None, file_data=None, accept=None):
        """One call: (HTTP status, JSON body). Raises OntapError with ONTAP's message and code.
        `file_data` sends a file's data as a multipart/form-data body instead of JSON; `accept`
        asks for another answer than JSON (a file's data): then a success's body is the response
        (urllib3's, its body read: .data)."""
        what = what or f'{method} {path}'
        if self.dry_run and method != 'GET':
            print(Output.printable(f'would {what} (ONTAP {self.host})'))
            return 200, {}
        if method != 'GET':
            STOP.check_change(f'ONTAP {self.host}: {what}')
        try:
            response = self.exchange(method, Http.target(path, params), *self.encode(method, body, file_data, accept))
        except urllib3.exceptions.HTTPError as exc:
            message = f'ONTAP {self.host}: {what}: {Http.describe_connection_error(exc)}'
            if method != 'GET' and Http.may_have_arrived(exc):
                raise OutcomeUnknown(f'{message} after the request went out', what, where=self.where) from exc
            raise OntapError(message) from exc
        status = response.status
        if status in Http.REDIRECTS and 'Location' in response.headers:
            raise OntapError(f'ONTAP {self.host}: {what}: {Http.redirect_refused(response)}', status=status)
        if status == 401:
            how = 'the client certificate' if self.cert else 'user and pass'
            raise OntapError(f'ONTAP {self.host}: authentication failed for user {self.user} '
                             f'(check {how} in [{self.section}])', status=401)
        data = self.json_object(response.data)
        if status >= 400:
            error = data.get('error') or {}
            message = error.get('message') or response.reason or f'HTTP {status}'
            if method != 'GET' and status >= 500 and not error:
                # No ONTAP error envelope: a proxy or a dying node answered, not ONTAP's refusal.
                raise OutcomeUnknown(f'ONTAP {self.host}: {what}: HTTP {status} {message}', what, where=self.where)
            raise OntapError(f'ONTAP {self.host}: {what}: {message}', status=status, code=error.get('code'))
        return status, response if accept else data

    def encode(self, method, body, file_data, accept):
        """(body bytes, headers) of a request: a JSON body as requests sends json= (json.dumps,
        UTF-8; its models.py, prepare_body), or a file's data as a form (Http.form_data); none,
        with Content-Length 0 on a call other than a GET, as requests sends it (prepare_content_length)."""
        headers = dict(self.headers, Accept=accept) if accept else self.headers
        if file_data is not None:
            payload, content_type = Http.form_data('data', file_data)
        elif body is not None:
            payload, content_type = json.dumps(body).encode(), 'application/json'
        else:
            return None, headers if method == 'GET' else dict(headers, **{'Content-Length': '0'})
        return payload, dict(headers, **{'Content-Type': content_type})

    def exchange(self, method, target, payload, headers):
        """One request on the pool, its answer's body read. Its body is read here, after urlopen,
        as requests reads it: a body cut short is an error of its own, never asked again by the
        retries (urllib3 retries what fails inside urlopen: connectionpool.py)."""
        started = time.monotonic()
        response = self.pool.urlopen(method, target, body=payload, headers=headers, redirect=False,
                                     assert_same_host=False, preload_content=False)
        try:
            response.read(cache_content=True)     # kept as response.data
        finally:
            response.release_conn()
        Http.log_request('ONTAP', method, target.partition('?')[0], response.status, time.monotonic() - started)
        return response

    def request(self, method, path, params=None, body=None, what=None):
        """One call; its JSON body. A GET asks only for the fields the cluster's release knows."""
        if method == 'GET' and (params or {}).get('fields'):
            return self.read(path, params, what)
        return self.send(method, path, params, body, what)[1]

    def read(self, path, params, what):
        """A GET with `fields`, less those the cluster's release does not know: ONTAP names such a
        field in its refusal, so it is dropped and remembered for the rest of the run. A current
        release knows every field asked for (no extra request); an older one costs one per field."""
        resource = self.api_resource(path)
        while True:
            fields = [name for name in params['fields'].split(',') if (resource, name) not in self.unknown_fields]
            try:
                return self.send('GET', path, dict(params, fields=','.join(fields)), what=what)[1]
            except OntapError as exc:
                field = self.unknown_field(exc)
                if field not in fields:
                    raise
                log.debug('ONTAP %s: its release does not know the field %s of %s; asking without it', self.host,
                          field, resource)
                self.unknown_fields.add((resource, field))

    def records(self, path, params, what):
        """Every record of a collection GET, following ONTAP's `next` links verbatim."""
        data = self.request('GET', path, params=params, what=what)
        records = list(data.get('records', []))
        while data.get('_links', {}).get('next', {}).get('href'):
            data = self.request('GET', data['_links']['next']['href'], what=what)
            records.extend(data.get('records', []))
        return records

    def write(self, method, path, body=None, params=None, what=None):
        """A mutating call that may be a job. With return_timeout ONTAP answers 200/201 once
        the job succeeded (a failed one is an error answer); only a 202 needs polling."""
        what = what or f'{method} {path}'
        params = dict(params or {}, return_timeout=self.return_timeout(self.timeouts))
        status, data = self.send(method, path, params=params, body=body, what=what)
        if status == 202:
            # one `job`, or (a query-based call) one per record in `jobs`
            jobs = [data['job']] if 'job' in data else data.get('jobs')
            if jobs is None or not all(isinstance(job, dict) and job.get('uuid') for job in jobs):
                raise OutcomeUnknown(f'ONTAP {self.host}: {what}: accepted, but the answer names no job to '
                                     'follow', what, where=self.where)
            for job in jobs:
                self.wait_for_job(job['uuid'], what)
        return data

    def wait_for_job(self, uuid, what, bound=None):
        """Poll /api/cluster/jobs/<uuid> until success or failure, up to `bound` seconds (the
        job timeout). A job still running then, or one that can no longer be read, has an
        unknown outcome: ONTAP jobs cannot be cancelled, so it may still change things."""
        bound = bound or self.timeouts.job
        job = {}

        def finished():
            try:
                job.update(self.request('GET', f'/api/cluster/jobs/{uuid}',
                                        params={'fields': 'state,message,code,error'}, what=what))
            except OntapError as exc:
                raise OutcomeUnknown(f'{exc} (following job {uuid})', what, uuid, self.where) from exc
            if job.get('state') in ('failure', 'cancelled', 'expired'):
                raise OntapError(f'ONTAP {self.host}: {what}: {self.job_message(job)}', code=job.get('code'))
            return job.get('state') == 'success'

        Http.poll_until(finished, bound, self.JOB_POLL_MAX, lambda: OutcomeUnknown(
            f'ONTAP {self.host}: {what}: job {uuid} still {job.get("state")} after {bound:g} s (job_timeout)',
            what, uuid, self.where))

    def find_volume(self, export, svm=None, storage='the storage'):
        """The volume mounted at `export`: by the original's name rule, then by junction path."""
        what = f'look up the volume behind {storage} (export {export})'
        export = Ontap.junction_path(export)
        params = {'fields': Volume.FIELDS}
        if svm:
            params['svm.name'] = svm
        by_name = self.records('/api/storage/volumes', dict(params, name=Ontap.volume_name_for_export(export)), what)
        matches = [r for r in by_name if (r.get('nas') or {}).get('path') == export]
        if not matches:
            matches = self.records('/api/storage/volumes', dict(params, **{'nas.path': export}), what)
        if not matches:
            hint = '' if svm else f'; set svm in [{self.section}] if it lives in another SVM'
            raise NotFound(f'ONTAP {self.host}: no volume{" in SVM " + svm if svm else ""} is mounted at {export} '
                           f'(export of {storage}){hint}')
        if len(matches) > 1:
            names = ', '.join(f'{m["svm"]["name"]}:{m["name"]}' for m in matches)
            raise Failure(f'ONTAP {self.host}: several volumes are mounted at {export} ({names}): '
                          f'set svm in [{self.section}]')
        return Volume.from_record(self, matches[0])

    def volume_by_name(self, name, svm):
        """The volume with this name in this SVM, or None."""
        records = self.records('/api/storage/volumes', {'name': name, 'svm.name': svm, 'fields': Volume.FIELDS},
                               f'look up volume {name}')
        return Volume.from_record(self, records[0]) if records else None

    def cluster(self):
        """The cluster's name and release: {'name', 'version': {'full', 'generation', 'major', 'minor'}}."""
        return self.request('GET', '/api/cluster', params={'fields': 'name,version'}, what='read the cluster release')

    def count(self, path, what):
        """The records a collection holds, counted without reading them (`return_records=false`,
        reference §1): a read that proves the account's REST role reaches `path`."""
        return self.request('GET', path, params={'return_records': 'false'}, what=what).get('num_records')

    def licenses(self, names):
        """{package: state} of the licence packages among `names` that are installed. Only installed
        packages are listed (GET /api/cluster/licensing/licenses, 9.6+; netapp_ontap
        resources/license_package.py): one that is missing is not licensed."""
        records = self.records('/api/cluster/licensing/licenses', {'name': '|'.join(names), 'fields': 'name,state'},
                               'read the licences')
        return {record['name']: record.get('state') for record in records}

    def snapmirror_policy(self, uuid, name):
        """A SnapMirror policy by uuid. It lives on the relationship's destination cluster: this one
        has it only for a relationship within the cluster (else 404, as for an unknown volume uuid, ref §4)."""
        return self.request('GET', f'/api/snapmirror/policies/{uuid}', params={'fields': self.SNAPMIRROR_POLICY_FIELDS},
                            what=f'read SnapMirror policy {name}')

    def settle(self, unknown, call, landed=None):
        """Find out what became of a change whose outcome is unknown (an OutcomeUnknown): follow
        its job for another job_timeout or, where the answer was lost, every job of the same
        `call` still running; then landed() reads the state back: True done, False failed (raise
        OntapError), None no way to tell (raise OutcomeUnknown again)."""
        if unknown.job:
            self.wait_for_job(unknown.job, unknown.what)
            return
        try:
            self.follow_running_jobs(call, unknown.what)
            found = landed() if landed else None
        except OntapError as exc:
            # A refused or failed look-up tells nothing of the change: it stays unknown.
            raise OutcomeUnknown(f'{unknown}; finding out what it did failed: {exc}', unknown.what,
                                 where=self.where) from exc
        if found is None:
            raise OutcomeUnknown(f'{unknown}; no such job runs any more, but what it did cannot be read back',
                                 unknown.what, where=self.where)
        if not found:
            raise OntapError(f'{unknown}; it did not happen')

    def follow_running_jobs(self, description, what):
        """Follow every job of this kind still queued, running or paused until it ends, so that the
        job of a call whose answer was lost has ended too. A job's description is its call,
        `METHOD /api/path` (ref §2's example; unconfirmed for each call: then none is found)."""
        running = self.records('/api/cluster/jobs', {'description': description, 'state': 'queued|running|paused',
                                                     'fields': 'uuid'}, f'{what}: look for its job')
        for job in running:
            try:
                self.wait_for_job(job['uuid'], what)
            except OntapError:
                pass    # another call's job, or ours that failed: the state read back next tells

    @staticmethod
    def return_timeout(timeouts):
        """How long ONTAP may hold a job's answer (it allows up to 120 s): never as long as our
        own read timeout, or the answer to a call that did change something would be lost."""
        return int(max(1, min(120, timeouts.job, timeouts.read - 5)))

    @staticmethod
    def api_resource(path):
        """The kind of resource a REST path (or a `next` link) is, for the fields it knows:
        `/api/storage/volumes/*/snapshots`, `/api/storage/volumes/*/files` (whatever the file),
        `/api/cluster/jobs/*`."""
        path = urllib.parse.urlsplit(path).path
        path = Ontap.UUID_SEGMENT.sub('/*', path)
        return path.split('/files/', 1)[0] + '/files' if '/files/' in path else path

    @staticmethod
    def json_object(content):
        """The JSON object a body (bytes) holds, or {} (a 401 or a proxy's error page may not be JSON)."""
        try:
            data = json.loads(content) if content else {}
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def unknown_field(exc):
        """The field of `fields` that an OntapError says the cluster's release does not know, or None."""
        invalid = exc.status == 400 and str(exc.code) == Ontap.INVALID_VALUE
        found = Ontap.UNKNOWN_FIELD.search(str(exc)) if invalid else None
        return found[1] if found else None

    @staticmethod
    def missing_file(exc):
        """Whether a files-API OntapError says that the path does not exist: error 6684674 ("no such
        file", reference §10), or HTTP 404 (its status for 6684674 is not documented). Any other
        error is a refusal, to be passed on with ONTAP's message, never read as "not there"."""
        return exc.status == 404 or str(exc.code) == Ontap.FILE_NOT_FOUND

    @staticmethod
    def job_message(job):
        """ONTAP's text for a failed job (9.9.1+ also fills `error`: netapp_ontap 9.9.1.0's JobSchema)."""
        return job.get('message') or (job.get('error') or {}).get('message') or 'job failed'

    @staticmethod
    def parse_time(text):
        """An ONTAP time, ISO 8601 with an offset (`Z`, `+01:00`, `+0100`), as an aware datetime;
        None if it is missing, malformed or without an offset (then it cannot be placed in time)."""
        try:
            moment = datetime.datetime.fromisoformat(text)
        except (TypeError, ValueError):
            return None
        return moment if moment.tzinfo else None

    @staticmethod
    def junction_path(export):
        """The ONTAP junction path an NFS export names: `/vol/` and `/vol` are the same."""
        return export.rstrip('/') or '/'

    @staticmethod
    def volume_name_for_export(export):
        """The original's rule: the volume is named like the export, without slashes."""
        return export.replace('/', '')

    @staticmethod
    def is_literal_query(value):
        """Whether ONTAP reads `value` as a query filter that matches only itself: no wildcard,
        OR, list, negation, comparison or range operator, no quoting, not the word null."""
        return bool(value) and not re.search(r'[*|,!<>{}"]|\.\.', value) and value.lower() != 'null'


@dataclasses.dataclass(frozen=True)
class Volume:
    """One ONTAP volume (behind a PVE storage, or a FlexClone), and the handle for what the tool
    asks of it: its files (the files API, 9.8+), snapshots and clones. `ontap` is its cluster."""
    ontap: Ontap = dataclasses.field(compare=False, repr=False)
    uuid: str
    name: str
    svm: str
    junction: str = None
    is_flexclone: bool = False
    parent_volume: str = None
    parent_snapshot: str = None

    FIELDS = ('uuid,name,svm.name,nas.path,clone.is_flexclone,clone.parent_volume.name,'
              'clone.parent_snapshot.name')
    # snapshot_policy.name, space.snapshot.*: 9.6 (ontap-restapi-96, get-storage-volumes);
    # space.snapshot.autodelete_enabled: named in NetApp's 9.8 ONTAPI-to-REST map (ontap-restmap-98,
    # snapshot-autodelete-list-info), still served by 9.19 though deprecated for autodelete.enabled.
    HEALTH_FIELDS = ('state,type,style,space.size,space.available,space.snapshot.used,'
                     'space.snapshot.reserve_percent,space.snapshot.autodelete_enabled,snapshot_count,'
                     'snapshot_policy.name')
    # SnapMirror as the source cluster sees it. A relationship is kept on its destination cluster:
    # GET /api/snapmirror/relationships lists those whose destination is here, and, with
    # list_destinations_only=true, those whose source is here ("Retrieving the list of SnapMirror
    # destinations on source. This must be run on the cluster containing the source endpoint":
    # ontap-restapi-96 and -9161, get-snapmirror-relationships; the parameter and the source.path
    # filter are in the 9.6 reference, so in every release this tool supports). `policy` (name,
    # uuid) is in the relationship model since 9.6 (same pages); whether a source's answer fills
    # it is unconfirmed, so a record without it is read as "not told here".
    SNAPMIRROR_RELATIONSHIP_FIELDS = 'destination.path,policy.name,policy.uuid'
    READ_MAX = WRITE_MAX = 2**20    # the files API reads and writes 1 MB per call (netapp_ontap resources/file_info.py)

    @classmethod
    def from_record(cls, ontap, record):
        clone = record.get('clone') or {}
        return cls(ontap, uuid=record['uuid'], name=record['name'], svm=(record.get('svm') or {}).get('name'),
                   junction=(record.get('nas') or {}).get('path'),
                   is_flexclone=bool(clone.get('is_flexclone')),
                   parent_volume=(clone.get('parent_volume') or {}).get('name'),
                   parent_snapshot=(clone.get('parent_snapshot') or {}).get('name'))

    def files_url(self, path):
        """The files-API path of a volume-relative path as one segment (reference §10): every
        `/`, `.`, `:` and `+` is percent-encoded, so no `..` can ever be resolved. On the wire each
        `.` has always gone out as itself (requests decoded the %2E; Http.target does so still): the
        path stays one segment all the same, every `/` in it encoded."""
        encoded = urllib.parse.quote(path, safe='').replace('.', '%2E')
        return f'/api/storage/volumes/{self.uuid}/files/{encoded}'

    def details(self):
        fields = ('uuid,name,svm.name,state,type,style,size,space.size,space.used,space.available,'
                  'space.percent_used,space.snapshot.used,snapshot_count,nas.path,nas.export_policy.name,'
                  'clone.is_flexclone,clone.parent_volume.name,clone.parent_snapshot.name,create_time,comment')
        return self.ontap.request('GET', f'/api/storage/volumes/{self.uuid}', params={'fields': fields},
                                  what=f'read volume {self.name}')

    # A node at its maximum split load "temporarily stops accepting requests to create FlexClone
    # files ... and issues an EBUSY error message" until the load falls: "wait ... before trying
    # the create request again" (docs.netapp.com, ontap, create-flexclone-file-flexclone-lun-task);
    # the same during an HA takeover or giveback (ha-pair-flexclone-files-luns-concept). How the
    # REST API says so is undocumented: most likely a failed job, 13565952 "Clone start failed",
    # the reason in its text (unconfirmed). Such a refusal is asked again, backing off from one
    # second to BUSY_STEP, for up to BUSY_BOUND seconds; any other stays a failure at once.
    CLONE_START_FAILED = '13565952'
    BUSY = re.compile(r'split.?load|EBUSY|\bbusy\b|takeover|giveback', re.IGNORECASE)
    BUSY_BOUND = 120.0
    BUSY_FIRST, BUSY_STEP = 1.0, 15.0

    def clone_file(self, source, destination, overwrite=False):
        deadline, delay = time.monotonic() + Volume.BUSY_BOUND, Volume.BUSY_FIRST
        while True:
            try:
                self.ontap.write('POST', '/api/storage/file/clone', body={
                    'volume': {'uuid': self.uuid, 'name': self.name},
                    'source_path': source, 'destination_path': destination, 'overwrite_destination': overwrite},
                    what=f'file-clone {source} to {destination}')
                return
            except OntapError as exc:
                if not Volume.busy(exc) or STOP.stopping or time.monotonic() + delay > deadline:
                    raise
                log.info('ONTAP %s: file-clone %s refused for now (%s): asking again in %g s', self.ontap.host,
                         destination, exc.code, delay)
            time.sleep(delay)
            delay = min(2 * delay, Volume.BUSY_STEP)

    @staticmethod
    def busy(exc):
        """Whether ONTAP refused a file clone for now: its node at the split-load limit, or in an HA
        takeover or giveback (see clone_file)."""
        message = str(exc)
        return bool(Volume.BUSY.search(message)) and (str(exc.code) == Volume.CLONE_START_FAILED
                                                      or 'split' in message.lower())

    def list_dir(self, path):
        """Name and size of the files in a volume directory; [] if it does not exist."""
        try:
            records = self.ontap.records(self.files_url(path), {'fields': 'name,type,size'},
                                         f'list {path} in volume {self.name}')
        except OntapError as exc:
            if Ontap.missing_file(exc):
                return []
            raise
        return [r for r in records if r.get('type') == 'file']

    def file_exists(self, path):
        """Whether the file exists; an OntapError with ONTAP's message if ONTAP refuses to say."""
        try:
            self.ontap.request('GET', self.files_url(path), params={'return_metadata': 'true', 'fields': 'type'},
                               what=f'look up {path} in volume {self.name}')
        except OntapError as exc:
            if Ontap.missing_file(exc):
                return False
            raise
        return True

    def delete_file(self, path):
        """Delete a file (the reference lists 200 and 202 with a job as answers: ref §13); True if it was there."""
        try:
            self.ontap.write('DELETE', self.files_url(path), what=f'delete {path} in volume {self.name}')
        except OntapError as exc:
            if Ontap.missing_file(exc):
                return False
            raise
        return True

    def change_file(self, method, path, change, there):
        """change() a file of the volume; one whose answer was lost is read back: is the file `there`?"""
        try:
            change()
        except OutcomeUnknown as exc:
            self.ontap.settle(exc, f'{method} {self.files_url(path)}', lambda: self.file_exists(path) == there)

    def snapshots(self, name=Names.STORAGE_SNAPSHOT_PREFIX + '*'):
        """The volume's snapshots matching `name` (a wildcard filter), oldest first."""
        # A volume holds at most 1023 snapshots: one page, unless ONTAP's time budget cuts it.
        records = self.ontap.records(f'/api/storage/volumes/{self.uuid}/snapshots',
                                     {'name': name, 'fields': 'name,create_time,size,comment,snapmirror_label,owners',
                                      'max_records': 1023},
                                     f'list snapshots of volume {self.name}')
        return Volume.by_creation(records)

    def find_snapshot(self, name):
        """The snapshot record with exactly this name, or None: the one "does it exist" of the tool
        (a name is a wildcard filter to ONTAP, so only an exact match counts)."""
        return next((record for record in self.snapshots(name) if record['name'] == name), None)

    def has_snapshot(self, name):
        return self.find_snapshot(name) is not None

    def snapshot(self, name):
        """The snapshot record with exactly this name; a NotFound naming volume and snapshot if absent."""
        found = self.find_snapshot(name)
        if found is None:
            raise NotFound(f'ONTAP {self.ontap.host}: volume {self.name} has no snapshot {name}')
        return found

    def create_snapshot(self, name, comment, label=None):
        """A volume snapshot; `label` is its snapmirror_label (9.7+, reference §13), which vault
        policies select snapshots by. Returns its uuid if ONTAP's answer holds the new record
        (`return_records`, documented for this POST: ontap-restapi post-storage-volumes-snapshots),
        else None."""
        body = {'name': name, 'comment': comment, **({'snapmirror_label': label} if label else {})}
        data = self.ontap.write('POST', f'/api/storage/volumes/{self.uuid}/snapshots', body=body,
                                params={'return_records': 'true'}, what=f'create snapshot {name} of volume {self.name}')
        return next((record.get('uuid') for record in data.get('records') or () if record.get('name') == name), None)

    def delete_snapshot(self, snapshot):
        self.ontap.write('DELETE', f'/api/storage/volumes/{self.uuid}/snapshots/{snapshot["uuid"]}',
                         what=f'delete snapshot {snapshot["name"]} of volume {self.name}')

    def delete_snapshot_when_free(self, snapshot, bound):
        """Delete a snapshot that ONTAP may keep busy for a moment ("has not expired or is locked",
        1638555: a file clone from it may hold it a while after its job ended, as the project's
        issue says; unconfirmed in NetApp's documentation): asked again, backing off, for up to
        `bound` seconds. True once deleted, False if ONTAP still refuses; any other error is raised."""
        def deleted():
            try:
                self.delete_snapshot(snapshot)
            except OntapError as exc:
                if str(exc.code) != Ontap.SNAPSHOT_LOCKED:
                    raise
                return False
            return True

        try:
            Http.poll_until(deleted, bound, Ontap.JOB_POLL_MAX, TimeoutError)
        except TimeoutError:
            return False
        return True

    def rename_snapshot(self, snapshot, name, comment):
        """Rename a snapshot and replace its comment (PATCH …/snapshots/{uuid}, reference §6). Whether
        ONTAP renames a busy snapshot is unconfirmed: a refusal is raised like any other."""
        self.ontap.write('PATCH', f'/api/storage/volumes/{self.uuid}/snapshots/{snapshot["uuid"]}',
                         body={'name': name, 'comment': comment},
                         what=f'rename snapshot {snapshot["name"]} of volume {self.name} to {name}')

    def comment_snapshot(self, snapshot, comment):
        """Replace a snapshot's comment (storage hold, release): PATCH …/snapshots/{uuid} with
        `comment`, "Introduced In: 9.6" (ontap-restapi-98 patch-storage-volumes-snapshots-). One whose
        answer was lost is read back: has the snapshot that comment now?"""
        path = f'/api/storage/volumes/{self.uuid}/snapshots/{snapshot["uuid"]}'
        try:
            self.ontap.write('PATCH', path, body={'comment': comment},
                             what=f'set the comment of snapshot {snapshot["name"]} of volume {self.name} to "{comment}"')
        except OutcomeUnknown as exc:
            self.ontap.settle(exc, f'PATCH {path}',
                              lambda: ((self.find_snapshot(snapshot['name']) or {}).get('comment') or '') == comment)

    def delete_snapshot_named(self, name):
        """Delete the snapshot called `name` in one call: a DELETE on the volume's snapshot
        collection filtered by that name (ONTAP takes a query-based DELETE on every collection).
        A name holding a query operator could match others, so it is looked up and deleted by
        UUID instead, as in a dry run."""
        if self.ontap.dry_run or not Ontap.is_literal_query(name):
            self.delete_snapshot(self.snapshot(name))
            return
        data = self.ontap.write('DELETE', f'/api/storage/volumes/{self.uuid}/snapshots', params={'name': name},
                                what=f'delete snapshot {name} of volume {self.name}')
        matched = data.get('num_records', len(data['jobs']) if isinstance(data.get('jobs'), list) else None)
        if matched == 0:
            raise NotFound(f'ONTAP {self.ontap.host}: volume {self.name} has no snapshot {name}')
        # An answer that does not say what it matched (one `job`, or nothing): read the state back.
        if matched is None and self.has_snapshot(name):
            raise OntapError(f'ONTAP {self.ontap.host}: delete snapshot {name} of volume {self.name}: ONTAP answered, but '
                             'the snapshot is still there')

    def restore(self, snapshot_name):
        self.ontap.write('PATCH', f'/api/storage/volumes/{self.uuid}', body={},
                         params={'restore_to.snapshot.name': snapshot_name},
                         what=f'restore volume {self.name} to snapshot {snapshot_name}')

    def create_flexclone(self, snapshot_name, name, junction):
        self.ontap.write('POST', '/api/storage/volumes', body={
            'name': name, 'svm': {'name': self.svm}, 'type': 'rw', 'nas': {'path': junction},
            'clone': {'is_flexclone': True, 'parent_volume': {'name': self.name},
                      'parent_snapshot': {'name': snapshot_name}}},
            what=f'create FlexClone {name} of {self.name} from snapshot {snapshot_name}')

    def delete(self):
        """Unmount (the conservative path, reference §9), then delete the volume."""
        self.ontap.write('PATCH', f'/api/storage/volumes/{self.uuid}', body={'nas': {'path': ''}},
                         what=f'unmount volume {self.name}')
        self.ontap.write('DELETE', f'/api/storage/volumes/{self.uuid}', what=f'delete volume {self.name}')

    def health(self):
        """The volume's state, type, style, space, snapshot count, autodelete and snapshot policy."""
        return self.ontap.request('GET', f'/api/storage/volumes/{self.uuid}', params={'fields': self.HEALTH_FIELDS},
                                  what=f'read volume {self.name}')

    def snapmirror_destinations(self):
        """The SnapMirror relationships whose source is this volume, as this (the source) cluster lists them."""
        params = {'list_destinations_only': 'true', 'source.path': f'{self.svm}:{self.name}',
                  'fields': self.SNAPMIRROR_RELATIONSHIP_FIELDS}
        return self.ontap.records('/api/snapmirror/relationships', params, f'list the SnapMirror destinations of {self.name}')

    def write_file(self, path, data, over=False):
        """Create the file `path` holding `data` (bytes), or with `over` write it over the file
        there: the files API's POST, 9.8+ (ontap-restapi post-storage-volumes-files-, "Creates a
        new file with the supplied data"), with the data as the multipart/form-data field `data`,
        as NetApp's client sends it (netapp_ontap resources/file_info.py); a MB per call, the rest
        with `overwrite` from its `byte_offset` (by default -1: the end). Written over, a file
        keeps what lay beyond the new data: nothing makes it shorter. An answer with a job is followed."""
        what = f'write {path} in volume {self.name}'
        for offset in range(0, max(len(data), 1), self.WRITE_MAX):
            params = {'overwrite': 'true', 'byte_offset': offset} if over or offset else None
            _, answer = self.ontap.send('POST', self.files_url(path), params=params, what=what,
                                        file_data=data[offset:offset + self.WRITE_MAX])
            if (answer.get('job') or {}).get('uuid'):
                self.ontap.wait_for_job(answer['job']['uuid'], what)

    def holds(self, path, data):
        """Whether the file `path` begins with `data` (a write whose answer was lost, read back)."""
        size = self.file_size(path)
        return size is not None and size >= len(data) and self.read_whole(path, len(data)) == data

    def make_directory(self, path):
        """Create the directory `path` (files API POST with type directory, 9.8+: reference §10)."""
        self.ontap.write('POST', self.files_url(path), body={'type': 'directory', 'unix_permissions': 755},
                         what=f'create the directory {path} in volume {self.name}')

    def ensure_directory(self, path):
        """Create the directory `path` unless it exists. A refusal is read back (a directory there
        now is all that was wanted); a lost answer is settled as every change is (change_file)."""
        if self.file_exists(path):
            return
        try:
            self.change_file('POST', path, lambda: self.make_directory(path), True)
        except OntapError:
            if self.ontap.dry_run or not self.file_exists(path):
                raise

    def files_in(self, path):
        """The names of the files in a volume directory, or None if there is no such directory."""
        try:
            records = self.ontap.records(self.files_url(path), {'fields': 'name,type'},
                                         f'list {path} in volume {self.name}')
        except OntapError as exc:
            if Ontap.missing_file(exc):
                return None
            raise
        return [r['name'] for r in records if r.get('type') == 'file']

    def file_size(self, path):
        """The size of a file in the volume, or None if there is none (6684674, reference §10)."""
        try:
            data = self.ontap.request('GET', self.files_url(path), params={'return_metadata': 'true', 'fields': 'size'},
                                      what=f'read {path} in volume {self.name}')
        except OntapError as exc:
            if Ontap.missing_file(exc):
                return None
            raise
        # one record in `records` (reference §10), or the record itself
        return (data.get('records') or [data])[0].get('size')

    def read_whole(self, path, size):
        """The first `size` bytes of a file, a MB per call (read_file)."""
        return b''.join(self.read_file(path, min(self.READ_MAX, size - offset), offset)
                        for offset in range(0, size, self.READ_MAX))

    def read_file(self, path, size, offset=0):
        """`size` bytes of a file from `offset`: the files API's GET with byte_offset and length, answered
        as multipart/form-data (netapp_ontap resources/file_info.py, "Reading a file", 9.8+ like the
        POST that writes one). The file is the part with a filename, else the first part, as
        NetApp's client reads it (netapp_ontap resource.py, _parse_multipart_response); the parts'
        names are undocumented. An answer in another type is taken as the data itself (unconfirmed)."""
        if size > self.READ_MAX:
            raise Failure(f'ONTAP {self.ontap.host}: {path} in volume {self.name} holds {size} bytes, more than the '
                          f'{self.READ_MAX} the files API reads at once')
        if not size:
            return b''
        _, response = self.ontap.send('GET', self.files_url(path), params={'byte_offset': offset, 'length': size},
                                      what=f'read {path} in volume {self.name}', accept='multipart/form-data')
        content_type = response.headers.get('Content-Type', '')
        if not content_type.lower().startswith('multipart/'):
            return response.data
        # Imported here, as the HTTP stack is (Http.load_libraries): a tab completion loads none of it.
        import email.parser
        import email.policy
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f'Content-Type: {content_type}\r\n\r\n'.encode() + response.data)
        parts = list(message.iter_parts())
        part = next((p for p in parts if p.get_filename()), parts[0] if parts else None)
        if part is None:
            raise OntapError(f'ONTAP {self.ontap.host}: read {path} in volume {self.name}: the answer holds no data')
        return part.get_payload(decode=True) or b''

    def qcow2_backing(self, path):
        """The backing file a qcow2 file in the volume names (Qcow2.backing), or None (qcow2_header)."""
        return self.qcow2_header(path)[0]

    def qcow2_header(self, path, size=None):
        """(the backing file a qcow2 file in the volume names or None, its virtual size or None for a
        file that is no qcow2): its header read through the files API, and the backing file's name
        where that lies beyond the first read. `size`, the file's length where a listing gave it,
        keeps the read within the file; else whether ONTAP answers a read past the end with fewer
        bytes or refuses it is unconfirmed: a refused one is read again no further than the file's size."""
        if size is not None:
            head = self.read_file(path, min(size, Qcow2.HEADER_READ))
        else:
            try:
                head = self.read_file(path, Qcow2.HEADER_READ)
            except OntapError as exc:
                size = None if Ontap.missing_file(exc) else self.file_size(path)
                if size is None or size >= Qcow2.HEADER_READ:
                    raise
                head = self.read_file(path, size)
        found = Qcow2.backing(head)
        if isinstance(found, tuple):
            offset, length = found
            found = self.read_file(path, min(length, 4096), offset).decode('utf-8', 'replace')
        return found, Qcow2.virtual_size(head)

    def first_image(self):
        """The smallest disk image of the first VM directory under images/ that holds one, or None."""
        try:
            folders = self.ontap.records(self.files_url('images'), {'fields': 'name,type'},
                                         f'list images in volume {self.name}')
        except OntapError as exc:
            if Ontap.missing_file(exc):
                return None
            raise
        for folder in sorted(r['name'] for r in folders if r.get('type') == 'directory' and r['name'].isdigit()):
            images = [(r.get('size') or 0, f'images/{folder}/{r["name"]}') for r in
                      self.list_dir(f'images/{folder}') if Guest.IMAGE_VOLNAME.match(f'{folder}/{r["name"]}')]
            if images:
                return min(images)[1]
        return None

    def flexclones(self):
        """The FlexClone volumes of `parent`, by the snapshot each is made from."""
        records = self.ontap.records('/api/storage/volumes', {
            'clone.parent_volume.name': self.name, 'svm.name': self.svm, 'fields': self.FIELDS},
            f'list the FlexClones of {self.name}')
        clones = {}
        for record in records:
            volume = Volume.from_record(self.ontap, record)
            clones.setdefault(volume.parent_snapshot, []).append(volume)
        return clones

    @staticmethod
    def by_creation(snapshots):
        """Snapshot records oldest first by create_time read as a time, never as text: ONTAP gives
        it in the cluster's time zone, whose offset changes with DST (reference §13), so an older
        snapshot's text may sort later. Records without a usable time come first; a tie goes by name."""
        unknown = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        return sorted(snapshots, key=lambda r: (Ontap.parse_time(r.get('create_time')) or unknown, r['name']))

    @staticmethod
    def newest_snapshot(snapshots, label):
        """The newest of these snapshot records (oldest first) with this snapmirror label (or none)."""
        return next((s for s in reversed(snapshots) if s.get('snapmirror_label') == label), None)

    @staticmethod
    def younger_than(snapshot, seconds, now=None):
        """Whether a snapshot record was created less than `seconds` ago (a time it lacks: no)."""
        created = Ontap.parse_time(snapshot.get('create_time'))
        now = now or datetime.datetime.now(datetime.UTC)
        return created is not None and (now - created).total_seconds() < seconds

# ---- 6. Proxmox ------------------------------------------------------------------------------
# PveSession: what proxmoxer sends through, one urllib3 pool per run. Pve: one login per run, our
# own task poller, the API calls as its methods. Node: this node (its programs, the guest config
# files on pmxcfs, its NFS mounts).

class PveSession:
    """The session proxmoxer sends its API calls through (its ProxmoxResource calls
    request(method, url, data=, params=) and reads status_code, reason, content and text: 1.2.0
    and 2.x alike), made of one urllib3 pool to proxmox_host for all of a run's threads (Http.pool),
    as ONTAP's calls go: requests' own work per call, preparing it and merging settings, was
    half of a call's CPU time. It sends what requests sent (its default headers; params and a form
    body encoded as requests encodes them, models.py _encode_params) with the credentials of
    the login: the ticket's cookie on every call and its CSRF token on each that changes something
    (pve-api.md §1), or the API token (PVEAPIToken=USER@REALM!TOKENID=SECRET, pve-docs pveum.adoc);
    a redirect is refused, never followed."""

    @dataclasses.dataclass(frozen=True)
    class Answer:
        status_code: int
        reason: str
        content: bytes
        headers: dict

        @property
        def text(self):
            return self.content.decode('utf-8', 'replace')

    class Redirected(Exception):
        """An answer redirecting the call elsewhere (`answer`), not followed."""

        def __init__(self, answer):
            super().__init__(Http.redirect_refused(answer))
            self.answer = answer

    def __init__(self, base, verify, timeouts, where):
        origin = urllib.parse.urlsplit(base)
        self.origin = f'{origin.scheme}://{origin.netloc}'
        self.pool = Http.pool(self.origin, verify, None, timeouts, where, ProxmoxError)
        self.headers = self.changing = dict(requests.utils.default_headers())

    def authorize(self, credentials, csrf_token=None):
        """Send `credentials` (headers) with every call from now on, and `csrf_token` with each that
        changes something."""
        self.headers = dict(self.headers, **credentials)
        self.changing = dict(self.headers, CSRFPreventionToken=csrf_token) if csrf_token else self.headers

    def request(self, method, url, data=None, params=None, **_):
        started = time.monotonic()
        headers = self.headers if method == 'GET' else self.changing
        body = Http.encode_params(data) if data else None
        if body is not None:
            headers = dict(headers, **{'Content-Type': 'application/x-www-form-urlencoded'})
        elif method != 'GET':
            headers = dict(headers, **{'Content-Length': '0'})
        target = Http.target(url[len(self.origin):], params)
        response = self.pool.urlopen(method, target, body=body, headers=headers, redirect=False,
                                     assert_same_host=False, preload_content=False)
        try:
            content = response.read()
        finally:
            response.release_conn()
        Http.log_request('PVE', method, target.partition('?')[0], response.status, time.monotonic() - started)
        answer = PveSession.Answer(response.status, response.reason, content, response.headers)
        if answer.status_code in Http.REDIRECTS and 'Location' in answer.headers:
            raise PveSession.Redirected(answer)
        return answer


class Pve:
    """One Proxmox API connection (logged in on first use): calls, errors, task waits.
    With dry_run, every call that would change something is printed instead of sent."""

    def __init__(self, config, timeouts, dry_run=False, ca=None):
        self.config = config
        self.host = config.host
        self.verify = Http.trusted(config.verify, ca)
        self.timeouts = timeouts
        self.dry_run = dry_run
        self._api = None
        # vm create's threads share the login: one thread logs in (again), the others wait for it.
        self._logging_in = threading.Lock()

    @property
    def api(self):
        with self._logging_in:
            if self._api is None:
                self._api = self._login()
            return self._api

    def _forget(self, api):
        """Log in again at the next call, unless another thread has done so since `api` was refused."""
        with self._logging_in:
            if self._api is api:
                self._api = None

    def _login(self):
        """A proxmoxer API over our own session: an API token goes with every call; with a password
        the tool gets the ticket itself (_ticket). proxmoxer's own login would read ~/.netrc and
        the environment and follow redirects with the password (a module-level requests.post)."""
        cfg = self.config
        if self.verify is False:
            log.warning('Proxmox %s: proxmox_verify = false: its certificate is not checked, so anyone on the way can '
                        'pose as PVE and read the credentials of %s', cfg.host, cfg.user)
        timeout = (self.timeouts.connect, self.timeouts.read)
        # A token's placeholder where the tool logs in itself: proxmoxer then sends nothing on its own.
        token = (cfg.token_name, cfg.token_value) if cfg.token_name else ('-', '-')
        api = proxmoxer.ProxmoxAPI(cfg.host, user=cfg.user, verify_ssl=self.verify, timeout=timeout,
                                   token_name=token[0], token_value=token[1])
        # proxmoxer 1.2.0 and 2.x both keep their session in _store['session'] and send every call
        # through it: ours (PveSession), which logs in first where there is no API token.
        base = api._store['base_url']
        session = PveSession(base, self.verify, self.timeouts, f'Proxmox {cfg.host}')
        if cfg.token_name:
            session.authorize({'Authorization': f'PVEAPIToken={cfg.user}!{cfg.token_name}={cfg.token_value}'})
        else:
            ticket, csrf_token = self._ticket(session, base)
            session.authorize({'Cookie': f'PVEAuthCookie={ticket}'}, csrf_token)
        api._store['session'].close()
        api._store['session'] = session
        return api

    def _ticket(self, session, base):
        """(ticket, CSRF token) of a password login (POST /access/ticket, pve-api.md §1), sent to
        proxmox_host alone: no redirect followed, no netrc, the proxy the environment names for it."""
        cfg = self.config
        try:
            response = session.request('POST', f'{base}/access/ticket',
                                       data={'username': cfg.user, 'password': cfg.password})
        except PveSession.Redirected as exc:
            raise ProxmoxError(f'Proxmox {cfg.host}: login: {exc}') from exc
        except urllib3.exceptions.HTTPError as exc:
            raise ProxmoxError(f'Proxmox {cfg.host}: login: {Http.describe_connection_error(exc)}') from exc
        data = Ontap.json_object(response.content).get('data') if response.status_code == 200 else None
        if not isinstance(data, dict) or not data.get('ticket') or not data.get('CSRFPreventionToken'):
            raise ProxmoxError(f'Proxmox {cfg.host}: {self._login_refused()}'
                               + ('' if response.status_code in (200, 401) else f' (HTTP {response.status_code})'))
        if data.get('NeedTFA'):
            raise ProxmoxError(f'Proxmox {cfg.host}: {cfg.user} logs in with a second factor, which this tool cannot '
                               'give: use an API token (proxmox_token_name, proxmox_token_value)')
        return data['ticket'], data['CSRFPreventionToken']

    def _login_refused(self):
        """A refused login, and what to check in config.ini."""
        if self.config.token_name:
            return (f'API token {self.config.user}!{self.config.token_name} refused (check proxmox_user, '
                    'proxmox_token_name and proxmox_token_value)')
        return f'login as {self.config.user} failed (check proxmox_user and proxmox_pass)'

    def call(self, method, resource, what, safe=False, returning=False, **params):
        """GET/POST/PUT/DELETE `resource`; errors become one ProxmoxError line naming `what`.
        `safe` marks a POST that changes nothing (an agent ping): sent even in a dry run;
        `returning` one that returns a guest to its state: sent even once a lock may be lost."""
        if self.dry_run and method != 'get' and not safe:
            print(Output.printable(f'would {what} (Proxmox {self.host})'))
            return None
        if method != 'get' and not safe:
            STOP.check_change(f'Proxmox {self.host}: {what}', returning)
        for attempt in (1, 2):
            api = self.api
            try:
                return getattr(api(resource), method)(**params)
            except proxmoxer.core.ResourceException as exc:
                # An expired or revoked ticket (401): the call was refused, not run; log in again.
                if exc.status_code == 401 and attempt == 1 and not self.config.token_name:
                    log.info('Proxmox %s: ticket refused, logging in again', self.host)
                    self._forget(api)
                    continue
                # A token goes with every call (no login): PVE answers a bad one with 401
                # "authentication failure" (shared/reference/pve-api.md).
                if exc.status_code == 401 and self.config.token_name:
                    raise ProxmoxError(f'Proxmox {self.host}: {what}: {self._login_refused()}') from exc
                lines = (exc.content or exc.status_message or '').strip().splitlines()
                raise ProxmoxError(f'Proxmox {self.host}: {what}: {lines[0] if lines else exc.status_code}') \
                    from exc
            except PveSession.Redirected as exc:
                raise ProxmoxError(f'Proxmox {self.host}: {what}: {exc}') from exc
            except urllib3.exceptions.HTTPError as exc:
                message = f'Proxmox {self.host}: {what}: {Http.describe_connection_error(exc)}'
                if method != 'get' and not safe and Http.may_have_arrived(exc):
                    raise OutcomeUnknown(f'{message} after the request went out', what,
                                         where=f'Proxmox {self.host}') from exc
                raise ProxmoxError(message) from exc

    def wait_for_task(self, upid, what):
        """Poll the task until it stopped; OK or WARNINGS is success, else its exit status.
        A task still running after task_timeout has an unknown outcome: it goes on. So has one
        whose status cannot be read: the task runs on whatever became of the read."""
        def stopped():
            try:
                status = self.call('get', f'nodes/{Pve.upid_node(upid)}/tasks/{upid}/status', what)
            except ProxmoxError as exc:
                raise OutcomeUnknown(f'{exc}; its task {upid} could not be followed', what, upid,
                                     f'Proxmox {self.host}') from exc
            if status.get('status') != 'stopped':
                return False
            exitstatus = status.get('exitstatus', 'unexpected status')
            if not Pve.task_succeeded(exitstatus):
                raise ProxmoxError(f'Proxmox {self.host}: {what}: task {status.get("type", "")} failed: {exitstatus}')
            return True

        Http.poll_until(stopped, self.timeouts.task, Pve.TASK_POLL_MAX, lambda: OutcomeUnknown(
            f'Proxmox {self.host}: {what}: task still running after {self.timeouts.task:g} s (task_timeout): {upid}',
            what, upid, f'Proxmox {self.host}'))

    @staticmethod
    def vm_path(vm, *parts):
        return '/'.join(['nodes', vm['node'], vm.get('type', 'qemu'), str(vm['vmid'])] + list(parts))

    def guests(self):
        """Every guest of the cluster, QEMU VMs and LXC containers, from one /cluster/resources
        call, by id (type, node, status, name)."""
        return {entry['vmid']: entry for entry in self.call('get', 'cluster/resources', 'list VMs', type='vm')}

    def vms(self, kind=None):
        """Every guest of `kind` in the cluster (default: QEMU VMs, those vm commands work on), by id."""
        kind = kind or Kind.VM
        return {vmid: entry for vmid, entry in self.guests().items() if entry.get('type') == kind.type}

    def find_guest(self, vmid, guests=None, kind=None):
        """The /cluster/resources entry (node, status, name) of guest `vmid` of `kind` (default: a VM),
        from `guests` (default: every guest of the cluster, of any kind): a NotFound if PVE has none,
        a ConfigError naming the command tree if it is a guest of the other kind."""
        kind = kind or Kind.VM
        guests = self.guests() if guests is None else guests
        if vmid not in guests:
            raise NotFound(f'Proxmox {self.host}: no {kind.word} {vmid} ({kind.noun}) in the cluster')
        guest = guests[vmid]
        if guest.get('type', 'qemu') != kind.type:
            other = Kind.of(guest)
            raise ConfigError(f'{Guest.label(guest)} is a {other.noun}, not a {kind.noun}: use `{other.tree} …`')
        return guest

    def config_of(self, vm):
        return self.call('get', Pve.vm_path(vm, 'config'), f'read the config of {Guest.label(vm)}')

    def pending_config(self, vm):
        """The config with pending changes: {key: value}, a pending value winning over the current one."""
        items = self.call('get', Pve.vm_path(vm, 'pending'), f'read the pending config of {Guest.label(vm)}')
        return {item['key']: item.get('pending', item.get('value')) for item in items}

    def set_config(self, vm, what, **changes):
        self.call('put', Pve.vm_path(vm, 'config'), f'{what} ({Guest.label(vm)})', **changes)

    def create_vm(self, node, vmid, config):
        """Create a VM from a config (POST /nodes/{node}/qemu) and wait for its task. PVE accepts an
        existing volume the VM owns as a disk (qemu-server API2/Qemu.pm, create_disks: size read
        from the volume), gives each netN without a MAC a new one (add_random_macs), a vmgenid
        when none is set and an SMBIOS uuid when smbios1 is missing; it starts nothing unless asked."""
        what = f'create VM {vmid} on node {node}'
        upid = self.call('post', f'nodes/{node}/qemu', what, vmid=vmid, **config)
        if upid:
            self.wait_for_task(upid, what)

    def status(self, vm):
        """The VM's status now (status, lock, ...), not as /cluster/resources said at the start of the run."""
        return self.call('get', Pve.vm_path(vm, 'status/current'), f'read the status of {Guest.label(vm)}') or {}

    def running(self, vm):
        return self.status(vm).get('status') == 'running'

    def power(self, vm, action, **params):
        """suspend/shutdown/start the VM and wait for the task to finish. For a VM under HA the
        task only hands the request to the HA manager: then wait for the VM's status as well."""
        what = f'{action} {Guest.label(vm)}'
        upid = self.call('post', Pve.vm_path(vm, 'status', action), what, returning=action in Pve.RETURNING, **params)
        if upid:
            self.wait_for_task(upid, what)
        if upid and vm.get('hastate') and action in Pve.HA_OUTCOME:
            def settled():
                return self.status(vm).get('status') == Pve.HA_OUTCOME[action]

            Http.poll_until(settled, self.timeouts.task, Pve.TASK_POLL_MAX, lambda: ProxmoxError(
                f'Proxmox {self.host}: {what}: the HA manager has not made it {Pve.HA_OUTCOME[action]} after '
                f'{self.timeouts.task:g} s (task_timeout)'))

    def settle_task(self, vm, unknown):
        """Follow a change of the VM whose outcome is unknown until it ended: its task for another
        task_timeout or, its answer lost, every task of the VM still running on its node. How it
        ended is for the caller to read from the VM's status."""
        if unknown.job:
            upids = [unknown.job]
        else:
            tasks = self.call('get', f'nodes/{vm["node"]}/tasks', f'{unknown.what}: look for its task', vmid=vm['vmid'],
                              source='active')
            upids = [task['upid'] for task in tasks or () if 'endtime' not in task and 'status' not in task]
        for upid in upids:
            try:
                self.wait_for_task(upid, unknown.what)
            except ProxmoxError:
                pass

    def agent(self, vm, command, safe=False):
        """A guest agent command (always a POST)."""
        return self.call('post', Pve.vm_path(vm, 'agent', command), f'guest agent {command} in VM {vm["vmid"]}', safe=safe,
                         returning=command in Pve.RETURNING)

    def add_nfs_storage(self, storage, server, export, options):
        """Add an NFS storage to storage.cfg. An answer lost on the way is read back: is it there?"""
        what = f'add storage {storage}'
        try:
            self.call('post', 'storage', what, storage=storage, type='nfs', server=server, export=export, **options)
        except OutcomeUnknown as exc:
            if not any(entry['storage'] == storage for entry in self.call('get', 'storage', f'{what}: read it back')):
                raise ProxmoxError(f'{exc}; it was not added') from exc

    def storage_config(self):
        """storage.cfg, every storage by id, from one call."""
        return {entry['storage']: entry for entry in self.call('get', 'storage', 'read the storage configuration')}

    def local_node(self):
        """The node this tool runs on, or else the one serving the API (cluster/status `local`)."""
        node = Node.name()
        if node:
            return node
        entries = self.call('get', 'cluster/status', 'read the cluster status')
        return next((e['name'] for e in entries if e.get('type') == 'node' and e.get('local')), None)

    def check_sees_every_guest(self, what):
        """/cluster/resources leaves out the guests one may not audit: before concluding that no
        guest uses a storage, make sure that none can be missing (VM.Audit on /vms)."""
        held = self.call('get', 'access/permissions', 'read the privileges of proxmox_user', path='/vms') or {}
        if not any(privileges.get('VM.Audit') for privileges in held.values()):
            raise Failure(f'Proxmox {self.host}: {self.config.user} lacks VM.Audit on /vms, so {what} cannot see every '
                          'guest: grant it (README, Least privilege), or add -force')

    def guest_configs(self, guests):
        """({vmid: config} of the guests ({vmid: guest}) whose config was read, [(guest, ProxmoxError)]
        of those whose config could not be — on a node that is down, say), REQUESTS_AT_ONCE at a time."""
        def read(guest):
            try:
                return self.config_of(guest), None
            except ProxmoxError as exc:
                return None, exc

        ordered = [guest for _, guest in sorted(guests.items())]
        found = Parallel.map(read, ordered)
        return ({guest['vmid']: config for guest, (config, _) in zip(ordered, found) if config is not None},
                [(guest, exc) for guest, (_, exc) in zip(ordered, found) if exc])

    def guests_on_storage(self, storage, guests):
        """(guests with a disk, mount point or unused disk on `storage`, (guest, Failure) of those
        whose config could not be read, so nobody knows)."""
        configs, unread = self.guest_configs(guests)
        return [guests[vmid] for vmid, config in sorted(configs.items()) if storage in Guest.storages(config)], unread

    def version(self):
        """{'version': '9.0.10', 'release': '9.0', ...} (GET /version, any user)."""
        return self.call('get', 'version', 'read the PVE release') or {}

    def cluster_status(self):
        """/cluster/status: a `cluster` entry (quorate) unless a single node, and one per node (online)."""
        return self.call('get', 'cluster/status', 'read the cluster status') or []

    def privileges(self, path):
        """What proxmox_user (or its token) holds on `path`: {privilege: whether it reaches below}."""
        answer = self.call('get', 'access/permissions',
                           f'read the privileges of {self.config.user} on {path}', path=path)
        return Doctor.privileges_at(answer or {}, path)

    TASK_POLL_MAX = 1.0
    HA_OUTCOME = {'shutdown': 'stopped', 'start': 'running'}   # what an HA request leads to
    # What returns a guest to its state: sent even once a lock may be lost (StopSignals.lose).
    RETURNING = ('start', 'resume', 'fsfreeze-thaw')

    @staticmethod
    def upid_node(upid):
        """The node field of a PVE task id (UPID:<node>:<pid>:...)."""
        parts = upid.split(':')
        if len(parts) < 9 or parts[0] != 'UPID':
            raise ValueError(f'not a PVE task id: {upid!r}')
        return parts[1]

    @staticmethod
    def task_succeeded(exitstatus):
        return exitstatus == 'OK' or bool(re.fullmatch(r'WARNINGS: \d+', exitstatus or ''))


class Node:
    """This node, where the tool runs: whether it is a PVE node run as root (where `qm` and
    `umount` work and pmxcfs shows every guest's config), its programs, files and mounts."""

    # The programs the tool runs, by absolute path, so that no PATH chooses another (Debian 12
    # and 13 have /bin merged into /usr/bin). qm comes with qemu-server, pct with pve-container,
    # lxc-* with lxc-pve, sync with coreutils, systemctl with systemd (doctor asks it of the
    # package's timers), the others with util-linux.
    PROGRAMS = {'qm': '/usr/sbin/qm', 'findmnt': '/usr/bin/findmnt', 'umount': '/usr/bin/umount',
                'pct': '/usr/sbin/pct', 'lxc-info': '/usr/bin/lxc-info', 'lxc-freeze': '/usr/bin/lxc-freeze',
                'lxc-unfreeze': '/usr/bin/lxc-unfreeze', 'sync': '/usr/bin/sync', 'systemctl': '/usr/bin/systemctl'}
    # A node's name as PVE allows it (pve-common src/PVE/JSONSchema.pm, pve_verify_node_name): one
    # that is not is never made part of a path.
    NAME = re.compile(r'^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$')
    # pmxcfs shows every node's guest configs under /etc/pve/nodes/<node>/ on each node
    # (pve-cluster src/README), in qemu-server/ and lxc/; /etc/pve/qemu-server is only the local node's.
    CONFIGS_DIR = '/etc/pve/nodes'

    @staticmethod
    @functools.cache
    def name():
        """This node's name if we run as root on a PVE node (where `qm` and `umount` work), else None."""
        if os.geteuid() == 0 and os.access(Node.PROGRAMS['qm'], os.X_OK) and os.path.isdir('/etc/pve'):
            return socket.gethostname().split('.')[0]
        return None

    @staticmethod
    def run(name, *arguments, **kwargs):
        """subprocess.run of one of Node.PROGRAMS, its output captured as text; a Failure if it cannot start."""
        try:
            return subprocess.run([Node.PROGRAMS[name], *arguments], capture_output=True, text=True, check=False, **kwargs)
        except OSError as exc:
            raise Failure(f'cannot run {Node.PROGRAMS[name]}: {exc.strerror}') from exc

    @staticmethod
    def config_path(vm):
        """Where pmxcfs shows the guest's config; a Failure for a node name PVE would not allow."""
        if not Node.NAME.match(str(vm['node'])):
            raise Failure(f'{Guest.label(vm)}: its node name {vm["node"]!r} is none PVE allows')
        kind = 'lxc' if vm.get('type') == 'lxc' else 'qemu-server'
        return os.path.join(Node.CONFIGS_DIR, vm['node'], kind, f'{int(vm["vmid"])}.conf')

    @staticmethod
    def read_config(vm):
        """The VM's config file as PVE holds it (its snapshot and [PENDING] sections too), read from
        pmxcfs when this runs on a PVE node as root; None elsewhere, or if it cannot be read."""
        if Node.name() is None:
            return None
        try:
            path = Node.config_path(vm)
            with open(path, 'rb') as file:
                return file.read()
        except (OSError, Failure) as exc:
            log.warning('%s: its config file cannot be read (%s): its config is saved as the API gives it',
                        Guest.label(vm), getattr(exc, 'strerror', None) or exc)
            return None

    @staticmethod
    def check_id_free(vmid):
        """A Failure if a guest config of id `vmid` is in pmxcfs on any node (qemu-server/ or lxc/)."""
        taken = sorted(glob.glob(os.path.join(Node.CONFIGS_DIR, '*', '*', f'{int(vmid)}.conf')))
        if taken:
            raise Failure(f'{taken[0]} exists: id {vmid} is taken; choose another id for -as-new')

    @staticmethod
    def create_config(ctx, guest, text):
        """Write a new guest's config file into pmxcfs (config_path), only where no guest of its id has
        one on any node, and never over a file (O_EXCL; pmxcfs also refuses a second config of one id:
        pve-cluster src/pmxcfs/memdb.c, unconfirmed). In a dry run, say so."""
        path = Node.config_path(guest)
        Node.check_id_free(guest['vmid'])
        if ctx.dry_run:
            print(f'would write {path}')
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
        except OSError as exc:
            raise Failure(f'cannot create {path}: {exc.strerror}') from exc
        with os.fdopen(fd, 'w', encoding='utf-8') as file:
            file.write(text)

    @staticmethod
    def guest_configs(guests):
        """({vmid: config}, {vmid: its file}, [guests]) of the guests ({vmid: guest}): the configs
        read from pmxcfs as PVE's own tools read them (PVE::Cluster cfs_read_file; the current
        config, as the file has it, not the API's with pending changes applied), when this runs on
        a PVE node as root, and the guests whose file could not be read (all of them elsewhere),
        to be read through the API instead."""
        if Node.name() is None:
            return {}, {}, dict(guests)
        configs, raws, others = {}, {}, {}
        for vmid, guest in sorted(guests.items()):
            try:
                with open(Node.config_path(guest), 'rb') as file:
                    raws[vmid] = file.read()
            except (OSError, Failure):
                others[vmid] = guest
                continue
            configs[vmid] = Guest.parse_config_text(raws[vmid].decode('utf-8', 'surrogateescape'))
        return configs, raws, others

    @staticmethod
    def nfs_mount(path):
        """What is mounted at `path` on this machine, as findmnt says: {'source', 'fstype', 'options'},
        or None if nothing is."""
        result = Node.run('findmnt', '--json', '--mountpoint', path, '--output', 'SOURCE,FSTYPE,OPTIONS')
        if result.returncode or not result.stdout.strip():
            return None     # findmnt exits 1 when nothing is mounted there
        return (json.loads(result.stdout).get('filesystems') or [None])[0]

    # The cluster-wide lock lives in pmxcfs, as PVE's own (pve-cluster src/PVE/Cluster.pm, cfs_lock):
    # a directory in priv/lock/, made with mkdir (atomic across nodes), removed with rmdir. A
    # lock not updated for 120 s is removed by pmxcfs on the next unlock request, `utime 0 0`,
    # and its holder may update it with `utime 0 now` (pve-cluster src/README, "File Locking").
    # $PVE_ONTAP_SNAPSHOT_CLUSTER_DIR stands for /etc/pve/priv where no pmxcfs runs (the tests).
    CLUSTER_DIR = os.environ.get('PVE_ONTAP_SNAPSHOT_CLUSTER_DIR') or '/etc/pve/priv'


class Freezer:
    """A container's cgroup freezer, as PVE holds a CT still for its own snapshots (pve-container
    src/PVE/LXC/Config.pm, __snapshot_freeze: PVE::LXC::freeze, then sync_container_namespace, a
    syncfs of each of its file systems, so that what its processes wrote is on the storage; and
    PVE::LXC::thaw after). PVE asks liblxc's command socket (src/PVE/LXC/Command.pm, freeze and
    unfreeze: LXC_CMD_FREEZE, 30 s); lxc-freeze and lxc-unfreeze are liblxc's tools for that
    (lxc-freeze(1): the same path on cgroup v2 is unconfirmed). Only reachable on the node running
    the CT, as root: `ct create -pause` works there, and nowhere else."""

    # lxc-info -s: `State:   RUNNING` (lxc-info(1); liblxc's states: STOPPED, STARTING, RUNNING,
    # STOPPING, ABORTING, FREEZING, FROZEN, THAWED).
    STATE = re.compile(r'^State:\s+(?P<state>[A-Z]+)\s*$', re.MULTILINE)
    # lxc-info -p: `PID:   1234`, as pve-container reads it (src/PVE/LXC.pm, find_lxc_pid).
    PID = re.compile(r'^PID:\s+(?P<pid>\d+)\s*$', re.MULTILINE)
    RUNNING = ('RUNNING', 'THAWED')

    @staticmethod
    def check_here(view):
        """A Failure unless this is the CT's own node, run as root."""
        node = Node.name()
        if node != view.vm['node']:
            where = f'node {node}' if node else 'no PVE node as root'
            raise Failure(f'{view.label} runs on node {view.vm["node"]}, and this is {where}: -pause freezes a container '
                          'only on its own node, as root; run it there (ct create -all -node-local -pause on each node '
                          'covers a cluster), or use -shutdown')

    @staticmethod
    def info(vmid, flag):
        result = Node.run('lxc-info', flag, '-n', str(int(vmid)))
        if result.returncode:
            raise Failure(f'CT {vmid}: {Node.PROGRAMS["lxc-info"]} {flag} failed: {result.stderr.strip()}')
        return result.stdout

    @staticmethod
    def state(view):
        """The CT's state as liblxc says it now (RUNNING, FROZEN, ...), on its own node."""
        Freezer.check_here(view)
        found = Freezer.STATE.search(Freezer.info(view.vmid, '-s'))
        if not found:
            raise Failure(f'{view.label}: {Node.PROGRAMS["lxc-info"]} -s says no state')
        return found['state']

    @staticmethod
    def freeze(ctx, view):
        """Freeze the CT, then sync each file system of its disks (as sync_container_namespace
        does, through /proc/<pid>/root, its mount namespace's view)."""
        if Freezer.change(ctx, view, 'lxc-freeze') is None:
            return
        found = Freezer.PID.search(Freezer.info(view.vmid, '-p'))
        if not found:
            raise Failure(f'{view.label}: {Node.PROGRAMS["lxc-info"]} -p says no process: not running?')
        for disk in view.disks:
            mount = '/' if disk.key == 'rootfs' else Guest.mount_path(view.config.get(disk.key))
            if mount is None:
                continue
            result = Node.run('sync', '-f', f'/proc/{found["pid"]}/root/{mount.lstrip("/")}')
            if result.returncode:
                raise Failure(f'{view.label}: syncing {disk.key} ({mount}) failed: {result.stderr.strip()}')

    @staticmethod
    def thaw(ctx, view):
        """Thaw the CT: None, or a Failure that says what to run by hand."""
        try:
            Freezer.change(ctx, view, 'lxc-unfreeze')
        except Failure as exc:
            return Failure(f'{view.label} could not be thawed and may still be frozen: run '
                           f'"{Node.PROGRAMS["lxc-unfreeze"]} -n {view.vmid}" on node {view.vm["node"]} ({exc})')
        log.info('%s: thawed', view.label)
        return None

    @staticmethod
    def change(ctx, view, program):
        """Run lxc-freeze or lxc-unfreeze on the CT (in a dry run, say so): its result, None in a dry run."""
        if ctx.dry_run:
            print(f'would run {Node.PROGRAMS[program]} -n {int(view.vmid)}')
            return None
        result = Node.run(program, '-n', str(int(view.vmid)))
        if result.returncode:
            raise Failure(f'{view.label}: {Node.PROGRAMS[program]} failed: {result.stderr.strip()}')
        return result

# ---- 7. Pure logic ---------------------------------------------------------------------------
# No I/O: what a guest config, a file name, a manifest or a qcow2 header says; what a restore
# may put back; which snapshots -keep deletes; what reaches the terminal.

@dataclasses.dataclass(frozen=True)
class Disk:
    """A VM disk: config key, storage id, volid, and its file under images/ (None if none)."""
    key: str
    storage: str
    volid: str
    path: str = None    # images/<vmid>/<file>, relative to the storage's export

    @property
    def file(self):
        return self.path.rsplit('/', 1)[-1]


@dataclasses.dataclass(frozen=True)
class SnapshotFile:
    """One file of a VM snapshot set on an ONTAP storage."""
    storage: str
    path: str           # images/<vmid>/<stem>-<kind>-<stamp><ext>
    stem: str
    kind: str
    stamp: str
    ext: str
    size: int = 0

    @property
    def source_file(self):
        """The disk file this is a clone of."""
        return self.stem + self.ext

    @property
    def is_record(self):
        """Whether this is the set's saved config or manifest."""
        return bool(Names.MANIFEST_FILE.match(self.path.rsplit('/', 1)[-1]))

    @property
    def is_hold(self):
        """Whether this is the set's hold (vm hold)."""
        return self.ext == '.hold'

    @property
    def is_clone(self):
        """Whether this is a disk clone: neither a saved config or manifest nor a hold."""
        return not self.is_record and not self.is_hold


@dataclasses.dataclass(frozen=True)
class Kind:
    """Which guests a command tree works on: QEMU VMs (`vm …`, Kind.VM) or LXC containers (`ct …`,
    Kind.CT); the same commands, parametrized by it."""
    type: str       # PVE's guest type, in /cluster/resources and API paths: qemu, lxc
    word: str       # as PVE's GUI and our messages name one: VM 100, CT 200
    tree: str       # the command tree: vm, ct
    noun: str       # what it is, in a sentence
    option: str     # the option naming its ids: -vm, -ct
    modes_phrase: str   # the create options that hold it still for a consistent snapshot

    @staticmethod
    def of(guest):
        """The Kind of a guest's /cluster/resources entry (or a manifest's {type})."""
        return Kind.CT if guest.get('type') == 'lxc' else Kind.VM


Kind.VM = Kind('qemu', 'VM', 'vm', 'virtual machine', '-vm', '-pause, -freeze, -suspend or -shutdown')
Kind.CT = Kind('lxc', 'CT', 'ct', 'container', '-ct', '-pause or -shutdown')


class Guest:
    """A guest as PVE describes it: its config's disks and volumes, agent and text in .conf syntax
    (secrets masked), its label and state."""

    DISK_KEY = re.compile(r'^(?:(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0)$')
    IMAGE_VOLNAME = re.compile(r'^(?:\d+/[^/]+/)?(?P<vmid>\d+)/(?P<file>[^/]+\.(?:raw|qcow2|vmdk))$')

    @staticmethod
    def parse_volume(value):
        """(storage, volid, images path or None) of a drive value, or None if it names no storage volume."""
        items = str(value).split(',')
        volume = items[0]
        props = dict(item.split('=', 1) for item in items[1:] if '=' in item)
        if '=' in volume:
            props.update([volume.split('=', 1)])
            volume = props.get('file', '')
        if props.get('media') == 'cdrom' or volume.startswith('/') or ':' not in volume:
            return None
        storage, volname = volume.split(':', 1)
        found = Guest.IMAGE_VOLNAME.match(volname)
        return storage, volume, f'images/{found["vmid"]}/{found["file"]}' if found else None

    @staticmethod
    def parse_disk(key, value):
        """The Disk of one VM config line, or None if it is no disk image on a storage.

        Takes every ide/sata/scsi/virtio drive, efidisk0 and tpmstate0; skips unusedN,
        vmstate, CD-ROMs, `none` and pass-through paths. A linked clone's volid
        (STORE:BASEVMID/BASEFILE/VMID/FILE) yields the clone's own file.
        """
        if not Guest.DISK_KEY.match(key):
            return None
        parsed = Guest.parse_volume(value)
        return Disk(key, *parsed) if parsed else None

    @staticmethod
    def vm_disks(config):
        """Every disk of a VM config, in config-key order."""
        return [disk for disk in (Guest.parse_disk(k, v) for k, v in sorted(config.items())) if disk]

    @staticmethod
    def storages(config):
        """Every storage holding a disk or an unused disk of a VM, or a root file system, mount
        point or unused volume of a container."""
        storages = {disk.storage for disk in Guest.vm_disks(config)}
        for key, value in config.items():
            if re.fullmatch(r'unused\d+|rootfs|mp\d+', key) and Guest.parse_volume(value):
                storages.add(Guest.parse_volume(value)[0])
        return storages

    @staticmethod
    def label(guest):
        """`VM 100` or `CT 200`, as PVE's GUI names them."""
        return f'{Kind.of(guest).word} {guest["vmid"]}'

    PVE_TRUE = ('1', 'yes', 'on', 'true')      # PVE's booleans, any case (pve-api.md §0)
    # The agent property that turns freezing off: `freeze-fs` since qemu-server 9.1.6 (PVE 9), with
    # `freeze-fs-on-backup` (PVE 8) and `guest-fsfreeze` (9.1.5) as aliases (qemu-server
    # src/PVE/QemuServer/Agent.pm, $agent_fmt and should_fs_freeze, commit b701115d).
    AGENT_FREEZE_KEYS = ('freeze-fs', 'freeze-fs-on-backup', 'guest-fsfreeze')

    @staticmethod
    def agent_options(value):
        """The config `agent` property string (`1`, `enabled=1,freeze-fs=0`, ...) as a dict; its
        first item without a key is `enabled` (the format's default key)."""
        options = {}
        for item in str(value or '').split(','):
            key, has_key, setting = item.strip().partition('=')
            if item.strip():
                options[key if has_key else 'enabled'] = setting if has_key else key
        return options

    @staticmethod
    def agent_enabled(value):
        """The config `agent` value (`1`, `enabled=1,fstrim_cloned_disks=1`, ...) says it is on."""
        return Guest.agent_options(value).get('enabled', '0').lower() in Guest.PVE_TRUE

    @staticmethod
    def agent_freezes(value):
        """Whether PVE would freeze the guest's file systems through its agent: the agent is on and
        no freeze-fs setting (or an alias) turns freezing off (should_fs_freeze: default on)."""
        options = Guest.agent_options(value)
        setting = next((options[key] for key in Guest.AGENT_FREEZE_KEYS if key in options), '1')
        return Guest.agent_enabled(value) and setting.lower() in Guest.PVE_TRUE

    @staticmethod
    def frozen_too_long(exc):
        """Whether a failed fsfreeze-thaw says that the guest gave up its freeze by itself: a Windows
        guest's VSS holds writes for about 10 s, and QEMU's agent then answers the thaw with "couldn't
        hold writes: fsfreeze is limited up to 10 seconds" (qemu qga/vss-win32/requester.cpp,
        VSS_E_HOLD_WRITES_TIMEOUT); its file systems run again."""
        return 'fsfreeze is limited' in str(exc)

    @staticmethod
    def state(guest):
        """`running`, or `stopped, locked: backup`: a guest's status and lock, for a plan."""
        return guest.get('status', 'unknown') + (f', locked: {guest["lock"]}' if guest.get('lock') else '')

    @staticmethod
    def encode_comment(line):
        """A line of a VM's description as PVE writes it in a .conf comment: its UTF-8 bytes, every
        control or non-ASCII byte and `:` percent-encoded (pve-common src/PVE/Tools.pm, encode_text)."""
        return ''.join(chr(byte) if 0x20 <= byte <= 0x7e and byte != 0x3a else f'%{byte:02X}' for byte in line.encode())

    @staticmethod
    def config_text(config):
        """A VM config as the API gives it, in PVE's .conf syntax as qemu-server writes it
        (PVE/QemuServer.pm, write_vm_config): the description as `#` lines first (Perl's split drops
        trailing empty lines), then `key: value` for every other key, sorted; `digest` dropped."""
        lines = str(config.get('description') or '').split('\n')
        while lines and not lines[-1]:
            lines.pop()
        text = ''.join(f'#{Guest.encode_comment(line)}\n' for line in lines)
        return text + ''.join(f'{key}: {value}\n' for key, value in sorted(config.items())
                              if key not in ('digest', 'description'))

    # Keys of a config that are PVE's bookkeeping, not the VM's settings: never put back, never
    # deleted (qemu-server: the lock, the snapshot parent, a hibernated VM's state, meta-information;
    # the API takes none of parent, snaptime, vmstate, runningmachine, runningcpu, meta,
    # running-nets-host-mtu: QemuServer.pm json_config_properties). vmgenid too: a guest whose disks
    # went back in time must see a new generation id, never the old one again (Microsoft's
    # "Virtual machine generation identifier"), so a restore leaves the VM's own.
    CONFIG_BOOKKEEPING = ('digest', 'lock', 'parent', 'snaptime', 'vmstate', 'runningmachine', 'runningcpu', 'meta',
                          'running-nets-host-mtu', 'vmgenid')
    # The cloud-init password: its hash, or on Windows the password itself, in the .conf; PVE's API
    # shows it as `**********` (qemu-server API2/Qemu.pm, vm_config). A record never holds it (it
    # is masked as the API masks it), so it is never put back, diffed or copied to a new VM.
    SECRET_KEYS = ('cipassword',)
    SECRET_MASK = '**********'
    SECRET_LINE = re.compile(rb'^(' + b'|'.join(key.encode() for key in SECRET_KEYS) + rb'):[^\n]*', re.MULTILINE)
    CONFIG_LINE = re.compile(r'^([a-z][a-z0-9_-]*):\s*(.*?)\s*$')
    UNUSED_KEY = re.compile(r'^unused\d+$')
    DRIVE_BUS_KEY = re.compile(r'^(?:ide|sata|scsi|virtio)\d+$')
    MAC_ADDRESS = re.compile(r'^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$')
    # A cloud-init drive's volume (qemu-server PVE/QemuServer/Drive.pm, drive_is_cloudinit).
    CLOUDINIT_VOLUME = re.compile(r'[:/](?:vm-\d+-)?cloudinit(?:\.(?:raw|qcow2|vmdk))?$')

    @staticmethod
    def parse_config_text(text):
        """The VM's current config in a .conf text as PVE writes it (qemu-server PVE/QemuServer.pm,
        parse_vm_config): `#` lines are the description, percent-decoded as PVE's decode_text does
        (pve-common src/PVE/Tools.pm), `key: value` lines the rest. It ends at the first `[section]`:
        a snapshot's config, or [PENDING], which are not the VM's current config."""
        config, description = {}, []
        for line in text.split('\n'):     # as PVE splits it: a carriage return or form feed ends no line
            if line.startswith('['):
                break
            if line.startswith('#'):
                description.append(urllib.parse.unquote(line[1:], errors='replace'))
                continue
            found = Guest.CONFIG_LINE.match(line)
            if found:
                config[found[1]] = found[2]
        if description:
            config['description'] = '\n'.join(description)
        return config

    @staticmethod
    def restorable(config):
        """A config's settings as text, without PVE's bookkeeping (CONFIG_BOOKKEEPING) and secrets."""
        settings = {key: str(value) for key, value in config.items()
                    if key not in Guest.CONFIG_BOOKKEEPING and key not in Guest.SECRET_KEYS}
        if 'description' in settings:
            settings['description'] = settings['description'].rstrip('\n')
        return settings

    @staticmethod
    def config_diff(current, saved, current_label, saved_label):
        """How a saved config differs from the current one: unified diff lines of both in .conf syntax."""
        import difflib  # only vm restore needs it; see ontap_read_file
        return list(difflib.unified_diff(Guest.config_text(Guest.restorable(current)).split('\n')[:-1],
                                         Guest.config_text(Guest.restorable(saved)).split('\n')[:-1],
                                         current_label, saved_label, lineterm=''))

    @staticmethod
    def drive_volume(value):
        """The volume of a drive value (its first item, or `file=`)."""
        items = str(value).split(',')
        return next((item[5:] for item in items if item.startswith('file=')), items[0])

    @staticmethod
    def with_volume(value, volume):
        """A drive value with another volume, its options kept."""
        items = str(value).split(',')
        for n, item in enumerate(items):
            if item.startswith('file='):
                items[n] = 'file=' + volume
                return ','.join(items)
        if '=' in items[0]:
            return ','.join([volume] + items)
        return ','.join([volume] + items[1:])

    @staticmethod
    def random_mac():
        """A new unicast MAC address with PVE's default prefix BC:24:11 (datacenter.cfg mac_prefix, as
        pve-common PVE/Tools.pm random_ether_addr makes one; the prefix a datacenter sets is not read:
        unconfirmed)."""
        return 'BC:24:11:' + ':'.join(f'{byte:02X}' for byte in os.urandom(3))

    @staticmethod
    def without_mac(value):
        """A netN value without its MAC address (`virtio=<MAC>` becomes `virtio`, `macaddr=` goes),
        so that PVE gives the NIC a new one (qemu-server API2/Qemu.pm create_vm: add_random_macs)."""
        items = []
        for item in str(value).split(','):
            key, _, setting = item.partition('=')
            if key != 'macaddr':
                items.append(key if Guest.MAC_ADDRESS.match(setting) else item)
        return ','.join(items)

    SIZE_UNITS = {'': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}

    @staticmethod
    def drive_size(value):
        """The bytes a drive's `size=` says (PVE's disk-size: a number and K, M, G or T), or None."""
        found = re.search(r'(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)(?:,|$)', str(value))
        return int(float(found[1]) * Guest.SIZE_UNITS[found[2]]) if found else None

    @staticmethod
    def without_secrets(conf_file):
        """A .conf file's bytes with every SECRET_KEYS line's value masked, in every section."""
        return Guest.SECRET_LINE.sub(lambda found: found[1] + b': ' + Guest.SECRET_MASK.encode(), conf_file)

    @staticmethod
    def disk_format(disk):
        """raw, qcow2 or vmdk, as the disk's file name says; None for a volume that is no file."""
        return disk.path.rsplit('.', 1)[1] if disk.path else None

    GUEST_TYPES = {'vm': 'qemu', 'ct': 'lxc'}
    CONTAINER_VOLUME_KEY = re.compile(r'^(?:rootfs|mp\d+)$')

    @staticmethod
    def disks(guest, config):
        """Every disk of a guest on a storage, in config-key order: a VM's drives (vm_disks), a
        container's root file system and mount points (bind mounts and devices are none)."""
        if guest.get('type') != 'lxc':
            return Guest.vm_disks(config)
        disks = [(key, Guest.parse_volume(value))
                  for key, value in sorted(config.items()) if Guest.CONTAINER_VOLUME_KEY.match(key)]
        return [Disk(key, *parsed) for key, parsed in disks if parsed]

    @staticmethod
    def property_items(value):
        """{key: value} of a property string's `key=value` items (features: `nesting=1,keyctl=1`)."""
        return dict(item.split('=', 1) for item in str(value or '').split(',') if '=' in item)

    @staticmethod
    def mount_path(value):
        """Where a container's mount point (an mpN value) is mounted inside it: its `mp=`, or None."""
        return Guest.property_items(value).get('mp')

    @staticmethod
    def host_mounts(guest, config):
        """[(Disk with no storage, why it is none)] of a container's bind mounts and device mounts:
        an mpN whose volume is an absolute path, a device under /dev/ (pve-container
        src/PVE/LXC/Config.pm, classify_mountpoint), no file of a storage to clone."""
        if guest.get('type') != 'lxc':
            return []
        found = []
        for key, value in sorted(config.items()):
            volume = str(value).split(',', 1)[0].removeprefix('volume=')
            if Guest.CONTAINER_VOLUME_KEY.match(key) and volume.startswith('/'):
                what = 'a device mount' if volume.startswith('/dev/') else 'a bind mount'
                found.append((Disk(key, None, volume), f'{what} of the node, no disk on a storage'))
        return found

    @staticmethod
    def config_text_of(guest, config):
        """A guest's config as the API gives it, in PVE's .conf syntax (config_text). A container's
        raw `lxc.*` keys come from the API as [key, value] pairs and go last, one `key: value` line
        each, as pve-container writes them (PVE/LXC/Config.pm, write_pct_config; unconfirmed)."""
        raw = config.get('lxc') if guest.get('type') == 'lxc' else None
        if not isinstance(raw, list):
            return Guest.config_text(config)
        text = Guest.config_text({key: value for key, value in config.items() if key != 'lxc'})
        return text + ''.join(f'{pair[0]}: {pair[1]}\n' for pair in raw if isinstance(pair, list) and len(pair) == 2)

    @staticmethod
    def attached_snapshot_files(config, files):
        """{path: disk key} of the set files a VM config uses as disks (not as unusedN)."""
        disks = {(disk.storage, disk.path): disk.key for disk in Guest.vm_disks(config) if disk.path}
        return {f.path: disks[(f.storage, f.path)] for f in files if (f.storage, f.path) in disks}

    @staticmethod
    def free_unused_keys(taken, count):
        """The first `count` unusedN keys not in `taken` (PVE allows unused0 to unused255)."""
        free = [f'unused{n}' for n in range(256) if f'unused{n}' not in taken]
        if len(free) < count:
            raise Failure(f'no free unusedN slot for {count} more disk(s) (PVE allows 256)')
        return free[:count]


class Identity:
    """Which VM a snapshot is of. An id is reused (/cluster/nextid hands out the lowest free one:
    pve-manager API2/Cluster.pm nextid), so a VM is told by what PVE keeps for its life and makes
    anew for another VM: `meta: ctime=` (set by create_vm alone, never through the API, kept by
    migration and restore: qemu-server QemuServer/MetaInfo.pm, API2/Qemu.pm; since qemu-server
    7.0-18) and else the SMBIOS uuid (made by every create that gives none, new on every clone;
    an admin may change it). vmgenid changes with every rollback and restore: no identity.
    A container has neither: it is told by the MAC addresses of its NICs, which PVE makes at
    random for every NIC created without one, anew on every clone and on a restore with --unique,
    and keeps through migration and a plain restore (pve-container src/PVE/LXC/Config.pm
    parse_lxc_network, API2/LXC.pm clone_vm, LXC/Create.pm); an admin may set one."""

    HWADDR = re.compile(r'(?:^|,)hwaddr=(?P<mac>[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})(?:,|$)')

    @staticmethod
    def of_config(config):
        """(meta ctime, SMBIOS uuid, NIC MACs) of a guest config: the first two None where it has none
        (a container never has them), the MACs of its netN entries with an hwaddr= (a container's) as
        12 hex digits each, in key order."""
        meta, smbios = Guest.property_items(config.get('meta')), Guest.property_items(config.get('smbios1'))
        ctime = meta.get('ctime') if str(meta.get('ctime', '')).isdigit() else None
        uuid = smbios.get('uuid', '').replace('-', '').lower()
        macs = tuple(found['mac'].replace(':', '').lower() for key, value in sorted(config.items())
                     if re.fullmatch(r'net\d+', key) and (found := Identity.HWADDR.search(str(value))))
        return ctime, uuid if re.fullmatch(r'[0-9a-f]{32}', uuid) else None, macs

    @staticmethod
    def of_manifest(recorded):
        """The identity a manifest records (its `identity`: Manifest.build), as of_config gives one;
        None where it records none. Earlier builds recorded no MACs."""
        if not isinstance(recorded, dict):
            return None
        macs = recorded.get('hwaddr')
        return (recorded.get('ctime'), recorded.get('smbios_uuid'),
                tuple(mac for mac in macs if isinstance(mac, str)) if isinstance(macs, list) else ())

    @staticmethod
    def tag(identity):
        """The short form of a guest identity a manifest's name carries: c<ctime>, else u<uuid>, else
        h<the first NIC's MAC>, else None."""
        ctime, uuid, macs = identity
        return f'c{ctime}' if ctime else f'u{uuid}' if uuid else f'h{macs[0]}' if macs else None

    @staticmethod
    def same_vm(tag, identity):
        """Whether a snapshot whose manifest names identity `tag` is of the VM whose identity is
        `identity` now: True, False (another VM that had the same id), or None (unknown: no tag, or
        the field it names is gone from the VM's config)."""
        ctime, uuid, macs = identity
        if not tag:
            return None
        if tag.startswith('c'):
            return None if ctime is None else tag[1:] == ctime
        if ctime is not None:
            return False    # a VM without meta then, with one now: made anew since (meta comes with a create only)
        if tag.startswith('h'):
            # The NIC it had then is still among its NICs (one may have been added); with no NIC now, unknown.
            return None if not macs else tag[1:] in macs
        return None if uuid is None else tag[1:] == uuid

    @staticmethod
    def of_files(files):
        """The identity tag a set's manifest name carries, or None (no manifest, or one without)."""
        for file in files:
            found = Names.MANIFEST_FILE.match(file.path.rsplit('/', 1)[-1])
            if found and found['identity']:
                return found['identity']
        return None


class Qcow2:
    """qcow2 files that stand on others: a linked clone on its template's base image
    (../<base id>/base-<id>-disk-N.<ext>: pve-storage Plugin.pm clone_image), and on PVE 9 with
    snapshot-as-volume-chain each disk snapshot as snap-<snapshot>-<file> beside the disk, which
    the disk names by that relative name and PVE commits or rebases away when the snapshot is
    deleted (Plugin.pm get_snap_name, volume_snapshot, volume_snapshot_delete)."""

    # The qcow2 header (QEMU's docs/interop/qcow2.txt): magic QFI\xfb, backing_file_offset u64
    # at 8, its size u32 at 16, the virtual size (`size`, in bytes) u64 at 24; all big-endian.
    MAGIC = b'QFI\xfb'
    HEADER_READ = 4096     # the backing file's name follows the header in every file qemu-img makes
    BASE_IMAGE = re.compile(r'^\.\./(?P<vmid>\d+)/base-(?P=vmid)-disk-\d+\.(?:raw|qcow2|vmdk)$')

    @staticmethod
    def backing(head):
        """The backing file a qcow2 file names, from its first bytes `head` (the name where it lies
        beyond them: (offset, size) to read it); None for none, or for a file that is no qcow2."""
        if len(head) < 20 or head[:4] != Qcow2.MAGIC:
            return None
        offset, size = int.from_bytes(head[8:16], 'big'), int.from_bytes(head[16:20], 'big')
        if not offset or not size:
            return None
        if offset + size > len(head):
            return offset, size
        return head[offset:offset + size].decode('utf-8', 'replace')

    @staticmethod
    def virtual_size(head):
        """The virtual size in bytes a qcow2 file's first bytes `head` give, or None for a file that is
        no qcow2 (or shorter than the header's first fields)."""
        if len(head) < 32 or head[:4] != Qcow2.MAGIC:
            return None
        return int.from_bytes(head[24:32], 'big')

    @staticmethod
    def backing_path(directory, backing):
        """The path in the volume of the backing file `backing` a qcow2 file in `directory` names: a
        relative name is taken from the file's directory, as QEMU takes it (qemu-img(1), `create -b`);
        None for an absolute name, or one that leaves the volume."""
        if backing.startswith('/'):
            return None
        path = os.path.normpath(f'{directory}/{backing}')
        return None if path == '..' or path.startswith('../') else path

    @staticmethod
    def backing_risk(backing):
        """Why a file clone of a qcow2 disk over `backing` would not stand alone, or None: its
        template's base image stays while a linked clone uses it; any other backing file may go."""
        if backing is None or Qcow2.BASE_IMAGE.match(backing):
            return None
        if '/' not in backing and backing.startswith('snap-'):
            return (f'a PVE snapshot of it as a volume chain (its backing file {backing}), which PVE merges away '
                    'when that snapshot is deleted')
        return f'a backing file this tool cannot keep with it ({backing})'


class Consistency:
    """How consistent a snapshot is for a guest: as it was held for it (Names.CONSISTENCIES), read
    from its manifest's name."""

    @staticmethod
    def of_files(files):
        """A set's consistency, from its manifest's name; `unknown` for a set without one (made
        by the original, or by this tool before it saved manifests)."""
        for file in files:
            found = Names.MANIFEST_FILE.match(file.path.rsplit('/', 1)[-1])
            if found and found['consistency']:
                return found['consistency']
        return 'unknown'

    @staticmethod
    def of_vm_snapshot(mode, paused, running, instants, still=False):
        """How consistent a VM snapshot is: as the VM was held for it (`paused`: the window acted),
        `paused` for one that stood still all the same (`still`: paused by someone else, or on an
        I/O error), `shutdown` for a VM that was off, `atomic` for a running VM whose disks were
        captured at one instant (one volume), else `running` (one instant per volume)."""
        if paused:
            return {'pause': 'paused', 'freeze': 'frozen', 'suspend': 'suspended', 'shutdown': 'shutdown'}[mode]
        if not running:
            return 'shutdown'
        if still:
            return 'paused'
        return 'atomic' if instants == 1 else 'running'

    @staticmethod
    def of_storage_snapshot(guest, disks, storage, how):
        """How consistent a storage snapshot is for one guest with a disk on `storage`, as planned
        before it is taken: `frozen` or `paused` (`how` storage create holds it: 'freeze', 'pause'),
        `shutdown` for a guest that is not running, `atomic` for a running one whose every disk is
        on this storage (all taken at one instant), else `running` (its other disks are not in it)."""
        if how:
            return {'freeze': 'frozen', 'pause': 'paused'}[how]
        if guest.get('status') != 'running':
            return 'shutdown'
        return 'atomic' if disks and all(disk.storage == storage for disk in disks) else 'running'

    @staticmethod
    def counts(guests):
        """{consistency: how many of `guests` (dicts with a consistency) have it}."""
        words = [guest['consistency'] for guest in guests]
        return {word: words.count(word) for word in words}

    @staticmethod
    def summary(counts):
        """`3 frozen, 1 running` of {consistency: count}, most first; `-` for none."""
        rank = {word: n for n, word in enumerate(Names.CONSISTENCIES)}
        order = sorted(counts, key=lambda word: (-counts[word], rank.get(word, len(rank)), word))
        return ', '.join(f'{counts[word]} {word}' for word in order) or '-'


class RestoreRules:
    """What a restore may put back. A saved config comes from the datastore, which others than
    root may write: a restore applies only the settings an ordinary user with the VM.Config.*
    privileges may make, with the values they allow (qemu-server src/PVE/API2/Qemu.pm,
    check_vm_modify_config_perm and its option groups $cpuoptions ... $netoptions,
    check_usb_perm, check_hostpci_perm, the serial and drive checks; the same on PVE 8 and 9).
    The rest is root@pam's alone (the fall-through "only root can set '$opt' config"), or unknown
    to this tool: kept as it is unless -allow-key names it."""

    RESTORABLE_VM_KEY = re.compile(
        r'^(?:cores|cpu|cpulimit|cpuunits|numa\d*|smp|sockets|vcpus'            # VM.Config.CPU
        r'|memory|balloon|shares|allow-ksm'                                     # VM.Config.Memory
        r'|acpi|hotplug|kvm|machine|scsihw|smbios1|tablet|vga|watchdog|audio0|rng0|serial\d+|usb\d+|hostpci\d+'
        r'|agent|autostart|bios|description|keyboard|localtime|migrate_downtime|migrate_speed|name|onboot|ostype'
        r'|protection|reboot|startdate|startup|tdf|template|tags|freeze'        # VM.Config.Options, VM.PowerMgmt
        r'|boot|bootdisk|vmstatestorage|(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0|cdrom|unused\d+|virtiofs\d+'
        r'|cicustom|citype|ciuser|ciupgrade|nameserver|searchdomain|sshkeys|ipconfig\d+|net\d+)$')
    # Known to be root@pam's alone (the same sources): said as such, not as unknown.
    ROOT_ONLY_VM_KEY = re.compile(r'^(?:args|hookscript|affinity|hugepages|keephugepages|ivshmem|spice_enhancements|arch'
                                  r'|amd-sev|intel-tdx|parallel\d+)$')
    DRIVE_KEY = re.compile(r'^(?:(?:ide|sata|scsi|virtio)\d+|efidisk0|tpmstate0|cdrom)$')
    ROOT_ONLY = 'only root@pam may set it'

    # A container's: what check_ct_modify_config_perm (pve-container src/PVE/LXC.pm) lets an ordinary
    # user set with VM.Config.* (CPU, Memory, Network, Disk, Options; rootfs and mpN only as volumes),
    # the rest of LXC/Config.pm's $confdesc being root@pam's or unknown to this tool (entrypoint, env:
    # kept, unconfirmed). Root's alone: dev[n] ("device passthrough is only allowed for root@pam"),
    # hookscript, a bind or device mount point ("mount point type ... is only allowed for root@pam"),
    # a feature but nesting ("changing feature flags (except nesting) is only allowed for root@pam"),
    # raw lxc.* keys (LXC/Config.pm: "lxc.* keys ... root@pam only", unconfirmed here).
    RESTORABLE_CT_KEY = re.compile(
        r'^(?:cores|cpulimit|cpuunits|memory|swap|net\d+|nameserver|searchdomain|hostname|rootfs|mp\d+|unused\d+'
        r'|arch|cmode|console|description|onboot|ostype|protection|startup|tags|timezone|tty|template|features'
        r'|unprivileged)$')
    ROOT_ONLY_CT_KEY = re.compile(r'^(?:dev\d+|hookscript|lxc(?:\..*)?)$')
    CT_VOLUME_KEY = re.compile(r'^(?:rootfs|mp\d+)$')

    @staticmethod
    def volume_owner(volid):
        """The guest id a volume belongs to by its name, as PVE names volumes (vm-<id>-…, base-<id>-…,
        subvol-<id>-…: pve-storage Plugin.pm parse_name_dir and parse_volname), or None."""
        found = re.match(r'^(?:vm|base|subvol|basevol)-(\d+)-', volid.rsplit(':', 1)[-1].rsplit('/', 1)[-1])
        return int(found[1]) if found else None

    @staticmethod
    def drive_risk(value, owner):
        """Why a drive value is none a restore of guest `owner`'s config may set, or None."""
        items = str(value).split(',')
        volume = Guest.drive_volume(value)
        if any(item.startswith('import-from=') for item in items):
            return 'it imports another file'
        if volume.startswith('/'):
            return f'a host path: {RestoreRules.ROOT_ONLY}'
        if volume == 'cdrom':
            return "the host's CD drive (Sys.Console)"
        if 'media=cdrom' in items or volume == 'none':
            return None
        if RestoreRules.volume_owner(volume) != owner:
            found = RestoreRules.volume_owner(volume)
            return f'a volume of {"no guest" if found is None else f"guest {found}"}, not of {owner}'
        return None

    @staticmethod
    def device_risk(key, value):
        """Why a serial, USB or PCI device value is root@pam's alone, or None: only a socket, SPICE or a
        mapped device is an ordinary user's (Qemu.pm check_usb_perm, check_hostpci_perm, the serial check)."""
        options = dict(item.split('=', 1) if '=' in item else ('host', item) for item in str(value).split(','))
        if key.startswith('serial') and str(value) != 'socket':
            return f'a host device: {RestoreRules.ROOT_ONLY}'
        if key.startswith('usb') and 'mapping' not in options and options.get('host', '').lower() != 'spice':
            return f'a host device: {RestoreRules.ROOT_ONLY}'
        if key.startswith('hostpci') and ('mapping' not in options or 'romfile' in options):
            return f'a host device{" or ROM file" if "romfile" in options else ""}: {RestoreRules.ROOT_ONLY}'
        return None

    @staticmethod
    def ct_setting_risk(key, value, owner):
        """Why a restore of CT `owner`'s config must not apply `key: value` on its own, or None."""
        if RestoreRules.ROOT_ONLY_CT_KEY.match(key):
            return RestoreRules.ROOT_ONLY
        if not RestoreRules.RESTORABLE_CT_KEY.match(key):
            return 'a setting unknown to this tool'
        if RestoreRules.CT_VOLUME_KEY.match(key):
            volume = Guest.drive_volume(value)
            if volume.startswith('/'):
                return f'a bind mount or device of the host: {RestoreRules.ROOT_ONLY}'
            return RestoreRules.drive_risk(value, owner)
        if key == 'features' and set(Guest.property_items(value)) - {'nesting'}:
            return f'a feature other than nesting: {RestoreRules.ROOT_ONLY}'
        if key == 'unprivileged' and str(value).lower() not in Guest.PVE_TRUE:
            # A privileged CT: its creation takes Sys.Modify on / (pve-container API2/LXC.pm, create_vm).
            return 'a privileged container: only a user with Sys.Modify on / may make one'
        return None

    @staticmethod
    def setting_risk(key, value, owner, kind=None):
        """Why a restore of guest `owner`'s config (of `kind`, default a VM) must not apply `key: value`
        on its own, or None."""
        if kind == Kind.CT:
            return RestoreRules.ct_setting_risk(key, value, owner)
        if RestoreRules.ROOT_ONLY_VM_KEY.match(key):
            return RestoreRules.ROOT_ONLY
        if not RestoreRules.RESTORABLE_VM_KEY.match(key):
            return 'a setting unknown to this tool'
        if RestoreRules.DRIVE_KEY.match(key):
            return RestoreRules.drive_risk(value, owner)
        if re.match(r'^(?:serial|usb|hostpci)\d+$', key):
            return RestoreRules.device_risk(key, value)
        return None

    @staticmethod
    def screen(settings, owner, allowed=(), kind=None):
        """(the settings a restore may apply, {key: why} of those it may not) of a guest's saved
        settings (restorable()); `allowed`: keys -allow-key names, applied whatever they are."""
        risks = {key: RestoreRules.setting_risk(key, value, owner, kind)
                 for key, value in settings.items() if key not in allowed}
        return ({key: value for key, value in settings.items() if not risks.get(key)},
                {key: why for key, why in risks.items() if why})

    @staticmethod
    def change(current, saved, keep=()):
        """The one config change that puts `saved` back over `current`: (keys to set, keys to delete).
        unusedN entries stay as they are: deleting one deletes its file (qemu-server API2/Qemu.pm,
        update_vm: try_deallocate_drive), and a saved one may name a file deleted since. A disk the
        current config has beyond the saved one is deleted without `force`, which PVE makes an
        unusedN entry ("Without this, we simple remove the disk from the config file and create an
        additional configuration entry called 'unused[n]'": update_vm's `force`); a disk given
        another file keeps the old one as unusedN the same way (PVE/QemuServer.pm,
        vmconfig_apply_pending). Bookkeeping keys stay as they are."""
        now, then = Guest.restorable(current), Guest.restorable(saved)
        changes = {key: value for key, value in then.items()
                   if not Guest.UNUSED_KEY.match(key) and now.get(key) != value and key not in keep}
        deletes = sorted(key for key in now if key not in then and not Guest.UNUSED_KEY.match(key) and key not in keep)
        return changes, deletes

    @staticmethod
    def plan(current, saved, owner, allowed=(), kind=None):
        """The ConfigPlan that puts the settings of `saved` back over `current` for guest `owner` (of
        `kind`, default a VM), as far as RestoreRules.screen lets them (`allowed`: the keys -allow-key
        names)."""
        now, then = Guest.restorable(current), Guest.restorable(saved)
        _, risky_then = RestoreRules.screen(then, owner, allowed, kind)
        _, risky_now = RestoreRules.screen(now, owner, allowed, kind)
        keep = set(risky_then) | set(risky_now)
        changes, deletes = RestoreRules.change(current, saved, keep)
        kept = {key: (then.get(key), now.get(key), risky_then.get(key) or risky_now[key])
                for key in sorted(keep) if then.get(key) != now.get(key)}
        forced = {key: then[key] for key in sorted(allowed)
                  if key in then and then[key] != now.get(key) and RestoreRules.setting_risk(key, then[key], owner, kind)}
        return ConfigPlan(changes, deletes, kept, forced)

    @staticmethod
    def describe_kept(kept, what='put back'):
        """Lines naming the settings a restore keeps as they are, and why."""
        return [f'  {key}: kept as it is ({why}; -allow-key {key} has it {what}): saved '
                + ('without it' if saved is None else f'"{saved}"') + ', now '
                + ('without it' if current is None else f'"{current}"') for key, (saved, current, why) in kept.items()]

    @staticmethod
    def new_vm_config(saved, volumes, smbios_uuid):
        """The config of a new VM made from a saved one. `volumes`: {disk key: the new VM's volid}.
        A cloud-init drive is made anew on its storage (`<storage>:cloudinit`, as PVE's create does);
        the NICs get new MAC addresses and the VM a new vmgenid (PVE makes both when none is given)
        and the SMBIOS uuid `smbios_uuid`, so that no guest sees a second copy of the old hardware;
        no onboot, no unused disks, no bookkeeping."""
        config = {}
        for key, value in Guest.restorable(saved).items():
            if Guest.UNUSED_KEY.match(key) or key in ('onboot', 'vmgenid'):
                continue
            if key in volumes:
                value = Guest.with_volume(value, volumes[key])
            elif Guest.DRIVE_BUS_KEY.match(key) and Guest.CLOUDINIT_VOLUME.search(Guest.drive_volume(value)):
                value = Guest.with_volume(value, Guest.drive_volume(value).split(':', 1)[0] + ':cloudinit')
            elif re.fullmatch(r'net\d+', key):
                value = Guest.without_mac(value)
            elif key == 'smbios1':
                value = ','.join([item for item in value.split(',') if item and not item.startswith('uuid=')]
                                 + [f'uuid={smbios_uuid}'])
            config[key] = value
        return config

    @staticmethod
    def new_ct_config(saved, volumes):
        """The config of a new CT made from a saved one (`volumes`: {disk key: the new CT's volid}): each
        netN with a new MAC address (Guest.random_mac: the tool writes the config itself, where PVE's
        create would give a NIC without hwaddr a random one), no onboot, no unused disks, no
        bookkeeping; `unprivileged` as saved, so that the files of its disks keep their id mapping."""
        config = {}
        for key, value in Guest.restorable(saved).items():
            if Guest.UNUSED_KEY.match(key) or key == 'onboot':
                continue
            if key in volumes:
                value = Guest.with_volume(value, volumes[key])
            elif re.fullmatch(r'net\d+', key):
                value = ','.join([item for item in value.split(',') if not item.startswith('hwaddr=')]
                                 + [f'hwaddr={Guest.random_mac()}'])
            config[key] = value
        return config

    @staticmethod
    def new_disk_paths(disks, vmid, taken):
        """{disk key: images/<vmid>/vm-<vmid>-disk-<n><ext>} for the disks of a new VM, n counting up
        from 0 past every number a name in `taken` (file names in images/<vmid>/) has already."""
        used = {int(found[1]) for name in taken if (found := re.match(rf'vm-{vmid}-disk-(\d+)\.', name))}
        numbers = (n for n in itertools.count() if n not in used)
        return {disk.key: f'images/{vmid}/vm-{vmid}-disk-{next(numbers)}{os.path.splitext(disk.file)[1]}'
                for disk in disks}


@dataclasses.dataclass(frozen=True)
class ConfigPlan:
    """What putting a saved config back does to a VM's config: the change (RestoreRules.change), the
    settings kept as they are ({key: (saved value, current value, why)}: RestoreRules.screen's on either
    side, where they differ) and those applied only because -allow-key names them ({key: value})."""
    changes: dict
    deletes: list
    kept: dict
    allowed: dict

    def after(self, current):
        """The VM's settings (restorable) once the change is made."""
        return {**{key: value for key, value in Guest.restorable(current).items() if key not in self.deletes},
                **self.changes}


class Manifest:
    """A snapshot's record of each guest (JSON beside a VM snapshot's clones, or in a storage
    snapshot's record directory): what was taken, of which VM, how consistent, with its config;
    signed with the cluster's key, for the datastore may be written by others than root."""

    @staticmethod
    def build(guest, disks, config, stamp, consistency, volumes, conf_file, config_from, version, clones,
              key=None, backings=None):
        """The record of a guest in a VM or storage snapshot, as JSON text: the tool's version, the
        stamp (a storage snapshot's name), the consistency, the config as PVE holds it (`conf_file`,
        bytes: the node's .conf, or config_text of the API's) and where it was read, and each disk
        on a configured storage: its key, volid, size, storage, cluster, SVM and volume, and its
        `clone` ({key: path in the volume, or None where the snapshot has no copy}). `volumes`:
        {storage: (cluster host, SVM, volume)}. One file, one request: the config is text in it, a
        byte that is no UTF-8 kept as an escape (surrogateescape), so it reads back exactly. And the
        identity of the guest (Identity.of_config), each disk's format and, for a qcow2 disk, the backing
        file it names (`backings`: {key: name or None}, where read). Signed with `key`
        (Manifest.signature), if there is one."""
        ctime, uuid, macs = Identity.of_config(config)
        backings = backings or {}
        manifest = {
            'tool': 'pve-ontap-snapshot', 'version': version, 'vmid': guest['vmid'], 'type': guest.get('type', 'qemu'),
            'name': guest.get('name'),
            'node': guest.get('node'), 'stamp': stamp, 'consistency': consistency, 'config_from': config_from,
            'config': Guest.without_secrets(conf_file).decode('utf-8', 'surrogateescape'),
            'identity': {'ctime': ctime, 'smbios_uuid': uuid, 'hwaddr': list(macs)},
            'disks': [{'key': disk.key, 'volid': disk.volid, 'clone': clones.get(disk.key),
                       'size': Guest.drive_size(config.get(disk.key)), 'storage': disk.storage,
                       'cluster': volumes[disk.storage][0], 'svm': volumes[disk.storage][1],
                       'volume': volumes[disk.storage][2], 'format': Guest.disk_format(disk),
                       **({'backing': backings[disk.key]} if disk.key in backings else {})}
                      for disk in disks if disk.storage in volumes]}
        if key:
            manifest['signature'] = Manifest.signature(manifest, key)
        return json.dumps(manifest, indent=2, sort_keys=True) + '\n'

    # A manifest is signed with a key of root's in /etc/pve/priv, shared by every node of the
    # cluster (pmxcfs), so that one changed on the datastore since is known as such.
    SIGNATURE_PREFIX = 'hmac-sha256:'

    @staticmethod
    def signature(manifest, key):
        """The signature of a manifest (a dict; its own `signature` left out): HMAC-SHA256 under
        `key` of its canonical JSON (sorted keys, no blanks)."""
        import hmac  # only manifests need it; see ontap_read_file
        body = {name: value for name, value in manifest.items() if name != 'signature'}
        canonical = json.dumps(body, sort_keys=True, separators=(',', ':')).encode()
        return Manifest.SIGNATURE_PREFIX + hmac.new(key, canonical, 'sha256').hexdigest()

    @staticmethod
    def read(data, path, vmid, stamp, key):
        """(manifest, signed) of a manifest's bytes read from `path`: the JSON object of the tool,
        its config a text, of guest `vmid` and snapshot `stamp` (its name says both: a manifest
        copied from another snapshot is caught), and `signed` whether `key` vouches for it (False:
        unsigned, or no key here to check it with). A ManifestError says what is wrong."""
        try:
            manifest = json.loads(data.decode('utf-8'))
        except ValueError as exc:
            raise ManifestError(f'manifest {path} cannot be read: it is no JSON ({exc})') from None
        return Manifest.check(manifest, path, vmid, stamp, key)

    @staticmethod
    def check(manifest, path, vmid, stamp, key):
        """(manifest, signed) of a manifest as read (Manifest.read), or a ManifestError."""
        import hmac  # see Manifest.signature
        if not isinstance(manifest, dict) or not isinstance(manifest.get('config'), str):
            raise ManifestError(f'manifest {path} cannot be read: it holds no config')
        if manifest.get('vmid') != vmid or manifest.get('stamp') != stamp:
            raise ManifestError(f'manifest {path} is of guest {manifest.get("vmid")!r}, snapshot '
                                f'{manifest.get("stamp")!r}, not of {vmid}, {stamp}: it was put there from elsewhere')
        signature = manifest.get('signature')
        if signature is None or key is None:
            return manifest, False
        if not hmac.compare_digest(str(signature), Manifest.signature(manifest, key)):
            raise ManifestError(f'manifest {path} fails its signature check: it was changed since this tool wrote it, '
                                'so its config is not used')
        return manifest, True

    @staticmethod
    def guest_type(manifest):
        """`qemu` or `lxc`: the guest's type as its manifest says (earlier builds wrote none: a
        container's config came from an lxc/ file, or names its root disk rootfs)."""
        if manifest.get('type') in ('qemu', 'lxc'):
            return manifest['type']
        from_lxc = '/lxc/' in str(manifest.get('config_from'))
        return 'lxc' if from_lxc or any(d.get('key') == 'rootfs' for d in manifest.get('disks') or ()) else 'qemu'

    @staticmethod
    def storage_record(storage, name, version, manifests):
        """A storage snapshot's record (Names.STORAGE_RECORD): the manifest of every guest on the
        storage (Manifest.build's, each signed on its own) in one JSON object, as bytes."""
        record = {'tool': 'pve-ontap-snapshot', 'version': version, 'storage': storage, 'snapshot': name,
                  'guests': [json.loads(manifest) for manifest in manifests]}
        return (json.dumps(record, indent=1, sort_keys=True) + '\n').encode()

    @staticmethod
    def read_storage_record(data, path):
        """The guests' manifests (dicts, each to be checked: Manifest.check) of a storage snapshot's
        record. The record is the file's first JSON value: the files API writes over a file and never
        makes it shorter, so the end of a longer record written before may follow it."""
        try:
            record, _ = json.JSONDecoder().raw_decode(data.decode('utf-8', 'replace'))
        except ValueError as exc:
            raise ManifestError(f'record {path} cannot be read: it is no JSON ({exc})') from None
        if not isinstance(record, dict) or not isinstance(record.get('guests'), list):
            raise ManifestError(f'record {path} cannot be read: it lists no guests')
        return record['guests']

    # Beside PVE's own keys in /etc/pve/priv: root's alone, the same on every node.
    KEY_FILE = 'pve-ontap-snapshot-manifest.key'

    @staticmethod
    def key(create):
        """The key manifests are signed with (32 bytes), kept in CLUSTER_DIR as hex; made by the first
        run that writes a manifest there (`create`). None off a node, or if there is none and not
        `create`. A Failure if the file holds no key."""
        if not os.path.isdir(Node.CLUSTER_DIR):
            return None
        path = os.path.join(Node.CLUSTER_DIR, Manifest.KEY_FILE)
        with PrivateFiles.checked_directory(Node.CLUSTER_DIR, 'directory', 'see README, Security', make=False) as parent:
            for _ in range(20):
                try:
                    descriptor = PrivateFiles.open_in(parent, Manifest.KEY_FILE, os.O_RDONLY, path)
                except FileNotFoundError:
                    if not create:
                        return None
                    try:
                        made = PrivateFiles.open_in(parent, Manifest.KEY_FILE,
                                                    os.O_WRONLY | os.O_CREAT | os.O_EXCL, path)
                    except FileExistsError:
                        continue    # another node's run made it meanwhile
                    with open(made, 'w') as file:
                        file.write(os.urandom(32).hex() + '\n')
                    continue
                with open(descriptor, encoding='ascii', errors='replace') as file:
                    text = file.read().strip()
                if re.fullmatch(r'[0-9a-f]{64}', text):
                    return bytes.fromhex(text)
                time.sleep(0.1)     # being written by another node's run
        raise Failure(f'{path} holds no key: restore it from a backup of /etc/pve, or remove it (a new one is made; '
                      'manifests signed with the old one then fail their check)')


class Hold:
    """What a VM snapshot's hold file says (vm hold; Names.HOLD_FILE): who held it, since when
    and why, as a short JSON text. The file itself is the mark: one that cannot be read still
    holds the snapshot."""

    KEYS = ('held_by', 'since', 'reason')
    READ_MAX = 4096     # a hold is a line; no more of a file is read

    @staticmethod
    def text(held_by, since, reason=None):
        """The hold file's bytes: {"held_by", "since" (a UTC stamp), "reason" (text or null)}."""
        return (json.dumps({'held_by': held_by, 'since': since, 'reason': reason or None}, sort_keys=True) + '\n').encode()

    @staticmethod
    def read(data, where):
        """{'held_by', 'since', 'reason'} of a hold file's bytes read from `where` (its values strings
        or None); a Failure says what is wrong with one that cannot be read."""
        try:
            hold = json.loads(data.decode('utf-8'))
        except ValueError as exc:
            raise Failure(f'hold {where} cannot be read: it is no JSON ({exc})') from None
        if not isinstance(hold, dict):
            raise Failure(f'hold {where} cannot be read: it is no JSON object')
        return {key: hold[key] if isinstance(hold.get(key), str) else None for key in Hold.KEYS}

    @staticmethod
    def describe(hold):
        """`by alice since <stamp> (before the upgrade)` of a hold as read, or '' where it says nothing."""
        hold = hold or {}
        return ' '.join(part for part in (f'by {hold["held_by"]}' if hold.get('held_by') else '',
                                          f'since {hold["since"]}' if hold.get('since') else '',
                                          f'({hold["reason"]})' if hold.get('reason') else '') if part)


class VmSnapshots:
    """A VM's snapshots on a storage: its files grouped by stamp, matched to the VM's disks, and
    which -keep deletes."""

    @staticmethod
    def by_stamp(files):
        """SnapshotFiles by stamp, oldest stamp first (stamps sort as time)."""
        sets = {}
        for file in sorted(files, key=lambda f: (f.stamp, f.storage, f.path)):
            sets.setdefault(file.stamp, []).append(file)
        return sets

    @staticmethod
    def match_disks(disks, files):
        """Pair each disk with the set file cloned from it: (pairs, disks without one, files without a disk)."""
        by_source = {(f.storage, f.source_file): f for f in files}
        pairs = [(d, by_source[(d.storage, d.file)]) for d in disks if (d.storage, d.file) in by_source]
        paired = {f for _, f in pairs}
        return pairs, [d for d in disks if (d.storage, d.file) not in by_source], [f for f in files if f not in paired]

    @staticmethod
    def missing_disks(disks, files):
        """The disks a set holds no clone of. A set that lacks any is incomplete (a partial run,
        a storage restore or a disk added since); files whose disk is gone from the VM do not count."""
        return VmSnapshots.match_disks(disks, files)[1]

    @staticmethod
    def hold_of(files):
        """The hold file of a set (vm hold), or None where it is not held."""
        return next((file for file in files if file.is_hold), None)

    @staticmethod
    def to_prune(sets, disks, keep, made, identity=(None, None, ())):
        """The stamps -keep N deletes of the snapshot sets {stamp: files} of a VM with `disks` and
        `identity` (Identity.of_config).

        Only complete sets of this VM count among the N: `made`, this run's set, counts as complete
        (it holds every disk, or a dry run did not make it) and is never deleted. Every set older
        than the oldest of those N goes, incomplete ones included; every newer one stays, so an
        incomplete set is never deleted while it is newer than a kept undo point. With fewer than
        N complete sets nothing goes. So this deletes no set the newest-N rule would have kept.
        A set of another VM that had this id (same_vm) is never counted or deleted. Where the VM's
        identity is known, a set whose own is not (made before manifests recorded it, or by the
        original) is not counted either, and goes only if it holds the VM's very disks. A held
        set (vm hold) is neither counted nor deleted.
        """
        sets = {stamp: files for stamp, files in sets.items() if not VmSnapshots.hold_of(files)}
        known = Identity.tag(identity) is not None
        same = {stamp: Identity.same_vm(Identity.of_files(files), identity) for stamp, files in sets.items()}
        ours = {stamp: files for stamp, files in sets.items() if same[stamp] or (same[stamp] is None and not known)}
        complete = sorted({stamp for stamp, files in ours.items()
                           if not VmSnapshots.missing_disks(disks, files)} | {made})
        if len(complete) < keep:
            return []
        oldest_kept = complete[-keep]
        held = {(disk.storage, disk.file) for disk in disks}
        candidates = [stamp for stamp, files in sets.items() if stamp in ours or (
            same[stamp] is None and {(f.storage, f.source_file) for f in files if f.is_clone} == held)]
        # a set of a clock ahead of this one's may sort after `made`, leaving `made` out of the N
        return [stamp for stamp in sorted(candidates) if stamp < oldest_kept and stamp != made]

    @staticmethod
    def expired(names, keep):
        """What retention removes: all but the newest `keep` of `names` (sorted oldest first)."""
        return list(names[:max(0, len(names) - keep)])


class Output:
    """What reaches stdout and the log from outside, made printable; tables and sizes."""

    @staticmethod
    def human_size(value):
        """Bytes as a short IEC string: 1536 -> '1.5 KiB'."""
        if value is None:
            return '-'
        size = float(value)
        for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
            if abs(size) < 1024 or unit == 'TiB':
                return f'{size:.0f} {unit}' if unit == 'B' else f'{size:.1f} {unit}'
            size /= 1024

    # What a terminal would act on rather than show: C0 and C1 controls (escape sequences, a
    # carriage return that hides a line), Unicode's format and line-separator characters (bidi
    # overrides reorder what follows), and the lone surrogates of bytes that are no UTF-8.
    UNPRINTABLE = re.compile(r'[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]')

    @staticmethod
    def printable(text):
        """Text from outside (a config, a file or snapshot name, a server's message) as it may reach a
        terminal: every character of UNPRINTABLE escaped, \\x1b or \\u202e, so that none can move
        the cursor, erase or reorder what was printed before it, or make two lines of one."""
        return Output.UNPRINTABLE.sub(lambda found: f'\\x{ord(found[0]):02x}' if ord(found[0]) < 0x100
                                      else f'\\u{ord(found[0]):04x}', str(text))

    @staticmethod
    def format_table(columns, rows):
        """A plain left-aligned text table; columns are (header, key) pairs; every cell printable()."""
        cells = [[header for header, _ in columns]] + [[Output.printable(row.get(key, '')) for _, key in columns]
                                                       for row in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        return '\n'.join('  '.join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                         for line in cells)

    @staticmethod
    def flatten(record, prefix=''):
        """{'space': {'size': 1}} -> {'space.size': 1}, for a readable `show`."""
        flat = {}
        for key, value in record.items():
            if key == '_links':
                continue
            if isinstance(value, dict):
                flat.update(Output.flatten(value, f'{prefix}{key}.'))
            else:
                flat[prefix + key] = value
        return flat

# ---- 8. Run infrastructure -------------------------------------------------------------------
# What a run shares (the context), the files it writes, locks, parallel changes and their
# outcomes, and the guest windows: guests held still, always returned to their state.

class Context:
    """What one run shares: the config, one PVE login, one Ontap per cluster, volume lookups.
    Its caches have no lock: a command fills those its threads read (storage.cfg, the volumes,
    and with them the Ontaps) in the main thread before it starts them (see gather_vms). The
    PVE login has a lock of its own. Threads share PVE's urllib3 pool (PveSession) and each
    Ontap's, which nothing changes after they are made (urllib3 keeps a pool's idle connections
    in a queue.LifoQueue: connectionpool.py)."""

    def __init__(self, config, output='text', dry_run=False, wait=0, local_lock=False, command=''):
        self.config = config
        self.output = output
        self.dry_run = dry_run
        self.wait = wait
        self.local_lock = local_lock
        self.command = command      # for the lock record: who holds it
        self.ca = Http.environment_ca()
        self.pve = Pve(config.proxmox, config.timeouts, dry_run, self.ca)
        self._ontaps = {}
        self._volumes = {}
        self._storages = None
        self._manifest_key = None
        self.volume_locks = {}        # lock name: the VolumeLock this run holds (Locks.for_storages)
        self.changes = []             # what this run changed, each as its info line says it (its run record)

    def changed(self, message, *args):
        """Say at info level what the run changed, and note it for its run record (RunRecords)."""
        log.info(message, *args)
        self.changes.append(message % args)

    def ontap(self, storage):
        cluster = self.config.ontap_for(storage)
        key = (cluster.host, cluster.user)
        if key not in self._ontaps:
            self._ontaps[key] = Ontap(cluster, self.config.timeouts, self.dry_run, self.ca)
        return self._ontaps[key]

    def storages(self):
        """PVE's storage.cfg, read once per run (one request serves every storage)."""
        if self._storages is None:
            self._storages = self.pve.storage_config()
        return self._storages

    def nfs_storage(self, storage):
        """The storage.cfg entry of an NFS storage; NotFound or a Failure naming it otherwise."""
        entry = self.storages().get(storage)
        if entry is None:
            raise NotFound(f'Proxmox {self.pve.host}: no storage {storage}')
        if entry.get('type') != 'nfs':
            raise Failure(f'Proxmox {self.pve.host}: storage {storage} is of type {entry.get("type")}, not NFS')
        return entry

    def storages_mounting(self, junction):
        """The ids of the PVE NFS storages whose export is this junction path."""
        return [sid for sid, entry in self.storages().items()
                if entry.get('type') == 'nfs' and Ontap.junction_path(entry.get('export', '')) == junction]

    def volume(self, storage):
        """The Volume behind a PVE NFS storage, looked up once per run."""
        if storage not in self._volumes:
            entry = self.nfs_storage(storage)
            self._volumes[storage] = self.ontap(storage).find_volume(entry['export'],
                                                                     self.config.ontap_for(storage).svm, storage)
        return self._volumes[storage]

    def volume_identity(self, storage):
        """(cluster host, SVM, volume name) of the volume behind `storage`: what names it anywhere."""
        volume = self.volume(storage)
        return volume.ontap.host, volume.svm, volume.name

    def manifest_key(self, create=False):
        """Manifest.key, read once per run (made with `create`, unless this is a dry run)."""
        if self._manifest_key is None or (create and not self._manifest_key):
            self._manifest_key = Manifest.key(create and not self.dry_run) or b''
        return self._manifest_key or None

    def lock_of(self, storage):
        """The VolumeLock of the volume behind `storage` while this run holds it, else None (a dry run takes none)."""
        return self.volume_locks.get(VolumeLock.file_name(*self.volume_identity(storage)))

    def locks_of(self, storages):
        """The VolumeLocks of the volumes behind `storages`, each once."""
        locks = [self.lock_of(storage) for storage in storages]
        return [lock for n, lock in enumerate(locks) if lock is not None and lock not in locks[:n]]

    def note_holds(self, storages, holds):
        """Note in the lock record of every volume of `storages` that the run holds guests ({vmid: how})."""
        for lock in self.locks_of(storages):
            lock.note_holds(holds)

    def forget_holds(self, storages, vmids):
        for lock in self.locks_of(storages):
            lock.forget_holds(vmids)

    def emit(self, data, text):
        """Print a result: JSON on request, else the text rendering."""
        print(json.dumps(data, indent=2, sort_keys=True) if self.output == 'json' else text)

    def confirm(self, question, assume_yes):
        """Ask on a terminal; without one, only -yes may go ahead. A dry run asks nothing."""
        if assume_yes or self.dry_run:
            return
        if not sys.stdin.isatty():
            raise ConfigError(f'{question}: not asking without a terminal; add -yes to go ahead')
        # On stderr, which is the terminal even when stdout goes to a pipe (-output json | jq).
        print(f'{Output.printable(question)} [y/N] ', end='', file=sys.stderr, flush=True)
        try:
            answer = input().strip().lower()
        except EOFError:    # Ctrl-D
            answer = ''
        if answer not in ('y', 'yes'):
            raise Failure('aborted: nothing changed')


class PrivateFiles:
    """Files this run writes on the node, and reads where others could write. A file the tool
    writes may sit where another local user can put a link or a directory of theirs (/run/lock
    is world-writable, and empty after a boot). So each directory it writes in is opened
    without following a link and checked — a real directory, the running user's, writable by
    nobody else — and each file is opened relative to it, never through a link."""

    @staticmethod
    def user_name(uid):
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return f'uid {uid}'

    @staticmethod
    def describe_owner(info):
        """`owned by bob (uid 1000), mode 777` of an os.stat result."""
        return f'owned by {PrivateFiles.user_name(info.st_uid)} (uid {info.st_uid}), mode {stat.S_IMODE(info.st_mode):o}'

    @staticmethod
    def unsafe_owner(info):
        """Why a directory or file (an os.stat result) is not the running user's alone, or None."""
        problems = []
        if info.st_uid != os.geteuid():
            problems.append(f"not {PrivateFiles.user_name(os.geteuid())}'s, who runs this")
        if info.st_mode & 0o022:
            problems.append('writable by group or others')
        return ', and '.join(problems) or None

    @staticmethod
    @contextlib.contextmanager
    def checked_directory(path, what, fix, make=True):
        """A descriptor of the directory `path` (made, mode 700, if missing and `make`) to open files
        in: a Failure naming it, its owner and mode, and `fix`, if it is a link or no directory, or
        is not the running user's alone (unsafe_owner)."""
        if make:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            kind = ('a link or no directory' if exc.errno in (errno.ELOOP, errno.ENOTDIR)
                    else f'not to be opened ({exc.strerror})')
            raise Failure(f'{what} {path} is {kind}: {fix}') from exc
        try:
            info = os.fstat(descriptor)
            problem = PrivateFiles.unsafe_owner(info)
            if problem:
                raise Failure(f'{what} {path} is {PrivateFiles.describe_owner(info)}: {problem}, so another user could put links '
                              f'in it; {fix}')
            yield descriptor
        finally:
            os.close(descriptor)

    @staticmethod
    def open_in(directory, name, flags, path, mode=0o600):
        """os.open of `name` in the checked directory (a descriptor), never through a link, `mode` if
        made; a Failure unless it is a plain file of the running user's. `path`: for messages."""
        try:
            descriptor = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=directory)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EEXIST):
                raise
            kind = 'a link' if exc.errno == errno.ELOOP else f'not to be opened ({exc.strerror})'
            raise Failure(f'{path} is {kind}: remove it') from exc
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(descriptor)
            raise Failure(f'{path} is {"no plain file" if not stat.S_ISREG(info.st_mode) else PrivateFiles.describe_owner(info)}, '
                          f'not a file of {PrivateFiles.user_name(os.geteuid())}\'s: remove it')
        return descriptor

    @staticmethod
    def read_text(directory, name):
        """The text of the file `name` in `directory` (a path), '' if there is none."""
        with PrivateFiles.checked_directory(directory, 'directory', 'see README, Security', make=False) as parent:
            try:
                descriptor = PrivateFiles.open_in(parent, name, os.O_RDONLY, os.path.join(directory, name))
            except FileNotFoundError:
                return ''
        with open(descriptor, encoding='utf-8') as handle:
            return handle.read()

    @staticmethod
    def write_text(directory, name, text, mode=0o600):
        """Replace the file `name` in `directory` (a path) whole: a new file of its own (O_EXCL, `mode`),
        then renamed over it — atomic on a local disk and on pmxcfs alike."""
        with PrivateFiles.checked_directory(directory, 'directory', 'see README, Security', make=False) as parent:
            temporary = f'.{name}.{os.getpid()}.{os.urandom(4).hex()}'
            descriptor = PrivateFiles.open_in(parent, temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                              os.path.join(directory, name), mode)
            os.fchmod(descriptor, mode)     # whatever the umask took away
            with open(descriptor, 'w', encoding='utf-8') as handle:
                handle.write(text)
            os.replace(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)


class Locks:
    """Taking the locks that keep runs apart: one per ONTAP volume, for the whole cluster in
    pmxcfs (or, -local-lock, on this node only), each with its VolumeLock record."""

    # /run/lock/pve-ontap-snapshot, made at boot by the Debian package (tmpfiles.d), else by the first run.
    NODE_DIR = '/run/lock/pve-ontap-snapshot'

    @staticmethod
    def node_dir():
        """Where this node's locks are: $PVE_ONTAP_SNAPSHOT_LOCK_DIR if set (every run must share it),
        else Locks.NODE_DIR for root; for another user, whose runs cannot share root's locks (such a run is
        one off a node), a directory of that user's own."""
        if os.environ.get('PVE_ONTAP_SNAPSHOT_LOCK_DIR'):
            return os.environ['PVE_ONTAP_SNAPSHOT_LOCK_DIR']
        if os.geteuid() == 0:
            return Locks.NODE_DIR
        if os.environ.get('XDG_RUNTIME_DIR'):
            return os.path.join(os.environ['XDG_RUNTIME_DIR'], 'pve-ontap-snapshot')
        import tempfile  # only a run by another user than root needs it; see ontap_read_file
        return os.path.join(tempfile.gettempdir(), f'pve-ontap-snapshot-{os.geteuid()}')

    @staticmethod
    @contextlib.contextmanager
    def on_node(name, what, wait, holder):
        """Hold this node's lock file `name` for `what`, waiting up to `wait` seconds for another run."""
        directory = Locks.node_dir()
        path = os.path.join(directory, name)
        fix = f'remove it (rm -r {directory}) and run again: the next run makes it anew, mode 700'
        with PrivateFiles.checked_directory(directory, 'lock directory', fix) as parent:
            descriptor = PrivateFiles.open_in(parent, name, os.O_RDWR | os.O_CREAT, path)
        with open(descriptor, 'r+', encoding='utf-8') as handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        raise Holder.in_use(what, handle.readline(), path) from None
                    time.sleep(0.1)

            def read():
                handle.seek(0)
                return handle.read()

            def write(text):
                handle.seek(0)
                handle.truncate()
                handle.write(text)
                handle.flush()
            yield VolumeLock(read, write, holder)

    CLUSTER_PREFIX = 'pve-ontap-snapshot-'     # never PVE's storage-<id>: PVE takes that for its disk work
    CLUSTER_REFRESH = 30.0                     # seconds between updates, well inside pmxcfs's 120
    CLUSTER_EXPIRY = 120                       # pmxcfs removes a lock not updated for this long (memdb.c)
    CLUSTER_RECORD_DIR = 'pve-ontap-snapshot'       # beside priv/lock: a lock directory must stay empty

    @staticmethod
    def check_cluster_usable():
        """Raise ClusterLockUnavailable unless this is a PVE node whose /etc/pve takes a lock now:
        one is really taken and given back (a test mkdir and rmdir), for without quorum pmxcfs
        refuses every write (EACCES) while the directories are all there."""
        if not os.path.isdir(Node.CLUSTER_DIR):
            raise ClusterLockUnavailable(f'not on a PVE node (no {Node.CLUSTER_DIR})')
        probe = os.path.join(Node.CLUSTER_DIR, 'lock',
                             f'{Locks.CLUSTER_PREFIX}probe-{os.getpid()}-{os.urandom(4).hex()}')
        try:
            os.makedirs(os.path.join(Node.CLUSTER_DIR, 'lock'), exist_ok=True)
            os.makedirs(os.path.join(Node.CLUSTER_DIR, Locks.CLUSTER_RECORD_DIR), exist_ok=True)
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError as exc:
            raise ClusterLockUnavailable(f'{Node.CLUSTER_DIR} is not writable ({exc.strerror}: no quorum?)') from exc

    class ClusterKeeper:
        """Keeps a cluster-wide lock this run took: refreshed every Locks.CLUSTER_REFRESH seconds in the
        documented form, `utime 0, now` (pve-cluster src/README, "File Locking"; as pve-ha-manager's
        get_pve_lock), with a time of its own choosing: pmxcfs takes only tv_sec, and a time of 0 is
        an unlock request. A refresh pmxcfs refuses (EACCES: no quorum, or the lock is no longer this
        node's) means the lock may be lost: STOP.lose stops every further change. The lock is given
        back at the end only if it is still this run's: every refresh succeeded, so pmxcfs, which
        expires a lock only 120 s after its last one, gave it to nobody else."""

        def __init__(self, lock):
            self.lock = lock
            self.lost = False
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._refresh, name=f'refresh {lock}', daemon=True)
            self._thread.start()

        def _refresh(self):
            while not self._stop.wait(Locks.CLUSTER_REFRESH):
                try:
                    os.utime(self.lock, (0, int(time.time())))
                except OSError as exc:
                    self.lost = True
                    STOP.lose(LockLost(f'the cluster lock {self.lock} may be lost: refreshing it failed ({exc.strerror}: '
                                       'no quorum, or another node took it over), so this run changes nothing more; '
                                       'check what it left (doctor) once the cluster is whole'))
                    return

        def release(self):
            self._stop.set()
            self._thread.join()
            if self.lost:
                return      # pmxcfs expires it; another run may hold it by now
            with contextlib.suppress(OSError):
                os.rmdir(self.lock)

    @staticmethod
    @contextlib.contextmanager
    def on_cluster(name, what, wait, holder):
        """Hold the cluster-wide lock `name` for `what`, waiting up to `wait` seconds for a run on
        any node, trying about once a second as PVE's cfs_lock does (pve-cluster PVE/Cluster.pm);
        kept by a Locks.ClusterKeeper."""
        lock = os.path.join(Node.CLUSTER_DIR, 'lock', Locks.CLUSTER_PREFIX + name)
        records = os.path.join(Node.CLUSTER_DIR, Locks.CLUSTER_RECORD_DIR)
        deadline = time.monotonic() + wait
        while True:
            try:
                os.mkdir(lock)
                break
            except FileExistsError:
                with contextlib.suppress(OSError):
                    os.utime(lock, (0, 0))      # an unlock request: pmxcfs removes the lock if expired
                if time.monotonic() >= deadline:
                    raise Holder.in_use(what, PrivateFiles.read_text(records, name).partition('\n')[0], lock) from None
                time.sleep(max(0.05, min(1.0, deadline - time.monotonic())))
            except OSError as exc:
                raise ClusterLockUnavailable(
                    f'cannot take the cluster lock {lock} ({exc.strerror}: no quorum?)') from exc
        keeper = Locks.ClusterKeeper(lock)
        try:
            yield VolumeLock(lambda: PrivateFiles.read_text(records, name), lambda text: PrivateFiles.write_text(records, name, text), holder)
        finally:
            keeper.release()

    @staticmethod
    def taker(ctx):
        """Locks.on_cluster on a PVE node whose /etc/pve takes one; else, where -local-lock allows
        it, Locks.on_node (this node's runs only); else a Failure saying why and what to do."""
        try:
            Locks.check_cluster_usable()
            return Locks.on_cluster
        except ClusterLockUnavailable as exc:
            if not (ctx.local_lock or ctx.config.local_lock):
                raise Failure(f'{exc}: the lock that keeps runs on every node apart cannot be taken; add -local-lock '
                              'if no run on another node can work on these storages now (README, Locks)') from exc
            log.info('%s: locking on this node only (-local-lock)', exc)
            return Locks.on_node

    @staticmethod
    @contextlib.contextmanager
    def for_storages(ctx, storages):
        """Lock the ONTAP volume behind every storage a command changes, by cluster, SVM and
        volume: two storage ids on one volume share its lock and its stamps. In a fixed order,
        so two runs never wait for each other in a circle. Yields the VolumeLocks; a dry run
        takes none."""
        with contextlib.ExitStack() as stack:
            locks = []
            if not ctx.dry_run:
                volumes = {}
                for storage in sorted(storages):
                    volume = ctx.volume(storage)
                    volumes.setdefault(VolumeLock.file_name(volume.ontap.host, volume.svm, volume.name),
                                       f'storage {storage} (volume {volume.name})')
                take = Locks.taker(ctx)
                holder = Holder.line(Holder.this_node(), ctx.command)
                for name, what in sorted(volumes.items()):
                    locks.append(stack.enter_context(take(name, what, ctx.wait, holder)))
                    ctx.volume_locks[name] = locks[-1]
                    stack.callback(ctx.volume_locks.pop, name, None)
            yield locks


class VolumeLock:
    """A lock this run holds on one ONTAP volume, and its record: who holds it (the first
    line, see Holder.line) and the stamps runs used lately, one `<subject> <stamp>` line each
    (a subject is a VM, `vm100`, whose snapshots and pre-restore snapshots it names, the
    captures the VMs of one vm create share, `captures`, or the storage snapshots, `storage`);
    and, as
    `<capture snapshot> <stamp>` lines, the capture snapshots of vm create that may still be
    on the volume: noted before each is made, forgotten once it is gone, so that a run that
    could not delete one (or died) leaves it to the next. `inherited`: those noted by earlier
    runs. And, as `held-<vmid> <how> <stamp>` lines, each guest the run paused, froze, suspended
    or shut down (`holds`): noted before, forgotten once it runs again, so that a run that died
    leaves it to the next (`left`: those of earlier runs, still so noted; `left_by`: who).
    `read` and `write` get and put the record's text."""

    def __init__(self, read, write, holder):
        self._put = write
        self.holder = holder
        self.left_by, entries = VolumeLock.parse_record(read())
        self.captures = {s: t for s, t in entries.items() if s.startswith(Names.CAPTURE_PREFIX)}
        self.inherited = dict(self.captures)
        self.holds = VolumeLock.record_holds(entries)
        self.left = dict(self.holds)
        self.stamps = {s: t for s, t in entries.items()
                       if s not in self.captures and not s.startswith(VolumeLock.HOLD_PREFIX)}
        self._mutex = threading.Lock()      # VMs of one run may note captures at once
        self._write()

    def _write(self):
        entries = {**self.stamps, **self.captures,
                   **{f'{VolumeLock.HOLD_PREFIX}{vmid}': f'{how} {Names.utc_stamp()}' for vmid, how in self.holds.items()}}
        self._put(''.join([f'{self.holder}\n'] + [f'{s} {t}\n' for s, t in entries.items()]))

    def note_holds(self, holds):
        """Before the run pauses, freezes, suspends or shuts down guests ({vmid: how})."""
        with self._mutex:
            self.holds.update(holds)
            self._write()

    def forget_holds(self, vmids):
        """Once these guests run again (or one is left down on purpose, and said so)."""
        with self._mutex:
            for vmid in vmids:
                self.left.pop(vmid, None)
            if [self.holds.pop(vmid) for vmid in vmids if vmid in self.holds]:
                self._write()

    def record(self, subjects, stamp):
        with self._mutex:
            # A stamp of an earlier second can never collide again: forget it.
            self.stamps = {s: t for s, t in self.stamps.items() if t >= stamp}
            self.stamps.update(dict.fromkeys(subjects, stamp))
            self._write()

    def note_capture(self, name, stamp):
        with self._mutex:
            self.captures[name] = stamp
            self._write()

    def forget_capture(self, name):
        with self._mutex:
            if self.captures.pop(name, None) is not None:
                self._write()

    def claim_inherited(self, seconds):
        """The captures earlier runs noted that are older than `seconds` and still noted: handed
        out once, so that of VMs snapshotted at once only one goes after them."""
        with self._mutex:
            due = [name for name, noted in self.inherited.items()
                   if name in self.captures and Names.stamp_older_than(noted, seconds)]
            for name in due:
                del self.inherited[name]
        return due

    HOLD_PREFIX = 'held-'     # a lock record's line of a guest its run holds: held-<vmid> <how> <stamp>

    @staticmethod
    def parse_record(text):
        """(holder line, {key: value} of the other lines) of a lock record (VolumeLock)."""
        lines = text.splitlines()
        return (lines[0] if lines else ''), dict(line.split(' ', 1) for line in lines[1:] if ' ' in line)

    @staticmethod
    def record_holds(entries):
        """{vmid: how} of the held-<vmid> lines of a lock record."""
        return {int(key.removeprefix(VolumeLock.HOLD_PREFIX)): value.split(' ', 1)[0] for key, value in entries.items()
                if key.startswith(VolumeLock.HOLD_PREFIX) and key.removeprefix(VolumeLock.HOLD_PREFIX).isdigit()}

    @staticmethod
    def file_name(host, svm, volume):
        """The lock file of one ONTAP volume, `<volume>@<svm>@<cluster host>.lock`: each part
        percent-encoded, so that any host (`[::1]:8443`) gives one safe file name."""
        return '@'.join(urllib.parse.quote(part, safe='') for part in (volume, svm or '', host.lower())) + '.lock'

    @staticmethod
    def new_stamp(locks, subjects, taken=()):
        """The stamp of a new snapshot of each of `subjects` that no earlier run under these locks
        used for any of them and none of `taken` (existing sets) has, recorded in each lock at
        once. Stamps have one-second resolution, so a run right after another of the same subject
        waits for the next second instead of colliding with its names."""
        used = set(taken) | {lock.stamps.get(subject) for lock in locks for subject in subjects}
        while (stamp := Names.utc_stamp()) in used:
            time.sleep(0.1)
        for lock in locks:
            lock.record(subjects, stamp)
        return stamp


class Holder:
    """Who holds a lock: a run's pid and process start (what tells it from a later process with
    the pid), node, since when and its command, as the lock record's first line."""

    @staticmethod
    def process_start(pid):
        """When process `pid` started, in clock ticks since boot (/proc/<pid>/stat, field 22): with
        the pid, what tells it from a later process given the same pid. None if there is none."""
        try:
            with open(f'/proc/{int(pid)}/stat', encoding='ascii', errors='replace') as file:
                fields = file.read().rsplit(')', 1)[1].split()
            return int(fields[19])
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def line(node, command, now=None):
        """Who holds a lock: `<pid>:<its start> <node or -> <since, UTC> <command>`."""
        return f'{os.getpid()}:{Holder.process_start(os.getpid())} {node or "-"} {Names.utc_stamp(now)} {command}'

    @staticmethod
    def parse(line):
        """(pid, its start or None, node or None, since, command) of a holder line (an older tool's
        holds `<pid>` alone, or no start)."""
        pid, node, since, command = (line.strip().split(' ', 3) + ['-', '', ''])[:4] if line.strip() else [
            'unknown', '-', '', '']
        pid, _, start = pid.partition(':')
        return pid, int(start) if start.isdigit() else None, None if node == '-' else node, since, command

    @staticmethod
    def alive(line, node):
        """Whether the run a holder line names still runs: True or False where it ran on `node` (this
        one) and its pid and start say, None where that cannot be told here."""
        pid, start, holder_node, _, _ = Holder.parse(line)
        if holder_node != node or not pid.isdigit() or start is None:
            return None
        return Holder.process_start(pid) == start

    @staticmethod
    def this_node():
        """The name this node goes by in holder lines."""
        return socket.gethostname().split('.')[0]

    @staticmethod
    def describe(line):
        """`pid 4242 on node pve2 since <stamp>: storage create -storage X` from a holder line."""
        pid, _, node, since, command = Holder.parse(line)
        return (f'pid {pid}' + (f' on node {node}' if node else '') + (f' since {since}' if since else '')
                + (f': {command}' if command else ''))

    @staticmethod
    def in_use(what, record, lock):
        return Failure(f'{what} is in use by another pve-ontap-snapshot run ({Holder.describe(record)}, lock {lock}): '
                       'try again later or wait with -wait SECONDS')


class RunRecords:
    """How each run that changes something ended, kept where monitor reads it from any node:
    beside the lock records in pmxcfs on a PVE node (Locks.CLUSTER_RECORD_DIR), else in this
    node's lock directory. One file per command and subject, `storage-create@ONTAP01.run`: JSON
    of its last run, last success and last failure. A record that cannot be written is a
    warning: it never fails the run it tells of."""

    SUFFIX = '.run'
    # The changes a record names; a run over a whole cluster says how many more (pmxcfs keeps small files).
    CHANGES_KEPT = 20
    # The commands that change something; a dry run changes nothing and records nothing.
    COMMANDS = ('vm create', 'vm delete', 'vm hold', 'vm release', 'vm restore', 'ct create', 'ct delete', 'ct hold',
                'ct release', 'ct restore', 'storage create', 'storage delete', 'storage hold', 'storage release',
                'storage restore', 'storage mount', 'storage unmount')

    @staticmethod
    def directory():
        if os.path.isdir(Node.CLUSTER_DIR):
            return os.path.join(Node.CLUSTER_DIR, Locks.CLUSTER_RECORD_DIR)
        return Locks.node_dir()

    @staticmethod
    def subject(args):
        """What a run was about, as its command line names it: a storage, `all`, or VM ids."""
        if getattr(args, 'all', False):
            return 'all' + (',node-local' if getattr(args, 'node_local', False) else '')
        if getattr(args, 'vm', None):
            return ','.join(str(vmid) for vmid in dict.fromkeys(args.vm if isinstance(args.vm, list) else [args.vm]))
        return args.storage

    @staticmethod
    def file_name(command, subject):
        return '-'.join(command.split()) + '@' + urllib.parse.quote(subject, safe=',') + RunRecords.SUFFIX

    @staticmethod
    def record(command, subject, started, failure, changes=()):
        """Note the end of a run: `failure` the Failure it ended with (which says what it left), or
        None; `changes` what it changed (Context.changed), failed or not."""
        ended = time.time()
        directory, name = RunRecords.directory(), RunRecords.file_name(command, subject)
        run = {'ended': ended, 'seconds': round(ended - started, 3), 'node': Holder.this_node(),
               'outcome': 'failed' if failure else 'done', 'message': str(failure) if failure else None,
               'changes': list(changes[:RunRecords.CHANGES_KEPT]),
               'more_changes': max(0, len(changes) - RunRecords.CHANGES_KEPT)}
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            previous = RunRecords.parse(PrivateFiles.read_text(directory, name)) or {}
            record = {'command': command, 'subject': subject, 'last': run,
                      'last_success': previous.get('last_success'), 'last_failure': previous.get('last_failure'),
                      'last_' + ('failure' if failure else 'success'): run}
            PrivateFiles.write_text(directory, name, json.dumps(record, sort_keys=True) + '\n')
        except (OSError, Failure) as exc:
            log.warning('how this run ended is not recorded in %s: %s', directory, getattr(exc, 'strerror', None) or exc)

    @staticmethod
    def report(args, command, started, exc, changes=()):
        """Record how the run ended (`exc` what stopped it, or None; `changes` what it changed) and,
        with -textfile, write the runs' metrics."""
        failure = exc if isinstance(exc, Failure) else Failure(str(exc) or 'interrupted') if exc else None
        RunRecords.record(command, RunRecords.subject(args), started, failure, changes)
        if args.textfile:
            try:
                Metrics.write(args.textfile, Metrics.RUNS_FILE, Metrics.runs_text(RunRecords.read_all()))
            except (OSError, Failure) as error:
                log.warning('the metrics are not written to %s: %s', args.textfile,
                            getattr(error, 'strerror', None) or error)

    @staticmethod
    def parse(text):
        """A run record's JSON object, or None for a text that is none (empty, or changed by hand)."""
        try:
            record = json.loads(text) if text else None
        except ValueError:
            return None
        return record if isinstance(record, dict) and isinstance(record.get('last'), dict) else None

    @staticmethod
    def read_all():
        """Every run record there is, by file name; one that cannot be read is a warning."""
        directory = RunRecords.directory()
        try:
            names = sorted(name for name in os.listdir(directory) if name.endswith(RunRecords.SUFFIX))
        except OSError:
            return []
        records = []
        for name in names:
            try:
                record = RunRecords.parse(PrivateFiles.read_text(directory, name))
            except (OSError, Failure) as exc:
                record, why = None, getattr(exc, 'strerror', None) or exc
            else:
                why = 'it is no run record'
            if record is None:
                log.warning('run record %s cannot be read: %s', os.path.join(directory, name), why)
                continue
            records.append(record)
        return records


class Parallel:
    """The one helper for parallel work: how much runs at once, and waiting so that a stop signal
    is seen and never cuts a batch of changes in two."""

    # How much of a run goes on at once (README, vm create and Performance: why these numbers).
    # vm create: VMs worked on at once, the default of -parallel. More gained nothing in the
    # benchmark and only load the API servers: ONTAP turns REST requests away once its input
    # queue is full (NetApp, ONTAP automation docs, "Known limitations"; its size unconfirmed).
    VMS_AT_ONCE = 16
    MOST_VMS_AT_ONCE = 32       # the most -parallel allows
    # VMs one node suspends or shuts down and starts again at once: as many as PVE's own HA
    # manager runs start and stop jobs on a node, datacenter.cfg's max_workers, 4 by default
    # (pve-ha-manager: src/PVE/HA/Env/PVE2.pm get_max_workers, src/PVE/HA/LRM.pm run_workers).
    POWER_CYCLES_PER_NODE = 4
    REQUESTS_AT_ONCE = 16       # requests one thread fans out at once: a VM's clones, reads, deletes
    # Every thread of a run may have a request out at one host at once: each pool (PveSession's, an
    # Ontap's) keeps a connection for each, so no thread waits for one (inside a VM's pause, say)
    # and none is thrown away (urllib3 warns "Connection pool is full"). Only idle connections take room.
    CONNECTIONS_PER_HOST = MOST_VMS_AT_ONCE * REQUESTS_AT_ONCE
    # How long a stop signal may wait to be seen while the main thread waits for parallel work.
    SIGNAL_LATENCY = 0.1

    @staticmethod
    def wait_for(futures, timeout=None):
        """concurrent.futures.wait(futures, timeout), in steps of SIGNAL_LATENCY in the main thread.
        The kernel may hand a stop signal to any thread (signal(7): "an arbitrary thread"), and
        Python runs its handler in the main thread once that runs Python code again; in one long
        wait, it would see the signal only when the wait ends — too late to keep a VM in vm create
        from beginning, and a second Ctrl-C would not be seen as one."""
        if threading.current_thread() is not threading.main_thread():
            return concurrent.futures.wait(futures, timeout)
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            step = max(0.0, min(Parallel.SIGNAL_LATENCY, deadline - time.monotonic()))
            waited = concurrent.futures.wait(futures, step)
            if not waited.not_done or time.monotonic() >= deadline:
                return waited

    @staticmethod
    def result_of(future, timeout=None):
        """future.result(timeout), waited for by wait_for: concurrent.futures.TimeoutError if it is
        not done by then."""
        if Parallel.wait_for([future], timeout).not_done:
            raise concurrent.futures.TimeoutError
        return future.result()

    @staticmethod
    def map(function, items, limit=REQUESTS_AT_ONCE, finish=False):
        """[function(item) for item in items], up to `limit` calls at once (1: one by one, in
        order, so that a dry run prints its lines in order). The first exception, in item order,
        is raised once every call begun has ended, and the others are then not begun — or, with
        `finish`, all the same; a stop signal in the main thread likewise."""
        if limit < 2 or len(items) < 2:
            return [function(item) for item in items]
        return Batch(function, items, finish).run(min(limit, len(items)))

    # Threads that carry a run's parallel calls: started as the first batches need them, then kept
    # for the next (a VM's clones, listings and deletes are a batch each: starting a thread cost as
    # much CPU as a request). Never fewer than every batch that may run at once can ask of it.
    _pool = None
    _pool_lock = threading.Lock()

    @staticmethod
    def pool():
        with Parallel._pool_lock:
            if Parallel._pool is None:
                Parallel._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=(Parallel.MOST_VMS_AT_ONCE + 1) * Parallel.REQUESTS_AT_ONCE,
                    thread_name_prefix='parallel')
            return Parallel._pool

    @staticmethod
    def within(seconds, late, function, *args):
        """function(*args) in a thread of its own; if it has not returned after `seconds`, late()
        is called and the wait goes on for its result."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(function, *args)
            try:
                return Parallel.result_of(future, timeout=seconds)
            except concurrent.futures.TimeoutError:
                late()
                return Parallel.result_of(future)

    @staticmethod
    @contextlib.contextmanager
    def in_order(function, items, workers):
        """function(item) for each item, `workers` at once: yields an iterator of the results, in
        item order, each as soon as it and those before it are done. On the way out — also on an
        exception — every call begun ends, and none begins any more."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(function, item) for item in items]
            yield (Parallel.result_of(future) for future in futures)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def run(function, items, at_once=True, limit=REQUESTS_AT_ONCE):
        """Call function(item) for every item, up to `limit` at once (or one by one, so that a
        dry run prints its lines in order); the Outcome of each, in item order. A stop signal
        does not cut such a batch of changes in two: every item is begun."""
        def outcome(item):
            try:
                function(item)
            except Failure as exc:
                return Outcome(item, exc)
            return Outcome(item)

        return Parallel.map(outcome, items, limit if at_once else 1, finish=True)


class Batch:
    """One Parallel.map: its calls taken in item order by lanes, each lane a thread of Parallel.pool
    that calls one item after another. A worker thread (a VM's, in vm create) is a lane itself, so
    that its batch ends even if no thread of the pool is free; the main thread only waits, so that a
    stop signal never cuts a call in two."""

    def __init__(self, function, items, finish):
        self.function, self.items, self.finish = function, items, finish
        self.results, self.errors = [None] * len(items), {}
        self.taken = self.ended = 0
        self.stopping = False
        self.changed = threading.Condition()

    def run(self, lanes):
        inline = threading.current_thread() is not threading.main_thread()
        for _ in range(lanes - inline):
            Parallel.pool().submit(self.lane)
        try:
            if inline:
                self.lane()
            self.wait()
        finally:
            # On a stop signal in the main thread no call begins any more; it is raised once the
            # calls begun have ended.
            with self.changed:
                self.stopping = True
            self.wait()
        if self.errors:
            raise self.errors[min(self.errors)]
        return self.results

    def closed(self):
        """No call begins any more: all are taken, or (unless `finish`) one failed or a stop signal came."""
        return self.taken == len(self.items) or ((self.errors or self.stopping) and not self.finish)

    def take(self):
        """The index of the next item to call, or None once closed()."""
        with self.changed:
            if self.closed():
                return None
            self.taken += 1
            return self.taken - 1

    def lane(self):
        while (index := self.take()) is not None:
            try:
                self.results[index] = self.function(self.items[index])
            except BaseException as exc:  # noqa: BLE001 -- the caller's to raise, as concurrent.futures carries it
                self.fail(index, exc)
            with self.changed:
                self.ended += 1
                self.changed.notify_all()

    def fail(self, index, exc):
        with self.changed:
            self.errors.setdefault(index, exc)
            self.changed.notify_all()

    def over(self):
        """Every call begun has ended and no other will begin."""
        return self.ended == self.taken and self.closed()

    def wait(self):
        """Until over(), in steps of SIGNAL_LATENCY in the main thread (see Parallel.wait_for)."""
        step = Parallel.SIGNAL_LATENCY if threading.current_thread() is threading.main_thread() else None
        with self.changed:
            while not self.over():
                self.changed.wait(step)


class Clones:
    """File clones and file deletes in parallel, each ending done, failed or unknown; unknown ones
    followed until they end."""

    @staticmethod
    def make(ctx, clones, overwrite=False):
        """File-clone (storage, source, destination) triples in parallel: their Outcomes."""
        def clone(item):
            storage, source, destination = item
            volume = ctx.volume(storage)
            volume.clone_file(source, destination, overwrite)
        return Parallel.run(clone, clones, at_once=not ctx.dry_run)

    @staticmethod
    def delete(ctx, files):
        """Delete (storage, path) files in parallel: their Outcomes; a missing file counts as done."""
        def delete(item):
            volume = ctx.volume(item[0])
            volume.delete_file(item[1])
        return Parallel.run(delete, files, at_once=not ctx.dry_run)

    @staticmethod
    def settle_each(outcomes, settle, what):
        """The Outcomes in the same order, once settle(outcome) has found out, in parallel, what
        became of each unknown one: it returns if that is done, raises the Failure or OutcomeUnknown."""
        unknown = [outcome for outcome in outcomes if outcome.state == 'unknown']
        if not unknown:
            return outcomes
        log.warning('%d %s of unknown outcome: finding out before anything is rolled back', len(unknown), what)
        settled = {result.item.item: Outcome(result.item.item, result.error)
                   for result in Parallel.run(settle, unknown)}
        return [settled.get(outcome.item, outcome) for outcome in outcomes]

    FILE_CLONE_CALL = 'POST /api/storage/file/clone'

    @staticmethod
    def settle(ctx, outcomes, overwrite=False):
        """The Outcomes of file clones once those of unknown outcome have been found out about
        (ontap_settle), in the same order: a new destination is read back (there: done; absent:
        failed); whether an overwrite landed cannot be read back, so it stays unknown."""
        def settle(outcome):
            storage, _, destination = outcome.item
            volume = ctx.volume(storage)
            volume.ontap.settle(outcome.error, Clones.FILE_CLONE_CALL,
                                None if overwrite else lambda: volume.file_exists(destination))

        return Clones.settle_each(outcomes, settle, 'clone(s)')

    @staticmethod
    def remove(ctx, clones):
        """Take back the destinations of (storage, source, destination) clones: a phrase for the
        error message saying what was removed, or naming what is left."""
        if not clones:
            return 'nothing was cloned'
        outcomes = Clones.delete(ctx, [(storage, destination) for storage, _, destination in clones])
        left = [path for outcome in outcomes if outcome.state != 'done' for _, path in [outcome.item]]
        if left:
            return f'could not remove {", ".join(left)}: delete them by hand'
        return f'removed the {len(clones)} clone(s) made before'

    @staticmethod
    def still_pending(outcomes):
        """The phrase for clones whose outcome stayed unknown: their jobs, and what to do once they end."""
        pending = [outcome for outcome in outcomes if outcome.state == 'unknown']
        if not pending:
            return ''
        files = ', '.join(destination for _, _, destination in Outcome.items_in(pending, 'unknown'))
        return f'; still unknown: {Outcome.pending_jobs(pending)}; once ONTAP has ended it, check and delete {files}'


@dataclasses.dataclass
class VmView:
    """A VM as the vm commands see it, gathered before anything changes."""
    vm: dict
    config: dict
    disks: list         # Disks on configured ONTAP storages, with an image file
    skipped: list       # (Disk, reason)
    storages: list      # configured storages holding its disks or unused disks (the ones to lock)
    backings: dict = None   # {disk key: the backing file its qcow2 file names, or None}, once read

    @property
    def vmid(self):
        return self.vm['vmid']

    @property
    def label(self):
        """`VM 100` or `CT 200`, as every message names the guest."""
        return Guest.label(self.vm)

    @property
    def kind(self):
        return Kind.of(self.vm)

    @property
    def identity(self):
        return Identity.of_config(self.config)

    @staticmethod
    def gather(ctx, vmid, vms=None, config=None, kind=None):
        """The guest of `kind` (default: a VM), its config, its ONTAP disks (and the volumes behind
        them, looked up now); `vms`: the guests already listed, by id."""
        vm = ctx.pve.find_guest(vmid, vms, kind)
        config = ctx.pve.config_of(vm) if config is None else config
        disks, skipped = [], Guest.host_mounts(vm, config)
        for disk in Guest.disks(vm, config):
            if disk.storage not in ctx.config.storages:
                skipped.append((disk, f'storage {disk.storage} has no section in {ctx.config.path}'))
            elif disk.path is None:
                skipped.append((disk, f'{disk.volid} is no image file'))
            else:
                ctx.volume(disk.storage)
                disks.append(disk)
        return VmView(vm, config, disks, skipped, sorted(Guest.storages(config) & set(ctx.config.storages)))

    @staticmethod
    def gather_snapshots(ctx, view, storages=None):
        """Every VM snapshot set of the VM on every configured storage it uses (or on `storages`: those
        a VM's disks may have left, see searched_storages), by stamp."""
        directory = f'images/{view.vmid}'

        def list_storage(storage):
            volume = ctx.volume(storage)
            return [Names.snapshot_file(storage, directory, record['name'], record.get('size'))
                    for record in volume.list_dir(directory)]

        found = Parallel.map(list_storage, view.storages if storages is None else storages)
        return VmSnapshots.by_stamp([file for listing in found for file in listing if file])

    @staticmethod
    def searched_storages(ctx, view):
        """The storages a VM's snapshots may be on: those it uses, and every other of config.ini that
        can be looked up now, where a disk of it was before it moved (vm list, vm restore)."""
        return sorted(set(view.storages) | set(NewVm.reachable_storages(ctx, quiet=True)))

    @staticmethod
    @contextlib.contextmanager
    def locked_snapshot(ctx, vmid, stamp, kind=None):
        """(the VmView, the files of its snapshot `stamp`), under the locks of the guest's storages
        (vm delete, hold, release): an unknown stamp is a NotFound."""
        view = VmView.gather(ctx, vmid, kind=kind)
        with Locks.for_storages(ctx, view.storages):
            yield view, VmView.find_snapshot(view, VmView.gather_snapshots(ctx, view), stamp)

    @staticmethod
    def find_snapshot(view, sets, stamp):
        if stamp not in sets:
            raise NotFound(f'{Guest.label(view.vm)} has no snapshot {stamp} (it has: {", ".join(sets) or "none"})')
        return sets[stamp]


class Guests:
    """What both guest windows share: a guest frozen is thawed, one stopped started again, and what a
    run that died left held (noted in the volume's lock record) brought back."""

    @staticmethod
    def check_freezable(ctx, view):
        """-freeze needs the guest agent configured, freezing allowed and the agent answering:
        checked before any freeze."""
        setting = view.config.get('agent')
        if not Guest.agent_enabled(setting):
            raise Failure(f'{view.label}: no QEMU guest agent configured (set agent: 1); -freeze needs one')
        if not Guest.agent_freezes(setting):
            raise Failure(f'{view.label}: its agent setting turns freezing off (agent: {setting}); use -pause, or '
                          'allow freezing (freeze-fs=1)')
        try:
            ctx.pve.agent(view.vm, 'ping', safe=True)
        except ProxmoxError as exc:
            raise Failure(f'{view.label}: {Guests.agent_silent(ctx, exc)}, nothing frozen: {exc}') from exc

    # PVE's refusal of a privilege (pve-access-control PVE/RPCEnvironment.pm, check_full:
    # "Permission check failed"); the guest agent takes VM.GuestAgent.* on PVE 9 and VM.Monitor
    # on PVE 8 (qemu-server API2/Qemu/Agent.pm; VM.Monitor dropped by pve-access-control 0706945).
    PERMISSION_REFUSED = 'Permission check failed'

    @staticmethod
    def agent_silent(ctx, exc):
        """Why a guest agent did not answer the ping, as a phrase: PVE refused it to this user, or it does not answer."""
        if Guests.PERMISSION_REFUSED in str(exc):
            return (f'PVE refuses its guest agent to {ctx.pve.config.user} (grant VM.GuestAgent.Audit and '
                    'VM.GuestAgent.FileSystemMgmt on PVE 9, VM.Monitor on PVE 8: README, Least privilege)')
        return 'its guest agent does not answer'

    @staticmethod
    def thaw(ctx, view):
        """fsfreeze-thaw. Returns None; a FrozenTooLong if the guest had let go by itself (it runs
        again); or a Failure that says what to run by hand."""
        try:
            ctx.pve.agent(view.vm, 'fsfreeze-thaw')
        except Failure as exc:
            if Guest.frozen_too_long(exc):
                return FrozenTooLong(f'the guest of {view.label} gave up its freeze before the thaw, as Windows VSS '
                                     f'does after about 10 s ({exc})')
            return Failure(f'the guest of {view.label} could not be thawed and may still be frozen: run '
                           f'"qm guest cmd {view.vmid} fsfreeze-thaw" ({exc})')
        log.info('%s: guest thawed', view.label)
        return None

    @staticmethod
    def ensure_running(ctx, view, cause, resume=False):
        """After a failed suspend or shutdown: start the VM again unless it still runs — or, after
        a failed pause in memory (`resume`), resume it if it is paused now. One whose outcome is
        unknown is followed until it ended first, or its task would take the VM down after the
        start. A VM under HA is asked to start in any case: HA may still be on its way to stop it."""
        action = 'resume' if resume else 'start'
        try:
            if isinstance(cause, OutcomeUnknown):
                ctx.pve.settle_task(view.vm, cause)
            if resume:
                if ctx.pve.status(view.vm).get('qmpstatus') == 'paused':
                    ctx.pve.power(view.vm, 'resume')
            elif view.vm.get('hastate') or not ctx.pve.running(view.vm):
                ctx.pve.power(view.vm, 'start')
        except OutcomeUnknown as exc:
            state = 'be paused' if resume else 'go down or come up'
            raise Failure(f'{cause}; {view.label} may still {state} ({exc}): check it, and {action} it by hand if it '
                          f'is {"paused" if resume else "down"}') from exc
        except Failure as exc:
            raise Failure(f'{cause}; and {"resuming" if resume else "starting"} the VM again failed: {exc}') from exc

    @staticmethod
    def raise_with_problems(exc, problems):
        """On leaving a window: a Failure that ended it is raised again, joined with what went
        wrong in letting the guests go; any other exception (a stop) goes on, and those problems
        are logged first, so that it cannot hide them."""
        if exc is not None and problems:
            if isinstance(exc, Failure):
                raise Failure.joined(exc, *problems) from exc
            for problem in problems:
                log.error('%s', problem)

    @staticmethod
    def start_again(ctx, view, paused_for, action='start'):
        """Start a VM paused for the captures or clones (or `resume` one paused in memory). Returns
        None, or the Failure that says plainly that it is stopped or paused (for the caller to
        report together with whatever else went wrong). A CT's `resume` is its thaw (Freezer)."""
        if action == 'resume' and view.kind == Kind.CT:
            return Freezer.thaw(ctx, view)
        try:
            try:
                ctx.pve.power(view.vm, action)
            except OutcomeUnknown as exc:
                ctx.pve.settle_task(view.vm, exc)
                status = ctx.pve.status(view.vm)
                if status.get('status') != 'running' or status.get('qmpstatus', 'running') != 'running':
                    raise
        except Failure as exc:
            if action == 'resume':
                return Failure(f'{view.label} could not be resumed after {paused_for:.1f} s and may still be paused: '
                               f'check it, and resume it by hand ("qm resume {view.vmid}") ({exc})')
            return Failure(f'{view.label} could not be started again after {paused_for:.1f} s and '
                           f'may be stopped: check it, and start it by hand ({exc})')
        return None

    HELD_WORDS = {'pause': 'paused', 'freeze': 'frozen', 'suspend': 'suspended to disk', 'shutdown': 'shut down'}

    @staticmethod
    def left_holds(locks):
        """{vmid: (how, who)} of the guests that runs which died left held, as these VolumeLocks' records
        say (`who`: the dead run's holder line)."""
        found = {}
        for lock in locks:
            for vmid, how in lock.left.items():
                found.setdefault(vmid, (how, lock.left_by))
        return found

    @staticmethod
    def return_left(ctx, vm, how):
        """Bring back a guest a run that died left held (`how`) as that run would have, only where it
        is still so: resume it if paused, thaw it if frozen, start it if stopped (not locked by
        anything but its own hibernation). What was done, as a phrase; a Failure if that failed."""
        status = ctx.pve.status(vm)
        running, lock = status.get('status') == 'running', status.get('lock')
        if how == 'pause' and Kind.of(vm) == Kind.CT:
            return Guests.thaw_left(ctx, VmView(vm, {}, [], [], []), running)
        if how == 'pause' and running and status.get('qmpstatus') == 'paused':
            ctx.pve.power(vm, 'resume')
            return 'resumed it'
        if how == 'freeze' and running and (ctx.pve.agent(vm, 'fsfreeze-status', safe=True) or {}).get(
                'result') == 'frozen':
            ctx.pve.agent(vm, 'fsfreeze-thaw')
            return 'thawed it'
        if how in ('suspend', 'shutdown') and status.get('status') == 'stopped' and lock in (None, '', 'suspended'):
            ctx.pve.power(vm, 'start')
            vm['status'] = 'running'
            return 'started it'
        return 'it is so no longer: nothing to do'

    @staticmethod
    def thaw_left(ctx, view, running):
        """Thaw a CT a run that died left frozen (-pause), where it still is: only on its node."""
        if Node.name() != view.vm['node']:
            raise Failure(f'{view.label} can be thawed only on its node {view.vm["node"]}, as root: run the next ct '
                          f'create of it, or doctor -try, there (or "{Node.PROGRAMS["lxc-unfreeze"]} -n {view.vmid}")')
        if not running or Freezer.state(view) != 'FROZEN':
            return 'it is so no longer: nothing to do'
        problem = Freezer.thaw(ctx, view)
        if problem:
            raise problem
        return 'thawed it'

    @staticmethod
    def held_word(guest, how):
        """How a run held a guest, as a word: a CT's -pause is its freezer."""
        return 'frozen' if how == 'pause' and Kind.of(guest) == Kind.CT else Guests.HELD_WORDS.get(how, how)

    @staticmethod
    def return_all_left(ctx, locks, guests, known=None):
        """[(phrase naming the guest and how a run that died left it, what was done: a phrase, a
        Failure, or None where it is not among `guests`)] for the guests runs that died left held on
        these locks' volumes: each of `guests` ({vmid: its resources entry}, those this run works
        on) brought back (Guests.return_left) and struck from the records. `known`: more guests the
        run listed ({vmid: entry}), so that one it leaves is named by its kind too."""
        found = []
        for vmid, (how, who) in sorted(Guests.left_holds(locks).items()):
            guest = guests.get(vmid) or (known or {}).get(vmid) or {'vmid': vmid}
            left = f'{Guest.label(guest)} was left {Guests.held_word(guest, how)} by a run that died ({Holder.describe(who)})'
            done = None
            if vmid in guests:
                try:
                    done = Guests.return_left(ctx, guests[vmid], how)
                except Failure as exc:
                    done = exc
                else:
                    for lock in locks:
                        lock.forget_holds([vmid])
            found.append((left, done))
        return found

    @staticmethod
    def settle_left(ctx, locks, guests, known=None):
        """Guests.return_all_left, each said in a warning: one not among `guests` is left to the run that
        works on it, or to doctor -try."""
        for left, done in Guests.return_all_left(ctx, locks, guests, known):
            if done is None:
                log.warning('%s: the next run on it, or doctor -try, brings it back', left)
            elif isinstance(done, Failure):
                log.warning('%s, and bringing it back failed: %s', left, done)
            else:
                log.warning('%s: %s', left, done)


class VmWindow:
    """One VM's pause or freeze, owned whole like a lock. Entering suspends, shuts down, pauses
    (in memory) or freezes the VM as `mode` asks — if it runs now: its owner may have stopped it
    since the run began, and a paused VM (an I/O error, say) is left paused — and holds off stop
    signals. Leaving always starts, resumes or thaws it again, unless `leave_down` said why a
    started VM would be harmed, and keeps what went wrong in doing so in `problems`. `status` is
    the VM's status if just read; `running` says whether the VM ran when the window opened."""

    def __init__(self, ctx, view, mode, status=None):
        self.ctx, self.view, self.mode, self.status = ctx, view, mode, status
        self.running = False
        self.acting = False     # the VM is paused or frozen by this window now
        self.paused = False     # ... or was
        self.problems = []      # a guest not thawed, a VM not started again: Failures
        self.late = None        # why a freeze or pause ended before the work: the snapshot is not consistent
        self.down_because = None
        self.returned = False   # after a hold that failed: the guest is known to run again
        self.still = False      # it ran, but stood still (paused) without this window
        self._deferring = contextlib.ExitStack()
        self._since = None

    def __enter__(self):
        ctx, view, vmid, mode = self.ctx, self.view, self.view.vmid, self.mode
        status = self.status or (ctx.pve.status(view.vm) if mode else view.vm)
        self.running = running = status.get('status') == 'running'
        qmpstatus = status.get('qmpstatus', 'running')
        if running and mode == 'pause' and view.kind == Kind.CT:
            # PVE's status of a CT says nothing of its freezer: liblxc does, on its node.
            state = Freezer.state(view)
            qmpstatus = 'running' if state in Freezer.RUNNING else state.lower()
        self.still = running and qmpstatus != 'running'
        if running and mode and qmpstatus != 'running':
            log.warning('%s is %s, not running: cloned as it is and left %s (-%s acts only on a running %s)',
                        view.label, qmpstatus, qmpstatus, mode, view.kind.word)
            return self
        if running and not mode:
            log.warning('%s is running: its disks are captured while it writes to them (crash-consistent); '
                        'use %s for a consistent snapshot', view.label, view.kind.modes_phrase)
        if not running or not mode:
            return self
        if mode == 'freeze':
            Guests.check_freezable(ctx, view)
        if mode == 'suspend' and view.vm.get('hastate'):
            raise Failure(f'VM {vmid} is managed by HA, and PVE does not suspend such a VM to disk: use -pause, '
                          '-shutdown or -freeze')
        self._deferring.enter_context(STOP.deferred())
        ctx.note_holds(view.storages, {vmid: mode})
        try:
            self._pause()
        except BaseException:
            if self.returned:
                ctx.forget_holds(view.storages, [vmid])
            self._deferring.close()
            raise
        self.acting = self.paused = True
        self._since = time.monotonic()
        return self

    def _pause(self):
        ctx, view = self.ctx, self.view
        if self.mode == 'pause' and view.kind == Kind.CT:
            log.info('%s: freezing (its cgroup freezer)', view.label)
            try:
                Freezer.freeze(ctx, view)
            except Failure as exc:
                # A freeze that failed after lxc-freeze (a sync, say) leaves the CT frozen: thaw anyway.
                problem = Freezer.thaw(ctx, view)
                self.returned = problem is None
                raise Failure.joined(exc, problem) from exc
            return
        if self.mode == 'freeze':
            try:
                ctx.pve.agent(view.vm, 'fsfreeze-freeze')
            except Failure as exc:
                # A freeze that failed half-way may have frozen some file systems: thaw anyway.
                problem = Guests.thaw(ctx, view)
                self.returned = problem is None
                raise Failure.joined(exc, problem) from exc
            return
        doing = {'suspend': 'suspending to disk', 'shutdown': 'shutting down', 'pause': 'pausing (in memory)'}
        log.info('%s: %s', view.label, doing[self.mode])
        # -pause is PVE's suspend without todisk: QEMU stops the guest in memory (task qmpause,
        # pve-api.md §2) until status/resume; no hibernation, no state file.
        action = 'shutdown' if self.mode == 'shutdown' else 'suspend'
        try:
            ctx.pve.power(view.vm, action, **({'todisk': 1} if self.mode == 'suspend' else {}))
        except Failure as exc:
            Guests.ensure_running(ctx, view, exc, resume=self.mode == 'pause')
            self.returned = True
            raise

    def run(self, function, *args):
        """function(*args) inside the window. A freeze or a pause in memory lasts at most
        freeze_timeout: then the guest runs again, `late` says why the result is not
        consistent, and the run waits on."""
        if not (self.acting and self.mode in ('freeze', 'pause')):
            return function(*args)
        bound = self.ctx.config.timeouts.freeze

        def late():
            self.late = (f'the capture snapshots outlasted the {self.mode} bound of {bound:g} s (freeze_timeout): '
                         'not consistent')
            self._resume()
        return Parallel.within(bound, late, function, *args)

    def leave_down(self, why):
        """Do not start the VM again when the window closes."""
        self.down_because = why

    def _resume(self):
        if not self.acting:
            return
        self.acting = False
        view, held = self.view, time.monotonic() - self._since
        if self.mode == 'freeze':
            problem = Guests.thaw(self.ctx, view)
            if isinstance(problem, FrozenTooLong):
                self.late, problem = f'{problem}: not consistent', None
        elif self.down_because:
            problem = None
            log.warning('%s stays stopped: %s', view.label, self.down_because)
        else:
            problem = Guests.start_again(self.ctx, view, held, 'resume' if self.mode == 'pause' else 'start')
        if problem:
            self.problems.append(problem)
        else:
            self.ctx.forget_holds(view.storages, [view.vmid])
        log.info('%s was %s for %.2f s', view.label,
                 'frozen' if self.mode == 'freeze' or (self.mode, view.kind) == ('pause', Kind.CT) else 'paused', held)

    def __exit__(self, kind, exc, traceback):
        try:
            self._resume()
        finally:
            self._deferring.close()
        Guests.raise_with_problems(exc, self.problems)
        return False


class GuestsWindow:
    """storage create -freeze/-pause: every HeldGuest frozen or paused in memory, a few at a time
    per node and every node at once, for the one snapshot that run() takes; owned whole like a
    lock, with stop signals held off. However that ends — the snapshot made or failed, a
    signal — leaving thaws or resumes every guest, and none is held longer than freeze_timeout
    from the first hold: then all are let go (one whose hold comes later is let go at once), and
    `late` says why the snapshot is crash-consistent for them. `problems`: Failures for a guest
    that may still be frozen or paused; `crash`: (label, why, warn) of guests not held after all.
    Each guest is noted in the lock record of `storage` while it is held (VolumeLock.note_hold)."""

    def __init__(self, ctx, guests, storage):
        self.ctx, self.guests, self.storages = ctx, guests, [storage]
        self.bound = ctx.config.timeouts.freeze
        self.late = None
        self.problems = []
        self.crash = []
        self._mutex = threading.Lock()
        self._closed = False
        self._deadline = None
        self._deferring = contextlib.ExitStack()

    def __enter__(self):
        if not self.guests:
            return self
        self._deferring.enter_context(STOP.deferred())
        self.ctx.note_holds(self.storages, {guest.view.vmid: guest.how for guest in self.guests})
        try:
            self._deadline = time.monotonic() + self.bound
            pool = self._deferring.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=self._at_once()))
            turns = {guest.view.vm['node']: threading.BoundedSemaphore(Parallel.POWER_CYCLES_PER_NODE)
                     for guest in self.guests}
            holds = [pool.submit(self._hold, guest, turns[guest.view.vm['node']]) for guest in self.guests]
            if Parallel.wait_for(holds, timeout=self.bound).not_done:
                self._let_go(f'holding every guest outlasted the bound of {self.bound:g} s (freeze_timeout)')
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _hold(self, guest, turn):
        with turn:
            if self._closed:
                self._note(guest, 'not held: the bound (freeze_timeout) had passed before its turn')
                return
            failure, problem = GuestsWindow.hold(self.ctx, guest)
        if failure:
            self._note(guest, f'could not be {"frozen" if guest.how == "freeze" else "paused"} ({failure})')
            if problem:
                guest.returned = False
                with self._mutex:
                    self.problems.append(problem)
            return
        with self._mutex:
            guest.since = time.monotonic()
            closed = self._closed
        if closed:      # held only after the window closed: let go at once
            self._note(guest, 'held only after the bound (freeze_timeout) had passed')
            self._let_go_of(guest)

    def _note(self, guest, why):
        with self._mutex:
            self.crash.append((guest.view.vm, why, True))

    def run(self, function, *args):
        """function(*args) while the guests are held, up to the bound; then they are let go
        and the run waits on for its result."""
        if not self.guests or self._closed:
            return function(*args)
        return Parallel.within(max(0.0, self._deadline - time.monotonic()),
                               lambda: self._let_go(f'the snapshot outlasted the bound of {self.bound:g} s '
                                                    '(freeze_timeout)'),
                               function, *args)

    def _let_go(self, why):
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self.late = why
            holding = [guest for guest in self.guests if guest.since is not None]
        Parallel.map(self._let_go_of, holding, self._at_once(), finish=True)

    def _at_once(self):
        """Threads for the calls to hold or let go of the guests (one in a dry run: its lines in order)."""
        return 1 if self.ctx.dry_run else min(len(self.guests), Parallel.REQUESTS_AT_ONCE)

    def _let_go_of(self, guest):
        view, held = guest.view, time.monotonic() - guest.since
        if guest.how == 'freeze':
            problem = Guests.thaw(self.ctx, view)
        else:
            problem = Guests.start_again(self.ctx, view, held, 'resume')
        guest.held_for = held
        if isinstance(problem, FrozenTooLong):
            self._note(guest, str(problem))
        elif problem:
            with self._mutex:
                self.problems.append(problem)
        guest.returned = not problem or isinstance(problem, FrozenTooLong)

    def __exit__(self, kind, exc, traceback):
        if self.guests:
            try:
                self._let_go(None)
            finally:
                self._deferring.close()      # waits for holds still under way: each lets go of its guest
                self.ctx.forget_holds(self.storages, [guest.view.vmid for guest in self.guests if guest.returned])
        Guests.raise_with_problems(exc, self.problems)
        return False

    @dataclasses.dataclass(eq=False)
    class HeldGuest:
        """A running VM that storage create holds still for its snapshot: frozen through its guest
        agent (`how` 'freeze') or paused in memory ('pause': `why` it is not frozen, `warn` if that
        was not to be expected)."""
        view: VmView
        how: str
        why: str = None
        warn: bool = False
        since: float = None     # when it was frozen or paused; None while it is not (yet)
        held_for: float = None  # seconds, once let go
        returned: bool = True   # False: it may still be frozen or paused (its lock record says so)

    @staticmethod
    def hold_for(config, pause):
        """How storage create holds a running VM still: ('freeze', None), or ('pause' with -pause,
        else None; why it is not frozen)."""
        setting = config.get('agent')
        if Guest.agent_freezes(setting):
            return 'freeze', None
        why = 'its agent setting turns freezing off' if Guest.agent_enabled(setting) else 'no guest agent'
        return ('pause' if pause else None), why

    @staticmethod
    def to_hold(ctx, storage, pause, guests=None, configs=None):
        """([HeldGuest], [(guest, why, warn)] of the running guests that stay crash-consistent)
        for storage create -freeze (-pause: `pause`): every running guest with a disk on `storage`,
        its config, status and agent looked at (all at once) before any is touched. `guests` and
        `configs` ({vmid: config}) are those already read, if any."""
        guests = ctx.pve.guests() if guests is None else guests
        running = [guest for _, guest in sorted(guests.items()) if guest.get('status') == 'running']
        at_once = 1 if ctx.dry_run else max(1, min(len(running), Parallel.REQUESTS_AT_ONCE))
        found = Parallel.map(functools.partial(GuestsWindow.look_at, ctx, storage, pause, configs or {}), running, at_once)
        return [held for held, _ in found if held], [crash for _, crash in found if crash]

    @staticmethod
    def look_at(ctx, storage, pause, configs, guest):
        """(HeldGuest or None, (guest, why, warn) or None) of one running guest for GuestsWindow.to_hold;
        what PVE refuses to say is a (guest, why, warn), never an exception."""
        try:
            config = configs.get(guest['vmid']) or ctx.pve.config_of(guest)
            lxc = guest.get('type') == 'lxc'
            if storage not in (Guest.storages(config) if lxc else {disk.storage for disk in Guest.vm_disks(config)}):
                return None, None
            if lxc:
                return GuestsWindow.look_at_container(storage, pause, guest, config)
            status = ctx.pve.status(guest)
        except ProxmoxError as exc:
            return None, (guest, f'not looked at ({exc})', True)
        if status.get('status') != 'running':
            return None, None
        if status.get('qmpstatus', 'running') != 'running':
            return None, (guest, f'{status["qmpstatus"]}, not running: left as it is', True)
        how, why = GuestsWindow.hold_for(config, pause)
        warn = False
        if how == 'freeze':
            try:
                ctx.pve.agent(guest, 'ping', safe=True)
            except ProxmoxError as exc:
                how, why, warn = ('pause' if pause else None), f'{Guests.agent_silent(ctx, exc)} ({exc})', True
        if how:
            return GuestsWindow.HeldGuest(VmView(guest, config, [], [], []), how, why, warn), None
        return None, (guest, why, warn)

    @staticmethod
    def look_at_container(storage, pause, guest, config):
        """(HeldGuest or None, (guest, why, warn) or None) of one running container with a disk on
        `storage`: with -pause, on its own node as root, frozen by its cgroup freezer as ct create
        -pause freezes it (Freezer; 'pause', its consistency `paused`); else crash-consistent, and
        why. One frozen before the run is left so (and is consistent as it is)."""
        view = VmView(guest, config, [d for d in Guest.disks(guest, config) if d.path], [], [])
        if not pause:
            return None, (guest, 'a container: storage create -pause freezes it, on its own node', False)
        if Node.name() != guest['node']:
            return None, (guest, f'a container on node {guest["node"]}: its freezer is reachable only there, as root',
                          True)
        try:
            state = Freezer.state(view)
        except Failure as exc:
            return None, (guest, f'not frozen: {exc}', True)
        if state not in Freezer.RUNNING:
            return None, (guest, f'{state.lower()}, not running: left as it is', state != 'FROZEN')
        return GuestsWindow.HeldGuest(view, 'pause'), None

    @staticmethod
    def hold(ctx, guest):
        """Freeze or pause one guest (a container: its freezer). (None, None), or the Failure of a hold
        not made and the Failure of undoing what it may have done half-way (None once undone)."""
        view = guest.view
        try:
            if guest.how == 'freeze':
                ctx.pve.agent(view.vm, 'fsfreeze-freeze')
            elif view.kind == Kind.CT:
                Freezer.freeze(ctx, view)
            else:
                ctx.pve.power(view.vm, 'suspend')
        except Failure as exc:
            if view.kind == Kind.CT:
                # lxc-freeze may have frozen it before a sync failed: thaw it anyway.
                return exc, Freezer.thaw(ctx, view)
            if guest.how == 'freeze':
                # A freeze that failed half-way may have frozen some file systems: thaw anyway.
                undone = Guests.thaw(ctx, view)
                return exc, None if isinstance(undone, FrozenTooLong) else undone
            try:
                Guests.ensure_running(ctx, view, exc, resume=True)
            except Failure as worse:
                return exc, worse
            return exc, None
        return None, None

    @staticmethod
    def report(storage, name, held, crash, late):
        """Say how consistent a storage snapshot is for each running guest on the storage, in the
        guests' order: frozen or paused for it (and how long), or crash-consistent and why — a
        warning where that was not to be expected, which names what its manifest says instead (the
        records are written before the guests are held, as planned)."""
        taken = f'storage {storage}: snapshot {name}'
        for guest in held:
            if guest.why and guest.warn:
                log.warning('%s: %s: %s, so it was paused in memory instead',
                            taken, Guest.label(guest.view.vm), guest.why)
        planned = {id(guest.view.vm): 'frozen' if guest.how == 'freeze' else 'paused' for guest in held}
        noted = {id(entry[0]) for entry in crash}
        still = [guest for guest in held if guest.held_for is not None and id(guest.view.vm) not in noted]
        if late and still:
            said = ' or '.join(sorted({planned[id(guest.view.vm)] for guest in still}))
            log.warning('%s: %s, so it is crash-consistent for %s (the manifests say %s)', taken, late,
                        ', '.join(Guest.label(guest.view.vm) for guest in still), said)
        elif still:
            log.info('%s taken with %s', taken, ', '.join(
                f'{Guest.label(guest.view.vm)} {"frozen" if guest.how == "freeze" else "paused"} for '
                f'{guest.held_for:.2f} s' + (f' ({guest.why})' if guest.why else '') for guest in still))
        for guest, why, warn in sorted(crash, key=lambda entry: entry[0]['vmid']):
            said = f' (its manifest says {planned[id(guest)]})' if id(guest) in planned else ''
            (log.warning if warn else log.info)('%s is crash-consistent for %s: %s%s', taken, Guest.label(guest), why,
                                                said)

# ---- 9. Commands -----------------------------------------------------------------------------
# One class per command (its entry: command(ctx, args)). Each gathers (I/O), decides (pure), then
# acts (I/O): every lookup precedes every change.

class VmCreate:
    """vm create: a snapshot of each VM (its disks captured at one instant, file-cloned, its
    manifest beside them), VMs in parallel, each VM's log lines together and in VM order."""

    @staticmethod
    def snapshot(ctx, view, mode, stamp, shared=None):
        """The clones of vm create for one gathered VM. A running VM's disks are captured first,
        one short-lived snapshot per volume (all at once), and only that happens while the VM is
        paused or frozen as `mode` asks; each disk is then cloned from its capture once the VM runs
        again, and the captures are deleted. With `shared` (Captures.Shared, no mode) the run took
        the captures for all its running VMs already: the VM's disks are cloned from those, which
        the run deletes once every VM is done. A stopped VM's disks are cloned as they are. Returns
        the clones and what went wrong once they were made (a guest not thawed, a VM not started
        again: Failures for the caller to report) and how consistent it is (Consistency.of_vm_snapshot);
        if a capture or a clone is not made, what was made is taken back and the Failure names the disks."""
        vmid = view.vmid
        for disk, reason in view.skipped:
            log.warning('%s: skipping disk %s (%s): %s', view.label, disk.key, disk.volid, reason)
        if not view.disks:
            raise Failure(f'{view.label} has no disk on an ONTAP storage of {ctx.config.path}')
        VmCreate.check_backings(ctx, view)
        # Without a mode, the window goes by the status the VM list gave: a VM stopped then
        # needs no capture, nor a note of one in its volumes' lock records.
        needs_captures = mode or view.vm.get('status') == 'running'
        plan = (shared.plan_of(view) if shared else
                Captures.plan(ctx, view.disks, Names.capture_name(stamp, vmid), stamp) if needs_captures else {})
        captures = list(dict.fromkeys(plan.values()))
        if not mode and view.vm.get('status') == 'running' and len(captures) > 1:
            log.warning('%s: its disks on %d volumes are captured at %d different instants; -pause takes them at one',
                        view.label, len(captures), len(captures))
        settled, made = [], []
        try:
            with VmWindow(ctx, view, mode) as window:
                own = window.running and not shared
                outcomes = window.run(Captures.take, ctx, captures,
                                      Names.CAPTURE_COMMENT.format(guest=view.label, tree=view.kind.tree)) if own else []
            settled = Captures.settle(ctx, outcomes)
            if shared:
                outcomes, settled = shared.outcomes_of(captures)
            late = window.late
            if window.paused and any(outcome.state == 'unknown' for outcome in outcomes):
                late = 'a capture snapshot ended only after the VM ran again: not consistent'
            if late or any(outcome.state != 'done' for outcome in settled):
                raise Failure.joined(Captures.failure(view, stamp, outcomes, settled, late), *window.problems)
            clones = [(disk.storage, plan[disk.storage].source(disk.path) if window.running else disk.path,
                       Names.snapshot_file_path(disk.path, stamp)) for disk in view.disks]
            outcomes = Clones.make(ctx, clones)
            made = Clones.settle(ctx, outcomes)
            if any(outcome.state != 'done' for outcome in made):
                raise Failure.joined(VmCreate.undo_snapshot(ctx, view, stamp, outcomes, made), *window.problems)
            return (clones, Consistency.of_vm_snapshot(mode, window.paused, window.running, len(captures), window.still),
                    window.problems)
        finally:
            # A capture that a clone still running may read from stays, left to the next run.
            sources = {storage for storage, _, _ in Outcome.items_in(made, 'unknown')}
            in_use = {plan[storage] for storage in sources if storage in plan}
            if shared:
                shared.keep(in_use)
            else:
                Captures.release_all(ctx, captures, settled, in_use)
            Captures.clean_leftovers(ctx, view.storages)

    @staticmethod
    def check_backings(ctx, view):
        """Read the backing file of each qcow2 disk of the VM into view.backings (the manifest records
        them), and refuse the snapshot of a disk that stands on one a file clone cannot keep
        (backing_risk): PVE may merge it away later, and the clone would lose its data."""
        qcow2 = [disk for disk in view.disks if disk.path.endswith('.qcow2')]

        def backing(disk):
            volume = ctx.volume(disk.storage)
            return volume.qcow2_backing(disk.path)

        view.backings = dict(zip((disk.key for disk in qcow2), Parallel.map(backing, qcow2)))
        risky = [f'{disk.key} ({disk.volid}) stands on {why}' for disk in qcow2
                 if (why := Qcow2.backing_risk(view.backings[disk.key]))]
        if risky:
            raise Failure(f'{view.label}: no snapshot, for {"; ".join(risky)}: a file clone of the disk alone would '
                          'lose its data then; delete the PVE snapshots of the VM first, or take a storage snapshot '
                          '(storage create), which holds the whole chain')

    @staticmethod
    def undo_snapshot(ctx, view, stamp, outcomes, settled):
        """The Failure of a snapshot not made whole, its clones followed until they ended
        (`settled`): every clone made is removed, one that may still be made is named."""
        key = {Names.snapshot_file_path(disk.path, stamp): disk.key for disk in view.disks}
        reasons = [f'{key[destination]} ({outcome.error})' for outcome in outcomes if outcome.error
                   for _, _, destination in [outcome.item]]
        made = Outcome.items_in(settled, 'done')
        removed = Clones.remove(ctx, made) + (f' ({", ".join(key[path] for _, _, path in made)})' if made else '')
        return Failure(f'{view.label}: snapshot {stamp} failed: {"; ".join(reasons)}; {removed}'
                       f'{Clones.still_pending(settled)}')

    # What registers a guest's new volumes as unused disks on its node: `qm disk rescan`
    # (qemu-server), `pct rescan` (pve-container src/PVE/CLI/pct.pm, rescan: "update disk sizes and
    # unused disk images", --vmid).
    RESCAN = {'qemu': ('qm', 'disk', 'rescan'), 'lxc': ('pct', 'rescan')}

    @staticmethod
    def register_clones(ctx, view, clones):
        """Make new clone files visible in PVE as unused disks: `qm disk rescan` (a CT: `pct rescan`)
        on the guest's node, else unusedN through the config API (pending until the next start on a
        running guest; for a CT unconfirmed in pve-container, which calls unusedN internal). Returns
        the guest's config with them (None after a rescan, which may register more)."""
        vmid = view.vmid
        if Node.name() == view.vm['node']:
            command = [*VmCreate.RESCAN[view.kind.type], '--vmid', str(int(vmid))]
            if ctx.dry_run:
                print(f'would run {" ".join(command)}')
                return None
            result = Node.run(*command)
            if result.returncode:
                raise Failure(f'{view.label}: {" ".join(command[:-2])} failed: {result.stderr.strip()}')
            return None
        volids = [f'{storage}:{vmid}/{destination.rsplit("/", 1)[1]}' for storage, _, destination in clones]
        # The config read before the snapshot names the unusedN in use, pending ones included (the
        # API's default, current=0), and its digest makes PVE refuse the change if anything changed
        # since: the digest is that of the whole file, [PENDING] too (qemu-server: API2/Qemu.pm
        # vm_config, QemuServer.pm parse_vm_config). Only then is the config read again.
        config = view.config
        try:
            changes = dict(zip(Guest.free_unused_keys(config, len(volids)), volids))
            ctx.pve.set_config(view.vm, 'register the snapshot as unused disks', digest=config.get('digest'), **changes)
        except OutcomeUnknown:
            raise
        except Failure as exc:
            log.debug('%s: registering with the config read before refused (%s): reading it again', view.label, exc)
            config = ctx.pve.pending_config(view.vm)
            changes = dict(zip(Guest.free_unused_keys(config, len(volids)), volids))
            ctx.pve.set_config(view.vm, 'register the snapshot as unused disks', **changes)
        return {**config, **changes}

    @staticmethod
    def save_snapshot_records(ctx, view, stamp, consistency, kind='snapshot', config=None, copied=None):
        """Write the snapshot's manifest, with the VM's config in it (Manifest.build), beside its
        clones in images/<vmid>/ of the storage of its first ONTAP disk: one request per VM, and
        the set is found by its stamp on every storage of the VM anyway. The config is the node's
        .conf file on a PVE node, else rebuilt from the API's (config_text). A write of unknown
        outcome is read back: is the file there? A Failure says it was not saved. `kind`, `config`
        and `copied`: those of a pre-restore snapshot, the VM's config read then and the paths of
        the disks it holds a copy of (any other's `clone` is null: a restore copies only the disks
        it overwrites)."""
        config = view.config if config is None else config
        storage = view.disks[0].storage
        volume = ctx.volume(storage)
        raw = Node.read_config(view.vm)
        volumes = {disk.storage: ctx.volume_identity(disk.storage) for disk in view.disks}
        manifest = Manifest.build(view.vm, view.disks, config, stamp, consistency, volumes,
                                  raw if raw is not None else Guest.config_text_of(view.vm, config).encode(),
                                  Node.config_path(view.vm) if raw is not None else 'api', tool_version(),
                                  {disk.key: Names.snapshot_file_path(disk.path, stamp, kind) for disk in view.disks
                                   if copied is None or disk.path in copied},
                                  ctx.manifest_key(create=True), view.backings)
        path = Names.manifest_path(view.vmid, stamp, consistency, kind, Identity.tag(Identity.of_config(config)))
        try:
            volume.change_file('POST', path, lambda: volume.write_file(path, manifest.encode()), True)
        except Failure as exc:
            raise Failure(f'its manifest and config were not saved on {storage}: {exc}') from exc

    @staticmethod
    def vms_to_snapshot(ctx, vmids, vms, kind=None):
        """[(vmid, config or Failure)], in id order: the ids as given or, for None (-all), every
        guest of `kind` (default: VM) with a disk on a configured ONTAP storage; each with its config,
        read REQUESTS_AT_ONCE at a time, or the Failure that kept it from being read (no such guest, one
        of the other kind, its node is down): one such guest stops no other. `vms`: every guest, by id."""
        kind = kind or Kind.VM

        def read(vmid):
            try:
                return ctx.pve.config_of(ctx.pve.find_guest(vmid, vms, kind))
            except Failure as exc:
                return exc if vmids is not None else Failure(f'{Guest.label(vms[vmid])} on node {vms[vmid]["node"]} '
                                                             f'skipped: {exc}')

        if vmids is not None:
            ids = list(dict.fromkeys(vmids))
            return list(zip(ids, Parallel.map(read, ids)))
        ids = [vmid for vmid, vm in sorted(vms.items()) if not vm.get('template') and Kind.of(vm) == kind]
        chosen = [(vmid, config) for vmid, config in zip(ids, Parallel.map(read, ids))
                  if isinstance(config, Failure) or any(d.storage in ctx.config.storages and d.path
                                                        for d in Guest.disks(vms[vmid], config))]
        if not chosen:
            raise NotFound(f'no {kind.word} has a disk on a storage of {ctx.config.path}')
        return chosen

    @staticmethod
    def vms_on_this_node(vms):
        """-node-local: the VMs of the node this runs on, so that one timer on every node makes
        each node snapshot its own."""
        node = Node.name()
        if node is None:
            raise Failure('-node-local: not on a PVE node as root, so no node is this one: run it on a node')
        return node, {vmid: vm for vmid, vm in vms.items() if vm['node'] == node}

    @staticmethod
    def gather_vms(ctx, configs, vms, kind=None):
        """[(vmid, VmView or Failure)] for the [(vmid, config or Failure)] of vms_to_snapshot. Here,
        in the main thread and before any VM's thread starts, storage.cfg and the volume behind
        each storage are looked up once: the threads then only read Context's caches (which have
        no lock). A storage that cannot be found fails the VMs using it, and no other."""
        used = {storage for _, config in configs if not isinstance(config, Failure)
                for storage in Guest.storages(config) & set(ctx.config.storages)}
        unusable = {}
        for storage in sorted(used):
            try:
                ctx.volume(storage)
            except Failure as exc:
                unusable[storage] = exc
        gathered = []
        for vmid, config in configs:
            if not isinstance(config, Failure):
                blocked = [unusable[storage] for storage in sorted(Guest.storages(config)) if storage in unusable]
                config = blocked[0] if blocked else VmView.gather(ctx, vmid, vms, config, kind)
            gathered.append((vmid, config))
        return gathered

    @dataclasses.dataclass
    class Result:
        """What vm create did to one guest, for the main thread to report in id order."""
        vmid: int
        made: str = None    # 'VM 100: snapshot <stamp> of 2 disk(s)', once its clones exist
        problems: list = dataclasses.field(default_factory=list)    # Failures: after it was made, or why not
        begun: bool = True  # False: a stop signal came before it began
        lines: list = dataclasses.field(default_factory=list)       # its log records, held back

        @property
        def failure(self):
            if self.made and self.problems:
                return Failure(f'{self.made} was made, but {Failure.joined(*self.problems)}')
            return self.problems[0] if self.problems else None

    class Run:
        """What the threads of one vm create share. The storage locks are taken once, in the main
        thread, for every VM of the run: two VMs on one storage share its lock. The VMs share one
        stamp too, the run's, taken once for `subjects` (its VMs, and its shared captures): each lock
        records it in its file once, not once per VM (on a node, that file is on pmxcfs, whose every
        write goes through the whole cluster). And each node has POWER_CYCLES_PER_NODE slots for VMs
        it suspends or shuts down and starts again."""

        def __init__(self, locks, subjects):
            self.locks = locks
            self.stamp = VolumeLock.new_stamp(locks, subjects)
            self._nodes = {}
            self._nodes_lock = threading.Lock()

        def power_slot(self, view, mode):
            """A slot of the VM's node for its pause, held from before the pause until it runs again."""
            if mode not in ('suspend', 'shutdown'):
                return contextlib.nullcontext()
            with self._nodes_lock:
                return self._nodes.setdefault(view.vm['node'], threading.BoundedSemaphore(Parallel.POWER_CYCLES_PER_NODE))

    @staticmethod
    def snapshot_in_window(ctx, view, mode, register, keep, run, shared=None):
        """vm create for one gathered VM, in a thread of its own: the snapshot (from the run's
        Captures.Shared, if any), then its registration and retention; its VmCreate.Result. Whatever fails
        once the clones are made still lets the rest run. A VM to suspend or shut down waits for a
        slot of its node first, while it still runs; once a stop signal came, it does not begin."""
        result = VmCreate.Result(view.vmid)
        try:
            with run.power_slot(view, mode):
                if STOP.stopping:
                    result.begun = False
                    return result
                stamp = run.stamp
                clones, consistency, result.problems = VmCreate.snapshot(ctx, view, mode, stamp, shared)
            result.made = f'{view.label}: snapshot {stamp} of {len(clones)} disk(s)'
            ctx.changed('%s: snapshot %s of %d disk(s) created (%s)', view.label, stamp, len(clones), consistency)
            steps = [lambda: VmCreate.save_snapshot_records(ctx, view, stamp, consistency)]
            if register:
                steps.append(lambda: VmCreate.register_clones(ctx, view, clones))
            # The manifest and the registration need not wait for each other: a round trip less
            # per VM. In a dry run, one after the other, so that its lines come in order.
            done = Parallel.map(VmCreate.attempt, steps, limit=1 if ctx.dry_run else len(steps))
            result.problems += [problem for _, problem in done if problem]
            config = done[1][0] if register else None
            if keep is not None:
                try:
                    VmDelete.prune(ctx, view, keep, stamp, config)
                except Failure as exc:
                    result.problems.append(exc)
        except Failure as exc:
            result.problems = [exc]
        return result

    @staticmethod
    def attempt(step):
        """(step(), None), or (None, the Failure it raised)."""
        try:
            return step(), None
        except Failure as exc:
            return None, exc

    class OrderedLog(logging.Filter):
        """Keeps the log lines of threads that work on one VM each, so that the main thread writes
        them VM by VM, in VM order, each VM's lines together."""

        def __init__(self):
            super().__init__()
            self._local = threading.local()

        @contextlib.contextmanager
        def kept(self, lines):
            """Keep this thread's log records in `lines` instead of writing them."""
            self._local.lines = lines
            try:
                yield lines
            finally:
                self._local.lines = None

        def filter(self, record):
            lines = getattr(self._local, 'lines', None)
            if lines is None:
                return True
            lines.append(record)
            return False

    @staticmethod
    def stop_report(results, kind):
        """What a vm create stopped by a signal got done, for its one error line."""
        made = [str(result.failure or f'{result.made} was made') for result in results if result.made]
        failed = [str(result.vmid) for result in results if result.begun and not result.made]
        left = [str(result.vmid) for result in results if not result.begun]
        parts = made or ['no snapshot was made']
        parts += [f'{what}: {kind.word} {", ".join(vmids)}'
                  for what, vmids in (('failed', failed), ('not begun', left)) if vmids]
        return '; '.join(parts)

    @staticmethod
    def command(ctx, args):
        mode = next((m for m in ('suspend', 'shutdown', 'freeze', 'pause') if getattr(args, m, False)), None)
        kind, vms = args.kind, ctx.pve.guests()
        if args.node_local:
            if not args.all:
                raise ConfigError(f'-node-local goes with -all (it chooses among all {kind.word}s)')
            node, vms = VmCreate.vms_on_this_node(vms)
            try:
                chosen = VmCreate.vms_to_snapshot(ctx, None, vms, kind)
            except NotFound:
                log.info('no %s on node %s has a disk on a storage of %s: nothing to do', kind.word, node,
                         ctx.config.path)
                return
        else:
            chosen = VmCreate.vms_to_snapshot(ctx, None if args.all else args.vm, vms, kind)
        gathered = VmCreate.gather_vms(ctx, chosen, vms, kind)
        views = [view for _, view in gathered if isinstance(view, VmView)]
        # A dry run prints its would-lines from the VM's thread: one VM at a time keeps them in order.
        workers = 1 if ctx.dry_run else max(1, min(args.parallel, len(views)))
        held_back = VmCreate.OrderedLog()
        results = []
        log.addFilter(held_back)
        try:
            # Signals stay held off until every VM begun has ended: the VMs' threads cannot be
            # stopped, and those not begun yet see STOP.pending and do not begin.
            with Locks.for_storages(ctx, sorted({s for view in views for s in view.storages})) as locks, STOP.deferred():
                Guests.settle_left(ctx, locks, {view.vmid: view.vm for view in views}, vms)
                run = VmCreate.Run(locks, [f'vm{view.vmid}' for view in views] +
                                   (['captures'] if Captures.may_share(views, mode) else []))
                ctx.manifest_key(create=True)     # read (or made) here, before the VMs' threads read it
                with Captures.shared(ctx, run.stamp, views, mode) as shared:

                    def snapshot(view):
                        with held_back.kept([] if workers > 1 else None) as lines:
                            result = VmCreate.snapshot_in_window(ctx, view, mode, args.register, args.keep, run, shared)
                        result.lines = lines or []
                        return result

                    with Parallel.in_order(snapshot, views, workers) as done:
                        for vmid, view in gathered:
                            result = next(done) if isinstance(view, VmView) else VmCreate.Result(vmid, problems=[view])
                            for record in result.lines:
                                log.handle(record)
                            if result.failure and len(gathered) > 1:
                                log.warning('%s', result.failure)      # the summary below is the one error line
                            results.append(result)
        finally:
            log.removeFilter(held_back)
        STOP.check(VmCreate.stop_report(results, kind))
        failed = [result for result in results if result.failure]
        if len(results) == 1 and failed:
            raise failed[0].failure
        if failed:
            raise Failure(f'{kind.tree} create failed for {len(failed)} of {len(results)} {kind.word}s: '
                          f'{", ".join(str(result.vmid) for result in sorted(failed, key=lambda r: r.vmid))}')


class Captures:
    """vm create takes a running VM's disks from short-lived volume snapshots, one per volume
    (`capture`: the VM's own, or with several VMs and no pause one the run's running VMs share),
    and deletes them once cloned; one that ONTAP keeps busy past DELETE_WAIT seconds is renamed
    to a leftover, which a later vm create on the volume deletes once it is LEFTOVER_AGE seconds
    old. Never proxmox_snapshot_*: storage list, -keep and storage restore never take them for
    storage snapshots."""

    DELETE_WAIT = 30.0
    LEFTOVER_AGE = 600

    @dataclasses.dataclass(eq=False)
    class Capture:
        """The short-lived snapshot of one volume that vm create clones a running VM's disks on it from."""
        storage: str        # a storage on that volume: how to reach its Ontap and Volume
        name: str
        uuid: str = None    # from ONTAP's answer, or read back; None: looked up before it is deleted

        def source(self, path):
            """Where a volume path is inside the capture: NetApp's file-clone reference takes a source
            in a snapshot as `./.snapshot/<snapshot>/<path>` (reference §5 and §13)."""
            return f'.snapshot/{self.name}/{path}'

    @staticmethod
    def plan(ctx, disks, name, stamp):
        """{storage: Capture} for the storages of these disks, one Capture called `name` per volume
        (two storage ids may share one). Each is noted in its volume's lock record before it can be
        made, so that a run that dies, or cannot delete it, leaves it to the next."""
        by_volume, plan = {}, {}
        for disk in disks:
            volume = ctx.volume(disk.storage)
            plan[disk.storage] = by_volume.setdefault(
                (volume.ontap.host, volume.uuid), Captures.Capture(disk.storage, name))
        for capture in by_volume.values():
            lock = ctx.lock_of(capture.storage)
            if lock:
                lock.note_capture(capture.name, stamp)
        return plan

    @staticmethod
    def forget(ctx, capture_or_name, storage=None):
        """Strike a capture snapshot that is gone (or was never made) from its volume's lock record."""
        name = getattr(capture_or_name, 'name', capture_or_name)
        lock = ctx.lock_of(storage or capture_or_name.storage)
        if lock:
            lock.forget_capture(name)

    @staticmethod
    def take(ctx, captures, comment):
        """Create the capture snapshots, one request per volume, all at once: their Outcomes."""
        def create(capture):
            volume = ctx.volume(capture.storage)
            capture.uuid = volume.create_snapshot(capture.name, comment)
        return Parallel.run(create, captures, at_once=not ctx.dry_run)

    @staticmethod
    def settle(ctx, outcomes):
        """The Outcomes of capture creates once those of unknown outcome have been found out about
        (ontap_settle): does the snapshot exist now? In the same order."""
        def settle(outcome):
            capture = outcome.item
            volume = ctx.volume(capture.storage)

            def landed():
                found = volume.find_snapshot(capture.name)
                capture.uuid = (found or {}).get('uuid')
                return found is not None
            volume.ontap.settle(outcome.error, f'POST /api/storage/volumes/{volume.uuid}/snapshots', landed)

        return Clones.settle_each(outcomes, settle, 'capture snapshot(s)')

    @staticmethod
    def failure(view, stamp, outcomes, settled, late):
        """The Failure of a snapshot whose captures were not all made, or not while the VM waited:
        nothing is cloned (Captures.release_all deletes those made); one that may still be made is named."""
        reasons = [str(outcome.error) for outcome in outcomes if outcome.error] + ([late] if late else [])
        pending = [outcome for outcome in settled if outcome.state == 'unknown']
        left = (f'; still unknown: {Outcome.pending_jobs(pending)}; the next vm create on that volume deletes it once it '
                'exists' if pending else '')
        return Failure(f'{view.label}: snapshot {stamp} failed: {"; ".join(reasons)}; nothing was cloned{left}')

    @staticmethod
    def release_all(ctx, captures, settled, in_use=()):
        """Take the capture snapshots back: each one made is deleted (Captures.release), one never
        made is struck from the lock record; one that may have been made, or that a clone of
        unknown outcome may still read (`in_use`), stays noted there for the next vm create on its
        volume. Never raises: what is left is a warning."""
        states = {outcome.item: outcome.state for outcome in settled}
        in_use = [capture for capture in captures if capture in in_use and states.get(capture) == 'done']
        for capture in captures:
            if states.get(capture) in (None, 'failed'):
                Captures.forget(ctx, capture)
        for capture in in_use:
            volume = ctx.volume(capture.storage)
            log.warning('capture snapshot %s of volume %s (ONTAP %s) kept: a clone from it may still run; the next vm '
                        'create on the volume deletes it', capture.name, volume.name, volume.ontap.host)
        made = [capture for capture in captures if states.get(capture) == 'done' and capture not in in_use]
        for outcome in Parallel.run(functools.partial(Captures.release, ctx), made, at_once=not ctx.dry_run):
            if outcome.error:
                log.warning('%s', outcome.error)

    @staticmethod
    def release(ctx, capture):
        """Delete one capture snapshot, waiting up to Captures.DELETE_WAIT s while ONTAP keeps it busy
        after its clones; one still busy then is renamed to a leftover. A Failure says what is left:
        it stays noted in the lock record, so the next vm create on the volume deletes it."""
        volume = ctx.volume(capture.storage)
        where = f'capture snapshot {capture.name} of volume {volume.name} (ONTAP {volume.ontap.host})'
        try:
            if capture.uuid is None and not volume.ontap.dry_run:
                capture.uuid = volume.snapshot(capture.name)['uuid']
            snapshot = {'uuid': capture.uuid, 'name': capture.name}
            if volume.delete_snapshot_when_free(snapshot, Captures.DELETE_WAIT):
                Captures.forget(ctx, capture)
                return
        except NotFound:
            Captures.forget(ctx, capture)    # gone already: nothing to take back
            return
        except OutcomeUnknown as exc:
            raise Failure(f'{where}: whether it was deleted is unknown ({exc}); the next vm create on the volume '
                          'deletes it if it is still there') from exc
        except Failure as exc:
            raise Failure(f'{where} could not be deleted ({exc}); the next vm create on the volume tries again') from exc
        leftover = Names.leftover_name(capture.name)
        try:
            volume.rename_snapshot(snapshot, leftover, Names.LEFTOVER_COMMENT)
        except Failure as exc:
            raise Failure(f'{where} is still busy after {Captures.DELETE_WAIT:g} s and could not be renamed to '
                          f'{leftover} ({exc}); the next vm create on the volume deletes it') from exc
        raise Failure(f'{where} is still busy after {Captures.DELETE_WAIT:g} s: renamed to {leftover}; the next vm '
                      f'create on the volume deletes it once it is {Captures.LEFTOVER_AGE / 60:g} minutes old')

    class Shared:
        """The capture snapshots a vm create of several VMs without a mode takes once for all its
        running VMs, one per volume, all at once, before any VM is cloned: every running VM of the
        run is then taken at the same instant on each volume (crash-consistent across the VMs, for
        an application spread over several), for one create and one delete per volume instead of
        one per VM and volume. The VMs' threads clone from them and `keep` those a clone of unknown
        outcome may still read; `release` deletes the rest once every thread has ended."""

        def __init__(self, ctx, views, stamp):
            disks = [disk for view in views if self.takes(view) for disk in view.disks]
            self.plan = Captures.plan(ctx, disks, Names.shared_capture_name(stamp), stamp)
            self.captures = list(dict.fromkeys(self.plan.values()))
            self.outcomes = self.settled = []
            self._kept = set()
            self._keeping = threading.Lock()    # the VMs' threads keep at once

        @staticmethod
        def takes(view):
            """Whether the VM's disks come from the shared captures: it runs. (Without a mode, its
            window takes the status the VM list gave too.)"""
            return view.vm.get('status') == 'running'

        def take(self, ctx):
            self.outcomes = Captures.take(ctx, self.captures, Names.SHARED_CAPTURE_COMMENT)
            self.settled = Captures.settle(ctx, self.outcomes)
            taken = Outcome.items_in(self.settled, 'done')
            if taken:
                log.info('the running VMs share one capture per volume, taken at one instant: %s', ', '.join(
                    f'{capture.name} of volume {ctx.volume(capture.storage).name}' for capture in taken))

        def plan_of(self, view):
            """{storage: Capture} for the VM's disks; none for a VM that does not run."""
            return {disk.storage: self.plan[disk.storage] for disk in view.disks} if self.takes(view) else {}

        def outcomes_of(self, captures):
            """(as answered, as found out about) the Outcomes of these captures."""
            return ([outcome for outcome in self.outcomes if outcome.item in captures],
                    [outcome for outcome in self.settled if outcome.item in captures])

        def keep(self, captures):
            with self._keeping:
                self._kept |= set(captures)

        def release(self, ctx):
            Captures.release_all(ctx, self.captures, self.settled, self._kept)

    @staticmethod
    def may_share(views, mode):
        """Whether a vm create of these VMs takes shared captures: several VMs, no mode, one running."""
        return not mode and len(views) > 1 and any(Captures.Shared.takes(view) for view in views)

    @staticmethod
    @contextlib.contextmanager
    def shared(ctx, stamp, views, mode):
        """Captures.Shared for a vm create of several VMs without a mode (a mode holds each VM for
        captures of its own) when one of them runs, taken now, before the VMs' threads start, and
        released on the way out once they have ended, also when the run fails or a stop signal
        came (signals are held off around the run); else None. `stamp`: the run's (VmCreate.Run)."""
        if not Captures.may_share(views, mode) or STOP.stopping:
            yield None
            return
        shared = Captures.Shared(ctx, views, stamp)
        shared.take(ctx)
        try:
            yield shared
        finally:
            shared.release(ctx)

    @staticmethod
    def clean_leftovers(ctx, storages):
        """Delete what earlier runs left on these storages' volumes: the capture snapshots their
        lock records name (`inherited`), under either name, once LEFTOVER_AGE s old, and any other
        leftover of that age found beside them. A volume whose record names none costs no request.
        Never raises: what stays is a warning, and a later run tries again."""
        seen = set()
        for storage in storages:
            lock = ctx.lock_of(storage)
            if lock is None or id(lock) in seen:
                continue
            seen.add(id(lock))
            due = lock.claim_inherited(Captures.LEFTOVER_AGE)
            if due:
                try:
                    Captures.clean_volume(ctx, storage, due)
                except Failure as exc:
                    log.warning('storage %s: looking for leftover capture snapshots failed: %s', storage, exc)

    @staticmethod
    def clean_volume(ctx, storage, due):
        """clean_leftovers on the volume behind one storage, whose lock record names `due`."""
        volume = ctx.volume(storage)
        found = {record['name']: record for record in volume.snapshots('pve_ontap_*')}
        for name in due:
            if name not in found and Names.leftover_name(name) not in found:
                Captures.forget(ctx, name, storage)      # deleted since, by hand or by ONTAP
        targets = [found[n] for name in due for n in (name, Names.leftover_name(name)) if n in found]
        targets += [record for name, record in sorted(found.items()) if name.startswith(Names.LEFTOVER_PREFIX)
                    and record not in targets and not Volume.younger_than(record, Captures.LEFTOVER_AGE)]
        Captures.delete_leftovers(ctx, storage, targets)

    @staticmethod
    def delete_leftovers(ctx, storage, records):
        """Delete these capture snapshots (records) of the volume behind `storage`, under its lock,
        each struck from its lock record once gone. Never raises: what stays is a warning, and a
        later vm create tries again. Returns the names of those not deleted."""
        volume = ctx.volume(storage)
        left = []
        for record in records:
            where = f'storage {storage}: leftover capture snapshot {record["name"]} of volume {volume.name}'
            try:
                volume.delete_snapshot(record)
            except OntapError as exc:
                busy = (' (still busy: see snapshot show -fields owners on the cluster)'
                        if str(exc.code) == Ontap.SNAPSHOT_LOCKED else '')
                log.warning('%s could not be deleted%s: %s; a later vm create tries again', where, busy, exc)
                left.append(record['name'])
                continue
            except OutcomeUnknown as exc:
                log.warning('%s: whether it was deleted is unknown (%s); a later vm create looks again', where, exc)
                left.append(record['name'])
                continue
            Captures.forget(ctx, Names.capture_of(record['name']), storage)
            log.info('%s deleted', where)
        return left


class VmList:
    """vm list: a VM's snapshots, how consistent each is, which VM each is of."""

    @staticmethod
    def manifest_state(ctx, vmid, files):
        """{'path', 'signed', 'error'} of a set's manifest as read back (VmRestore.read_saved: a file that
        cannot be read or fails its check has its `error`), or None for a set without one."""
        records = [file for file in files if file.is_record and file.ext != '.conf']
        if not records:
            return None
        record = records[0]
        try:
            saved = VmRestore.read_saved(ctx, record.storage, record.path, vmid, record.stamp, record.size)
        except Failure as exc:
            return {'path': record.path, 'signed': False, 'error': str(exc)}
        return {'path': record.path, 'signed': saved.signed, 'error': None}

    @staticmethod
    def of(kind, same):
        """The OF column: whether a snapshot is of this guest (Identity.same_vm): this VM, another VM, unknown."""
        return {True: f'this {kind.word}', False: f'another {kind.word}', None: 'unknown'}[same]

    @staticmethod
    def unsound_copies(ctx, files):
        """The paths of a set's qcow2 copies that stand on a file a copy cannot keep (backing_risk):
        taken by an earlier build over a PVE 9 volume chain, say; vm restore refuses them."""
        qcow2 = [file for file in files if file.is_clone and file.ext == '.qcow2']
        risks = Parallel.map(lambda file: Qcow2.backing_risk(ctx.volume(file.storage).qcow2_backing(file.path)), qcow2)
        return [file.path for file, risk in zip(qcow2, risks) if risk]

    @staticmethod
    def command(ctx, args):
        view = VmView.gather(ctx, args.vm, kind=args.kind)
        found = VmView.gather_snapshots(ctx, view, VmView.searched_storages(ctx, view))
        manifests = Parallel.map(lambda files: VmList.manifest_state(ctx, view.vmid, files), list(found.values()))
        unsound = Parallel.map(lambda files: VmList.unsound_copies(ctx, files), list(found.values()))
        # A hold's text costs a request: read only where a set has one.
        held = {stamp: hold for stamp, files in found.items() if (hold := VmSnapshots.hold_of(files))}
        holds = dict(zip(held, Parallel.map(lambda hold: VmHold.read(ctx, hold), list(held.values()))))
        sets = []
        for (stamp, files), manifest, broken in zip(found.items(), manifests, unsound):
            clones = [f for f in files if f.is_clone]
            pairs, missing, _ = VmSnapshots.match_disks(view.disks, clones)
            disk_keys = {file.path: disk.key for disk, file in pairs}
            sets.append({
                'stamp': stamp, 'kind': Names.SNAPSHOT_KINDS[files[0].kind], 'size': sum(f.size for f in clones),
                'complete': not missing, 'missing': [d.key for d in missing], 'consistency': Consistency.of_files(files),
                'of': VmList.of(view.kind, Identity.same_vm(Identity.of_files(files), view.identity)),
                'identity': Identity.of_files(files),
                'manifest': manifest, 'unsound': broken,
                'files': [{'storage': f.storage, 'path': f.path, 'size': f.size, 'disk': disk_keys.get(f.path)}
                          for f in clones],
                'held': stamp in holds, 'hold': holds.get(stamp)})
            if manifest and manifest['error']:
                log.warning('%s: snapshot %s: %s', view.label, stamp, manifest['error'])
        ctx.emit(sets, VmList.text(view, sets))

    @staticmethod
    def text(view, sets):
        """vm list's tables: the VM's own snapshots (and those whose VM is unknown), then those of another
        VM that had its id before, apart. STATE and CONSISTENCY come after the first four columns, and
        HELD after OF, so that scripts reading the first ones keep working."""
        def state(s):
            base = f'incomplete (lacks {",".join(s["missing"])})' if s['missing'] else 'complete'
            return (base + ('; its manifest cannot be used' if (s['manifest'] or {}).get('error') else '')
                    + ('; a qcow2 copy stands on a file it cannot keep' if s['unsound'] else ''))

        def table(chosen):
            rows = [{'stamp': s['stamp'], 'kind': s['kind'], 'size': Output.human_size(s['size']),
                     'disks': ','.join(f['disk'] or f['path'].rsplit('/', 1)[1] for f in s['files']), 'state': state(s),
                     'consistency': s['consistency'], 'of': s['of'],
                     'held': ', '.join(filter(None, ['yes', Hold.describe(s['hold'])])) if s['held'] else 'no'}
                    for s in chosen]
            return Output.format_table([('SNAPSHOT', 'stamp'), ('KIND', 'kind'), ('SIZE', 'size'), ('DISKS', 'disks'),
                                        ('STATE', 'state'), ('CONSISTENCY', 'consistency'), ('OF', 'of'),
                                        ('HELD', 'held')], rows)

        other, word, tree = VmList.of(view.kind, False), view.kind.word, view.kind.tree
        text = table([s for s in sets if s['of'] != other])
        others = [s for s in sets if s['of'] == other]
        if others:
            text += (f'\n\nSnapshots of {other} that had the id {view.vmid} before ({tree} restore -as-new NEWID makes '
                     f'a {word} of one; -keep never counts or deletes them):\n' + table(others))
        return text


class VmDelete:
    """vm delete, and -keep: a VM's snapshots deleted, its config first freed of the files it uses."""

    @staticmethod
    def delete_snapshot(ctx, view, files):
        """Delete every file of one set (see VmDelete.delete_snapshots): a Failure if it is not gone whole."""
        failure = VmDelete.delete_snapshots(ctx, view, {files[0].stamp: files}).get(files[0].stamp)
        if failure:
            raise failure

    @staticmethod
    def delete_snapshots(ctx, view, sets, config=None):
        """Delete every file of the sets {stamp: files}: their unusedN entries through PVE in one
        change of the config (PVE deletes a committed entry's file too), then every file on ONTAP,
        REQUESTS_AT_ONCE at a time, where one PVE deleted already counts as done. A set with a
        file attached to the VM as a disk (to recover data from it, say) is refused whole and left
        untouched. Returns {stamp: Failure} of the sets not deleted (InUse: refused). `config` is
        the VM's config if just changed (by register_clones, with the unusedN it added)."""
        config = ctx.pve.pending_config(view.vm) if config is None else config
        failed = {}
        for stamp, files in sets.items():
            attached = {**Guest.attached_snapshot_files(view.config, files),
                        **Guest.attached_snapshot_files(config, files)}
            if attached:
                failed[stamp] = InUse(f'{view.label}: snapshot {stamp} is in use: '
                                      f'{", ".join(f"{path} is attached as {key}" for path, key in attached.items())}; '
                                      'detach it first')
        files = [f for stamp, members in sets.items() if stamp not in failed for f in members]
        volids = {f'{f.storage}:{view.vmid}/{f.path.rsplit("/", 1)[1]}' for f in files}
        registered = [key for key, value in sorted(config.items())
                      if re.fullmatch(r'unused\d+', key) and Guest.parse_volume(value) and Guest.parse_volume(value)[1] in volids]
        if registered:
            ctx.pve.set_config(view.vm, "remove the snapshot's unused disks", delete=','.join(registered))
        left = {}
        for file, outcome in zip(files, Clones.delete(ctx, [(f.storage, f.path) for f in files])):
            if outcome.error:
                left.setdefault(file.stamp, []).append(f'{file.path} ({outcome.error})')
        for stamp, problems in left.items():
            failed[stamp] = Failure(f'{view.label}: snapshot {stamp}: could not delete {"; ".join(problems)}')
        return failed

    @staticmethod
    def prune(ctx, view, keep, made, config=None):
        """-keep N: delete the snapshot sets older than the newest N complete ones (see
        VmSnapshots.to_prune), never a pre-restore set nor a held one (named at info), all at once. `made` is the new set's stamp;
        `config` as for VmDelete.delete_snapshots."""
        sets = {stamp: files for stamp, files in VmView.gather_snapshots(ctx, view).items()
                if all(f.kind == 'snapshot' for f in files)}
        held = [stamp for stamp, files in sets.items() if VmSnapshots.hold_of(files)]
        if held:
            log.info('%s: -keep %d neither counts nor deletes the held snapshot(s) %s (%s release lets one go)',
                     view.label, keep, ', '.join(held), view.kind.tree)
        doomed = {stamp: sets[stamp] for stamp in VmSnapshots.to_prune(sets, view.disks, keep, made, view.identity)}
        failed = VmDelete.delete_snapshots(ctx, view, doomed, config) if doomed else {}
        for stamp, files in doomed.items():
            if isinstance(failed.get(stamp), InUse):
                log.warning('%s; kept beyond -keep %d', failed[stamp], keep)
            elif stamp not in failed:
                missing = VmSnapshots.missing_disks(view.disks, files)
                lacks = f'incomplete (lacks {",".join(d.key for d in missing)}) ' if missing else ''
                ctx.changed('%s: %ssnapshot %s deleted (-keep %d)', view.label, lacks, stamp, keep)
        problems = [failure for failure in failed.values() if not isinstance(failure, InUse)]
        if problems:
            raise Failure.joined(*problems)

    @staticmethod
    def command(ctx, args):
        with VmView.locked_snapshot(ctx, args.vm, args.snapshot, args.kind) as (view, files):
            hold = VmSnapshots.hold_of(files)
            if hold and not args.force:
                raise Failure(f'{view.label}: snapshot {args.snapshot} is held{VmHold.said(ctx, hold)} '
                              f'({hold.path} on {hold.storage}): release it first ({view.kind.tree} release {view.kind.option} {view.vmid} '
                              f'-snapshot {args.snapshot}), or add -force to delete it held')
            VmDelete.delete_snapshot(ctx, view, files)
        ctx.changed('%s: snapshot %s%s deleted (%d file(s))', view.label, args.snapshot, ', held,' if hold else '',
                    len(files))


class VmHold:
    """vm hold and vm release, as zfs hold: a VM snapshot held by one more file of its set, beside
    its manifest (Names.hold_path), its text saying who held it, since when and why (Hold). -keep
    never counts or deletes a held snapshot, and vm delete refuses one without -force. The mark
    is kept with the snapshot: the directory listing vm list makes anyway shows it (no request
    more), it stays with the snapshot on every node and in a SnapMirror copy, and it goes with
    the set when the set is deleted."""

    @staticmethod
    def holder():
        """Who holds a snapshot: the user who ran sudo (SUDO_USER, as root), else the running user."""
        sudo = os.environ.get('SUDO_USER') if os.geteuid() == 0 else None
        return sudo or PrivateFiles.user_name(os.geteuid())

    @staticmethod
    def read(ctx, file):
        """What the hold file `file` (a SnapshotFile) says, Hold.read's dict: one request. One that
        cannot be read is named in a warning, its values None: it holds the snapshot all the same."""
        where = f'{file.path} on {file.storage}'
        try:
            return Hold.read(ctx.volume(file.storage).read_whole(file.path, min(file.size or 0, Hold.READ_MAX)), where)
        except Failure as exc:
            log.warning('%s', exc)
            return dict.fromkeys(Hold.KEYS)

    @staticmethod
    def said(ctx, hold):
        """` by alice since <stamp> (why)` of the hold file `hold`, as read (VmHold.read), or ''."""
        said = Hold.describe(VmHold.read(ctx, hold))
        return f' {said}' if said else ''

    @staticmethod
    def change(ctx, view, stamp, storage, path, change, there, done):
        """Make the hold file `path` on `storage` come (`there`) or go by change(), to three outcomes
        (Outcome.said): a write or delete whose answer was lost is read back (Volume.change_file)."""
        volume = ctx.volume(storage)
        Outcome.said(f'{view.label}', f'snapshot {stamp}', done,
                     lambda: volume.change_file('POST' if there else 'DELETE', path, change, there), f'{view.kind.tree} list')

    @staticmethod
    def hold(ctx, args):
        with VmView.locked_snapshot(ctx, args.vm, args.snapshot, args.kind) as (view, files):
            hold = VmSnapshots.hold_of(files)
            if hold:
                log.info('%s: snapshot %s is held already%s: nothing changed', view.label, args.snapshot,
                         VmHold.said(ctx, hold))
                return
            # Beside its manifest (or the saved config of an earlier build), else beside its first clone.
            home = next((f for f in files if f.is_record), files[0])
            path = Names.hold_path(view.vmid, args.snapshot, home.kind)
            volume, text = ctx.volume(home.storage), Hold.text(VmHold.holder(), Names.utc_stamp(), args.reason)
            VmHold.change(ctx, view, args.snapshot, home.storage, path, lambda: volume.write_file(path, text), True,
                          'held')
        ctx.changed('%s: snapshot %s held (%s on %s): -keep passes it over, %s delete refuses it without -force',
                    view.label, args.snapshot, path, home.storage, view.kind.tree)

    @staticmethod
    def release(ctx, args):
        with VmView.locked_snapshot(ctx, args.vm, args.snapshot, args.kind) as (view, files):
            holds = [file for file in files if file.is_hold]
            if not holds:
                log.info('%s: snapshot %s is not held: nothing changed', view.label, args.snapshot)
                return
            for hold in holds:
                volume = ctx.volume(hold.storage)
                VmHold.change(ctx, view, args.snapshot, hold.storage, hold.path,
                              functools.partial(volume.delete_file, hold.path), False, 'released')
        ctx.changed('%s: snapshot %s released', view.label, args.snapshot)


class VmRestore:
    """vm restore: a VM's disks (-with-config: and its config) back to a VM snapshot, or to their
    state in a storage snapshot, after the live disks are kept as a pre-restore snapshot; -as-new
    is NewVm."""

    @dataclasses.dataclass(frozen=True)
    class SavedConfig:
        """The config a snapshot saved, as read back: its settings (parse_config_text), the file it
        was read from, and whether this cluster's key vouches for it (Manifest.read)."""
        config: dict
        path: str
        storage: str
        signed: bool = False
        manifest: dict = None   # None: a .conf of an earlier build

        @property
        def trust(self):
            if self.signed:
                return "signed with this cluster's key"
            return 'unsigned (made before manifests were signed, or off a node): its settings are screened alone'

    @staticmethod
    def read_saved(ctx, storage, path, vmid, stamp, size=None):
        """The SavedConfig at `path` on `storage`, of guest `vmid` and snapshot `stamp`: a manifest,
        or, made by an earlier build, a .conf file. None if there is no such file; a ManifestError
        if there is one that cannot be read or fails its check."""
        volume = ctx.volume(storage)
        size = volume.file_size(path) if size is None else size
        if size is None:
            return None
        data = volume.read_file(path, size)
        where = f'{path} on {storage}'
        if not path.endswith('.manifest.json'):
            return VmRestore.SavedConfig(Guest.parse_config_text(data.decode('utf-8', 'surrogateescape')), path, storage)
        manifest, signed = Manifest.read(data, where, vmid, stamp, ctx.manifest_key())
        return VmRestore.SavedConfig(Guest.parse_config_text(manifest['config']), path, storage, signed, manifest)

    @staticmethod
    def saved_config_of(ctx, files):
        """The SavedConfig of a VM snapshot set, or None (one made before configs were saved)."""
        records = sorted((file for file in files if file.is_record), key=lambda file: file.ext == '.conf')
        if not records:
            return None
        vmid = int(re.match(r'vm-(\d+)', records[0].stem)[1])
        return VmRestore.read_saved(ctx, records[0].storage, records[0].path, vmid, records[0].stamp, records[0].size)

    @staticmethod
    def storage_snapshot_config(ctx, vmid, name, storages, kind=None):
        """The SavedConfig of guest `vmid` (of `kind`, default a VM) in the storage snapshot `name` (on the
        first of `storages` that holds one), or None: a snapshot made before configs were saved, or of a
        storage without the guest."""
        kind = kind or Kind.VM
        for storage in sorted(storages):
            found = StorageCreate.guest_manifests(ctx, storage, name)
            if found is not None:
                path, manifests = found
                mine = [m for m in manifests if isinstance(m, dict) and m.get('vmid') == vmid
                        and Manifest.guest_type(m) == kind.type]
                if mine:
                    manifest, signed = Manifest.check(mine[0], f'{path} on {storage}', vmid, name, ctx.manifest_key())
                    return VmRestore.SavedConfig(Guest.parse_config_text(manifest['config']), path, storage, signed,
                                                 manifest)
                continue
            volume = ctx.volume(storage)
            directory = Names.storage_record_dir(name)
            found = [Names.STORAGE_MANIFEST_FILE.match(file) for file in volume.files_in(directory) or []]
            mine = sorted((m for m in found if m and m['prefix'] == kind.tree and int(m['vmid']) == vmid),
                          key=lambda m: not m['consistency'])
            if mine:
                return VmRestore.read_saved(ctx, storage, f'{directory}/{mine[0][0]}', vmid, name)
        return None

    @staticmethod
    def read_or_warn(view, origin, need_config, read):
        """read() the config a snapshot saved; if that fails, a warning and None, unless it is to be
        put back (`need_config`): then a Failure saying so."""
        try:
            return read()
        except Failure as exc:
            if need_config:
                raise Failure(f'{view.label}: the config {origin} saved is not put back: {exc}; restore without '
                              '-with-config to put the disks back alone') from exc
            log.warning('%s: the config %s saved could not be read (%s): its disks are restored all the same, and '
                        'the plan shows no difference of configs', view.label, origin, exc)
            return None

    @staticmethod
    def storages_with_snapshot(ctx, view, name):
        """{storage: whether its volume has the storage snapshot `name`} for every storage the VM's
        disks may have been on (searched_storages: a disk moved since), so that a name that is no snapshot is
        said as such, not as disks without a copy; NotFound if none has it. A storage of a current disk
        without it is named in a warning."""
        holding = {}
        for storage in sorted(set(VmView.searched_storages(ctx, view)) | {disk.storage for disk in view.disks}):
            volume = ctx.volume(storage)
            holding[storage] = volume.has_snapshot(name)
            if not holding[storage] and storage in {disk.storage for disk in view.disks}:
                log.warning('%s: storage %s (volume %s) has no snapshot %s', view.label, storage, volume.name, name)
        if not any(holding.values()):
            raise NotFound(f'{view.label}: no storage snapshot {name} on ' + ', '.join(
                f'{storage} (volume {ctx.volume(storage).name})' for storage in holding) +
                ': see storage list')
        return holding

    @staticmethod
    def disks_to_restore(ctx, view, saved, with_config):
        """The disks a restore writes: the VM's disks now; with -with-config, the disks the saved
        config names, each where it was when the snapshot was taken (a disk moved since goes back to
        its old file, the one the snapshot has a copy of), so far as a restore may set them
        (setting_risk: never a host path or another guest's volume)."""
        if not with_config or saved is None:
            return view.disks
        disks = [disk for disk in Guest.disks(view.vm, saved.config) if disk.storage in ctx.config.storages and disk.path
                 and not RestoreRules.setting_risk(disk.key, saved.config[disk.key], view.vmid, view.kind)]
        for disk in disks:
            ctx.volume(disk.storage)
        return disks

    @staticmethod
    def moved_disks(view, saved):
        """(key, volid then, volid now) of each disk of a snapshot's manifest that the VM has under the
        same key on another volume now: moved since (Move Disk), its old file kept as unused or gone."""
        recorded = (saved.manifest or {}).get('disks') if saved else None
        now = {disk.key: disk.volid for disk in Guest.disks(view.vm, view.config)}
        return [(entry['key'], entry['volid'], now[entry['key']]) for entry in recorded or ()
                if isinstance(entry, dict) and entry.get('key') in now and entry.get('volid') != now[entry['key']]]

    @staticmethod
    def sources(ctx, view, sets, stamp, name, with_config):
        """([(disk, source path)] for each disk to restore (disks_to_restore), from the set `stamp` or
        from the storage snapshot `name`, what the source is called, [disks it has no copy of], its
        saved config or None). A saved config that cannot be read stops the restore only if it is to
        be put back (`with_config`). A disk moved since is said, and without -with-config its copy is
        written nowhere: never onto another file than the one it was taken of."""
        if stamp:
            files = VmView.find_snapshot(view, sets, stamp)
            origin = f'snapshot {stamp}'
            saved = VmRestore.read_or_warn(view, origin, with_config, lambda: VmRestore.saved_config_of(ctx, files))
            disks = VmRestore.disks_to_restore(ctx, view, saved, with_config)
            pairs, missing, _ = VmSnapshots.match_disks(disks, [f for f in files if f.is_clone])
            sources = [(disk, file.path) for disk, file in pairs]
        else:
            holding = VmRestore.storages_with_snapshot(ctx, view, name)
            origin = f'storage snapshot {name}'
            saved = VmRestore.read_or_warn(view, origin, with_config, lambda: VmRestore.storage_snapshot_config(
                ctx, view.vmid, name, [storage for storage in holding if holding[storage]], view.kind))
            sources, missing = [], []
            for disk in VmRestore.disks_to_restore(ctx, view, saved, with_config):
                volume = ctx.volume(disk.storage)
                source = f'.snapshot/{name}/{disk.path}'
                if holding.get(disk.storage) and volume.file_exists(source):
                    sources.append((disk, source))
                else:
                    missing.append(disk)
        for key, then, now in VmRestore.moved_disks(view, saved):
            log.warning('%s: disk %s was %s when %s was taken and is %s now: %s', view.label, key, then, origin, now,
                        'with -with-config it goes back to the file it was, from the copy' if with_config else
                        'its copy is written onto no other file; -with-config puts the disk back as it was')
        for disk in missing:
            log.warning('%s: %s has no copy of disk %s (%s); it stays as it is', view.label, origin, disk.key,
                        disk.volid)
        if not sources:
            raise Failure(f'{view.label}: {origin} holds none of its {"saved" if with_config else "current"} disks')
        VmRestore.check_source_backings(ctx, view, origin, sources)
        return sources, origin, missing, saved

    @staticmethod
    def check_source_backings(ctx, view, origin, sources):
        """Refuse a restore from a qcow2 copy that stands on a file a copy alone cannot keep
        (backing_risk): one a run of an earlier build took over a PVE 9 volume chain, say."""
        qcow2 = [(disk, source) for disk, source in sources if source.endswith('.qcow2')]

        def backing(item):
            disk, source = item
            volume = ctx.volume(disk.storage)
            return Qcow2.backing_risk(volume.qcow2_backing(source))

        risky = [f'{disk.key} ({source}) stands on {why}' for (disk, source), why in
                 zip(qcow2, Parallel.map(backing, qcow2)) if why]
        if risky:
            raise Failure(f'{view.label}: not restored from {origin}, for the copy of {"; ".join(risky)}, so it does not '
                          'hold the disk whole; restore the whole storage from a storage snapshot, or copy the disk out '
                          'of one by hand (qemu-img convert)')

    @staticmethod
    def absent_targets(ctx, view, sources):
        """The paths of the disks a restore writes that are not there now: a disk -with-config puts
        back whose file was deleted since (moved away without keeping it). None of the VM's current
        disks is looked up: they are there."""
        current = {(disk.storage, disk.path) for disk in view.disks}
        others = [disk for disk, _ in sources if (disk.storage, disk.path) not in current]
        there = Parallel.map(lambda disk: ctx.volume(disk.storage).file_exists(disk.path), others)
        return {disk.path for disk, found in zip(others, there) if not found}

    @staticmethod
    def restore_disks(ctx, view, sources, undo_stamp, window):
        """Clone the live disks to a pre-restore snapshot, then each source over its live disk (or to
        where a disk -with-config puts back was before it was deleted: absent_targets). All or
        nothing: on a failure the disks overwritten are put back, those made removed. An overwrite
        whose outcome stays unknown leaves all as it is: the pre-restore snapshot kept, the VM down.
        Returns the paths of the disks the pre-restore snapshot holds a copy of."""
        vmid = view.vmid
        absent = VmRestore.absent_targets(ctx, view, sources)
        undo = [(disk.storage, disk.path, Names.snapshot_file_path(disk.path, undo_stamp, 'prerestore')) for disk, _ in sources
                if disk.path not in absent]
        saved = Clones.settle(ctx, Clones.make(ctx, undo))
        if any(outcome.state != 'done' for outcome in saved):
            # Only copies of the live disks were asked for: the VM may start whatever they became.
            raise Failure(f'{view.label}: nothing restored, the pre-restore copy failed: '
                          f'{"; ".join(str(outcome.error) for outcome in saved if outcome.error)}; '
                          f'{Clones.remove(ctx, Outcome.items_in(saved, "done"))}{Clones.still_pending(saved)}')
        log.info('%s: current disks saved as pre-restore snapshot %s', view.label, undo_stamp)
        key = {disk.path: disk.key for disk, _ in sources}
        put_back_by = f'{view.kind.tree} restore {view.kind.option} {vmid} -snapshot {undo_stamp}'
        overwrites = Clones.settle(ctx, Clones.make(ctx, [(disk.storage, source, disk.path) for disk, source in sources],
                                                    overwrite=True), overwrite=True)
        if all(outcome.state == 'done' for outcome in overwrites):
            return {path for _, path, _ in undo}
        stopped = f'{view.kind.word} left stopped' if window.acting else f'do not start {view.label}'
        if any(outcome.state == 'unknown' for outcome in overwrites):
            window.leave_down('a restore of its disks may still be under way')
            raise Failure(f'{view.label}: restore not finished: {VmRestore.restore_state(overwrites, key)}; {stopped} and '
                          f'pre-restore snapshot {undo_stamp} kept: once ONTAP has ended the job(s), start the VM if '
                          f'its disks are right, or put them back with {put_back_by}')
        reason = '; '.join(f'{key[path]} ({outcome.error})' for outcome in overwrites if outcome.error
                           for _, _, path in [outcome.item])
        back = [(storage, Names.snapshot_file_path(path, undo_stamp, 'prerestore'), path)
                for storage, _, path in Outcome.items_in(overwrites, 'done') if path not in absent]
        made = [item for item in Outcome.items_in(overwrites, 'done') if item[2] in absent]
        put_back = Clones.settle(ctx, Clones.make(ctx, back, overwrite=True), overwrite=True)
        if made:
            reason += f'; {Clones.remove(ctx, made)}'

        if any(outcome.state != 'done' for outcome in put_back):
            window.leave_down('its disks are neither all restored nor all as they were')
            unrestored = ', '.join(key[path] for outcome in put_back if outcome.error for _, _, path in [outcome.item])
            raise Failure(f'{view.label}: restore failed ({reason}) and putting back {unrestored} failed too: their '
                          f'previous content is in pre-restore snapshot {undo_stamp}; {stopped}: put them back with '
                          f'{put_back_by}{Clones.still_pending(put_back)}')
        raise Failure(f'{view.label}: restore failed, every disk is as it was ({Clones.remove(ctx, undo)}): {reason}')

    @staticmethod
    def save_config_for_undo(ctx, view, undo_stamp, needed, copied):
        """Save the VM's config as it is now with the pre-restore snapshot (its manifest, naming the
        copies it holds: `copied`, restore_disks'), so that restoring that one -with-config undoes a
        config put back too. None, or, where the config is to be put back (`needed`), the Failure
        that keeps it from being put back; else a warning."""
        try:
            VmCreate.save_snapshot_records(ctx, view, undo_stamp, 'shutdown', 'prerestore', ctx.pve.config_of(view.vm),
                                           copied)
        except Failure as exc:
            if needed:
                return Failure(f'its config was not put back: the current one could not be saved with pre-restore '
                               f'snapshot {undo_stamp} to undo it ({exc})')
            log.warning('%s: its config could not be saved with pre-restore snapshot %s: %s', view.label, undo_stamp,
                        exc)
        return None

    @staticmethod
    def restore_state(overwrites, key):
        """Which disks a restore overwrote, which it did not, and which ONTAP may still overwrite."""
        parts = [f'{key[outcome.item[2]]} {phrase}' for outcome, phrase in
                 ((outcome, {'done': 'restored', 'failed': f'not restored ({outcome.error})',
                             'unknown': 'unknown'}[outcome.state]) for outcome in overwrites)]
        return ', '.join(parts) + f' ({Outcome.pending_jobs(overwrites)})'

    @staticmethod
    def check_restorable(label, status, shutdown):
        """Refuse to overwrite the disks of a guest (`label`; a resources entry or status/current) that
        runs without -shutdown, is suspended to disk, or is locked by a backup, clone, migration."""
        lock = status.get('lock')
        if lock == 'suspended':
            raise Failure(f'{label} is suspended to disk: its saved memory belongs to the current disks; '
                          'start it and shut it down first')
        if lock:
            raise Failure(f'{label} is locked ({lock}): try again when that is done')
        if status.get('status') == 'running' and status.get('qmpstatus', 'running') != 'running':
            raise Failure(f'{label} is {status["qmpstatus"]}, not running, and the tool never resumes such a VM: '
                          'resume or stop it first')
        if status.get('status') == 'running' and not shutdown:
            raise Failure(f'{label} is running: shut it down first, or add -shutdown')

    @staticmethod
    def check_same_vm(view, origin, saved, files):
        """Refuse a restore of the VM from a snapshot of another VM that had its id (same_vm): by the
        identity its manifest records, else the one its name carries (`files`: a VM snapshot's)."""
        recorded = Identity.of_manifest((saved.manifest or {}).get('identity') if saved else None)
        tag = Identity.tag(recorded) if recorded else None
        if Identity.same_vm(tag or Identity.of_files(files), view.identity) is False:
            word = view.kind.word
            raise Failure(f'{view.label}: {origin} is of another {word} that had the id {view.vmid} before, not of '
                          f'{view.label} now: its disks are not put onto this {word}; make a {word} of it with -as-new NEWID')

    @staticmethod
    def plan(view, origin, sources, missing, saved, with_config, allowed):
        """What a vm restore does, as a record (-output json), gathered before it asks: the disks, and
        what putting the saved config back does (RestoreRules.plan): `diff`, unified diff lines of the
        config now and after (null without a saved config); the settings `kept` as they are, and
        why; those `allowed` back by -allow-key alone; the file and whether it is `signed`."""
        plan = {'vmid': view.vmid, 'origin': origin,
                'disks': [{'key': disk.key, 'volid': disk.volid, 'source': source} for disk, source in sources],
                'kept': [disk.key for disk in missing],
                'config': {'saved': saved is not None, 'restored': bool(with_config), 'diff': None}}
        if saved is not None:
            change = RestoreRules.plan(view.config, saved.config, view.vmid, allowed, view.kind)
            detached = [disk for disk in Guest.disks(view.vm, view.config) if with_config and (
                disk.key in change.deletes or Guest.drive_volume(change.changes.get(disk.key, disk.volid)) != disk.volid)]
            plan['config'].update(
                detached=[{'key': disk.key, 'volid': disk.volid} for disk in detached],
                diff=Guest.config_diff(view.config, change.after(view.config), f'{view.label} now', origin),
                kept=[{'key': key, 'saved': then, 'current': now, 'why': why}
                      for key, (then, now, why) in change.kept.items()],
                allowed=[{'key': key, 'value': value} for key, value in change.allowed.items()],
                file=f'{saved.path} on {saved.storage}', signed=saved.signed, trust=saved.trust)
        return plan

    @staticmethod
    def show_plan(ctx, plan, asking, kind=None):
        """The plan of a vm restore (of a guest of `kind`: ct restore), shown as StorageRestore.show_plan
        shows a storage restore's."""
        kind = kind or Kind.VM
        if ctx.output == 'json':
            print(json.dumps(plan, indent=2, sort_keys=True))
            return
        if not (asking or ctx.dry_run or log.isEnabledFor(logging.INFO)):
            return
        config = plan['config']
        lines = [f'{kind.tree} restore puts disks {", ".join(d["key"] for d in plan["disks"])} of {kind.word} {plan["vmid"]} back to '
                 f'{plan["origin"]}' + (f'; {", ".join(plan["kept"])} stay as they are' if plan['kept'] else '') + '.']
        if not config['saved']:
            lines.append(f'{plan["origin"]} holds no saved config (made before snapshots carried one): the config '
                         'stays as it is.')
            print('\n'.join(Output.printable(line) for line in lines), file=sys.stderr, flush=True)
            return
        lines.append(f'Its saved config: {config["file"]}, {config["trust"]}.')
        if config['diff']:
            lines.append(f'Putting back the config {plan["origin"]} saved changes it so:')
            lines += config['diff']
        else:
            lines.append(f'The config is as {plan["origin"]} saved it' + (', but for what is kept below.'
                                                                          if config['kept'] else '.'))
        if config['kept']:
            lines.append('These settings are kept as they are, whatever the saved config says:')
            lines += RestoreRules.describe_kept({item['key']: (item['saved'], item['current'], item['why'])
                                                 for item in config['kept']})
        lines += [f'  {item["key"]}: "{item["value"]}" is put back only because -allow-key names it'
                  for item in config['allowed']]
        if config['detached']:
            lines.append('Disks of the VM now that the saved config lacks, or names another file for, stay as unused '
                         'disks: ' + ', '.join(f'{item["key"]} ({item["volid"]})' for item in config['detached']))
        if config['diff'] or config['allowed']:
            lines.append('-with-config puts the saved config back so; disks beyond it are kept as unused disks.'
                         if config['restored'] else 'The config stays as it is (-with-config puts the saved one back).')
        print('\n'.join(Output.printable(line) for line in lines), file=sys.stderr, flush=True)

    @staticmethod
    def put_config_back(ctx, view, saved, allowed):
        """Put a saved config back (RestoreRules.plan: screened, `allowed` the keys -allow-key names) in one
        change, against the digest of the config read now, so that PVE refuses it if anybody changes
        the config meanwhile. A lost answer is read back: the saved config there is done, the config
        as it was is failed, else unknown."""
        current = ctx.pve.config_of(view.vm)
        plan = RestoreRules.plan(current, saved, view.vmid, allowed, view.kind)
        changes, deletes = plan.changes, plan.deletes
        if not changes and not deletes:
            return
        params = dict(changes, **({'delete': ','.join(deletes)} if deletes else {}),
                      **({'digest': current['digest']} if current.get('digest') else {}))
        try:
            ctx.pve.set_config(view.vm, 'put the saved config back', **params)
        except OutcomeUnknown as exc:
            # A change waiting for PVE's config lock may still land after a read-back that found
            # the config as it was: only the saved config found there settles it.
            try:
                after = ctx.pve.config_of(view.vm)
            except Failure as again:
                raise OutcomeUnknown(f'{exc}; reading the config back failed too ({again})', exc.what,
                                     where=exc.where) from exc
            again = RestoreRules.plan(after, saved, view.vmid, allowed, view.kind)
            if (again.changes, again.deletes) == ({}, []):
                return
            raise OutcomeUnknown(f'{exc}; the config read back is not the saved one yet: check it '
                                 f'({"pct" if view.kind == Kind.CT else "qm"} config {view.vmid}) once no task of '
                                 f'{view.label} runs', exc.what, where=exc.where) from exc
        if not ctx.dry_run:
            log.info('%s: config put back (%d key(s) set, %d deleted)', view.label, len(changes), len(deletes))

    @staticmethod
    def command(ctx, args):
        allowed = frozenset(getattr(args, 'allow_key', None) or ())
        if getattr(args, 'as_new', None):
            if args.with_config or args.shutdown:
                w = args.kind.word
                raise ConfigError(f'-as-new takes neither -with-config (the new {w} always gets the saved config) nor '
                                  f'-shutdown ({w} {args.vm} is not touched)')
            NewVm.restore(ctx, args.vm, args.as_new, args.snapshot, args.storage_snapshot, allowed,
                          getattr(args, 'no_saved_config', False), args.yes, args.kind)
            return
        if getattr(args, 'no_saved_config', False):
            raise ConfigError('-no-saved-config goes with -as-new (a restore without -with-config never needs the saved '
                              'config)')
        view = VmView.gather(ctx, args.vm, kind=args.kind)
        with contextlib.ExitStack() as held:
            locks = held.enter_context(Locks.for_storages(ctx, view.storages))
            Guests.settle_left(ctx, locks, {view.vmid: view.vm})
            sets = VmView.gather_snapshots(ctx, view, VmView.searched_storages(ctx, view))
            sources, origin, missing, saved = VmRestore.sources(ctx, view, sets, args.snapshot, args.storage_snapshot,
                                                                args.with_config)
            # -with-config may put a disk back on a storage the VM no longer uses: its volume locked too.
            more = {disk.storage for disk, _ in sources} - set(view.storages)
            locks += held.enter_context(Locks.for_storages(ctx, more))
            if args.with_config and saved is None:
                raise Failure(f'{view.label}: {origin} holds no saved config (made before snapshots carried one): '
                              '-with-config has nothing to put back; restore the disks without it')
            VmRestore.check_same_vm(view, origin, saved, sets.get(args.snapshot, []))
            VmRestore.check_restorable(view.label, view.vm, args.shutdown)
            VmRestore.show_plan(ctx, VmRestore.plan(view, origin, sources, missing, saved, args.with_config, allowed),
                                asking=not args.yes and sys.stdin.isatty(), kind=view.kind)
            disks = ', '.join(disk.key for disk, _ in sources)
            kept = f' ({", ".join(d.key for d in missing)} not in it: kept as they are)' if missing else ''
            config = ' and its config' if args.with_config else ''
            ctx.confirm(f'Overwrite disks {disks}{config} of {view.label} with {origin}{kept}', args.yes)
            # Once more as it is now: the VM may have been started (or locked) during the question.
            status = ctx.pve.status(view.vm)
            VmRestore.check_restorable(view.label, status, args.shutdown)
            running = status.get('status') == 'running'
            undo_stamp = VolumeLock.new_stamp(locks, [f'vm{view.vmid}'], sets)
            with STOP.deferred():
                with VmWindow(ctx, view, 'shutdown' if running else None, status) as window:
                    copied = VmRestore.restore_disks(ctx, view, sources, undo_stamp, window)
                    undone = VmRestore.save_config_for_undo(ctx, view, undo_stamp, args.with_config, copied)
                    if args.with_config and undone:
                        window.problems.append(undone)
                    elif args.with_config:
                        try:
                            VmRestore.put_config_back(ctx, view, saved.config, allowed)
                        except OutcomeUnknown as exc:
                            window.leave_down('a change of its config may still be under way')
                            window.problems.append(Failure(f'whether its config was put back is unknown: {exc}'))
                        except Failure as exc:
                            window.problems.append(Failure(f'its config was not put back: {exc}'))
                if window.problems:
                    raise Failure(f'{view.label}: disks {disks} restored from {origin}, but '
                                  f'{Failure.joined(*window.problems)}')
        ctx.changed('%s: disks %s%s restored from %s; undo point: pre-restore snapshot %s', view.label, disks, config,
                    origin, undo_stamp)
        STOP.check(f'{view.label}: disks {disks}{config} restored from {origin} first')


@dataclasses.dataclass
class NewVm:
    """What vm restore -as-new makes, gathered before anything changes."""
    vmid: int
    node: str
    config: dict        # the create's parameters
    clones: list        # (storage, source, destination): its disks
    origin: str
    kept: dict = dataclasses.field(default_factory=dict)      # {key: (value, None, why)} not copied
    allowed: dict = dataclasses.field(default_factory=dict)   # {key: value} copied only by -allow-key
    kind: Kind = None   # a VM's (None) or a CT's (Kind.CT): its config written into pmxcfs (Node.create_config)

    @staticmethod
    def reachable_storages(ctx, quiet=False):
        """The storages of config.ini whose volume can be looked up now (a warning names each other
        one, or `quiet`, a line at info level)."""
        found = []
        for storage in sorted(ctx.config.storages):
            try:
                ctx.volume(storage)
            except Failure as exc:
                (log.info if quiet else log.warning)('storage %s not searched: %s', storage, exc)
                continue
            found.append(storage)
        return found

    @staticmethod
    def disks_without_copy(ctx, disks, copies, config):
        """(disk, why) for each disk that a new VM could not get a copy of. A qcow2 disk of a VM with
        PVE snapshots on a storage with snapshot-as-volume-chain (PVE 9) is the top of a chain whose
        backing files are named relative to its directory, snap-<snapshot>-<file> beside it
        (pve-storage src/PVE/Storage/Plugin.pm, get_snap_name and volume_snapshot_delete's rebase):
        a copy in images/NEWID/ would find none of them."""
        for disk in disks:
            if (disk.path and disk.path.endswith('.qcow2') and config.get('parent')
                    and ctx.storages().get(disk.storage, {}).get('snapshot-as-volume-chain')):
                yield disk, ('a qcow2 disk with PVE snapshots as a volume chain (snapshot-as-volume-chain), whose '
                             'backing files stay beside the old one, so it cannot be copied; delete the PVE snapshots '
                             'first, or convert the disk by hand (qemu-img convert)')
            elif disk.storage not in ctx.config.storages:
                yield disk, f'storage {disk.storage} has no section in {ctx.config.path}, so it cannot be copied'
            elif disk.path is None:
                yield disk, 'no image file, so it cannot be copied'
            elif (disk.storage, disk.file) not in copies:
                yield disk, 'the snapshot holds no copy of it'

    @staticmethod
    def source(ctx, vmid, view, stamp, name, storages, kind=None):
        """(what -as-new copies from, {(storage, file): path of its copy} or None where it is to be
        looked up per disk, the storages holding the storage snapshot, its SavedConfig or None)."""
        if stamp:
            searched = VmView({'vmid': vmid}, {}, [], [], storages)
            files = VmView.find_snapshot(searched, VmView.gather_snapshots(ctx, searched), stamp)
            return (f'snapshot {stamp}', {(f.storage, f.source_file): f.path for f in files if f.is_clone}, [],
                    lambda: VmRestore.saved_config_of(ctx, files))
        holding = [storage for storage in storages if ctx.volume(storage).has_snapshot(name)]
        if not holding:
            raise NotFound(f'no storage snapshot {name} on {", ".join(storages) or "any storage of config.ini"}: '
                           'see storage list')
        return f'storage snapshot {name}', None, holding, lambda: VmRestore.storage_snapshot_config(ctx, vmid, name, holding,
                                                                                                    kind)

    @staticmethod
    def settings(vmid, newid, view, origin, read, no_saved_config, kind=None):
        """The settings -as-new starts from: the config `origin` saved (read()), or with
        `no_saved_config`, where that cannot be read or fails its check, VM `vmid`'s current one.
        `kind`: the guests' (default VMs)."""
        w = (kind or Kind.VM).word
        try:
            saved = read()
        except Failure as exc:
            if not no_saved_config or view is None:
                instead = ('add -no-saved-config to take the current config of {w} {vmid} instead' if view else
                           f'{w} {vmid} no longer exists, so no other config can stand in')
                raise Failure(f'{w} {newid} not created: {exc}; {instead.format(vmid=vmid, w=w)}') from exc
            log.warning('%s %s: %s (-no-saved-config: %s %s gets the current config of %s %s)', w, vmid, exc, w, newid,
                        w, vmid)
            return view.config
        if saved is None and view is None:
            raise Failure(f'{w} {vmid} no longer exists in PVE, and {origin} holds no saved config (made before '
                          'snapshots carried one): nothing says what VM it was; create a VM by hand and give it '
                          'copies of its disks')
        if saved is None:
            log.warning('%s %s: %s holds no saved config (made before snapshots carried one): %s %s gets the '
                        'current config of %s %s', w, vmid, origin, w, newid, w, vmid)
            return view.config
        return saved.config

    @staticmethod
    def plan(ctx, vmid, newid, stamp, name, allowed=frozenset(), no_saved_config=False, kind=None):
        """Every lookup of -as-new: the new id is free, the source found (without guest `vmid` if it is
        gone: on every configured storage), a config to give the new guest (screened: RestoreRules.screen), a
        copy of each of its disks. `kind`: the guests' (default VMs; a CT's config is written here, on
        this node: Node.create_config)."""
        kind = kind or Kind.VM
        if kind == Kind.CT and Node.name() is None:
            raise Failure(f'ct restore -as-new writes CT {newid}\'s config into pmxcfs ({Node.CONFIGS_DIR}), as root '
                          'on a PVE node (PVE creates a CT through its API only from a template or a backup): run it '
                          'on a node')
        guests = ctx.pve.guests()
        if newid in guests:
            taken = guests[newid]
            raise Failure(f'Proxmox {ctx.pve.host}: {Guest.label(taken)} {taken.get("name") or ""} already exists on '
                          f'node {taken.get("node")}: choose another id for -as-new (pvesh get /cluster/nextid gives '
                          'a free one)')
        if kind == Kind.CT:
            Node.check_id_free(newid)
        source = guests.get(vmid)
        view = VmView.gather(ctx, vmid, {vmid: source}, kind=kind) if source else None
        storages = view.storages if view else NewVm.reachable_storages(ctx)
        origin, copies, holding, read = NewVm.source(ctx, vmid, view, stamp, name, storages, kind)
        original = NewVm.settings(vmid, newid, view, origin, read, no_saved_config, kind)
        config, risky = RestoreRules.screen(Guest.restorable(original), vmid, allowed, kind)
        forced = {key: config[key] for key in sorted(allowed)
                  if key in config and RestoreRules.setting_risk(key, config[key], vmid, kind)}
        disks = Guest.disks({'type': kind.type}, config)
        if copies is None:
            copies = {}
            for disk in disks:
                if disk.storage in holding and disk.path:
                    volume = ctx.volume(disk.storage)
                    if volume.file_exists(f'.snapshot/{name}/{disk.path}'):
                        copies[(disk.storage, disk.file)] = f'.snapshot/{name}/{disk.path}'
        lacking = [f'{disk.key} ({disk.volid}: {why})'
                   for disk, why in NewVm.disks_without_copy(ctx, disks, copies, original)]
        if lacking:
            raise Failure(f'{kind.word} {newid} would lack disks of {kind.word} {vmid}: {"; ".join(lacking)}; nothing was '
                          'made')
        if not disks:
            raise Failure(f'{kind.word} {vmid}: the config {origin} gives has no disk to copy; nothing was made')
        taken = []
        for storage in sorted({disk.storage for disk in disks}):
            volume = ctx.volume(storage)
            taken += [record['name'] for record in volume.list_dir(f'images/{newid}')]
        paths = RestoreRules.new_disk_paths(disks, newid, taken)
        clones = [(disk.storage, copies[(disk.storage, disk.file)], paths[disk.key]) for disk in disks]
        volumes = {disk.key: f'{disk.storage}:{newid}/{paths[disk.key].rsplit("/", 1)[1]}' for disk in disks}
        node = Node.name() or (source or {}).get('node') or ctx.pve.local_node()
        if kind == Kind.CT:
            if RestoreRules.ct_setting_risk('unprivileged', original.get('unprivileged', '0'), vmid):
                raise Failure(f'CT {newid} not created: {origin} of CT {vmid} is of a privileged container, which only '
                              'a user with Sys.Modify on / may create (pve-container API2/LXC.pm, create_vm), and a '
                              'saved config may be written by others: -as-new makes only unprivileged CTs; nothing '
                              'was made')
            return NewVm(newid, node, RestoreRules.new_ct_config(config, volumes), clones, origin,
                         {key: (original[key], None, why) for key, why in risky.items()}, forced, kind)
        if any(key in original for key in Guest.SECRET_KEYS):
            log.warning('VM %s: its cloud-init password is not copied (no snapshot holds it): set it again with '
                        'qm set %s --cipassword', newid, newid)
        import uuid  # only -as-new needs it; see ontap_read_file
        return NewVm(newid, node, RestoreRules.new_vm_config(config, volumes, str(uuid.uuid4())), clones, origin,
                     {key: (original[key], None, why) for key, why in risky.items()}, forced)

    @staticmethod
    def show_plan(ctx, new, source, asking):
        """What -as-new makes, shown as vm restore's plan is (VmRestore.show_plan): the new VM's config
        whole, the settings not copied and why, those copied only because -allow-key names them."""
        plan = {'vmid': new.vmid, 'node': new.node, 'origin': new.origin, 'source': source, 'config': new.config,
                'disks': [{'storage': storage, 'source': path, 'destination': copy} for storage, path, copy in new.clones],
                'kept': [{'key': key, 'saved': value, 'why': why} for key, (value, _, why) in new.kept.items()],
                'allowed': [{'key': key, 'value': value} for key, value in new.allowed.items()]}
        if ctx.output == 'json':
            print(json.dumps(plan, indent=2, sort_keys=True))
            return
        if not (asking or ctx.dry_run or log.isEnabledFor(logging.INFO)):
            return
        if new.kind == Kind.CT:
            lines = [(f'ct restore -as-new makes CT {new.vmid} on node {new.node} from {new.origin} of CT {source}: '
                      'stopped, with new MAC addresses, no start at boot, and this config:')]
        else:
            lines = [(f'vm restore -as-new makes VM {new.vmid} on node {new.node} from {new.origin} of VM {source}: '
                      'stopped, with new MAC addresses, vmgenid and SMBIOS uuid, no start at boot, and this config:')]
        lines += [f'  {key}: {value}' for key, value in sorted(new.config.items())]
        if new.kept:
            lines.append('Not copied from the saved config:')
            lines += [f'  {key}: "{value}" ({why}' + (')' if new.kind == Kind.CT else f'; -allow-key {key} copies it)')
                      for key, (value, _, why) in new.kept.items()]
        lines += [f'  {key}: "{value}" is copied only because -allow-key names it' for key, value in new.allowed.items()]
        print('\n'.join(Output.printable(line) for line in lines), file=sys.stderr, flush=True)

    @staticmethod
    def create(ctx, new):
        """Create the VM of -as-new over its cloned disks. Failed: the clones are removed. Unknown (a
        lost answer, a task past its bound): its tasks are followed, then read back: is the VM there?"""
        files = ', '.join(f'{destination} on {storage}' for storage, _, destination in new.clones)
        if new.kind == Kind.CT:
            try:
                Node.create_config(ctx, {'vmid': new.vmid, 'node': new.node, 'type': 'lxc'},
                                   Guest.config_text(new.config))
            except Failure as exc:
                raise Failure(f'CT {new.vmid} not created: {exc}; {Clones.remove(ctx, new.clones)}') from exc
            return
        try:
            ctx.pve.create_vm(new.node, new.vmid, new.config)
        except OutcomeUnknown as exc:
            guest = {'node': new.node, 'vmid': new.vmid, 'type': 'qemu'}
            try:
                ctx.pve.settle_task(guest, exc)
                made = ctx.pve.guests().get(new.vmid)
            except Failure as again:
                raise Failure(f'{exc}; finding out what became of it failed too ({again}): its disks are left, '
                              f'{files}: check whether VM {new.vmid} exists, and delete them if not') from exc
            if made and not made.get('lock'):
                log.info('VM %s: the answer to its create was lost, but it exists', new.vmid)
                return
            state = f'exists, locked ({made["lock"]})' if made else 'does not exist (yet)'
            raise Failure(f'{exc}; VM {new.vmid} {state}: its disks are left as they are, {files}; once no task of VM '
                          f'{new.vmid} runs on node {new.node}, check VM {new.vmid}, and delete them if it is not '
                          'there') from exc
        except Failure as exc:
            raise Failure(f'VM {new.vmid} not created: {exc}; {Clones.remove(ctx, new.clones)}') from exc

    @staticmethod
    def restore(ctx, vmid, newid, stamp, name, allowed, no_saved_config, assume_yes, kind=None):
        """A new VM `newid` from a VM snapshot or a storage snapshot of VM `vmid`, which may no longer
        exist: its disks file-cloned from the snapshot's copies, its config the saved one, screened
        (new_vm_config, RestoreRules.screen). Nothing of VM `vmid` changes. If the create fails, the clones
        are removed again; if its outcome stays unknown, they are left and named. Settings only
        -allow-key lets through are shown, then asked for."""
        new = NewVm.plan(ctx, vmid, newid, stamp, name, allowed, no_saved_config, kind)
        w = (kind or Kind.VM).word
        NewVm.show_plan(ctx, new, vmid, asking=bool(new.allowed) and not assume_yes and sys.stdin.isatty())
        if new.allowed:
            ctx.confirm(f'Make VM {newid} with {", ".join(new.allowed)}, which only root@pam may set', assume_yes)
        storages = sorted({storage for storage, _, _ in new.clones})
        # A stop meanwhile would leave clones without their VM: both are made, then the run stops.
        with Locks.for_storages(ctx, storages), STOP.deferred():
            for storage in storages:
                volume = ctx.volume(storage)
                volume.ensure_directory(f'images/{newid}')
            made = Clones.settle(ctx, Clones.make(ctx, new.clones))
            if any(outcome.state != 'done' for outcome in made):
                raise Failure(f'{w} {newid} not created: copying its disks from {new.origin} failed: '
                              f'{"; ".join(str(outcome.error) for outcome in made if outcome.error)}; '
                              f'{Clones.remove(ctx, Outcome.items_in(made, "done"))}{Clones.still_pending(made)}')
            NewVm.create(ctx, new)
        if not ctx.dry_run:
            ctx.changed('%s %s created on node %s from %s of %s %s; it is stopped: check it, then start it', w, newid,
                        new.node, new.origin, w, vmid)
        STOP.check(f'{w} {newid} was created from {new.origin} of {w} {vmid} first')


class VmVerify:
    """vm verify: each snapshot of a VM proved restorable without restoring it, from metadata and
    qcow2 headers alone, never disk data: every copy its manifest names there with the size it
    records (a raw file's length, a qcow2 file's virtual size; a vmdk's is not checked), each qcow2
    copy's header read and its backing file inside the snapshot or a linked clone's base image that
    still exists, the manifest read and passing its check (Manifest.read). A snapshot without a
    manifest (the original's) is verified by its files alone, and says so. Read-only: no lock, no
    change. Its requests go REQUESTS_AT_ONCE at a time (Parallel.map): one listing of images/<vmid>
    per storage searched (with the sizes), one manifest read per snapshot, one header read per qcow2
    copy (two where its backing file's name lies beyond the first 4 KiB), one listing of each
    directory of a base image named."""

    @staticmethod
    def each(function, items):
        """[function(item) for item in items], REQUESTS_AT_ONCE at a time (Parallel.map): each result,
        or the Failure it raised, so that one unreadable file fails the snapshot it belongs to alone."""
        def attempt(item):
            try:
                return function(item)
            except Failure as exc:
                return exc
        return Parallel.map(attempt, list(items), Parallel.REQUESTS_AT_ONCE)

    @staticmethod
    def listing(ctx, storage, directory):
        """{name: size} of the files in a directory of the storage's volume ({} where there is none)."""
        return {record['name']: record.get('size') for record in ctx.volume(storage).list_dir(directory)}

    @staticmethod
    def listings(ctx, directories):
        """{(storage, directory): listing or Failure} of the (storage, directory) pairs, each listed once."""
        directories = sorted(set(directories))
        return dict(zip(directories, VmVerify.each(lambda item: VmVerify.listing(ctx, *item), directories)))

    @staticmethod
    def headers(ctx, files):
        """{(storage, path): (backing file, virtual size) or Failure} of the qcow2 files among the
        SnapshotFiles (or (storage, path, size) triples), one header read each (Volume.qcow2_header)."""
        items = sorted({(f.storage, f.path, f.size) if isinstance(f, SnapshotFile) else f for f in files
                        if (f.path if isinstance(f, SnapshotFile) else f[1]).endswith('.qcow2')})
        return {(storage, path): found for (storage, path, _), found in zip(items, VmVerify.each(
            lambda item: ctx.volume(item[0]).qcow2_header(item[1], item[2]), items))}

    @staticmethod
    def backing_directories(headers, wanted):
        """The (storage, directory) of each backing file the headers name ({(storage, path): (backing,
        virtual size) or Failure}) that is to be looked for: wanted(path, backing, its path in the volume)."""
        found = [(storage, path, header[0], Qcow2.backing_path(path.rpartition('/')[0], header[0]))
                 for (storage, path), header in headers.items() if isinstance(header, tuple) and header[0]]
        return {(storage, target.rpartition('/')[0]) for storage, path, backing, target in found
                if target and wanted(path, backing, target)}

    @staticmethod
    def copy_problems(where, path, listed, recorded, header):
        """(problems, notes) of one copy named `where`: `listed` its length (the listing's), `recorded`
        the size its manifest records (None: none), `header` (backing file, virtual size) or the
        Failure of reading it, for a qcow2 copy. A raw copy's size is its length, a qcow2 copy's its
        header's virtual size; a vmdk copy's is not checked."""
        recorded = recorded if isinstance(recorded, int) and not isinstance(recorded, bool) else None
        if path.endswith('.vmdk'):
            return [], [f'the size of {where} (vmdk) is not checked']
        if not path.endswith('.qcow2'):
            size, what = listed, ''
        elif isinstance(header, Failure):
            return [f'the header of {where} could not be read: {header}'], []
        elif header[1] is None:
            return [f'{where} has no qcow2 header'], []
        else:
            size, what = header[1], 'a virtual size of '
        if recorded is not None and size != recorded:
            return [f'{where} has {what}{size} bytes, not the {recorded} its manifest records'], []
        return [], []

    @staticmethod
    def backing_problem(where, path, backing, listings, storage, inside):
        """What is wrong with the backing file `backing` of the qcow2 copy at `path` (named `where`),
        or None: it must be a file of the snapshot (`inside(target)`) or, for a VM snapshot, a linked
        clone's base image (Qcow2.BASE_IMAGE) that is still there. `listings` hold the directories."""
        if backing is None:
            return None
        target = Qcow2.backing_path(path.rsplit('/', 1)[0], backing)
        directory, _, name = (target or '').rpartition('/')
        listing = listings.get((storage, directory), {}) if target else {}
        if target and inside(target):
            return None if isinstance(listing, dict) and name in listing else (
                f'{where} stands on {target}, which ' +
                (f'could not be looked for: {listing}' if isinstance(listing, Failure) else 'is gone'))
        if target and Qcow2.BASE_IMAGE.match(backing):
            if isinstance(listing, Failure):
                return f'{where} stands on the base image {target}, which could not be looked for: {listing}'
            return None if name in listing else f'{where} stands on the base image {target}, which is gone'
        gone = '' if not target or isinstance(listing, Failure) or name in listing else '; it is gone already'
        return f'{where} stands on {Qcow2.backing_risk(backing)}{gone}'

    @staticmethod
    def check(vmid, files, saved, listings, headers, volumes):
        """The verdict on one VM snapshot, its `files` (SnapshotFiles of one stamp) as listed: `saved` its
        manifest as read (a SavedConfig, a Failure, or None: there is none), `listings` and `headers`
        as read, `volumes` {storage of config.ini: Volume or the Failure of looking it up}."""
        stamp, directory = files[0].stamp, f'images/{vmid}'
        problems, notes = [], []
        copies = [file for file in files if file.is_clone]
        recorded = {}       # (storage, path): the size the manifest records
        if isinstance(saved, Failure):
            problems.append(str(saved))
        manifest = saved.manifest if isinstance(saved, VmRestore.SavedConfig) else None
        if manifest is None:
            notes.append('no manifest (made by the original, or before snapshots carried one): its files alone '
                         'are checked, not their sizes' if not isinstance(saved, Failure) else
                         'its files alone are checked, not their sizes')
        elif not saved.signed:
            notes.append('its manifest is unsigned, or no key here checks it: that it is unchanged is not proven')
        for entry in (manifest or {}).get('disks') or ():
            if not isinstance(entry, dict):
                continue
            storage, clone = entry.get('storage'), entry.get('clone')
            if 'clone' not in entry and isinstance(entry.get('volid'), str):   # an earlier build's: by the rule
                parsed = Guest.parse_volume(entry['volid'])
                clone = Names.snapshot_file_path(parsed[2], stamp, files[0].kind) if parsed and parsed[2] else None
            if not isinstance(clone, str):
                continue
            where = f'{clone} on {storage}'
            listing = listings.get((storage, directory))
            if clone.rpartition('/')[0] != directory:
                problems.append(f'its manifest names a copy outside {directory}/: {where}')
            elif storage not in volumes:
                problems.append(f'{where} is not checked: storage {storage} has no section in config.ini')
            elif isinstance(volumes[storage], Failure):
                problems.append(f'{where} is not checked: its storage could not be looked up')
            elif isinstance(listing, Failure):
                problems.append(f'{where} could not be looked for: {listing}')
            elif clone.rpartition('/')[2] not in (listing or {}):
                problems.append(f'{where} is missing')
            else:
                recorded[(storage, clone)] = entry.get('size')
        paths = {(file.storage, file.path) for file in files}
        for file in copies:
            where = f'{file.path} on {file.storage}'
            header = headers.get((file.storage, file.path))
            found, more = VmVerify.copy_problems(where, file.path, file.size, recorded.get((file.storage, file.path)),
                                                 header)
            problems += found
            notes += more
            if isinstance(header, tuple):
                backing = VmVerify.backing_problem(where, file.path, header[0], listings, file.storage,
                                                   lambda target, storage=file.storage: (storage, target) in paths)
                problems += [backing] if backing else []
        return {'kind': Names.SNAPSHOT_KINDS[files[0].kind], 'stamp': stamp, 'vmid': vmid, 'ok': not problems,
                'problems': problems, 'notes': notes, 'files': len(files)}

    @staticmethod
    def failed(vmid, problem):
        """The verdict where no snapshot of VM `vmid` could be looked at (`problem`)."""
        return {'kind': None, 'stamp': None, 'vmid': vmid, 'ok': False, 'problems': [str(problem)], 'notes': [],
                'files': 0}

    @staticmethod
    def configs(ctx, args):
        """[(vmid, config or Failure)] of the VMs to verify: -vm's, or with -all every VM with a disk on a
        storage of config.ini (VmCreate.vms_to_snapshot); one whose config cannot be read fails alone."""
        if not args.all:
            return [(args.vm, ctx.pve.config_of(ctx.pve.find_guest(args.vm, kind=args.kind)))]
        return VmCreate.vms_to_snapshot(ctx, None, ctx.pve.guests(), args.kind)

    @staticmethod
    def volumes(ctx):
        """{storage of config.ini: its Volume, or the Failure of looking it up}, looked up here, in the
        main thread, before any thread reads Context's caches."""
        volumes = {}
        for storage in sorted(ctx.config.storages):
            try:
                volumes[storage] = ctx.volume(storage)
            except Failure as exc:
                volumes[storage] = exc
        return volumes

    @staticmethod
    def verdicts(ctx, configs, stamp=None):
        """The verdict on each snapshot of the VMs ([(vmid, config or Failure)]), or on the one of
        `stamp`, in VM and stamp order; each searched for on every storage of config.ini."""
        volumes = VmVerify.volumes(ctx)
        ctx.manifest_key()      # read here, before the threads read it
        reachable = [storage for storage, volume in volumes.items() if not isinstance(volume, Failure)]
        for storage in sorted(set(volumes) - set(reachable)):
            log.warning('storage %s not searched for snapshots: %s', storage, volumes[storage])
        vmids = [vmid for vmid, config in configs if not isinstance(config, Failure)]
        listings = VmVerify.listings(ctx, [(storage, f'images/{vmid}') for vmid in vmids for storage in reachable])
        found = {}
        for vmid in vmids:
            files = [Names.snapshot_file(storage, directory, name, size)
                     for (storage, directory), listing in listings.items() if directory == f'images/{vmid}'
                     and isinstance(listing, dict) for name, size in listing.items()]
            sets = VmSnapshots.by_stamp([file for file in files if file])
            found[vmid] = {stamp: sets[stamp]} if stamp in sets else {} if stamp else sets
        records = [(vmid, next(file for file in files if file.is_record and file.ext != '.conf'))
                   for vmid, sets in found.items() for files in sets.values()
                   if any(file.is_record and file.ext != '.conf' for file in files)]
        saved = dict(zip(((vmid, record.stamp) for vmid, record in records), VmVerify.each(
            lambda item: VmRestore.read_saved(ctx, item[1].storage, item[1].path, item[0], item[1].stamp,
                                              item[1].size), records)))
        headers = VmVerify.headers(ctx, [file for sets in found.values() for files in sets.values() for file in files])
        listings.update(VmVerify.listings(ctx, VmVerify.backing_directories(
            headers, lambda path, backing, target: Qcow2.BASE_IMAGE.match(backing)) - set(listings)))
        verdicts = []
        for vmid, config in configs:
            if isinstance(config, Failure):
                verdicts.append(VmVerify.failed(vmid, config))
                continue
            verdicts += [VmVerify.failed(vmid, f'storage {storage} not searched: {volumes[storage]}')
                         for storage in sorted(Guest.storages(config) & set(volumes))
                         if isinstance(volumes[storage], Failure)]
            verdicts += [VmVerify.failed(vmid, f'images/{vmid} on {storage} could not be listed: {listing}')
                         for (storage, directory), listing in listings.items()
                         if directory == f'images/{vmid}' and isinstance(listing, Failure)]
            if stamp and stamp not in found[vmid]:
                verdicts.append(dict(VmVerify.failed(vmid, f'no snapshot {stamp} on any storage of config.ini'),
                                     stamp=stamp))
            for files in found[vmid].values():
                verdicts.append(VmVerify.check(vmid, files, saved.get((vmid, files[0].stamp)), listings, headers,
                                               volumes))
        return verdicts

    @staticmethod
    def label(verdict, kind=None):
        """`VM 100 <stamp>` (`CT 200 …` of `kind` CT; with ` (pre-restore)`), or `storage ONTAP01 <name>`:
        what a verdict is of."""
        if 'vmid' in verdict:
            return ' '.join(filter(None, (f'{(kind or Kind.VM).word} {verdict["vmid"]}', verdict['stamp'],
                                          '(pre-restore)' if verdict['kind'] == 'pre-restore' else None)))
        return ' '.join(filter(None, (f'storage {verdict["storage"]}', verdict['name'])))

    @staticmethod
    def report(ctx, verdicts, nothing, kind=None):
        """Print one line per verdict (`ok` or `FAIL`, what, and what is wrong or was not checked; with
        -output json the verdicts); a Failure naming what is wrong unless all hold. `nothing`: said at
        info level where there was nothing to verify."""
        def line(verdict):
            guests, files = verdict.get('guests'), verdict['files']
            held = ([] if guests is None else [f'{guests} guest{"s" * (guests != 1)}']) + (
                [f'{files} file{"s" * (files != 1)}'] if files or guests is not None else [])
            detail = (verdict['problems'] if not verdict['ok'] else [', '.join(held)] if held else []) + verdict['notes']
            return Output.printable(f'{"ok  " if verdict["ok"] else "FAIL"} {VmVerify.label(verdict, kind)}: '
                                    f'{"; ".join(detail)}')

        if not verdicts:
            log.info('%s', nothing)
        if verdicts or ctx.output == 'json':
            ctx.emit(verdicts, '\n'.join(line(verdict) for verdict in verdicts))
        failed = [verdict for verdict in verdicts if not verdict['ok']]
        if len(verdicts) == 1 and failed:
            raise Failure(f'{VmVerify.label(failed[0], kind)}: {"; ".join(failed[0]["problems"])}')
        if failed:
            raise Failure(f'verification failed for {len(failed)} of {len(verdicts)}: ' + '; '.join(
                f'{VmVerify.label(verdict, kind)} ({"; ".join(verdict["problems"])})' for verdict in failed))

    @staticmethod
    def command(ctx, args):
        kind = args.kind
        if args.all and args.snapshot:
            raise ConfigError(f'-snapshot names a snapshot of one {kind.word}: give it with {kind.option}, not with -all')
        verdicts = VmVerify.verdicts(ctx, VmVerify.configs(ctx, args), args.snapshot)
        VmVerify.report(ctx, verdicts, f'{kind.word} {args.vm} has no snapshot: nothing to verify' if not args.all else
                        f'no {kind.word} has a snapshot: nothing to verify', kind)


class StorageCreate:
    """storage create, and -keep: an ONTAP snapshot of the volume behind a storage, each guest's
    manifest written at its root just before, guests held still for it as asked."""

    @staticmethod
    def explain_busy(ctx, volume, snapshot, exc):
        """A delete refused because a FlexClone uses the snapshot: name the clone and its PVE storage."""
        clones = volume.flexclones().get(snapshot)
        return StorageCreate.snapshot_in_use(ctx, volume, snapshot, clones[0]) if clones else exc

    @staticmethod
    def snapshot_in_use(ctx, volume, snapshot, clone):
        """The refusal for a snapshot the FlexClone `clone` uses, naming the PVE storage that mounts it."""
        storages = ctx.storages_mounting(clone.junction)
        if storages:
            return Failure(f'snapshot {snapshot} of volume {volume.name} is in use by FlexClone {clone.name}, mounted '
                           f'as PVE storage {storages[0]}: unmount {storages[0]} first')
        return Failure(f'snapshot {snapshot} of volume {volume.name} is in use by FlexClone {clone.name} (no PVE '
                       'storage uses it): delete that volume first')

    @staticmethod
    def record(ctx, storage, name, guests, configs, raws, held):
        """(the record, {consistency: count}) of the storage snapshot `name`: the manifest (its config
        in it: the node's file where `raws` has it, else as the API gave it) of every guest with a
        disk, mount point or unused disk on `storage`, its consistency as planned (`held`: the
        HeldGuests of -freeze/-pause). A disk on another storage is named, its volume not looked up."""
        on_storage = [guests[vmid] for vmid, config in sorted(configs.items()) if storage in Guest.storages(config)]
        volumes = {other: (None, None, None) for other in ctx.config.storages}
        volumes[storage] = ctx.volume_identity(storage)
        how = {guest.view.vmid: guest.how for guest in held}
        version, key = tool_version(), ctx.manifest_key(create=True)
        manifests, found = [], []
        for guest in on_storage:
            vmid, config = guest['vmid'], configs[guest['vmid']]
            disks = Guest.disks(guest, config)
            consistency = Consistency.of_storage_snapshot(guest, disks, storage, how.get(vmid))
            found.append({'consistency': consistency})
            raw = raws.get(vmid)
            clones = {disk.key: f'.snapshot/{name}/{disk.path}' for disk in disks if disk.storage == storage and disk.path}
            manifests.append(Manifest.build(
                guest, disks, config, name, consistency, volumes,
                raw if raw is not None else Guest.config_text_of(guest, config).encode(),
                Node.config_path(guest) if raw is not None else 'api', version, clones, key))
        return Manifest.storage_record(storage, name, version, manifests), Consistency.counts(found)

    @staticmethod
    def save_record(ctx, storage, record, unread):
        """Write the record over the one at the volume's root (Names.STORAGE_RECORD): one request
        (a MB each). None, or a Failure saying it was not written; guests in `unread` (config not
        read) are named in a warning."""
        volume = ctx.volume(storage)
        for guest, exc in unread:
            log.warning('storage %s: %s is not recorded in its snapshot, if it has a disk there: %s', storage,
                        Guest.label(guest), exc)
        path = Names.STORAGE_RECORD
        try:
            try:
                volume.write_file(path, record, over=True)
            except OutcomeUnknown as exc:
                volume.ontap.settle(exc, f'POST {volume.files_url(path)}', lambda: volume.holds(path, record))
        except Failure as exc:
            return Failure(f'no guest was recorded in {path} on {storage}: {exc}')
        return None

    @staticmethod
    def guest_manifests(ctx, storage, name):
        """(path, [manifest]) of the guests the storage snapshot `name` recorded (each manifest to
        be checked: Manifest.check), or None where it holds no record (made by the original, or by
        an earlier build of this tool: see StorageCreate.old_manifests)."""
        volume = ctx.volume(storage)
        path = f'.snapshot/{name}/{Names.STORAGE_RECORD}'
        size = volume.file_size(path)
        if size is None:
            return None
        return path, Manifest.read_storage_record(volume.read_whole(path, size), f'{path} on {storage}')

    @staticmethod
    def take(volume, name, comment, label):
        """storage create's snapshot; one whose answer was lost is read back: is it there?"""
        try:
            volume.create_snapshot(name, comment, label)
        except OutcomeUnknown as exc:
            volume.ontap.settle(
                exc, f'POST /api/storage/volumes/{volume.uuid}/snapshots', lambda: volume.has_snapshot(name))

    @staticmethod
    def prune(ctx, volume, storage, keep, made, label=None):
        """-keep N: delete the oldest proxmox_snapshot_* with this snapmirror label (or none)
        beyond the newest N: `-label daily -keep 7` and `-label weekly -keep 4` live side by side.
        One a FlexClone uses is skipped, and so is one ONTAP refuses as busy for any other reason
        (a file clone from it running: Ontap.SNAPSHOT_LOCKED), with a warning naming what holds it; a
        later run deletes it. A held one (storage hold) is neither counted nor deleted, and named at
        info. `made` is the new snapshot's name, counted even where a dry run did not make it."""
        snapshots = [s for s in volume.snapshots() if s.get('snapmirror_label') == label]
        held = [s['name'] for s in snapshots if Names.is_held(s.get('comment'))]
        if held:
            log.info('storage %s: -keep %d neither counts nor deletes the held snapshot(s) %s (storage release lets '
                     'one go)', storage, keep, ', '.join(held))
        snapshots = [s for s in snapshots if s['name'] not in held]
        if made not in [s['name'] for s in snapshots]:
            snapshots.append({'name': made})
        old = [s for s in VmSnapshots.expired(snapshots, keep) if s['name'] != made]
        clones = volume.flexclones() if old else {}
        for snapshot in old:
            if snapshot['name'] in clones:
                log.warning('storage %s: keeping snapshot %s beyond -keep %d: FlexClone %s uses it', storage,
                            snapshot['name'], keep, ', '.join(c.name for c in clones[snapshot['name']]))
        doomed = [snapshot for snapshot in old if snapshot['name'] not in clones]
        outcomes = Parallel.run(lambda snapshot: volume.delete_snapshot(snapshot), doomed,
                                at_once=not volume.ontap.dry_run)
        for outcome in outcomes:
            if outcome.state == 'done':
                ctx.changed('storage %s: snapshot %s deleted (-keep %d)', storage, outcome.item['name'], keep)
            elif outcome.state == 'failed' and str(getattr(outcome.error, 'code', None)) == Ontap.SNAPSHOT_LOCKED:
                owners = ', '.join(outcome.item.get('owners') or ()) or 'no owner named: a file clone from it may run'
                log.warning('storage %s: keeping snapshot %s beyond -keep %d: ONTAP keeps it busy (%s); a later run '
                            'deletes it', storage, outcome.item['name'], keep, owners)
        errors = [outcome.error for outcome in outcomes
                  if outcome.error and str(getattr(outcome.error, 'code', None)) != Ontap.SNAPSHOT_LOCKED]
        if errors:
            raise Failure.joined(*errors)

    @staticmethod
    def command(ctx, args):
        label = args.label or ctx.config.ontap_for(args.storage).snapmirror_label
        with Locks.for_storages(ctx, [args.storage]) as locks:
            volume = ctx.volume(args.storage)
            if args.min_age is not None:
                snapshots, seconds = volume.snapshots(), Arg.parse_duration(args.min_age)
                # A held snapshot (storage hold) is not counted: named where it would have been.
                held = [s['name'] for s in snapshots if Names.is_held(s.get('comment'))
                        and s.get('snapmirror_label') == label and Volume.younger_than(s, seconds)]
                if held:
                    log.info('storage %s: -min-age %s does not count the held snapshot(s) %s', args.storage,
                             args.min_age, ', '.join(held))
                recent = Volume.newest_snapshot([s for s in snapshots if not Names.is_held(s.get('comment'))], label)
                if recent and Volume.younger_than(recent, seconds):
                    log.info('storage %s: snapshot %s%s is younger than -min-age %s: none taken', args.storage,
                             recent['name'], f' (label {label})' if label else '', args.min_age)
                    return
            name = Names.storage_snapshot_name(VolumeLock.new_stamp(locks, ['storage']))
            guests = ctx.pve.guests()
            Guests.settle_left(ctx, locks, guests)
            configs, raws, others = Node.guest_configs(guests)
            read, unread = ctx.pve.guest_configs(others)
            configs.update(read)
            held, crash = (GuestsWindow.to_hold(ctx, args.storage, args.pause, guests, configs) if args.freeze or args.pause
                           else ([], []))
            # The record says what each guest is planned to be in the snapshot; one that ends up
            # otherwise (a hold that failed or came too late) is named in a warning after it.
            record, counts = StorageCreate.record(ctx, args.storage, name, guests, configs, raws, held)
            unrecorded = StorageCreate.save_record(ctx, args.storage, record, unread)
            with GuestsWindow(ctx, held, args.storage) as window:
                window.run(StorageCreate.take, volume, name, Names.storage_snapshot_comment(args.storage, counts), label)
            ctx.changed('storage %s: snapshot %s of volume %s created%s', args.storage, name, volume.name,
                     f' (label {label})' if label else '')
            GuestsWindow.report(args.storage, name, held, crash + window.crash, window.late)
            made = f'storage {args.storage}: snapshot {name} was made'
            STOP.check(made)
            if args.keep is not None:
                StorageCreate.prune(ctx, volume, args.storage, args.keep, name, label)
        problems = [*window.problems, unrecorded] if unrecorded else window.problems
        if problems:
            raise Failure(f'{made}, but {Failure.joined(*problems)}')

    @staticmethod
    def old_manifests(ctx, storage, name):
        """[(path, vmid, type)] of the guest manifests in the record directory of a storage snapshot
        made by an earlier build of this tool (Names.STORAGE_RECORD_DIR: one file per guest), or
        None where it has none. NetApp documents file clones from `.snapshot/<name>/…`
        (netapp_ontap file_clone.py), but not the files API's listing below `.snapshot/`
        (reference §13: unconfirmed)."""
        directory = Names.storage_record_dir(name)
        names = ctx.volume(storage).files_in(directory)
        if names is None:
            return None
        found = [Names.STORAGE_MANIFEST_FILE.match(file) for file in names]
        return sorted((f'{directory}/{m[0]}', int(m['vmid']), Guest.GUEST_TYPES[m['prefix']])
                      for m in found if m and m['consistency'])


class StorageView:
    """storage list, show and delete."""

    SIZE_FIELDS = {'size', 'space.size', 'space.used', 'space.available', 'space.snapshot.used'}

    @staticmethod
    def list(ctx, args):
        volume = ctx.volume(args.storage)
        snapshots = []
        for found in volume.snapshots():
            counts = Names.guest_counts(found.get('comment'))
            snapshots.append({'name': found['name'], 'create_time': found.get('create_time'), 'size': found.get('size'),
                              'label': found.get('snapmirror_label'), 'comment': found.get('comment', ''),
                              'guests': None if counts is None else sum(counts.values()), 'consistency': counts,
                              'held': Names.is_held(found.get('comment'))})
        # HELD after the columns there were, so that scripts reading those keep working.
        rows = [dict(s, size=Output.human_size(s['size']), label=s['label'] or '-',
                     count='-' if s['guests'] is None else s['guests'],
                     consistency='unknown' if s['consistency'] is None else Consistency.summary(s['consistency']),
                     held='yes' if s['held'] else 'no')
                for s in snapshots]
        ctx.emit(snapshots, Output.format_table([('NAME', 'name'), ('CREATED', 'create_time'), ('SIZE', 'size'),
                                                 ('LABEL', 'label'), ('GUESTS', 'count'), ('CONSISTENCY', 'consistency'),
                                                 ('COMMENT', 'comment'), ('HELD', 'held')], rows))

    @staticmethod
    def show(ctx, args):
        if args.snapshot:
            return StorageView.show_snapshot(ctx, args.storage, args.snapshot)
        volume = ctx.volume(args.storage)
        details = volume.details()
        flat = Output.flatten(details)
        width = max(map(len, flat))
        ctx.emit(details, '\n'.join(Output.printable(f'{key.ljust(width)}  {Output.human_size(value) if key in StorageView.SIZE_FIELDS else value}')
                                    for key, value in sorted(flat.items()) if value not in ('', None, [])))

    @staticmethod
    def snapshot_guests(ctx, storage, name):
        """[{'vmid', 'type', 'name', 'node', 'consistency', 'disks', 'signed'}] of the guests a storage
        snapshot recorded, by vmid, or None where it recorded none (made by the original); a
        manifest that fails its check is named in a warning and left out."""
        key, rows = ctx.manifest_key(), []
        found = StorageCreate.guest_manifests(ctx, storage, name)
        if found is not None:
            path, manifests = found
            where = f'{path} on {storage}'
            checks = [functools.partial(Manifest.check, manifest, where, manifest.get('vmid')
                                        if isinstance(manifest, dict) else None, name, key) for manifest in manifests]
        else:
            old = StorageCreate.old_manifests(ctx, storage, name)
            if old is None:
                return None
            volume = ctx.volume(storage)
            # An earlier build's file per guest, named by its guest: read as vm list reads a manifest.
            checks = [lambda file=file, vmid=vmid: Manifest.read(volume.read_whole(file, volume.file_size(file) or 0),
                                                                 f'{file} on {storage}', vmid, name, key)
                      for file, vmid, _ in old]
        for check in checks:
            try:
                manifest, signed = check()
            except ManifestError as exc:
                log.warning('storage %s: %s', storage, exc)
                continue
            vmid = manifest['vmid']
            rows.append({'vmid': vmid, 'type': Manifest.guest_type(manifest), 'name': manifest.get('name'), 'node': manifest.get('node'),
                         'consistency': manifest.get('consistency'), 'signed': signed,
                         'disks': [d['key'] for d in manifest.get('disks') or () if d.get('storage') == storage]})
        return sorted(rows, key=lambda row: (row['vmid'], row['type']))

    @staticmethod
    def show_snapshot(ctx, storage, name):
        """storage show -snapshot NAME: the snapshot, and each guest it recorded."""
        snapshot = ctx.volume(storage).snapshot(name)
        guests = StorageView.snapshot_guests(ctx, storage, name)
        details = {'name': snapshot['name'], 'create_time': snapshot.get('create_time'), 'size': snapshot.get('size'),
                   'label': snapshot.get('snapmirror_label'), 'comment': snapshot.get('comment', ''),
                   'guests': guests}
        lines = [f'{key.ljust(11)}  {Output.human_size(value) if key == "size" else value}'
                 for key, value in details.items() if key != 'guests' and value not in ('', None)]
        if guests is None:
            lines.append('guests       not recorded (a snapshot made by the original tool)')
        elif not guests:
            lines.append('guests       none')
        else:
            rows = [dict(g, label=Guest.label(g), name=g['name'] or '-', disks=', '.join(g['disks']) or '-',
                         signed='yes' if g['signed'] else 'no') for g in guests]
            table = Output.format_table([('GUEST', 'label'), ('NAME', 'name'), ('NODE', 'node'),
                                         ('CONSISTENCY', 'consistency'), ('DISKS', 'disks'), ('SIGNED', 'signed')], rows)
        lines = [Output.printable(line) for line in lines]
        ctx.emit(details, '\n'.join(lines + (['', table] if guests else [])))

    @staticmethod
    def delete(ctx, args):
        with Locks.for_storages(ctx, [args.storage]):
            volume = ctx.volume(args.storage)
            # A hold is in the snapshot's comment: the snapshot is looked up for it, and then deleted by
            # its uuid. -force deletes it held or not, by name, unread (Volume.delete_snapshot_named).
            snapshot = None if args.force else volume.snapshot(args.snapshot)
            if snapshot and Names.is_held(snapshot.get('comment')):
                raise Failure(f'storage {args.storage}: snapshot {args.snapshot} is held (its comment ends '
                              f'"{Names.HELD_SUFFIX}"): release it first (storage release -storage {args.storage} '
                              f'-snapshot {args.snapshot}), or add -force to delete it held')
            if ctx.dry_run:
                # Only ONTAP refuses a snapshot a FlexClone uses, and a dry run does not ask it: ask for the clones.
                snapshot = snapshot or volume.snapshot(args.snapshot)
                clones = volume.flexclones().get(args.snapshot)
                if clones:
                    raise StorageCreate.snapshot_in_use(ctx, volume, args.snapshot, clones[0])
            try:
                if snapshot:
                    volume.delete_snapshot(snapshot)
                else:
                    volume.delete_snapshot_named(args.snapshot)
            except OntapError as exc:
                if str(exc.code) != Ontap.SNAPSHOT_LOCKED:
                    raise
                raise StorageCreate.explain_busy(ctx, volume, args.snapshot, exc) from exc
        ctx.changed('storage %s: snapshot %s deleted', args.storage, args.snapshot)


class StorageHold:
    """storage hold and storage release, as zfs hold: a storage snapshot held by Names.HELD_SUFFIX at the
    end of its ONTAP comment (the original's comment, or storage create's with its guests). storage
    create's -keep and -min-age pass a held snapshot over, and storage delete refuses one without
    -force. The mark is kept with the snapshot: the listing storage list makes returns the comment
    (no request more), and the comment goes with the snapshot, into a SnapMirror copy too."""

    @staticmethod
    def change(ctx, args, held):
        """Hold (`held`) or release the snapshot -snapshot of -storage, under the volume's lock: its
        comment replaced, a change whose answer was lost read back (Volume.comment_snapshot)."""
        done = 'held' if held else 'released'
        with Locks.for_storages(ctx, [args.storage]):
            volume = ctx.volume(args.storage)
            snapshot = volume.snapshot(args.snapshot)
            comment = snapshot.get('comment') or ''
            if Names.is_held(comment) == held:
                log.info('storage %s: snapshot %s is %s: nothing changed', args.storage, args.snapshot,
                         'held already' if held else 'not held')
                return
            new = Names.held_comment(comment, held)
            if len(new) > Names.COMMENT_MAX:
                raise Failure(f'storage {args.storage}: snapshot {args.snapshot} cannot be held: its comment would be '
                              f'longer than the {Names.COMMENT_MAX} characters ONTAP keeps; shorten it on ONTAP (volume '
                              'snapshot modify -comment) and hold it again')
            Outcome.said(f'storage {args.storage}', f'snapshot {args.snapshot}', done,
                         lambda: volume.comment_snapshot(snapshot, new), 'storage list')
        ctx.changed('storage %s: snapshot %s %s%s', args.storage, args.snapshot, done,
                 ': -keep and -min-age pass it over, storage delete refuses it without -force' if held else '')

    @staticmethod
    def hold(ctx, args):
        StorageHold.change(ctx, args, True)

    @staticmethod
    def release(ctx, args):
        StorageHold.change(ctx, args, False)


class StorageRestore:
    """storage restore: the whole volume reverted to a snapshot, once nothing on it is running."""

    @staticmethod
    def blockers(guests, unknown):
        """What keeps a storage from being reverted under its guests (/cluster/resources entries,
        whose `lock` is the guest config's lock: pve-manager PVE/API2/Cluster.pm, `resources`),
        each with what to do; [] if nothing does. A hibernated guest (`lock: suspended`) would
        resume with memory that belongs to the current disks; any other lock is a backup,
        migration, clone, snapshot, rollback, ... at work on it. `unknown`: (guest, Failure) of
        the guests whose config could not be read."""
        running = [Guest.label(g) for g in guests if g.get('status') == 'running' and not g.get('lock')]
        hibernated = [Guest.label(g) for g in guests if g.get('lock') == 'suspended']
        locked = [f'{Guest.label(g)} locked ({g["lock"]})' for g in guests
                  if g.get('lock') not in (None, '', 'suspended')]
        phrases = []
        if running:
            phrases.append(f'{", ".join(running)} running on it, shut down first')
        if hibernated:
            phrases.append(f'{", ".join(hibernated)} hibernated on it, resume and shut down first')
        if locked:
            phrases.append(f'{", ".join(locked)}, try again when that is done')
        if unknown:
            phrases.append(f'{", ".join(Guest.label(g) for g, _ in unknown)} not checked (node unreachable)')
        return phrases

    @staticmethod
    def plan(volume, storage, snapshot, guests, unknown, newer):
        """What a storage restore does, as a record (-output json) — gathered before it asks."""
        return {'storage': storage, 'cluster': volume.ontap.host, 'svm': volume.svm, 'volume': volume.name, 'snapshot': snapshot,
                'guests': [{key: guest.get(key) for key in ('vmid', 'type', 'name', 'node', 'status', 'lock')}
                           for guest in guests],
                'unchecked': [{'vmid': guest['vmid'], 'type': guest.get('type'), 'node': guest.get('node'),
                               'error': str(exc)} for guest, exc in unknown],
                'newer': newer}

    @staticmethod
    def show_plan(ctx, plan, asking):
        """The plan: with -output json one object on stdout; else lines on stderr, stdout being for
        results. At -loglevel warn they are left out (a cron mail holds only what matters) unless a
        question follows, or in a dry run, whose raised level hides only untrue log lines."""
        if ctx.output == 'json':
            print(json.dumps(plan, indent=2, sort_keys=True))
            return
        if not (asking or ctx.dry_run or log.isEnabledFor(logging.INFO)):
            return
        guests = [' '.join(filter(None, (Guest.label(g), g['name'], f'({Guest.state(g)})'))) for g in plan['guests']]
        lines = [(f'storage restore reverts volume {plan["volume"]} (ONTAP {plan["cluster"]}) behind storage '
                  f'{plan["storage"]} to snapshot {plan["snapshot"]}; every change since is lost.'),
                 'Guests with disks on it: ' + (', '.join(guests) or 'none')]
        lines += [f'Unknown whether {Guest.label(g)} on node {g["node"]} uses it: {g["error"]}' for g in plan['unchecked']]
        lines.append('Snapshots newer than it, which ONTAP deletes: ' + (', '.join(plan['newer']) or 'none'))
        print('\n'.join(Output.printable(line) for line in lines), file=sys.stderr, flush=True)

    @staticmethod
    def command(ctx, args):
        with Locks.for_storages(ctx, [args.storage]):
            volume = ctx.volume(args.storage)
            volume.snapshot(args.snapshot)
            snapshots = [s['name'] for s in volume.snapshots('*')]
            newer = snapshots[snapshots.index(args.snapshot) + 1:]
            clones = volume.flexclones() if newer else {}
            if not args.force:
                ctx.pve.check_sees_every_guest('restore')
            guests, unknown = ctx.pve.guests_on_storage(args.storage, ctx.pve.guests())
            StorageRestore.show_plan(ctx, StorageRestore.plan(volume, args.storage, args.snapshot, guests, unknown, newer),
                                     asking=not args.yes and sys.stdin.isatty())
            # ONTAP must delete the newer snapshots, and refuses while a FlexClone uses one (the
            # emulator's choice; unconfirmed on ONTAP, reference §7): so refused before, dry run or not.
            busy = [name for name in newer if name in clones]
            if busy:
                raise Failure(f'storage {args.storage}: reverting to {args.snapshot} deletes the newer {busy[0]}, but '
                              f'{StorageCreate.snapshot_in_use(ctx, volume, busy[0], clones[busy[0]][0])}')
            blockers = StorageRestore.blockers(guests, unknown)
            if blockers and not args.force:
                raise Failure(f'storage {args.storage}: {"; ".join(blockers)} (or -force to revert anyway)')
            ctx.confirm(f'Revert storage {args.storage} to {args.snapshot}', args.yes)
            now = ctx.pve.guests()     # once more: a guest may have been started or locked during the question
            meanwhile = StorageRestore.blockers([now.get(guest['vmid'], guest) for guest in guests], [])
            if meanwhile and not args.force:
                raise Failure(f'storage {args.storage}: meanwhile {"; ".join(meanwhile)}; nothing reverted')
            # A stop now would leave unknown whether ONTAP reverted: wait for its answer, then stop saying so.
            with STOP.deferred():
                volume.restore(args.snapshot)
        ctx.changed('storage %s: volume %s restored to %s', args.storage, volume.name, args.snapshot)
        STOP.check(f'storage {args.storage}: volume {volume.name} reverted to snapshot {args.snapshot} first')


class StorageVerify:
    """storage verify: each storage snapshot proved restorable without restoring it, from metadata and
    qcow2 headers alone: it exists; its record can be read (or an earlier build's one file per
    guest) and each guest's manifest passes its check (Manifest.check); each disk a manifest records
    on the storage is in the snapshot (its `clone`, .snapshot/<name>/…) with the size recorded (a
    qcow2 disk's virtual size; a vmdk's is not checked), any backing file of a qcow2 disk in it
    too. A snapshot without a record (the original's) is proven to exist, no more, and says so.
    Read-only. Requests, REQUESTS_AT_ONCE at a time (Parallel.map): per storage its volume and its
    snapshots; per snapshot its record (its size, then its data, a request per MB; an earlier
    build's: a listing, then a read per guest), one listing per directory of a recorded guest's disks
    in the snapshot, one header read per qcow2 disk."""

    @staticmethod
    def snapshots(ctx, storage, name):
        """The snapshot records of the storage's volume to verify: `name`'s (none if there is no such
        snapshot), else every proxmox_snapshot_*, oldest first."""
        volume = ctx.volume(storage)
        if name:
            return [found] if (found := volume.find_snapshot(name)) else []
        return volume.snapshots()

    @staticmethod
    def guests(ctx, snapshots, records):
        """[[(where, (manifest, signed) or ManifestError)] or None] of each (storage, snapshot record)
        by its record as read (`records`: StorageCreate.guest_manifests' answer, None where there is no
        record: then an earlier build's files are looked for, one listing, one read each)."""
        key = ctx.manifest_key()
        earlier = [(storage, Names.storage_record_dir(snapshot['name']))
                   for (storage, snapshot), record in zip(snapshots, records) if record is None]
        listings = VmVerify.listings(ctx, earlier)
        files = [(storage, f'{directory}/{name}', size, int(found['vmid']))
                 for (storage, directory), listing in listings.items() if isinstance(listing, dict)
                 for name, size in sorted(listing.items())
                 if (found := Names.STORAGE_MANIFEST_FILE.match(name)) and found['consistency']]
        read = dict(zip(files, VmVerify.each(lambda item: ctx.volume(item[0]).read_file(item[1], item[2]), files)))

        def checked(where, vmid, name, data=None, manifest=None):
            try:
                if data is not None:
                    return where, Manifest.read(data, where, vmid, name, key)
                return where, Manifest.check(manifest, where, vmid, name, key)
            except ManifestError as exc:
                return where, exc

        found = []
        for (storage, snapshot), record in zip(snapshots, records):
            name, directory = snapshot['name'], Names.storage_record_dir(snapshot['name'])
            if isinstance(record, Failure):
                found.append(record)
            elif record is not None:
                path, manifests = record
                found.append([checked(f'{path} on {storage}', manifest.get('vmid') if isinstance(manifest, dict)
                                      else None, name, manifest=manifest) for manifest in manifests])
            elif isinstance(listings[(storage, directory)], Failure):
                found.append(listings[(storage, directory)])
            else:
                guests = []
                for item in files:
                    there, path, _, vmid = item
                    if there == storage and path.startswith(directory + '/'):
                        where = f'{path} on {storage}'
                        guests.append((where, read[item]) if isinstance(read[item], Failure) else
                                      checked(where, vmid, name, data=read[item]))
                found.append(guests or None)
        return found

    @staticmethod
    def disks(storage, name, guests):
        """(guest label, disk entry) of each disk the manifests that passed their check record on
        `storage` with a copy (`clone`) in the snapshot `name`."""
        return [(Guest.label({'vmid': manifest.get('vmid'), 'type': Manifest.guest_type(manifest)}), entry)
                for _, found in guests or () if isinstance(found, tuple) for manifest in [found[0]]
                for entry in manifest.get('disks') or ()
                if isinstance(entry, dict) and entry.get('storage') == storage and isinstance(entry.get('clone'), str)]

    @staticmethod
    def check(storage, snapshot, record, guests, listings, headers):
        """The verdict on one storage snapshot (a record of the volume's snapshots): `record` as
        StorageCreate.guest_manifests read it (or the Failure), `guests` as StorageVerify.guests made
        them, `listings` and `headers` as read."""
        name = snapshot['name']
        inside = f'.snapshot/{name}/'
        problems, notes, files = [], [], 0
        counts = Names.guest_counts(snapshot.get('comment'))
        said = None if counts is None else sum(counts.values())
        if isinstance(guests, Failure):
            problems.append(str(guests))
        elif guests is None:
            if said is None:
                notes.append('no record (made by the original, or not by this tool): only that the snapshot exists '
                             'is proven')
            else:
                problems.append(f'its comment says it holds {said} guest(s), but it holds no record of them')
        else:
            files += 1 if record is not None else len(guests)
            if said is not None and said != len(guests):
                problems.append(f'its comment says it holds {said} guest(s), its record {len(guests)}')
            problems += [str(found) for _, found in guests if isinstance(found, Failure)]
            unsigned = [Guest.label({'vmid': found[0].get('vmid'), 'type': Manifest.guest_type(found[0])})
                        for _, found in guests if isinstance(found, tuple) and not found[1]]
            if unsigned:
                many = len(unsigned) > 1
                notes.append(f'the manifest{"s" * many} of {", ".join(unsigned)} {"are" if many else "is"} unsigned, or '
                             f'no key here checks {"them" if many else "it"}: that {"they are" if many else "it is"} '
                             'unchanged is not proven')
        for label, entry in StorageVerify.disks(storage, name, None if isinstance(guests, Failure) else guests):
            clone = entry['clone']
            directory, _, file = clone.rpartition('/')
            listing = listings.get((storage, directory))
            where = f'{label}: {clone}'
            if not clone.startswith(inside):
                problems.append(f'{label}: its manifest names a copy outside the snapshot: {clone}')
            elif isinstance(listing, Failure):
                problems.append(f'{where} could not be looked for: {listing}')
            elif file not in (listing or {}):
                problems.append(f'{where} is missing')
            else:
                files += 1
                header = headers.get((storage, clone))
                found, more = VmVerify.copy_problems(where, clone, listing[file], entry.get('size'), header)
                problems += found
                notes += more
                if isinstance(header, tuple):
                    backing = VmVerify.backing_problem(where, clone, header[0], listings, storage,
                                                       lambda target: target.startswith(inside))
                    problems += [backing] if backing else []
        return {'kind': 'storage snapshot', 'name': name, 'storage': storage, 'ok': not problems,
                'problems': problems, 'notes': notes, 'files': files,
                'guests': None if guests is None or isinstance(guests, Failure) else len(guests)}

    @staticmethod
    def failed(storage, problem, name=None):
        """The verdict where no snapshot (or not the one named) of `storage` could be looked at."""
        return {'kind': None, 'name': name, 'storage': storage, 'ok': False, 'problems': [str(problem)], 'notes': [],
                'files': 0, 'guests': None}

    @staticmethod
    def verdicts(ctx, storages, name=None, each_alone=False):
        """The verdict on each snapshot of the storages (or on the one called `name`), in storage and
        time order. A storage whose volume cannot be looked up fails with `each_alone` (-all), else
        its Failure is raised."""
        verdicts, reachable = [], []
        for storage in storages:
            try:
                ctx.volume(storage)     # in the main thread, before any thread reads Context's caches
            except Failure as exc:
                if not each_alone:
                    raise
                verdicts.append(StorageVerify.failed(storage, exc))
                continue
            reachable.append(storage)
        ctx.manifest_key()
        listed = dict(zip(reachable, VmVerify.each(lambda storage: StorageVerify.snapshots(ctx, storage, name),
                                                    reachable)))
        snapshots = [(storage, snapshot) for storage in reachable if not isinstance(listed[storage], Failure)
                     for snapshot in listed[storage]]
        records = VmVerify.each(lambda item: StorageCreate.guest_manifests(ctx, item[0], item[1]['name']), snapshots)
        guests = StorageVerify.guests(ctx, snapshots, records)
        disks = [(storage, entry['clone']) for (storage, snapshot), found in zip(snapshots, guests)
                 if not isinstance(found, Failure)
                 for _, entry in StorageVerify.disks(storage, snapshot['name'], found)
                 if entry['clone'].startswith(f'.snapshot/{snapshot["name"]}/')]
        listings = VmVerify.listings(ctx, [(storage, clone.rpartition('/')[0]) for storage, clone in disks])
        headers = VmVerify.headers(ctx, [(storage, clone, listings[(storage, directory)][file])
                                         for storage, clone in disks for directory, _, file in [clone.rpartition('/')]
                                         if isinstance(listings[(storage, directory)], dict)
                                         and file in listings[(storage, directory)]])
        # a qcow2 disk's backing file is looked for in the same snapshot, `.snapshot/<name>/…`
        listings.update(VmVerify.listings(ctx, VmVerify.backing_directories(
            headers, lambda path, backing, target: target.split('/')[:2] == path.split('/')[:2]) - set(listings)))
        for storage in reachable:
            if isinstance(listed[storage], Failure):
                verdicts.append(StorageVerify.failed(storage, listed[storage]))
            elif name and not listed[storage]:
                verdicts.append(StorageVerify.failed(storage, f'volume {ctx.volume(storage).name} has no snapshot {name}',
                                                     name))
        verdicts += [StorageVerify.check(storage, snapshot, record, found, listings, headers)
                     for (storage, snapshot), record, found in zip(snapshots, records, guests)]
        order = {storage: n for n, storage in enumerate(storages)}
        return sorted(verdicts, key=lambda verdict: order[verdict['storage']])

    @staticmethod
    def command(ctx, args):
        if args.all and args.snapshot:
            raise ConfigError('-snapshot names a snapshot of one storage: give it with -storage, not with -all')
        storages = sorted(ctx.config.storages) if args.all else [args.storage]
        verdicts = StorageVerify.verdicts(ctx, storages, args.snapshot, each_alone=args.all)
        VmVerify.report(ctx, verdicts, f'storage {args.storage} has no snapshot of this tool: nothing to verify'
                        if not args.all else 'no storage has a snapshot of this tool: nothing to verify')


class StorageMount:
    """storage mount and unmount: a FlexClone of a snapshot added to PVE as an NFS storage, and
    removed again."""

    @staticmethod
    def made_by_mount(entry, storage):
        """Whether a storage.cfg entry is what `storage mount` makes under the id `storage`: NFS,
        its export the junction of a FlexClone named for that id (`/<volume>_clone_<id>`, or for
        an `X-CLONE` also the original's `/<volume>_clone`)."""
        if entry.get('type') != 'nfs':
            return False
        junction = Ontap.junction_path(entry.get('export', ''))
        endings = [Names.flexclone_name('', storage)]
        if storage.endswith(Names.CLONE_STORAGE_SUFFIX):
            endings.append(Names.FLEXCLONE_SUFFIX)
        return any(junction.endswith(ending) and len(junction) > len(ending) + 1 for ending in endings)

    @staticmethod
    def check_mount_id(config, parent, storage):
        """Refuse, before any lookup, a mount id to which config.ini gives another meaning: a
        section (the mount would be taken for a storage of its own), or `X-CLONE` of another
        section X (taken for X's mount, and served by [X])."""
        if storage in config.storages:
            raise ConfigError(f'storage id {storage}: {config.path} has a section [{storage}], so a mount of that id would '
                              'be taken for a storage of its own: choose another id with -name')
        other = storage.removesuffix(Names.CLONE_STORAGE_SUFFIX)
        if other not in (storage, parent) and other in config.storages:
            raise ConfigError(f'storage id {storage}: that is the mount id of storage {other} (section [{other}] of '
                              f'{config.path}), not of {parent}: choose another id with -name')

    @staticmethod
    def taken_id_failure(ctx, storage, entry):
        """The refusal for a mount id PVE has already, in words that fit what that storage is."""
        if StorageMount.made_by_mount(entry, storage):
            return Failure(f'Proxmox {ctx.pve.host}: storage {storage} already exists, mounted earlier: unmount it '
                           f'(storage unmount -storage {storage}), or choose another id with -name')
        what = f'type {entry.get("type")}' + (f', export {entry["export"]}' if entry.get('export') else '')
        return Failure(f'Proxmox {ctx.pve.host}: storage {storage} already exists and is no mount ({what}): choose '
                       'another id with -name')

    @staticmethod
    def mount(ctx, args):
        storage = args.name or Names.clone_storage_id(args.storage)
        StorageMount.check_mount_id(ctx.config, args.storage, storage)
        with Locks.for_storages(ctx, [args.storage]):
            volume, entry = ctx.volume(args.storage), ctx.nfs_storage(args.storage)
            volume.snapshot(args.snapshot)
            clone = Names.flexclone_name(volume.name, None if args.name is None else storage)
            if storage in ctx.storages():
                raise StorageMount.taken_id_failure(ctx, storage, ctx.storages()[storage])
            if volume.ontap.volume_by_name(clone, volume.svm):
                raise Failure(f'ONTAP {volume.ontap.host}: volume {clone} already exists in SVM {volume.svm}: choose another '
                              'storage id with -name')
            node = ctx.pve.local_node()
            junction = '/' + clone
            options = {key: entry[key] for key in ('content', 'options') if entry.get(key)}
            if node:
                options['nodes'] = node
            with STOP.deferred():   # a FlexClone without its storage is what a stop here would leave
                try:
                    volume.create_flexclone(args.snapshot, clone, junction)
                except OutcomeUnknown as exc:
                    volume.ontap.settle(exc, 'POST /api/storage/volumes',
                                        lambda: volume.ontap.volume_by_name(clone, volume.svm) is not None)
                log.info('ONTAP %s: FlexClone %s of %s created, mounted at %s', volume.ontap.host, clone, args.snapshot,
                         junction)
                try:
                    ctx.pve.add_nfs_storage(storage, entry['server'], junction, options)
                except Failure:
                    log.warning('ONTAP %s: removing FlexClone %s again', volume.ontap.host, clone)
                    volume.ontap.volume_by_name(clone, volume.svm).delete()
                    raise
        ctx.changed('storage %s: snapshot %s mounted as storage %s%s', args.storage, args.snapshot, storage,
                    f' on node {node}' if node else '')
        STOP.check(f'snapshot {args.snapshot} mounted as storage {storage} first')

    @staticmethod
    def parent_candidates(ctx, storage, entry=None):
        """The configured PVE NFS storages a mount named `storage` may belong to: first the one its
        name points to (X for `X-CLONE`, the original's naming), then every other one — with
        `entry`, those on its NFS server. The name is only a hint: what decides is the parent
        volume of the FlexClone."""
        hint = storage.removesuffix(Names.CLONE_STORAGE_SUFFIX)
        nfs = [sid for sid in sorted(ctx.config.storages) if ctx.storages().get(sid, {}).get('type') == 'nfs']
        others = [sid for sid in nfs if sid != hint
                  and (entry is None or ctx.storages()[sid].get('server') == entry.get('server'))]
        return ([hint] if hint in nfs else []) + others

    @staticmethod
    def find_clone_parent(ctx, storage, entry):
        """(parent storage, its Volume, the FlexClone Volume or None) of a mounted clone storage: a refusal
        unless its volume really is a FlexClone of a configured storage's volume — or is gone
        already and the storage's export is the junction `storage mount` gave it (then None)."""
        volume = None
        for parent in StorageMount.parent_candidates(ctx, storage, entry):
            parent_volume = ctx.volume(parent)
            try:
                # A FlexClone lives in its parent's SVM.
                volume = parent_volume.ontap.find_volume(entry['export'], parent_volume.svm, storage)
            except NotFound:
                junctions = ['/' + name for name in Names.clone_volume_names(parent_volume.name, storage, parent)]
                if Ontap.junction_path(entry['export']) in junctions:
                    return parent, parent_volume, None
                continue    # another cluster or SVM behind the same NFS server
            if volume.is_flexclone and volume.parent_volume == parent_volume.name:
                return parent, parent_volume, volume
        backing = f'backed by volume {volume.name}, which is no FlexClone of' if volume else 'no clone of'
        raise Failure(f'storage {storage} is {backing} a storage in {ctx.config.path}: refusing to remove it')

    @staticmethod
    def find_leftover_clone(ctx, storage):
        """(parent storage, its Volume, the FlexClone Volume) a mount named `storage` left behind when its
        PVE storage is gone already (removed by hand, or an unmount stopped half-way)."""
        for parent in StorageMount.parent_candidates(ctx, storage):
            volume = ctx.volume(parent)
            for name in Names.clone_volume_names(volume.name, storage, parent):
                clone = volume.ontap.volume_by_name(name, volume.svm)
                if clone and clone.is_flexclone and clone.parent_volume == volume.name:
                    mounted = ctx.storages_mounting(clone.junction)
                    if mounted:
                        raise Failure(f'FlexClone {clone.name} is mounted as PVE storage {mounted[0]}: unmount '
                                      f'{mounted[0]} instead')
                    return parent, volume, clone
        raise NotFound(f'Proxmox {ctx.pve.host}: no storage {storage}, and no FlexClone left by a mount of that name')

    @staticmethod
    def mount_path(storage, entry):
        """Where PVE mounts an NFS storage on each node: its storage.cfg `path`, by default
        /mnt/pve/<id> (pve-storage NFSPlugin.pm); a Failure unless it is an absolute, plain path."""
        path = (entry or {}).get('path') or f'/mnt/pve/{storage}'
        if not path.startswith('/') or os.path.normpath(path) != path or Output.UNPRINTABLE.search(path):
            raise Failure(f'storage {storage}: its path {Output.printable(path)!r} is no plain absolute path')
        return path

    @staticmethod
    def unmount_nfs(path):
        """Unmount the clone's NFS mount on this node (PVE leaves it mounted); lazily if stuck."""
        result = Node.run('umount', '--', path, env=dict(os.environ, LC_ALL='C'))
        if result.returncode == 0 or 'not mounted' in result.stderr:
            return
        log.warning('%s is busy on this node (%s): detaching it lazily', path, result.stderr.strip())
        if Node.run('umount', '-f', '-l', '--', path).returncode:
            log.warning('could not unmount %s on this node: umount -f -l %s by hand', path, path)

    @staticmethod
    def unmount(ctx, args):
        if args.storage in ctx.config.storages:
            raise Failure(f'storage {args.storage} has its own section in {ctx.config.path}, so it is no mount: refusing '
                          'to remove it')
        entry = ctx.storages().get(args.storage)
        if entry is None:
            parent, parent_volume, volume = StorageMount.find_leftover_clone(ctx, args.storage)
            log.warning('storage %s is not in Proxmox any more: deleting the FlexClone %s it left', args.storage,
                        volume.name)
        else:
            ctx.nfs_storage(args.storage)
            parent, parent_volume, volume = StorageMount.find_clone_parent(ctx, args.storage, entry)
            if not args.force:
                ctx.pve.check_sees_every_guest('unmount')
            users, unknown = ctx.pve.guests_on_storage(args.storage, ctx.pve.guests())
            if users and not args.force:
                raise Failure(f'storage {args.storage} is in use by {", ".join(Guest.label(g) for g in users)}: '
                              'remove their disks on it first (copy what you need off it), or add -force')
            if unknown and not args.force:
                raise Failure(f'storage {args.storage}: cannot check whether it is used by '
                              f'{", ".join(Guest.label(g) for g, _ in unknown)} (node unreachable): '
                              'add -force to remove it anyway')
            if volume is None:
                log.warning('ONTAP %s: no volume at %s any more (its FlexClone is gone): removing storage %s',
                            parent_volume.ontap.host, entry['export'], args.storage)
        with Locks.for_storages(ctx, [parent]), STOP.deferred():
            if entry is not None:
                # Disabled first, so no node's status daemon mounts it again while it goes away.
                ctx.pve.call('put', f'storage/{args.storage}', f'disable storage {args.storage}', disable=1)
                ctx.pve.call('delete', f'storage/{args.storage}', f'remove storage {args.storage}')
                log.info('storage %s removed from Proxmox', args.storage)
            path = StorageMount.mount_path(args.storage, entry)
            if not Node.name():
                log.warning('not on a PVE node as root: %s may stay mounted on the nodes (umount it there)', path)
            elif ctx.dry_run:
                print(Output.printable(f'would umount {path} on this node'))
            else:
                StorageMount.unmount_nfs(path)
            if volume is not None:
                volume.delete()
                ctx.changed('ONTAP %s: FlexClone %s deleted', parent_volume.ontap.host, volume.name)
        STOP.check(f'storage {args.storage} unmounted first')


class Metrics:
    """What node_exporter's textfile collector reads: Prometheus' text format (prometheus.io, "Text-
    based format" 0.0.4; names and units as its naming conventions ask). Two files, each rewritten
    whole (a temporary file, then renamed) from what its writer knows: `pve_ontap_snapshot.prom`
    by monitor (the snapshots), `pve_ontap_snapshot_runs.prom` by monitor and by every run that
    changes something (how each command ended), so that neither loses the other's."""

    SNAPSHOTS_FILE = 'pve_ontap_snapshot.prom'
    RUNS_FILE = 'pve_ontap_snapshot_runs.prom'
    PREFIX = 'pve_ontap_snapshot_'
    STATES = {'OK': 0, 'WARNING': 1, 'CRITICAL': 2, 'UNKNOWN': 3}

    @staticmethod
    def escape(value):
        """A label value as the text format escapes it: backslash, double quote, newline."""
        return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')

    @staticmethod
    def family(name, kind, help_text, samples):
        """The lines of one metric family: # HELP, # TYPE, then `name{labels} value` per ({labels}, value)."""
        lines = [f'# HELP {Metrics.PREFIX}{name} {help_text}', f'# TYPE {Metrics.PREFIX}{name} {kind}']
        for labels, value in samples:
            inside = ','.join(f'{key}="{Metrics.escape(label)}"' for key, label in labels.items())
            number = int(value) if float(value).is_integer() else float(value)   # every digit of a time kept
            lines.append(f'{Metrics.PREFIX}{name}{{{inside}}} {number}')
        return lines

    @staticmethod
    def snapshots_text(items):
        """The snapshot metrics of monitor's items (Monitor.check_*)."""
        storages = [i for i in items if i['kind'] == 'storage' and i['state'] != 'UNKNOWN']
        guests = {tree: [i for i in items if i['kind'] == tree and i['state'] != 'UNKNOWN'] for tree in ('vm', 'ct')}

        def storage_labels(item):
            return {'storage': item['name'], 'label': item.get('label') or ''}
        lines = Metrics.family('storage_newest_snapshot_timestamp_seconds', 'gauge',
                               'When the newest storage snapshot (with this snapmirror label) was created.',
                               [(storage_labels(i), i['newest_time']) for i in storages if i['newest_time']])
        lines += Metrics.family('storage_snapshots', 'gauge', 'How many storage snapshots (with this label) there are.',
                                [(storage_labels(i), i['count']) for i in storages])
        for tree, word in (('vm', 'VM'), ('ct', 'container')):
            lines += Metrics.family(f'{tree}_newest_snapshot_timestamp_seconds', 'gauge',
                                    f"When the {word}'s newest complete snapshot was taken.",
                                    [({'vmid': i['name']}, i['newest_time']) for i in guests[tree] if i['newest_time']])
            lines += Metrics.family(f'{tree}_snapshots', 'gauge', f'How many snapshots of the {word} there are.',
                                    [({'vmid': i['name']}, i['count']) for i in guests[tree]])
        lines += Metrics.family('check_state', 'gauge', "monitor's verdict: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
                                [({'kind': i['kind'], 'name': i['name'], 'label': i.get('label') or ''},
                                  Metrics.STATES[i['state']]) for i in items if i['kind'] != 'run'])
        return '\n'.join(lines) + '\n'

    @staticmethod
    def runs_text(records):
        """The metrics of the run records (RunRecords.read_all)."""
        def labels(record):
            return {'command': record['command'], 'subject': record['subject']}
        lines = Metrics.family('run_last_success_timestamp_seconds', 'gauge', 'When the last run that succeeded ended.',
                               [(labels(r), r['last_success']['ended']) for r in records if r.get('last_success')])
        lines += Metrics.family('run_last_failure_timestamp_seconds', 'gauge', 'When the last run that failed ended.',
                                [(labels(r), r['last_failure']['ended']) for r in records if r.get('last_failure')])
        lines += Metrics.family('run_duration_seconds', 'gauge', 'How long the last run took.',
                                [(labels(r), r['last']['seconds']) for r in records])
        lines += Metrics.family('run_succeeded', 'gauge', 'Whether the last run succeeded (1) or failed (0).',
                                [(labels(r), int(r['last']['outcome'] == 'done')) for r in records])
        return '\n'.join(lines) + '\n'

    @staticmethod
    def write(directory, name, text):
        """Write a metrics file whole, readable by node_exporter's user (mode 644)."""
        PrivateFiles.write_text(directory, name, text, mode=0o644)


class Monitor:
    """monitor: whether the snapshots one counts on exist and are fresh, as monitoring systems read
    it (the Nagios plugin convention: the first line OK, WARNING, CRITICAL or UNKNOWN, exit 0 to 3,
    as sanoid's --monitor-snapshots). Read-only, no lock: one snapshot listing per volume, one
    listing per VM directory. An item that cannot be checked is UNKNOWN; the verdict is the worst
    item's, CRITICAL before UNKNOWN before WARNING (an item not checked may hide a problem)."""

    WARN, CRIT = 26 * 3600, 50 * 3600     # a nightly schedule: a day and a margin, two days and a margin
    SEVERITY = ('OK', 'WARNING', 'UNKNOWN', 'CRITICAL')
    CAPTURE_AGE = 3600      # a capture older than this was left by a run that died

    @staticmethod
    def age_phrase(seconds):
        """`3d 2h`, `5h 10m`, `42m`, `10s` of a number of seconds."""
        seconds = max(0, int(seconds))
        for unit, size, small, small_size in (('d', 86400, 'h', 3600), ('h', 3600, 'm', 60), ('m', 60, 's', 1)):
            if seconds >= size:
                rest = (seconds % size) // small_size
                return f'{seconds // size}{unit}' + (f' {rest}{small}' if rest else '')
        return f'{seconds}s'

    @staticmethod
    def verdict(age, warn, crit):
        if age is None or age > crit:
            return 'CRITICAL'
        return 'WARNING' if age > warn else 'OK'

    @staticmethod
    def bounds(ctx, storage, warn, crit):
        """(warn, crit) seconds for a storage: -warn/-crit, else its config.ini section's, else the defaults."""
        section = ctx.config.storages.get(storage)
        return (Arg.parse_duration(warn) if warn else (section and section.warn_age) or Monitor.WARN,
                Arg.parse_duration(crit) if crit else (section and section.crit_age) or Monitor.CRIT)

    @staticmethod
    def check_storage(ctx, storage, label, bounds, now):
        """The items of one storage: its newest snapshot (with `label`), and its leftover captures."""
        item = {'kind': 'storage', 'name': storage, 'label': label, 'newest': None, 'newest_time': None,
                'count': 0, 'age_seconds': None}
        try:
            volume = ctx.volume(storage)
            found = volume.snapshots(f'{Names.STORAGE_SNAPSHOT_PREFIX}*|{Names.CAPTURE_PREFIX}*|{Names.LEFTOVER_PREFIX}*')
        except Failure as exc:
            return [dict(item, state='UNKNOWN', finding=f'not checked: {exc}')]
        ours = [s for s in found if s['name'].startswith(Names.STORAGE_SNAPSHOT_PREFIX)
                and (label is None or s.get('snapmirror_label') == label)]
        newest = Volume.newest_snapshot(ours, label) if label is not None else (ours[-1] if ours else None)
        items = []
        if newest is not None:
            when = Ontap.parse_time(newest.get('create_time'))
            if when is not None:
                item.update(newest=newest['name'], newest_time=when.timestamp(), age_seconds=now - when.timestamp())
        item['count'] = len(ours)
        state = Monitor.verdict(item['age_seconds'], *bounds)
        if newest is None:
            finding = 'no snapshot' + (f' with label {label}' if label else '')
        else:
            finding = (f'{newest["name"]} {Monitor.age_phrase(item["age_seconds"] or 0)} old (warn '
                       f'{Monitor.age_phrase(bounds[0])}, crit {Monitor.age_phrase(bounds[1])}), {len(ours)} snapshot(s)')
        items.append(dict(item, state=state, finding=finding))
        for snapshot in found:
            when = Ontap.parse_time(snapshot.get('create_time'))
            old = when is not None and now - when.timestamp() > Monitor.CAPTURE_AGE
            if snapshot['name'].startswith(Names.LEFTOVER_PREFIX) or (
                    snapshot['name'].startswith(Names.CAPTURE_PREFIX) and old):
                items.append({'kind': 'capture', 'name': storage, 'label': None, 'newest': snapshot['name'],
                              'newest_time': when and when.timestamp(), 'count': 1, 'age_seconds': None,
                              'state': 'WARNING', 'finding': f'capture snapshot {snapshot["name"]} left since '
                              f'{snapshot.get("create_time")}: the next vm create on the volume deletes it, or doctor -try'})
        return items

    @staticmethod
    def check_guest(ctx, kind, vmid, view, bounds, now):
        """The items of one VM or CT of `kind` (a VmView, or the Failure that kept it from being
        gathered): its newest complete snapshot of this guest, and its incomplete ones and manifests
        whose name cannot be read. bounds(storages): (warn, crit) seconds for a guest on `storages`."""
        item = {'kind': kind.tree, 'name': vmid, 'label': None, 'newest': None, 'newest_time': None, 'count': 0,
                'age_seconds': None}
        if not isinstance(view, VmView):
            return [dict(item, name=vmid, state='UNKNOWN', finding=f'not checked: {view}')]
        try:
            sets = VmView.gather_snapshots(ctx, view)
        except Failure as exc:
            return [dict(item, state='UNKNOWN', finding=f'not checked: {exc}')]
        ours = {stamp: files for stamp, files in sets.items() if files[0].kind == 'snapshot'
                and Identity.same_vm(Identity.of_files(files), view.identity) is not False}
        complete = [stamp for stamp, files in sorted(ours.items()) if not VmSnapshots.missing_disks(view.disks, files)]
        items = []
        if complete:
            when = datetime.datetime.strptime(complete[-1], Names.STAMP_FORMAT).replace(tzinfo=datetime.UTC).timestamp()
            item.update(newest=complete[-1], newest_time=when, age_seconds=now - when)
        item['count'] = len(ours)
        warn, crit = bounds(view.storages)
        finding = (f'{complete[-1]} {Monitor.age_phrase(item["age_seconds"])} old (warn {Monitor.age_phrase(warn)}, '
                   f'crit {Monitor.age_phrase(crit)}), {len(ours)} snapshot(s)') if complete else (
                   'no complete snapshot' + (f' ({len(ours)} incomplete)' if ours else ''))
        items.append(dict(item, state=Monitor.verdict(item['age_seconds'], warn, crit), finding=finding))
        for stamp, files in sorted(ours.items()):
            missing = VmSnapshots.missing_disks(view.disks, files)
            unreadable = [f.path for f in files if f.is_record and f.ext != '.conf' and not f.size]
            problems = ([f'incomplete (lacks {", ".join(d.key for d in missing)})'] if missing else []) + (
                [f'its manifest {path} is empty' for path in unreadable])
            if problems:
                items.append(dict(item, kind=f'{kind.tree} snapshot', newest=stamp, state='WARNING',
                                  finding=f'snapshot {stamp}: {"; ".join(problems)}'))
        return items

    @staticmethod
    def check_runs(records):
        """A WARNING for each command whose last run failed (after its last success, if any)."""
        items = []
        for record in records:
            if record['last'].get('outcome') != 'done':
                when = datetime.datetime.fromtimestamp(record['last']['ended'], datetime.UTC).strftime(Names.STAMP_FORMAT)
                items.append({'kind': 'run', 'name': f'{record["command"]} {record["subject"]}', 'label': None,
                              'newest': None, 'newest_time': record['last']['ended'], 'count': 0, 'age_seconds': None,
                              'state': 'WARNING', 'finding': f'failed at {when} on node {record["last"].get("node")}: '
                              f'{record["last"].get("message")}'})
        return items

    @staticmethod
    def label_of(item):
        names = {'storage': f'storage {item["name"]}' + (f' (label {item["label"]})' if item.get('label') else ''),
                 'capture': f'storage {item["name"]}', 'vm': f'VM {item["name"]}', 'vm snapshot': f'VM {item["name"]}',
                 'ct': f'CT {item["name"]}', 'ct snapshot': f'CT {item["name"]}', 'run': item['name']}
        return names[item['kind']]

    @staticmethod
    def text(items):
        """The first line (the verdict and its worst items), then one line per item."""
        worst = max((item['state'] for item in items), key=Monitor.SEVERITY.index, default='OK')
        named = [item for item in items if item['state'] == worst]
        if worst == 'OK':
            count = {kind: sum(i['kind'] == kind for i in items) for kind in ('storage', 'vm', 'ct')}
            counts = [f'{count["storage"]} storage(s)', f'{count["vm"]} VM(s)'] + (
                [f'{count["ct"]} CT(s)'] if count['ct'] else [])
            head = f'OK: {", ".join(counts[:-1])} and {counts[-1]} fresh'
        else:
            head = f'{worst}: ' + '; '.join(f'{Monitor.label_of(i)}: {i["finding"]}' for i in named[:3]) + (
                f'; and {len(named) - 3} more' if len(named) > 3 else '')
        lines = [head] + [f'{item["state"]:<9} {Monitor.label_of(item)}: {item["finding"]}' for item in items]
        return worst, '\n'.join(Output.printable(line) for line in lines)

    @staticmethod
    def command(ctx, args):
        now = time.time()
        storages = list(dict.fromkeys(args.storage)) if args.storage else sorted(ctx.config.storages)
        unknown = [s for s in storages if s not in ctx.config.storages]
        if unknown:
            raise ConfigError(f'{ctx.config.path} has no section [{unknown[0]}]: monitor checks configured storages')
        items = []
        for storage in storages:
            items += Monitor.check_storage(ctx, storage, args.label, Monitor.bounds(ctx, storage, args.warn, args.crit), now)
        if args.all and (args.vm or args.ct):
            raise ConfigError('-all checks every VM and CT: give it without -vm and -ct')

        def guest_bounds(used):
            chosen = [Monitor.bounds(ctx, storage, args.warn, args.crit) for storage in used] or [
                Monitor.bounds(ctx, None, args.warn, args.crit)]
            return min(b[0] for b in chosen), min(b[1] for b in chosen)
        guests = ctx.pve.guests() if args.vm or args.ct or args.all else {}
        for kind, ids in ((Kind.VM, args.vm), (Kind.CT, args.ct)):
            if ids or args.all:
                for vmid, view in Monitor.gather_guests(ctx, guests, kind, ids or None):
                    items += Monitor.check_guest(ctx, kind, vmid, view, guest_bounds, now)
        records = RunRecords.read_all()
        items += Monitor.check_runs(records)
        worst, text = Monitor.text(items)
        if args.textfile:
            Metrics.write(args.textfile, Metrics.SNAPSHOTS_FILE, Metrics.snapshots_text(items))
            Metrics.write(args.textfile, Metrics.RUNS_FILE, Metrics.runs_text(records))
        ctx.emit(items, text)
        return Metrics.STATES[worst]

    @staticmethod
    def not_checked(exc, textfile):
        """monitor could check nothing (`exc`: config.ini unreadable, say): UNKNOWN, its exit code 3, and
        with -textfile the same in the snapshots file (check_state of kind `monitor`), so that the figures
        an earlier run left there are not read as current; a file that cannot be written is a warning."""
        print(Output.printable(f'UNKNOWN: {exc}'))
        if textfile:
            item = {'kind': 'monitor', 'name': 'monitor', 'label': None, 'state': 'UNKNOWN'}
            try:
                Metrics.write(textfile, Metrics.SNAPSHOTS_FILE, Metrics.snapshots_text([item]))
            except (OSError, Failure) as error:
                log.warning('the metrics are not written to %s: %s', textfile, getattr(error, 'strerror', None) or error)
        return Metrics.STATES['UNKNOWN']

    @staticmethod
    def gather_guests(ctx, guests, kind, vmids):
        """[(vmid, VmView or Failure)] of the -vm (or -ct) ids, or (None) of every guest of `kind` but a
        template with a disk on a configured storage, among `guests` (Pve.guests); the configs read
        from pmxcfs on a node (Node.guest_configs), else through the API, REQUESTS_AT_ONCE at a time."""
        vms = {vmid: guest for vmid, guest in guests.items() if Kind.of(guest) == kind}
        if vmids is None:
            chosen = {vmid: vm for vmid, vm in vms.items() if not vm.get('template')}
        else:
            chosen = {vmid: vms[vmid] for vmid in dict.fromkeys(vmids) if vmid in vms}
        configs, _, others = Node.guest_configs(chosen)
        read, unread = ctx.pve.guest_configs(others)
        configs.update(read)
        failed = {guest['vmid']: exc for guest, exc in unread}
        gathered = []
        for vmid in (list(dict.fromkeys(vmids)) if vmids is not None else sorted(chosen)):
            if vmid in guests and vmid not in vms:
                other = Kind.of(guests[vmid])
                gathered.append((vmid, NotFound(f'{Guest.label(guests[vmid])} is a {other.noun}, not a {kind.noun}: '
                                                f'give it with {other.option}')))
            elif vmid not in chosen:
                gathered.append((vmid, NotFound(f'{kind.word} {vmid} does not exist')))
            elif vmid in failed:
                gathered.append((vmid, failed[vmid]))
            elif vmids is not None or any(d.storage in ctx.config.storages and d.path
                                          for d in Guest.disks(chosen[vmid], configs[vmid])):
                try:
                    gathered.append((vmid, VmView.gather(ctx, vmid, vms, configs[vmid], kind)))
                except Failure as exc:
                    gathered.append((vmid, exc))
        return gathered


# ---- 10. doctor ------------------------------------------------------------------------------
# The setup checked before the first snapshot, and again when something fails: one chapter, one
# class. Each check_* makes its lines (ok, warn or fail, what was found and the fix) through the
# one writer, add(); the pure checks, and what they know, are its static methods.

class Doctor:
    """doctor's run and its one writer: each check goes out as it is made (one text line), or
    into one JSON list at the end, in the order made. A summary closes it; a failed check fails
    the run. `ctx`: the run's Context once config.ini could be read."""

    @dataclasses.dataclass(frozen=True)
    class Check:
        """One line of doctor's report: what was checked, ok/warn/fail, what was found and, for a
        warn or fail, what to do."""
        check: str
        status: str
        found: str
        fix: str = None

    SUPPORTED_PVE = (8, 9)

    OLDEST_ONTAP = (9, 8)

    SNAPSHOT_LIMIT = 1023       # snapshots per volume (reference §4, §6: error 525062 beyond it)

    # What each command group needs of PVE: (path, privileges of which any one will do, whether it
    # must reach the guests or storages below the path). `{storage}` stands for each configured
    # storage. Sources: pve-api.md §2–§5 and §13; GET /storage lists only the storages one holds
    # Datastore.Audit or Datastore.AllocateSpace on (pve-storage API2/Storage/Config.pm, index);
    # /cluster/status needs Sys.Audit on / (pve-manager API2/Cluster.pm, get_status).
    PRIVILEGE_GROUPS = ('every command', 'vm list, vm restore', 'vm create', 'vm create -suspend',
                        'vm create -shutdown, vm restore -shutdown', 'vm create -freeze', 'vm delete, vm create -keep',
                        'vm restore -as-new', 'vm restore -with-config', 'storage create', 'storage create -freeze',
                        'storage create -pause', 'storage restore', 'storage mount', 'storage unmount',
                        'ct create, ct delete', 'ct create -shutdown, ct restore -shutdown', 'ct restore -with-config')

    # The privileges PVE checks for the keys of an ordinary VM config (boot takes VM.Config.Disk), the
    # same on PVE 8 and 9 (qemu-server API2/Qemu.pm, check_vm_modify_config_perm and its $cpuoptions,
    # $memoryoptions, $hwtypeoptions, $generaloptions, $diskoptions; pve-access-control
    # AccessControl.pm, $privgroups: the VM.Config.* names are the same on stable-bookworm and master).
    VM_CONFIG_PRIVILEGES = ('VM.Config.CPU', 'VM.Config.Memory', 'VM.Config.Network', 'VM.Config.HWType',
                            'VM.Config.Options', 'VM.Config.Disk')

    ALL_SOURCE_SNAPSHOTS = 'all_source_snapshots'   # the CLI's rule: ontap data-protection define-rule-policy-task

    LICENSES = (('flexclone', 'FlexClone', 'the vm commands and storage mount'),
                ('snaprestore', 'SnapRestore', 'storage restore'))

    # The units of the Debian package and where systemd reads them and what changes them
    # (systemd.unit(5), "Unit File Load Path"): the package's file, a whole copy in /etc, and
    # drop-ins for the template or one instance.
    UNIT_NAME = 'pve-ontap-snapshot-storage@.service'

    UNIT_DIRS = ('/lib/systemd/system', '/usr/lib/systemd/system')

    UNIT_OVERRIDE_DIRS = ('/etc/systemd/system', '/run/systemd/system')

    # The sandbox settings of the package's service (packaging/systemd): a drop-in that sets one
    # otherwise weakens it. ReadWritePaths= is left out: adding a path is what the unit's comments
    # tell an admin to do.
    SANDBOX_SETTINGS = ('ProtectSystem', 'ProtectHome', 'PrivateTmp', 'PrivateDevices', 'ProtectKernelTunables',
                        'ProtectKernelModules', 'ProtectKernelLogs', 'ProtectControlGroups', 'ProtectClock',
                        'ProtectHostname', 'ProtectProc', 'ProcSubset', 'NoNewPrivileges', 'RestrictSUIDSGID',
                        'LockPersonality', 'RestrictRealtime', 'RestrictNamespaces', 'CapabilityBoundingSet',
                        'RestrictAddressFamilies', 'SystemCallArchitectures', 'SystemCallFilter', 'SystemCallErrorNumber',
                        'UMask')

    # The package's timers an admin enabled, as systemd tells of them: `systemctl show PATTERN`
    # with --property= (systemctl(1): show takes patterns, matched against the units in memory,
    # and an enabled timer is, through timers.target; --all prints a property that is empty),
    # the same on systemd 252 (Debian 12) and 257 (Debian 13). LastTriggerUSec is when the timer
    # last elapsed, NextElapseUSecRealtime when it elapses next (org.freedesktop.systemd1(5)); a
    # Persistent= timer's survives a reboot (systemd.timer(5)). show prints them in the local
    # time zone whatever --timestamp= says (src/shared/bus-print-properties.c: FORMAT_TIMESTAMP),
    # so systemctl runs with TZ=UTC: `Tue 2024-03-12 03:00:01 UTC`, empty for never.
    TIMERS = 'pve-ontap-snapshot-*.timer'
    TIMER_PROPERTIES = 'Id,UnitFileState,LastTriggerUSec,NextElapseUSecRealtime'
    STORAGE_TIMER = re.compile(r'^pve-ontap-snapshot-storage@(?P<storage>.+)\.timer$')
    MONITOR_TIMER = 'pve-ontap-snapshot-monitor.timer'
    MONITOR_SERVICE = 'pve-ontap-snapshot-monitor.service'
    # Where systemd runs as the init system, it has made this directory (sd_booted(3)).
    SYSTEMD_DIR = '/run/systemd/system'
    # A storage timer's last success may lie this far before its last trigger: a nightly timer
    # whose run failed (or did not run) last night is late by then.
    TIMER_SLACK = 36 * 3600

    def __init__(self, output):
        self.output = output
        self.checks = []
        self.ctx = None

    def add(self, check, status, found, fix=None):
        entry = Doctor.Check(check, status, found, fix)
        self.checks.append(entry)
        if self.output == 'text':
            print(Output.printable(Doctor.format_check(entry)))

    def ok(self, check, found):
        self.add(check, 'ok', found)

    def warn(self, check, found, fix):
        self.add(check, 'warn', found, fix)

    def fail(self, check, found, fix):
        self.add(check, 'fail', found, fix)

    def close(self):
        if self.output == 'json':
            print(json.dumps([dataclasses.asdict(check) for check in self.checks], indent=2))
        else:
            counts = [sum(check.status == status for check in self.checks) for status in ('ok', 'warn', 'fail')]
            print('summary: {} ok, {} warn, {} fail'.format(*counts))
        failed = [check.check for check in self.checks if check.status == 'fail']
        if failed:
            raise Failure(f'doctor: {len(failed)} check(s) failed: {", ".join(failed)}')

    @staticmethod
    def format_check(check):
        return f'{check.status:<4}  {check.check}: {check.found}' + (f'; fix: {check.fix}' if check.fix else '')

    @staticmethod
    def trust_phrase(verify):
        """How a `verify` setting trusts the server's certificate."""
        if verify is True:
            return 'its certificate verified against the system CAs'
        if verify is False:
            return 'its certificate NOT verified'
        return f'its certificate verified against {verify}'

    @staticmethod
    def pve_major(version):
        """The major release of a /version answer ('9.0.10' -> 9), or None."""
        found = re.match(r'(\d+)\.', str(version.get('version', '')))
        return int(found[1]) if found else None

    @staticmethod
    def ontap_release(version):
        """(generation, major, minor) of /api/cluster's `version`, or None if it does not say."""
        try:
            return tuple(int(version[key]) for key in ('generation', 'major', 'minor'))
        except (KeyError, TypeError, ValueError):
            return None

    @staticmethod
    def required_privileges(group, pve_major):
        """What a command group needs on PVE `pve_major`: [(path, (privilege, ...), below)]."""
        def vms(*privileges):
            return ('/vms', privileges, True)

        audit, disk, power = vms('VM.Audit'), vms('VM.Config.Disk'), vms('VM.PowerMgmt')
        allocate_space = ('/storage/{storage}', ('Datastore.AllocateSpace',), False)
        if pve_major is not None and pve_major < 9:
            agent = [vms('VM.Monitor')]     # PVE 8: every guest agent call
        else:
            # PVE 9 split VM.Monitor up: qemu-server API2/Qemu/Agent.pm, commit b92a40ce (2025-07-17)
            agent = [vms('VM.GuestAgent.Audit', 'VM.GuestAgent.Unrestricted'),
                     vms('VM.GuestAgent.FileSystemMgmt', 'VM.GuestAgent.Unrestricted')]
        # A netN's bridge: SDN.Use on /sdn/zones/<zone>/<bridge> (a plain bridge's zone is
        # localnetwork; /<tag> for a VLAN tag), on PVE 8 and 9 (pve-guest-common GuestHelpers.pm,
        # check_vnet_access, since 2023-06; qemu-server QemuServer.pm, check_bridge_access).
        bridges = ('/sdn/zones', ('SDN.Use',), True)
        config = [vms(name) for name in Doctor.VM_CONFIG_PRIVILEGES]
        return {
            'every command': [('/storage/{storage}', ('Datastore.Audit', 'Datastore.AllocateSpace'), False)],
            'vm list, vm restore': [audit],
            'vm create': [audit, disk],                                 # registering the clones
            'vm create -suspend': [audit, power, disk, allocate_space],   # PVE writes the memory to a storage
            'vm create -shutdown, vm restore -shutdown': [audit, power],
            'vm create -freeze': [audit] + agent,
            'vm delete, vm create -keep': [audit, disk, allocate_space],  # PVE frees a registered clone
            # POST /nodes/{node}/qemu (qemu-server API2/Qemu.pm, create_vm): VM.Allocate on
            # /vms/NEWID, then check_vm_modify_config_perm for the keys it sets (drives skipped
            # there; ci* keys take VM.Config.Cloudinit or VM.Config.Network, so Network will do);
            # the disks are volumes NEWID owns, which check_volume_access lets through without a
            # Datastore privilege (pve-storage Storage.pm), and a cloud-init drive is made unchecked
            # (Qemu.pm, $check_storage_access: "nothing to check").
            'vm restore -as-new': [audit, vms('VM.Allocate')] + config + [bridges],
            # PUT .../config (Qemu.pm, update_vm_api): check_vm_modify_config_perm for the keys set
            # and deleted; a drive's own check ($check_drive_perms): a disk VM.Config.Disk, a CD drive
            # VM.Config.CDROM, a cloud-init drive VM.Config.Cloudinit and VM.Config.CDROM.
            'vm restore -with-config': [audit] + config + [vms('VM.Config.CDROM'), vms('VM.Config.Cloudinit'),
                                                           bridges],
            # Every guest's config, to record it: GET .../config needs VM.Audit on /vms/{vmid}
            # (Qemu.pm, vm_config); a guest it may not see is left out of the records.
            'storage create': [audit],
            'storage create -freeze': [audit] + agent,
            'storage create -pause': [audit, power] + agent,          # a VM it cannot freeze is paused
            'storage restore': [audit],                                 # seeing every guest on the storage
            'storage mount': [('/storage', ('Datastore.Allocate',), False), ('/', ('Sys.Audit',), False)],
            # A CT's config and status: VM.Audit (pve-container API2/LXC/Config.pm vm_config, API2/LXC/Status.pm
            # vm_status); setting or deleting its unusedN: VM.Config.Options, the catch-all of
            # check_ct_modify_config_perm (src/PVE/LXC.pm); shutdown and start: VM.PowerMgmt (Status.pm).
            # -pause needs none: the freezer is the node's, as root.
            'ct create, ct delete': [audit, vms('VM.Config.Options')],
            'ct create -shutdown, ct restore -shutdown': [audit, power, vms('VM.Config.Options')],
            # PUT .../config of a CT: check_ct_modify_config_perm (src/PVE/LXC.pm) for each key set or
            # deleted: cores, cpu* VM.Config.CPU; memory, swap VM.Config.Memory; netN, hostname,
            # nameserver, searchdomain VM.Config.Network (a netN's bridge: check_bridge_access, SDN.Use);
            # rootfs, mpN VM.Config.Disk; the rest VM.Config.Options.
            'ct restore -with-config': [audit] + [vms(name) for name in ('VM.Config.CPU', 'VM.Config.Memory',
                                                                         'VM.Config.Network', 'VM.Config.Disk',
                                                                         'VM.Config.Options')] + [bridges],
            'storage unmount': [('/storage', ('Datastore.Allocate',), True), audit],
        }[group]

    @staticmethod
    def privileges_at(answer, path):
        """{privilege: reaches below} that a GET /access/permissions?path=PATH answer grants on
        `path`. PVE answers {path: {privilege: propagate 1 or 0}} for that path (pve-access-control
        API2/AccessControl.pm, `permissions`): 0 holds on the path itself, not below it. Entries of
        paths above it, should a server list the ACL paths instead, count where they propagate."""
        held = {}
        for granted, privileges in sorted(answer.items(), key=lambda item: len(item[0])):
            if granted == path:
                held.update((name, bool(flag)) for name, flag in privileges.items())
            elif granted == '/' or path.startswith(granted.rstrip('/') + '/'):
                held.update((name, True) for name, flag in privileges.items() if flag)
        return held

    @staticmethod
    def missing_privileges(needs, held, storages):
        """Phrases for what `held` ({path: {privilege: reaches below}}) lacks of `needs`."""
        missing = []
        for path, privileges, below in needs:
            for where in [path.format(storage=s) for s in storages] if '{storage}' in path else [path]:
                at = held.get(where, {})
                if any(name in at and (at[name] or not below) for name in privileges):
                    continue
                names = ' or '.join(privileges)
                propagated = ' (held there, but not propagated to what is below it)' if any(
                    name in at for name in privileges) else ''
                missing.append(f'{names} on {where}{propagated}')
        return missing

    @staticmethod
    def cluster_findings(entries):
        """(cluster name or None, quorate True/False/None, [(node, online)]) of /cluster/status;
        a single node has no `cluster` entry."""
        cluster = next((e for e in entries if e.get('type') == 'cluster'), None)
        nodes = sorted((e['name'], bool(e.get('online'))) for e in entries if e.get('type') == 'node')
        return (cluster or {}).get('name'), None if cluster is None else bool(cluster.get('quorate')), nodes

    @staticmethod
    def volume_checks(record, svm):
        """doctor's findings on a volume record (Volume.HEALTH_FIELDS): [(check, status, found, fix)]."""
        name, space = record.get('name'), record.get('space') or {}
        snapshot_space = space.get('snapshot') or {}
        return [Doctor.volume_state_check(record, svm), Doctor.snapshot_count_check(record.get('snapshot_count')),
                Doctor.space_check(space, svm, name),
                Doctor.autodelete_check(snapshot_space.get('autodelete_enabled'), svm, name),
                Doctor.policy_check((record.get('snapshot_policy') or {}).get('name'))]

    @staticmethod
    def volume_state_check(record, svm):
        name, state, kind, style = (record.get(key) for key in ('name', 'state', 'type', 'style'))
        problems, fixes = [], []
        if state != 'online':
            problems.append(f'it is {state}, not online')
            fixes.append(f'volume online -vserver {svm} -volume {name}')
        if kind != 'rw':
            problems.append(f'it is of type {kind}, not rw: a mirror destination is read-only')
            fixes.append('configure the storage on the read-write volume')
        if style == 'flexgroup':
            # "blocked" for REST file clones on a FlexGroup: netapp_ontap resources/file_clone.py (reference §13)
            problems.append('it is a FlexGroup, and ONTAP offers file clones on FlexVol volumes only: every vm command '
                            'fails on it (the storage commands work)')
            fixes.append('keep the disks of VMs to snapshot on a FlexVol volume')
        found = f'{name} is {state}, {kind}, {style}'
        if problems:
            return 'volume state', 'fail', f'{found}: {"; ".join(problems)}', '; '.join(fixes)
        return 'volume state', 'ok', found, None

    @staticmethod
    def snapshot_count_check(count):
        prune = 'delete old snapshots (storage delete, or storage create -keep N)'
        if count is None:
            return 'snapshots', 'ok', 'their number is not reported by this release', None
        if count >= Doctor.SNAPSHOT_LIMIT:
            return 'snapshots', 'fail', f'{count} of at most {Doctor.SNAPSHOT_LIMIT}: ONTAP refuses another one', prune
        if count >= Doctor.SNAPSHOT_LIMIT * 0.9:
            return 'snapshots', 'warn', f'{count} of at most {Doctor.SNAPSHOT_LIMIT}', prune
        return 'snapshots', 'ok', f'{count} of at most {Doctor.SNAPSHOT_LIMIT}', None

    @staticmethod
    def space_check(space, svm, name):
        size, available = space.get('size'), space.get('available')
        reserve, used = (space.get('snapshot') or {}).get('reserve_percent'), (space.get('snapshot') or {}).get('used')
        found = (f'{Output.human_size(available)} free of {Output.human_size(size)}, snapshot reserve '
                 f'{"unknown" if reserve is None else f"{reserve}%"}, snapshots use {Output.human_size(used)}')
        if size and available is not None and available < size * 0.1:
            low = f'{found}: less than 10% free, and every write after a clone or a snapshot takes new blocks'
            grow = f'grow the volume (volume size -vserver {svm} -volume {name} +100g, say) or delete old snapshots'
            return 'space', 'warn', low, grow
        return 'space', 'ok', found, None

    @staticmethod
    def autodelete_check(enabled, svm, name):
        if enabled:
            on = "on: when the volume runs short of space ONTAP deletes snapshots, this tool's storage snapshots included"
            off = f'volume snapshot autodelete modify -vserver {svm} -volume {name} -enabled false'
            return 'snapshot autodelete', 'warn', on, off
        return 'snapshot autodelete', 'ok', 'not reported by this release' if enabled is None else 'off', None

    @staticmethod
    def policy_check(policy):
        if policy is None:
            return 'snapshot policy', 'ok', 'not reported by this release', None
        if policy == 'none':
            return 'snapshot policy', 'ok', "none: the volume holds this tool's snapshots only", None
        beside = (f"{policy}: its snapshots sit beside this tool's, count toward the {Doctor.SNAPSHOT_LIMIT}, and a storage "
                  'restore deletes those newer than its target too')
        return 'snapshot policy', 'ok', beside, None

    @staticmethod
    def mount_check(mount, server, export, path, enabled_here):
        """(status, found, fix) of what is mounted at a storage's `path` on this node (a findmnt
        record, or None) for an NFS storage exporting server:export."""
        wanted = f'{server}:{Ontap.junction_path(export)}'
        if mount is None:
            if not enabled_here:
                return 'ok', f'{path} is not mounted: the storage is not enabled on this node', None
            return ('fail', f'nothing is mounted at {path}',
                    'activate the storage on this node (pvesm status mounts it; if that fails, check the export policy)')
        host, _, mounted = (mount.get('source') or '').rpartition(':')
        found = f'{path}: {mount.get("source")} ({mount.get("fstype")}, {mount.get("options")})'
        if not str(mount.get('fstype', '')).startswith('nfs'):
            return 'fail', f'{found}: no NFS mount', f'unmount {path}; PVE mounts {wanted} there'
        if host.lower() != server.lower() or Ontap.junction_path(mounted) != Ontap.junction_path(export):
            return 'fail', f"{found}: not the storage's export {wanted}", f'umount {path}; PVE then mounts {wanted} there'
        return 'ok', found, None

    @staticmethod
    def kept_labels(policy):
        """(whether it keeps every snapshot, [(label, count)] of its rules) of a SnapMirror policy record."""
        rules = [(rule.get('label'), rule.get('count')) for rule in policy.get('retention') or [] if rule.get('label')]
        every = bool(policy.get('copy_all_source_snapshots')) or any(
            label == Doctor.ALL_SOURCE_SNAPSHOTS for label, _ in rules)
        return every, [(label, count) for label, count in rules if label != Doctor.ALL_SOURCE_SNAPSHOTS]

    @staticmethod
    def snapmirror_check(name, policy, label, section):
        """(status, found, fix) of one SnapMirror relationship from the volume: which labels its policy
        (a record, or None where this cluster cannot read it) keeps on the destination, and whether
        `label`, the section's snapmirror_label, is one of them."""
        if policy is None:
            where = f'policy {name}' if name else 'its policy (this cluster does not name it)'
            look = f'snapmirror policy show -policy {name} -fields snapmirror-label,keep' if name else 'snapmirror show'
            unread = (f'{where}: which labels it keeps cannot be checked from here, it lives on the destination cluster '
                      f'(there: {look})')
            return 'ok', unread, None
        kind = '' if policy.get('type') in (None, 'async') else f' ({policy["type"]})'
        every, rules = Doctor.kept_labels(policy)
        if every:
            return 'ok', f"policy {name}{kind} keeps every snapshot of the volume, this tool's included", None
        labels = [rule for rule, _ in rules]
        kept = ', '.join(rule if count is None else f'{count} {rule}' for rule, count in rules)
        found = f'policy {name}{kind} keeps ' + (kept or "no labelled snapshot (SnapMirror's own only)")
        if label is None:
            only = f': only snapshots taken with storage create -label {"|".join(labels)} go there' if labels else ''
            return 'ok', f'{found}; [{section}] sets no snapmirror_label{only}', None
        if label in labels:
            return 'ok', f"{found}: storage create's snapshots (label {label}) are kept there", None
        other = f'set snapmirror_label in [{section}] to {" or ".join(labels)}, or ' if labels else ''
        fix = (f'{other}add a rule for {label} to policy {name} on the destination cluster (snapmirror policy add-rule '
               f'-policy {name} -snapmirror-label {label} -keep N)')
        lost = (f"{found}, not {label}, the snapmirror_label of [{section}]: storage create's snapshots are not "
                'vaulted')
        return 'warn', lost, fix

    def check_config(self, explicit):
        """config.ini: where it is, who may change and read it, each section complete and without
        unknown keys. The Config read from it, or None if it cannot be."""
        try:
            path = ConfigFile.find(explicit)
            text, info = ConfigFile.load(path)
        except ConfigError as exc:
            self.fail('config.ini', str(exc), 'copy config.ini.example to /etc/pve-ontap-snapshot/config.ini and '
                      'fill it in')
            return None
        where = ('given with -config' if explicit else
                 'in this directory' if path == ConfigFile.SEARCH_PATH[0] else 'the system-wide one')
        found = f'{os.path.abspath(path)} ({where}), {PrivateFiles.describe_owner(info)}'
        risk = ConfigFile.risk(path, info)
        if risk:
            refused = ': as root, every command refuses it' if os.geteuid() == 0 else ''
            (self.fail if os.geteuid() == 0 else self.warn)('config.ini', f'{risk[0]}{refused}', risk[1])
        elif info.st_mode & 0o077:
            self.warn('config.ini', f'{found}: group or others may read the passwords in it', f'chmod 600 {path}')
        else:
            self.ok('config.ini', found)
        try:
            parser = ConfigFile.parse(path, text)
        except ConfigError as exc:
            self.fail('config.ini', str(exc), 'correct that line (see config.ini.example)')
            return None
        if not self.check_sections(parser) or (risk and os.geteuid() == 0):
            return None
        try:
            return ConfigFile.read(path, parser)
        except ConfigError as exc:
            self.fail('config.ini', str(exc), 'correct it (see config.ini.example)')
            return None

    def check_sections(self, parser):
        """One line per section of config.ini; True if every one is complete."""
        complete = parser.has_section(ConfigFile.PROXMOX_SECTION)
        if not complete:
            self.fail(f'config [{ConfigFile.PROXMOX_SECTION}]', 'there is none', 'add one with proxmox_host, proxmox_user and '
                      'proxmox_pass (see config.ini.example)')
        for section in parser.sections():
            keys = [key for key in parser[section] if key not in parser.defaults()]
            value = functools.partial(parser.get, section, raw=True, fallback=None)
            gaps, unknown = ConfigFile.section_gaps(section, keys), ConfigFile.unknown_keys(section, keys)
            check = f'config [{section}]'
            if gaps:
                complete = False
                self.fail(check, f'lacks {", ".join(gaps)}', f'add {" and ".join(gap.split(" (")[0] for gap in gaps)} '
                          'to it (see config.ini.example)')
                continue
            if section == ConfigFile.PROXMOX_SECTION:
                token = value('proxmox_token_name')
                found = (f'PVE {value("proxmox_host")} as {value("proxmox_user")} with '
                         + (f'API token {token}' if token else 'proxmox_pass'))
            elif section == ConfigFile.DEFAULTS_SECTION:
                found = ', '.join(f'{key} = {value(key)}' for key in keys) or 'empty: the default timeouts'
            else:
                found = (f'ONTAP {value("host")} as {value("user")} with '
                         + ('a client certificate' if value('cert') else 'pass')
                         + (f', SVM {value("svm")}' if value('svm') else ', any SVM'))
            ignored = [f'{key} (a typo?)' for key in unknown]
            if section == ConfigFile.PROXMOX_SECTION and token and 'proxmox_pass' in keys:
                ignored.append('proxmox_pass (the API token is used)')
            if ignored:
                self.warn(check, f'{found}; ignored: {", ".join(ignored)}', 'remove or correct those keys (see '
                          'config.ini.example)')
            else:
                self.ok(check, found)
        return complete

    def check_scope(self, config, storage):
        """The storages to check: -storage's, or every section's."""
        if storage is None:
            return sorted(config.storages)
        if storage not in config.storages:
            self.fail(f'config [{storage}]', f'{config.path} has no section [{storage}]', 'add one with host, user '
                      'and pass of the ONTAP cluster that exports the storage')
            return []
        return [storage]

    def check_pve(self, storages):
        """PVE: reachable, its certificate trusted, login, release, quorum, nodes, privileges.
        True if PVE could be asked."""
        pve, cfg = self.ctx.pve, self.ctx.config.proxmox
        reached = f'{cfg.host} answers over HTTPS, {Doctor.trust_phrase(pve.verify)}'
        try:
            version = pve.version()
        except ProxmoxError as exc:
            reason = Http.failed_connection(exc)
            if reason == 'tls':
                self.fail('proxmox connection', str(exc), 'set proxmox_verify to the CA that signed its certificate: '
                          f'{ConfigFile.PVE_ROOT_CA} (copied from a node), or the CA of a certificate of your own')
            elif reason:
                self.fail('proxmox connection', str(exc), f'check proxmox_host ({cfg.host}): a node of the cluster, '
                          'with pveproxy listening on port 8006 (or the port given)')
            else:
                self.ok('proxmox connection', reached)
                self.fail('proxmox login', str(exc),
                          f'correct them in [{ConfigFile.PROXMOX_SECTION}] of {self.ctx.config.path}')
            return False
        if pve.verify is False:
            self.warn('proxmox connection', reached, f'set proxmox_verify = {ConfigFile.PVE_ROOT_CA} (copied from a node), so '
                      'that nothing can pose as PVE')
        else:
            self.ok('proxmox connection', reached)
        self.ok('proxmox login', f'API token {cfg.user}!{cfg.token_name} accepted' if cfg.token_name
                else f'{cfg.user} logged in with proxmox_pass')
        major = Doctor.pve_major(version)
        release = f'PVE {version.get("version", "of an unknown release")}'
        if major in Doctor.SUPPORTED_PVE:
            self.ok('proxmox release', f'{release}: supported; privileges are named as PVE {major} names them')
        else:
            self.warn('proxmox release', f'{release}: this tool supports PVE 8 and 9 (privileges are checked by '
                      f'PVE {9 if major is None or major > 9 else 8} names)', 'run it on PVE 8 or 9')
        self.check_cluster_status(pve)
        self.check_privileges(pve, major, storages)
        return True

    def check_cluster_status(self, pve):
        """Quorum and nodes, from /cluster/status (Sys.Audit on /)."""
        try:
            name, quorate, nodes = Doctor.cluster_findings(pve.cluster_status())
        except ProxmoxError as exc:
            self.warn('proxmox cluster', f'not checked: {exc}', f'grant Sys.Audit on / to {pve.config.user} (README, '
                      'Least privilege)')
            return
        if quorate is None:
            self.ok('proxmox cluster', 'a single node, no cluster')
        elif quorate:
            self.ok('proxmox cluster', f'cluster {name} is quorate')
        else:
            self.fail('proxmox cluster', f'cluster {name} has no quorum: PVE refuses config changes and VM actions',
                      'bring enough nodes back online (pvecm status)')
        offline = [node for node, online in nodes if not online]
        online = ', '.join(node for node, up in nodes if up) or 'none'
        if offline:
            self.warn('proxmox nodes', f'{", ".join(offline)} offline ({online} online): VMs there can be neither '
                      'snapshotted nor restored, and storage restore and unmount cannot check their guests',
                      'bring them back online, or remove them from the cluster (pvecm delnode)')
        else:
            self.ok('proxmox nodes', f'{online} online')

    def check_privileges(self, pve, major, storages):
        """The privileges of each command group, read with /access/permissions per path; what one
        lacks is a warning (a group one does not use needs nothing), what every command needs a failure."""
        needs = {group: Doctor.required_privileges(group, major) for group in Doctor.PRIVILEGE_GROUPS}
        paths = sorted({where for group_needs in needs.values() for path, _, _ in group_needs
                        for where in ([path.format(storage=s) for s in storages] if '{storage}' in path else [path])})
        try:
            held = {path: pve.privileges(path) for path in paths}
        except ProxmoxError as exc:
            self.warn('privileges', f'not checked: {exc}', 'see README, Least privilege')
            return
        for group, group_needs in needs.items():
            check = f'privileges for {group}'
            missing = Doctor.missing_privileges(group_needs, held, storages)
            if not missing:
                self.ok(check, f'{pve.config.user} holds {Doctor.describe_needs(group_needs, storages)}')
            elif group == 'every command':
                self.fail(check, f'{pve.config.user} lacks {"; ".join(missing)}: PVE hides those storages from it',
                          'grant it (README, Least privilege)')
            else:
                self.warn(check, f'{pve.config.user} lacks {"; ".join(missing)}', 'grant it if you use these commands '
                          '(README, Least privilege)')

    @staticmethod
    def describe_needs(needs, storages):
        """'VM.Audit, VM.PowerMgmt on /vms; Datastore.AllocateSpace on /storage/ONTAP01 and /storage/ONTAP02'."""
        by_path = {}
        for path, privileges, _ in needs:
            where = ' and '.join(path.format(storage=s) for s in storages) if '{storage}' in path else path
            by_path.setdefault(where, []).append(' or '.join(privileges))
        return '; '.join(f'{", ".join(names)} on {path}' for path, names in by_path.items())

    def check_cluster(self, ontap, cluster):
        """ONTAP: reachable, its certificate trusted, login, release, licences.
        (reached, release (generation, major, minor) or None)."""
        name, section = f'ONTAP {ontap.host}', f'[{cluster.section}]'
        credentials = 'the client certificate' if cluster.cert else 'pass'
        reached = f'{ontap.host} answers over HTTPS, {Doctor.trust_phrase(ontap.verify)}'
        try:
            record, refused = ontap.cluster(), None
        except OntapError as exc:
            reason, record, refused = Http.failed_connection(exc), None, exc
            if reason == 'tls':
                self.fail(f'{name} connection', str(exc), f'set verify in {section} to the CA file that signed the '
                          "cluster's certificate")
            elif reason:
                self.fail(f'{name} connection', str(exc), f'check host in {section}: the cluster management address, '
                          'reachable over HTTPS')
            elif exc.status == 401:
                self.ok(f'{name} connection', reached)
                self.fail(f'{name} login', str(exc), f'correct user and {credentials} in {section}')
            if reason or exc.status == 401:
                return False, None
        if ontap.verify is False:
            self.warn(f'{name} connection', reached, f'set verify in {section} to the CA file that signed the '
                      "cluster's certificate, so that nothing can pose as the cluster")
        else:
            self.ok(f'{name} connection', reached)
        self.ok(f'{name} login', f'{cluster.user} logged in with {credentials}')
        release = Doctor.ontap_release((record or {}).get('version'))
        if refused:
            self.warn(f'{name} release', f'not read: {refused}', 'let the REST role read /api/cluster (security login '
                      'rest-role create -role ROLE -api /api/cluster -access readonly)')
        elif release is None:
            self.warn(f'{name} release', 'the cluster does not say', 'check that host names a cluster management '
                      'address')
        elif release < Doctor.OLDEST_ONTAP:
            self.fail(f'{name} release', f'ONTAP {".".join(map(str, release))}: older than 9.8, the oldest release '
                      'this tool supports', 'upgrade ONTAP to 9.8 or later')
        else:
            self.ok(f'{name} release', f'ONTAP {".".join(map(str, release))} (cluster {record.get("name")}): '
                    'supported (9.8 or later)')
        self.check_licenses(ontap, name)
        return True, release

    def check_licenses(self, ontap, name):
        """FlexClone (file clones, FlexClone volumes) and SnapRestore (volume restore), where the
        account may read the licences."""
        check = f'{name} licences'
        try:
            installed = ontap.licenses([package for package, _, _ in Doctor.LICENSES])
        except OntapError as exc:
            self.warn(check, f'unknown ({exc}): FlexClone is needed for the vm commands and storage mount, SnapRestore '
                      'for storage restore', 'let the REST role read /api/cluster/licensing/licenses (readonly) to '
                      'have them checked')
            return
        lacking = [(label, installed.get(package, 'not installed'), use) for package, label, use in Doctor.LICENSES
                   if installed.get(package) != 'compliant']
        if not lacking:
            self.ok(check, 'FlexClone and SnapRestore are licensed')
            return
        found = '; '.join(f'{label} is {state}: needed for {use}' for label, state, use in lacking)
        fix = 'install the licence (system license add; ONTAP One holds both)'
        if any(state in ('not installed', 'unlicensed') for _, state, _ in lacking):
            self.fail(check, found, fix)
        else:
            self.warn(check, found, fix)

    def check_storage(self, storage, pve_reached, cluster_reached, release, try_clone, node):
        """One storage: its PVE entry, its volume, what the REST role reaches there, the volume's
        health, its mount on this node, and with -try a file clone."""
        if not pve_reached:
            self.warn(f'{storage} storage', 'not checked: its export is known to PVE only', 'see the proxmox checks')
            return
        entry = self.check_pve_storage(storage)
        if entry is None:
            return
        self.check_volume_chains(storage, entry)
        if not cluster_reached:
            self.warn(f'{storage} volume', f'not checked: ONTAP {self.ctx.ontap(storage).host} was not reached',
                      'see the checks of that cluster')
        found = cluster_reached and self.check_volume(storage)
        if found:
            self.check_leftovers(storage, try_clone)
            self.check_left_guests(storage, try_clone)
        self.check_mount(storage, entry, node)
        if found and try_clone:
            self.try_storage(storage, release)

    def check_pve_storage(self, storage):
        """The storage.cfg entry of a configured storage, if it is an NFS storage; else None."""
        check = f'{storage} storage'
        try:
            entry = self.ctx.storages().get(storage)
        except ProxmoxError as exc:
            self.fail(check, str(exc), 'see the proxmox checks above')
            return None
        if entry is None:
            self.fail(check, f'PVE has no storage {storage}, or {self.ctx.config.proxmox.user} may not see it (that takes '
                      f'Datastore.Audit on /storage/{storage})', 'add it as an NFS storage (pvesm add nfs), or name the '
                      'section after the PVE storage id')
            return None
        if entry.get('type') != 'nfs':
            self.fail(check, f'it is of type {entry.get("type")}, not NFS', 'only NFS storages on an ONTAP volume can be '
                      f'used: remove [{storage}] from {self.ctx.config.path}')
            return None
        found = (f'NFS {entry.get("server")}:{entry.get("export")}, enabled on {entry.get("nodes") or "every node"}'
                 + (f', options {entry["options"]}' if entry.get('options') else ''))
        if entry.get('disable'):
            self.warn(check, f'{found}, but disabled', f'pvesm set {storage} --disable 0')
        else:
            self.ok(check, found)
        return entry

    def check_volume_chains(self, storage, entry):
        """A storage whose qcow2 disks keep PVE snapshots as a volume chain (PVE 9, storage.cfg
        snapshot-as-volume-chain): vm create refuses a disk over such a chain (check_backings), so
        each VM with a qcow2 disk there and PVE snapshots (its config's `parent`) is named."""
        check = f'{storage} volume chains'
        if not entry.get('snapshot-as-volume-chain'):
            self.ok(check, 'off: PVE keeps qcow2 snapshots inside the file')
            return
        try:
            configs, _ = self.ctx.pve.guest_configs(self.ctx.pve.vms())
        except ProxmoxError as exc:
            self.warn(check, f'on, and the VMs with such disks not checked: {exc}', 'see the proxmox checks above')
            return
        chained = [f'VM {vmid} ({", ".join(disk.key for disk in disks)})' for vmid, config in sorted(configs.items())
                   if config.get('parent') and (disks := [disk for disk in Guest.vm_disks(config) if disk.storage == storage
                                                          and disk.path and disk.path.endswith('.qcow2')])]
        found = ('on: a PVE snapshot of a qcow2 disk there is a file of its own the disk stands on, which vm create '
                 'cannot keep with its clone, so it refuses such a disk' +
                 (f'; VMs with one now: {", ".join(chained)}' if chained else '; no VM has one now'))
        self.warn(check, found, 'keep PVE snapshots off VMs there (vm create takes their snapshots), or take storage '
                  'snapshots of them, which hold the whole chain')

    def check_volume(self, storage):
        """The storage's volume (found by the commands' own rule), what the REST role reaches, and
        the volume's health. True if it was found."""
        try:
            volume = self.ctx.volume(storage)
        except Failure as exc:
            self.fail(f'{storage} volume', str(exc), 'mount the volume at the export (volume mount), or correct the '
                      'export of the PVE storage, or svm in config.ini')
            return False
        svm = self.ctx.config.storages[storage].svm
        self.ok(f'{storage} volume', f'{volume.name} in SVM {volume.svm} on ONTAP {volume.ontap.host}, mounted at '
                f'{volume.junction}' + ('' if svm else f' (any SVM: svm = {volume.svm} in config.ini pins it)'))
        self.check_role(volume, storage)
        try:
            record = volume.health()
        except OntapError as exc:
            self.fail(f'{storage} volume health', str(exc), 'let the REST role read /api/storage/volumes')
        else:
            for check, status, found, fix in Doctor.volume_checks(record, volume.svm):
                self.add(f'{storage} {check}', status, found, fix)
        self.check_snapmirror(volume, storage, self.ctx.config.storages[storage])
        return True

    def check_leftovers(self, storage, clean):
        """The capture snapshots earlier runs of vm create left on the volume (busy after their
        clones, or of a run that died), once LEFTOVER_AGE old: named, and with -try (`clean`)
        deleted, under the volume's lock, as the next vm create would. Younger ones may be a run's
        under way: left alone."""
        check = f'{storage} leftover captures'
        volume = self.ctx.volume(storage)
        try:
            found = volume.snapshots('pve_ontap_*')
        except OntapError as exc:
            self.warn(check, f'not checked: {exc}', 'let the REST role read /api/storage/volumes')
            return
        captures = [record for record in found if record['name'].startswith(
            (Names.CAPTURE_PREFIX, Names.LEFTOVER_PREFIX))]
        old = [record for record in captures if not Volume.younger_than(record, Captures.LEFTOVER_AGE)]
        young = f'; {len(captures) - len(old)} younger, of a run under way' if len(captures) > len(old) else ''
        if not old:
            self.ok(check, f'none in volume {volume.name}{young}')
            return
        names = ', '.join(record['name'] for record in old)
        if not clean or self.ctx.dry_run:
            self.warn(check, f'{names} in volume {volume.name}, left by earlier runs of vm create{young}',
                      f'doctor -try -storage {storage} deletes them now, as the next vm create on the volume does')
            return
        try:
            with Locks.for_storages(self.ctx, [storage]) as locks:
                # As vm create's clean-up: a renamed one, or one a run noted in the lock record. Any
                # other may be a run's of another node that locked on its node only (-local-lock).
                noted = {name for lock in locks for name in lock.captures}
                doomed = [record for record in old if record['name'].startswith(Names.LEFTOVER_PREFIX)
                          or record['name'] in noted]
                left = Captures.delete_leftovers(self.ctx, storage, doomed)
        except Failure as exc:
            self.warn(check, f'{names} in volume {volume.name}, left by earlier runs; not deleted: {exc}',
                      'the next vm create on the volume deletes them')
            return
        unknown = [record['name'] for record in old if record not in doomed]
        deleted = [record['name'] for record in doomed if record['name'] not in left]
        found = (f'deleted {", ".join(deleted) or "none"} in volume {volume.name}'
                 + (f'; not {", ".join(left)} (see the warnings)' if left else '')
                 + (f'; left {", ".join(unknown)}: no run noted it' if unknown else '') + young)
        if left or unknown:
            self.warn(check, found, 'the next vm create on the volume tries again' if left else
                      'if no run of another node uses it (one with -local-lock), delete it: volume snapshot delete')
        else:
            self.ok(check, f'deleted {names} in volume {volume.name}, left by earlier runs{young}')

    def volume_lock_record(self, storage):
        """(the lock record of the volume behind `storage`, whether a run holds its lock now), where the
        run would take it: the cluster lock where it can be taken, else this node's lock file."""
        name = VolumeLock.file_name(*self.ctx.volume_identity(storage))
        try:
            Locks.check_cluster_usable()
        except ClusterLockUnavailable:
            path = os.path.join(Locks.node_dir(), name)
            if not os.path.isfile(path):
                return '', False
            with open(path, encoding='utf-8') as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return handle.read(), True
                return handle.read(), False
        text = PrivateFiles.read_text(os.path.join(Node.CLUSTER_DIR, Locks.CLUSTER_RECORD_DIR), name)
        lock = os.path.join(Node.CLUSTER_DIR, 'lock', Locks.CLUSTER_PREFIX + name)
        try:
            fresh = time.time() - os.stat(lock).st_mtime <= Locks.CLUSTER_EXPIRY
        except FileNotFoundError:
            return text, False
        return text, fresh and Holder.alive(text.partition('\n')[0], Holder.this_node()) is not False

    def check_left_guests(self, storage, clean):
        """The guests runs that died left paused, frozen, suspended or shut down, as the volume's lock
        record names them (VolumeLock): named, and with -try (`clean`) brought back, under the
        volume's lock, as the next run on them would (Guests.return_all_left)."""
        check = f'{storage} guests left held'
        text, live = self.volume_lock_record(storage)
        holder, entries = VolumeLock.parse_record(text)
        holds = VolumeLock.record_holds(entries)
        if not holds:
            self.ok(check, 'none: no run left a guest paused, frozen, suspended or shut down')
            return
        names = self.held_names(holds)
        if live:
            self.ok(check, f'{names} by a run under way ({Holder.describe(holder)})')
            return
        if not clean or self.ctx.dry_run:
            self.warn(check, f'{names} by a run that died ({Holder.describe(holder)})',
                      f'doctor -try -storage {storage} brings them back, as the next run on them does')
            return
        try:
            with Locks.for_storages(self.ctx, [storage]) as locks:
                found = Guests.return_all_left(self.ctx, locks, self.ctx.pve.guests())
        except Failure as exc:
            self.warn(check, f'{names} by a run that died; not brought back: {exc}', 'run doctor -try again')
            return
        failed = [f'{left}: {done}' for left, done in found if not isinstance(done, str)]
        phrases = [f'{left}: {done}' for left, done in found]
        if failed:
            self.warn(check, '; '.join(phrases), 'see what failed, and bring the guest back by hand (qm resume, '
                      'qm start, qm guest cmd VMID fsfreeze-thaw)')
        else:
            self.ok(check, '; '.join(phrases))

    def held_names(self, holds):
        """`VM 100 paused, CT 200 frozen` of the holds ({vmid: how}) of a lock record, each guest
        named by its kind as PVE lists it now (a VM, where PVE cannot be asked)."""
        try:
            guests = self.ctx.pve.guests()
        except Failure:
            guests = {}
        return ', '.join(f'{Guest.label(guests.get(vmid) or {"vmid": vmid})} {Guests.held_word(guests.get(vmid) or {}, how)}'
                         for vmid, how in sorted(holds.items()))

    def check_snapmirror(self, volume, storage, section):
        """The SnapMirror relationships whose source is the volume: one line each, with the labels
        its policy keeps on the destination and whether the section's snapmirror_label is one."""
        check = f'{storage} SnapMirror'
        try:
            relationships = volume.snapmirror_destinations()
        except OntapError as exc:
            self.warn(check, f'not checked: {exc}', Doctor.snapmirror_read_fix(exc))
            return
        if not relationships:
            self.ok(check, f'{volume.svm}:{volume.name} is the source of no SnapMirror relationship')
            return
        for relationship in relationships:
            destination = (relationship.get('destination') or {}).get('path') or 'an unnamed destination'
            policy = relationship.get('policy') or {}
            try:
                record = volume.ontap.snapmirror_policy(
                    policy['uuid'], policy.get('name')) if policy.get('uuid') else None
            except OntapError as exc:
                if exc.status != 404:
                    self.warn(f'{check} to {destination}', f'policy {policy.get("name")} not read: {exc}',
                              Doctor.snapmirror_read_fix(exc))
                    continue
                record = None   # the destination cluster's policy
            self.add(f'{check} to {destination}',
                     *Doctor.snapmirror_check(policy.get('name'), record, section.snapmirror_label, section.section))

    @staticmethod
    def snapmirror_read_fix(exc):
        """The fix of a refused or failed SnapMirror read: 403 is the REST role's "not authorized"."""
        if exc.status == 403:
            return 'let the REST role read /api/snapmirror (readonly): README, Least privilege'
        return 'run doctor again; if that stays, see the error'

    def check_role(self, volume, storage):
        """Whether the account's REST role reaches each endpoint the tool uses, read by a GET that
        returns no records. What it may change, only -try shows (a file clone and a delete)."""
        endpoints = (('volumes', '/api/storage/volumes'), ('snapshots', f'/api/storage/volumes/{volume.uuid}/snapshots'),
                     ('files', volume.files_url('images')), ('jobs', '/api/cluster/jobs'))
        refused, unchecked = [], []
        for label, path in endpoints:
            try:
                volume.ontap.count(path, f'read {label} (REST role check)')
            except OntapError as exc:
                # 403: "not authorized for that command" (code 6); 404: a volume without images/,
                # whose files API was reached all the same
                if exc.status == 403:
                    refused.append(f'{label} ({exc})')
                elif exc.status != 404:
                    unchecked.append(f'{label} ({exc})')
        if refused:
            self.fail(f'{storage} REST role', f'the account may not read {"; ".join(refused)}', 'give its REST role '
                      '/api/storage/volumes (all) and /api/cluster/jobs (readonly): README, Least privilege')
        elif unchecked:
            self.warn(f'{storage} REST role', f'not checked for {"; ".join(unchecked)}', 'run doctor again; if that '
                      'stays, see the error')
        else:
            self.ok(f'{storage} REST role', 'reads volumes, snapshots, files and jobs; what it may change, doctor -try '
                    'shows')

    def check_mount(self, storage, entry, node):
        """The storage's NFS mount on this node, from findmnt."""
        check = f'{storage} mount'
        if node is None:
            self.ok(check, 'not checked: this is no PVE node, or doctor does not run there as root')
            return
        try:
            path = StorageMount.mount_path(storage, entry)
        except Failure as exc:
            self.fail(check, str(exc), f'correct the path of storage {storage} (pvesm set)')
            return
        enabled_here = not entry.get('disable') and (not entry.get('nodes') or node in entry['nodes'].split(','))
        try:
            mount = Node.nfs_mount(path)
        except Failure as exc:
            self.warn(check, f'not checked: {exc}', 'install util-linux (findmnt)')
            return
        self.add(check, *Doctor.mount_check(mount, entry['server'], entry['export'], path, enabled_here))

    def try_storage(self, storage, release):
        """-try: write a small file (or take a disk image), file-clone it, read the clone back and
        delete what was made — also when a step failed. A change of unknown outcome is followed
        until it is known; what may still change is named and left alone."""
        check = f'{storage} -try'
        volume = self.ctx.volume(storage)
        base = f'pve-ontap-snapshot-doctor-{storage}-{Names.utc_stamp()}'
        if self.ctx.dry_run:
            self.ok(check, f'would write {base}, file-clone it to {base}.clone, read the clone back and delete both')
            return
        made = []
        with STOP.deferred():   # a stop waits until what was made is deleted again
            try:
                status, found, fix = self.try_clone(storage, volume, base, release, made)
            except Failure as exc:
                status, found, fix = 'fail', str(exc), 'see the checks of this storage above'
            finally:
                left = self.delete_made(storage, made)
        if left:
            status, found = 'fail', f'{found}; could not delete {left}'
            fix = f'delete them in volume {volume.name} by hand'
        elif made:
            found += f'; deleted the {len(made)} file(s) it made'
        self.add(check, status, found, fix)
        STOP.check(f'doctor -try deleted what it made on storage {storage} first')

    def try_clone(self, storage, volume, base, release, made):
        """-try's steps; each file made is added to `made` once it is known to exist. (status, found, fix)."""
        source, size, done = Doctor.try_source(volume, base, release, made)
        clone = f'{base}.clone'
        (outcome,) = Clones.settle(self.ctx, Clones.make(self.ctx, [(storage, source, clone)]))
        if outcome.state == 'unknown':
            kept = made + [clone]
            made.clear()     # the clone may still read or write them
            return ('fail', f'{done}; its file clone is of unknown outcome: {Outcome.pending_jobs([outcome])}',
                    f'once ONTAP has ended that job, delete {" and ".join(kept)} in volume {volume.name}')
        if outcome.state == 'failed':
            return ('fail', f'{done}; file-cloning it failed: {outcome.error}',
                    'check the FlexClone licence, the style of the volume, and /api/storage/file/clone in the REST role')
        made.append(clone)
        copied = volume.file_size(clone)
        if copied != size:
            return 'fail', f'{done}, cloned it to {clone}, but the clone reads back as {copied} bytes, not {size}', \
                'check the volume (a file clone must be an exact copy)'
        return 'ok', f'{done}, file-cloned it to {clone} and read the clone back', None

    @staticmethod
    def try_source(volume, base, release, made):
        """The file -try clones: (path, size, what was done). A small file written for it where the
        release has the files API's write (9.8+); else, or if the write is refused, a disk image."""
        refused = (f'ONTAP {".".join(map(str, release))} has no files-API write (9.8+); '
                   if release and release < (9, 8) else '')
        if not refused:
            data = f'pve-volume.ontap-snapshot doctor -try {base}\n'.encode()
            try:
                volume.write_file(base, data)
            except OutcomeUnknown as exc:
                size = volume.file_size(base)     # a write runs no job: the file tells
                if size is not None:
                    made.append(base)
                if size != len(data):
                    raise Failure(f'{exc}; {base} has {size} of its {len(data)} bytes') from exc
            except OntapError as exc:
                refused = f'writing a file was refused ({exc}); '
            else:
                made.append(base)
            if not refused:
                return base, len(data), f'wrote {base} ({len(data)} bytes)'
        image = volume.first_image()
        if image is None:
            raise Failure(f'{refused}no disk image under images/ to clone instead')
        return image, volume.file_size(image), f'{refused}took {image}'

    def delete_made(self, storage, made):
        """Delete the files -try made; one whose delete is of unknown outcome is read back. The paths
        left, with why, as a phrase ('' if none)."""
        volume = self.ctx.volume(storage)
        left = []
        for outcome in Clones.delete(self.ctx, [(storage, path) for path in made]):
            path = outcome.item[1]
            if outcome.state == 'unknown':
                try:
                    gone = functools.partial(lambda path: not volume.file_exists(path), path)
                    volume.ontap.settle(outcome.error, f'DELETE {volume.files_url(path)}', gone)
                    continue
                except Failure as exc:
                    outcome = Outcome(outcome.item, exc)
            if outcome.state != 'done':
                left.append(f'{path} ({outcome.error})')
        return ', '.join(left)

    def check_locks(self, config):
        """The cluster-wide lock: can it be taken here, and which of the tool's locks are held,
        by whom, or stale (not updated for longer than pmxcfs keeps a lock: its run died)."""
        try:
            Locks.check_cluster_usable()
        except ClusterLockUnavailable as exc:
            if config.local_lock:
                self.ok('cluster lock', f'{exc}: local_lock = yes, so runs lock on this node only')
            else:
                self.warn('cluster lock', f'{exc}: commands that change something refuse here',
                          'run them on a PVE node with quorum, or add -local-lock where no other node runs them')
            return
        directory = os.path.join(Node.CLUSTER_DIR, 'lock')
        held = sorted(name for name in os.listdir(directory) if name.startswith(Locks.CLUSTER_PREFIX))
        if not held:
            self.ok('cluster lock', f'{directory} takes locks; none of this tool\'s is held')
        for name in held:
            lock = os.path.join(directory, name)
            records = os.path.join(Node.CLUSTER_DIR, Locks.CLUSTER_RECORD_DIR)
            record = PrivateFiles.read_text(records, name.removeprefix(Locks.CLUSTER_PREFIX))
            line = record.partition('\n')[0]
            holder = Holder.describe(line)
            try:
                age = time.time() - os.stat(lock).st_mtime
            except FileNotFoundError:
                continue    # released meanwhile
            check = f'cluster lock {name.removeprefix(Locks.CLUSTER_PREFIX)}'
            if Holder.alive(line, Holder.this_node()) is False:
                self.warn(check, f'stale: its run died, on this node ({holder}); pmxcfs removes it {Locks.CLUSTER_EXPIRY} s '
                          'after its last update, when the next run asks',
                          'nothing to do: the next run that needs it waits for that, or fails saying so (-wait 130)')
            elif age > Locks.CLUSTER_EXPIRY:
                self.warn(check, f'stale, not updated for {age:.0f} s ({holder})',
                          'nothing to do: the next run that needs it asks pmxcfs to remove it; if that pid '
                          'still runs on that node, it hangs: look at it there')
            else:
                self.ok(check, f'held by {holder}')

    def check_lock_dir(self):
        """This node's lock directory (-local-lock): missing (made by the first run that needs it), or
        a real directory of the running user's that nobody else may write (checked_directory)."""
        directory = Locks.node_dir()
        try:
            info = os.lstat(directory)
        except FileNotFoundError:
            self.ok('lock directory', f'{directory} is not there yet: the first run that takes a lock on this node '
                    'makes it, mode 700')
            return
        problem = 'a link or no directory' if not stat.S_ISDIR(info.st_mode) else PrivateFiles.unsafe_owner(info)
        if problem:
            self.fail('lock directory', f'{directory} is {PrivateFiles.describe_owner(info)}: {problem}, so another user may have made '
                      'it to take over the files of this tool; every run that locks on this node refuses it',
                      f'rm -r {directory} (the next run makes it anew)')
        else:
            self.ok('lock directory', f'{directory}, {PrivateFiles.describe_owner(info)}')

    def check_manifest_key(self):
        """The key manifests are signed with (Manifest.key), on a node."""
        if not os.path.isdir(Node.CLUSTER_DIR):
            self.ok('manifest key', f'not on a PVE node (no {Node.CLUSTER_DIR}): manifests made here are not signed')
            return
        try:
            key = Manifest.key(create=False)
        except Failure as exc:
            self.fail('manifest key', str(exc), 'see the error')
            return
        path = os.path.join(Node.CLUSTER_DIR, Manifest.KEY_FILE)
        self.ok('manifest key', f'{path}: manifests are signed with it' if key else
                f'none in {path} yet: the first snapshot made on a node makes it')

    @staticmethod
    def unit_settings(text):
        """{key: [values]} of the [Service] section of a unit file or drop-in."""
        settings, section = {}, None
        for line in text.split('\n'):
            line = line.strip()
            if line.startswith('[') and line.endswith(']'):
                section = line[1:-1]
            elif section == 'Service' and '=' in line and not line.startswith(('#', ';')):
                key, _, value = line.partition('=')
                settings.setdefault(key.strip(), []).append(value.strip())
        return settings

    @staticmethod
    def weakened_settings(shipped, changes, whole):
        """'key=value' of each sandbox setting that `changes` ({key: [values]}, a drop-in's, or a
        `whole` copy's) sets otherwise than `shipped` (the package's unit) — or a whole copy leaves out."""
        return [f'{key}={" ".join(changes[key])}' if key in changes else f'no {key}' for key in Doctor.SANDBOX_SETTINGS
                if key in shipped and changes.get(key, None if whole else shipped[key]) != shipped[key]]

    def check_units(self):
        """Where the Debian package is installed: each drop-in or copy of its storage service that
        sets its sandbox otherwise than the package does (Doctor.SANDBOX_SETTINGS)."""
        shipped = next((os.path.join(d, Doctor.UNIT_NAME)
                       for d in Doctor.UNIT_DIRS if os.path.isfile(os.path.join(d, Doctor.UNIT_NAME))), None)
        if shipped is None:
            self.ok('service sandbox', 'the Debian package is not installed here: no units to check')
            return
        with open(shipped, encoding='utf-8') as file:
            vendor = Doctor.unit_settings(file.read())
        found = []
        for directory in Doctor.UNIT_OVERRIDE_DIRS:
            copies = [os.path.join(directory, Doctor.UNIT_NAME)]
            drop_ins = glob.glob(os.path.join(directory, 'pve-ontap-snapshot-storage@*.service.d', '*.conf'))
            for path in [copy for copy in copies if os.path.isfile(copy)] + sorted(drop_ins):
                with open(path, encoding='utf-8') as file:
                    found.append((path, Doctor.weakened_settings(
                        vendor, Doctor.unit_settings(file.read()), path in copies)))
        weaker = [f'{path}: {", ".join(changes)}' for path, changes in found if changes]
        if weaker:
            self.warn('service sandbox', f'set otherwise than the package ships it: {"; ".join(weaker)}',
                      'leave the sandbox settings to the package (a drop-in may add ReadWritePaths=): README, Security')
        else:
            self.ok('service sandbox', f'{shipped}, as the package ships it' +
                    (f', with {len(found)} drop-in(s) that leave its sandbox as it is' if found else ''))

    @staticmethod
    def systemd_units(text):
        """[{property: value}] of `systemctl show`'s output: one block of `Key=value` lines per
        unit, blocks parted by an empty line."""
        units = []
        for block in re.split(r'\n\s*\n', text.strip()):
            unit = dict(line.split('=', 1) for line in block.splitlines() if '=' in line)
            if unit:
                units.append(unit)
        return units

    @staticmethod
    def systemd_time(value):
        """Epoch seconds of a timestamp systemctl show prints under TZ=UTC, or None (empty: never)."""
        found = re.search(r'(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC', value or '')
        if not found:
            return None
        return datetime.datetime.strptime(found[1], '%Y-%m-%d %H:%M:%S').replace(tzinfo=datetime.UTC).timestamp()

    @staticmethod
    def when(seconds):
        """A time as the tool's stamps say it (UTC), or `never`."""
        if seconds is None:
            return 'never'
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(Names.STAMP_FORMAT)

    def systemctl(self, *arguments):
        """systemctl's answer (a CompletedProcess) under TZ=UTC, or None after a warning that says
        why the timers are not checked."""
        try:
            result = Node.run('systemctl', *arguments, env=dict(os.environ, TZ='UTC', LC_ALL='C.UTF-8'), timeout=60)
        except (Failure, subprocess.TimeoutExpired) as exc:
            self.warn('timers', f'not checked: {exc}', 'see systemctl status')
            return None
        if result.returncode:
            why = (result.stderr.strip().splitlines() or [f'exit {result.returncode}'])[0]
            self.warn('timers', f'not checked: {Node.PROGRAMS["systemctl"]} {arguments[0]} failed: {why}',
                      'see systemctl status')
            return None
        return result

    @staticmethod
    def storage_timer_check(storage, record, trigger, next_elapse):
        """(status, found, fix) of the timer of `storage`: its run record of `storage create`
        (RunRecords; None if it has none) against the timer's last trigger (epoch seconds, or None);
        `next_elapse`: when it fires next."""
        unit = f'pve-ontap-snapshot-storage@{storage}.service'
        fix = f'journalctl -u {unit} (a failed run also mails root)'
        success, failure = (record or {}).get('last_success'), (record or {}).get('last_failure')
        triggered = f'timer last triggered {Doctor.when(trigger)}, next {Doctor.when(next_elapse)}'

        def run(entry):
            return f'{Doctor.when(entry.get("ended"))} on node {entry.get("node")}'
        if failure and (not success or failure.get('ended', 0) > success.get('ended', 0)):
            since = f'; last succeeded {run(success)}' if success else '; it never succeeded'
            return 'warn', f'storage create failed {run(failure)}: {failure.get("message")}{since}; {triggered}', fix
        if not success:
            if trigger is None:
                return 'ok', f'no storage create of {storage} recorded yet; {triggered}', None
            return 'warn', f'{triggered}, but no storage create of {storage} is recorded to have ended', fix
        if trigger is not None and success.get('ended', 0) < trigger - Doctor.TIMER_SLACK:
            return 'warn', (f'storage create last succeeded {run(success)}, more than '
                            f'{Doctor.TIMER_SLACK // 3600} hours before the timer last triggered '
                            f'({Doctor.when(trigger)})'), fix
        return 'ok', f'storage create last succeeded {run(success)}; {triggered}', None

    def check_monitor_timer(self, unit):
        """The monitor's timer: the textfile directory its service writes to (from systemd's view
        of its environment, drop-ins and all), and whether it is there (else the service is skipped)."""
        result = self.systemctl('show', '--property=Environment', '--', Doctor.MONITOR_SERVICE)
        if result is None:
            return
        # Environment= as show prints it: `KEY=value` words, one quoted where it holds a blank.
        environment = (Doctor.systemd_units(result.stdout) or [{}])[0].get('Environment', '')
        found = re.search(r'(?:^|\s)(?:"TEXTFILE=((?:[^"\\]|\\.)*)"|TEXTFILE=((?:[^\s\\]|\\.)*))', environment)
        directory = found and re.sub(r'\\(.)', r'\1', found[1] if found[1] is not None else found[2])
        check = f'timer {unit["Id"]}'
        triggered = f'last triggered {Doctor.when(Doctor.systemd_time(unit.get("LastTriggerUSec")))}'
        if not directory:
            self.warn(check, f'enabled, but its service sets no TEXTFILE ({triggered})',
                      f'systemctl cat {Doctor.MONITOR_SERVICE}: leave Environment=TEXTFILE= to the package or a '
                      'drop-in')
        elif not os.path.isdir(directory):
            self.warn(check, f'enabled, but its textfile directory {directory} is missing, so its service is skipped '
                      f'({triggered})', 'apt install prometheus-node-exporter, or set another TEXTFILE in a drop-in '
                      '(README, Scheduled snapshots)')
        else:
            self.ok(check, f'writes monitor\'s metrics to {directory} every hour; {triggered}')

    def check_timers(self):
        """Each of the package's timers enabled on this node (systemd asked, Doctor.TIMERS): a
        storage's, with when storage create of it last succeeded or failed (its run record); the
        monitor's, with its textfile directory. Without systemd (off a node, in a container, in
        tests) one line says they were not checked."""
        if not os.path.isdir(Doctor.SYSTEMD_DIR):
            self.ok('timers', f'not checked: systemd is not the init system here (no {Doctor.SYSTEMD_DIR})')
            return
        if not os.access(Node.PROGRAMS['systemctl'], os.X_OK):
            self.ok('timers', f'not checked: no {Node.PROGRAMS["systemctl"]} here')
            return
        result = self.systemctl('show', '--all', f'--property={Doctor.TIMER_PROPERTIES}', '--', Doctor.TIMERS)
        if result is None:
            return
        enabled = [unit for unit in Doctor.systemd_units(result.stdout)
                   if unit.get('Id') and unit.get('UnitFileState') in ('enabled', 'enabled-runtime')]
        if not enabled:
            self.ok('timers', f'none of {Doctor.TIMERS} is enabled on this node: nothing is scheduled here '
                    '(README, Scheduled snapshots)')
            return
        records = {(record.get('command'), record.get('subject')): record for record in RunRecords.read_all()}
        for unit in sorted(enabled, key=lambda unit: unit['Id']):
            storage = Doctor.STORAGE_TIMER.match(unit['Id'])
            if unit['Id'] == Doctor.MONITOR_TIMER:
                self.check_monitor_timer(unit)
            elif storage:
                self.add(f'timer {unit["Id"]}', *Doctor.storage_timer_check(
                    storage['storage'], records.get(('storage create', storage['storage'])),
                    Doctor.systemd_time(unit.get('LastTriggerUSec')),
                    Doctor.systemd_time(unit.get('NextElapseUSecRealtime'))))
            else:
                self.ok(f'timer {unit["Id"]}', 'enabled, not one of the package\'s: last triggered '
                        f'{Doctor.when(Doctor.systemd_time(unit.get("LastTriggerUSec")))}')

    def run(self, args):
        """doctor reads config.ini itself (each problem in it is one of its checks), then checks PVE,
        each ONTAP cluster and each storage it serves, in that order."""
        config = self.check_config(args.config)
        if config is not None:
            self.ctx = Context(config, output=args.output, dry_run=args.dry_run, wait=args.wait, local_lock=args.local_lock,
                               command='doctor -try')
            storages = self.check_scope(config, args.storage)
            pve_reached = self.check_pve(storages)
            self.check_locks(config)
            self.check_lock_dir()
            self.check_manifest_key()
            self.check_units()
            self.check_timers()
            node = Node.name()
            clusters = {}
            for storage in storages:
                clusters.setdefault((config.storages[storage].host, config.storages[storage].user), []).append(storage)
            for members in clusters.values():
                cluster_reached, release = self.check_cluster(self.ctx.ontap(members[0]), config.storages[members[0]])
                for storage in members:
                    self.check_storage(storage, pve_reached, cluster_reached, release, args.try_clone, node)
        self.close()

    @staticmethod
    def command(args):
        """doctor reads config.ini itself (each problem in it is one of its checks), then checks PVE,
        each ONTAP cluster and each storage it serves, in that order."""
        Doctor(args.output).run(args)

# ---- 11. CLI ---------------------------------------------------------------------------------
# The original's single-dash options stay primary; each is also spelled with two dashes.

LOG_LEVELS = {'debug': logging.DEBUG, 'info': logging.INFO, 'warn': logging.WARNING,
              'warning': logging.WARNING, 'error': logging.ERROR}


class CommandLine(argparse.ArgumentParser):
    """argparse as the original's single-dash options need it: every option is spelt in full,
    and one that takes a value is given once (argparse alone would silently keep the last)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register('action', None, StoreOnce)
        self.register('action', 'store', StoreOnce)

    def parse_known_args(self, args=None, namespace=None):
        self.words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, Options() if namespace is None else namespace)

    def error(self, message):
        """argparse's error, but where a value begins with '-' (-min-age -1h), argparse takes it for
        an option and says only "expected one argument": the value's own fault is said instead."""
        found = re.match(r'argument (\S+?)(?:/\S+)?: expected one argument$', message)
        action = self._option_string_actions.get(found[1]) if found else None
        if action is not None and found[1] in self.words[:-1]:
            value = self.words[self.words.index(found[1]) + 1]
            try:
                (action.type or str)(value)
                why = f'{value!r}: a value cannot begin with "-"'
            except (argparse.ArgumentTypeError, ValueError) as exc:
                why = str(exc)
            message = f'argument {"/".join(action.option_strings)}: {why}'
        super().error(message)

    def _get_option_tuples(self, option_string):
        # Python 3.11, 3.12 and 3.13 match prefixes of single-dash long options (-f for
        # -force, -dry for -dry-run) even with allow_abbrev=False; later 3.12/3.13 releases
        # honour it there too (python/cpython#104860). No prefix matches, on every version.
        return []


class Options(argparse.Namespace):
    """The parsed command line; `given` maps each value option given to its action.
    argparse parses what follows a command into a namespace of its own and then copies it
    in here (_SubParsersAction, 3.11 to 3.14): a global option given both before and after
    the command meets itself only in that copy."""

    def __setattr__(self, name, value):
        if name == 'given' and 'given' in vars(self):
            for dest in vars(self)['given'].keys() & value.keys():
                raise argparse.ArgumentError(value[dest], 'given before and after the command: give it once')
            value = {**vars(self)['given'], **value}
        super().__setattr__(name, value)


class StoreOnce(argparse.Action):
    """The action of every option that takes a value: a second one is a usage error."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = vars(namespace).setdefault('given', {})
        if self.dest in given:
            raise argparse.ArgumentError(self, 'given twice: give it once')
        given[self.dest] = self
        setattr(namespace, self.dest, values)


class Arg:
    """The command line's value types (each a usage error naming what is wrong) and the options
    several commands share."""

    DURATION_UNITS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 604800}

    @staticmethod
    def parse_duration(text):
        """`90s`, `30m`, `1h`, `2d`, `1w` (or plain seconds) as seconds; None if it is none."""
        found = re.fullmatch(r'([0-9]+)([smhdw]?)', text)
        return int(found[1]) * Arg.DURATION_UNITS[found[2] or 's'] if found else None

    @staticmethod
    def vm_id(text):
        """argparse type for a VM id: PVE allows 100 to 999999999."""
        if not re.fullmatch(r'[0-9]+', text) or not 100 <= int(text) <= 999999999:
            raise argparse.ArgumentTypeError(f'{text!r} is no VM id (a number from 100 to 999999999)')
        return int(text)

    @staticmethod
    def snapshot_name(text):
        if not text or '/' in text or text in ('.', '..'):
            raise argparse.ArgumentTypeError(f'{text!r} is no snapshot name')
        return text

    @staticmethod
    def config_key(text):
        """argparse type for -allow-key: a config key as PVE names them (net0, args, hookscript)."""
        if not re.fullmatch(r'[a-z][a-z0-9_-]*', text):
            raise argparse.ArgumentTypeError(f'{text!r} is no config key (like args or hostpci0)')
        return text

    @staticmethod
    def snapshot_stamp(text):
        if not re.fullmatch(Names.STAMP_PATTERN, text, re.ASCII):
            raise argparse.ArgumentTypeError(f'{text!r} is no VM snapshot stamp (like 2024-03-13_14:42:47+0000; '
                                             'see vm list)')
        return text

    @staticmethod
    def seconds(text):
        """argparse type for seconds: ASCII digits with an optional fraction (float() would also
        take inf, nan, 1e3 and other scripts' digits)."""
        if not re.fullmatch(r'[0-9]+(\.[0-9]*)?|\.[0-9]+', text) or not math.isfinite(float(text)):
            raise argparse.ArgumentTypeError(f'{text!r} is no number of seconds (like 600 or 0.5)')
        return float(text)

    CONFIG_OWN_SECTIONS = {ConfigFile.PROXMOX_SECTION: 'the PVE API login', ConfigFile.DEFAULTS_SECTION: 'timeouts'}

    @staticmethod
    def storage_name(text):
        """argparse type for -storage: any PVE storage id but the names of config.ini's own
        sections, whose [section] can never describe a storage."""
        if text in Arg.CONFIG_OWN_SECTIONS:
            raise argparse.ArgumentTypeError(f'{text!r} is no storage: [{text}] in config.ini holds '
                                             f'{Arg.CONFIG_OWN_SECTIONS[text]}, not the ONTAP cluster of a storage')
        return text

    @staticmethod
    def snapmirror_label(text):
        """argparse type for -label (and snapmirror_label in config.ini): SNAPMIRROR_LABEL."""
        if not ConfigFile.SNAPMIRROR_LABEL.fullmatch(text):
            raise argparse.ArgumentTypeError(f'{text!r} is no snapmirror label (1 to 31 characters, no blanks)')
        return text

    @staticmethod
    def duration(text):
        """argparse type for -min-age: checked here, read by parse_duration where it is used."""
        if Arg.parse_duration(text) is None:
            raise argparse.ArgumentTypeError(f'{text!r} is no duration (like 90s, 30m, 1h, 2d, 1w)')
        return text

    @staticmethod
    def storage_id(text):
        """argparse type for a new PVE storage id: a letter first, then letters, digits, - _ ."""
        if not re.fullmatch(r'[A-Za-z][A-Za-z0-9._-]*[A-Za-z0-9]', text):
            raise argparse.ArgumentTypeError(f'{text!r} is no PVE storage id (a letter, then letters, digits, '
                                             '"-", "_" or ".")')
        return Arg.storage_name(text)

    @staticmethod
    def keep_count(text):
        if not re.fullmatch(r'[0-9]+', text) or int(text) < 1:
            raise argparse.ArgumentTypeError(f'{text!r}: -keep takes a whole number from 1')
        return int(text)

    @staticmethod
    def parallel_count(text):
        if not re.fullmatch(r'[0-9]+', text) or not 1 <= int(text) <= Parallel.MOST_VMS_AT_ONCE:
            raise argparse.ArgumentTypeError(
                f'{text!r}: -parallel takes a whole number from 1 to {Parallel.MOST_VMS_AT_ONCE}')
        return int(text)

    @staticmethod
    def add_global(parser, suppress=False):
        """-config/-loglevel/-output, accepted before and after the command."""
        def default(value):
            return argparse.SUPPRESS if suppress else value
        parser.add_argument('-config', '--config', metavar='FILE', default=default(None),
                            help='config file (default: ./config.ini, else /etc/pve-ontap-snapshot/config.ini)'
                            ).completer = complete_files
        parser.add_argument('-loglevel', '--loglevel', choices=sorted(LOG_LEVELS), default=default('info'),
                            help='log level on stderr (default: info); debug logs every HTTP request and tracebacks')
        parser.add_argument('-output', '--output', choices=('text', 'json'), default=default('text'),
                            help='format of list, show, verify and doctor results on stdout (default: text)')
        parser.add_argument('-dry-run', '--dry-run', action='store_true', default=default(False),
                            help='print what would change, in plain words, and change nothing')
        parser.add_argument('-wait', '--wait', type=Arg.seconds, metavar='SECONDS', default=default(0),
                            help='wait up to this long for another run working on the same storage '
                                 '(default: 0, fail at once naming its pid)')
        parser.add_argument('-local-lock', '--local-lock', action='store_true', default=default(False),
                            help="where the cluster-wide lock cannot be taken (off a PVE node, no quorum), lock on "
                                 "this node only: safe only while no run on another node can touch these storages")

    @staticmethod
    def add_storage(parser, help_text='PVE storage id (a section of config.ini)'):
        parser.add_argument('-storage', '--storage', required=True, type=Arg.storage_name, metavar='ID',
                            help=help_text).completer = complete_storage

    @staticmethod
    def add_vm(parser, kind=None):
        """-vm ID, or -ct ID for the ct commands (`kind` Kind.CT): the guest's id, args.vm either way."""
        kind = kind or Kind.VM
        parser.add_argument(kind.option, '-' + kind.option, dest='vm', required=True, type=Arg.vm_id, metavar='ID',
                            help=f'the {kind.word} id')

    @staticmethod
    def add_textfile(parser, what):
        parser.add_argument('-textfile', '--textfile', metavar='DIR',
                            help=f"write to DIR, for node_exporter's textfile collector, {what}"
                            ).completer = complete_files

    @staticmethod
    def add_keep(parser, what):
        parser.add_argument('-keep', '--keep', type=Arg.keep_count, metavar='N',
                            help=f'after a successful create, delete the oldest {what} beyond the newest N')


@functools.cache
def tool_version():
    """The version, written in one place, pyproject.toml: read there beside this file (a clone,
    `pip install -e`), else from the installed package's metadata (pip, pipx, and the Debian
    package, whose build writes it from pyproject.toml)."""
    # Imported here: only -version and vm create's manifests need them, never a <TAB>.
    import importlib.metadata
    import tomllib
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pyproject.toml'), 'rb') as file:
            project = tomllib.load(file).get('project', {})
        if project.get('name') == 'pve-ontap-snapshot' and 'version' in project:
            return project['version']
    except (OSError, tomllib.TOMLDecodeError):
        pass
    try:
        return importlib.metadata.version('pve-ontap-snapshot')
    except importlib.metadata.PackageNotFoundError:
        return 'unknown (no pyproject.toml beside it, not installed as a package)'


class ShowVersion(argparse.Action):
    """-version: print `pve-ontap-snapshot X` to stdout and exit 0, looking X up only then."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f'{parser.prog} {tool_version()}')
        parser.exit()


def complete_storage(prefix, parsed_args, **kwargs):
    """-storage completes from the config's sections (no network)."""
    try:
        path = ConfigFile.find(getattr(parsed_args, 'config', None))
        text, info = ConfigFile.load(path)
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(text)
    except (Failure, configparser.Error):
        return []
    if ConfigFile.risk(path, info):
        return []
    sections = [s for s in parser.sections() if s not in (ConfigFile.PROXMOX_SECTION, ConfigFile.DEFAULTS_SECTION)]
    return [s for s in sections + [Names.clone_storage_id(s) for s in sections] if s.startswith(prefix)]


def complete_nothing(**kwargs):
    """The default completer: VM ids, snapshot names and numbers are known only to the
    servers, so no guesses (and no file names, argcomplete's own default)."""
    return []


def complete_files(prefix, **kwargs):
    """-config completes file names."""
    return [path + ('/' if os.path.isdir(path) else '') for path in glob.glob(os.path.expanduser(prefix) + '*')]


def add_guest_commands(contexts, leaf, kind):
    """The `vm` tree, or (Kind.CT) the `ct` tree: the same commands and options for either kind of
    guest, where a container allows them (a CT has no guest agent, and PVE's suspend of a CT is
    an experimental CRIU checkpoint: no -freeze, no -suspend)."""
    w, tree, option = kind.word, kind.tree, kind.option
    first, second = (100, 101) if kind == Kind.VM else (200, 201)
    stamp = '2024-03-13_14:42:47+0000'
    group = contexts.add_parser(tree, help=f'{w} snapshots as ONTAP file clones', allow_abbrev=False)
    group.set_defaults(kind=kind)
    verbs = ('create', 'list', 'delete', 'hold', 'release', 'restore', 'verify')
    commands = group.add_subparsers(dest='command', metavar='{' + ','.join(verbs) + '}', required=True)
    examples = ([f'vm create -vm {first}', f'vm create -vm {first} -pause -keep 7', f'vm create -vm {first} {second} -suspend',
                 'vm create -all -freeze'] if kind == Kind.VM else
                [f'ct create -ct {first}', f'ct create -ct {first} -pause -keep 7', f'ct create -ct {first} {second} -shutdown',
                 'ct create -all -node-local -pause'])
    create = leaf(commands, 'create', VmCreate.command, f'file-clone every disk of {w}s on their ONTAP storage',
                  examples)
    which = create.add_mutually_exclusive_group(required=True)
    which.add_argument(option, '-' + option, dest='vm', action='extend', nargs='+', type=Arg.vm_id, metavar='ID',
                       help=f'{w} id(s), also as {option} {first} {option} {second}; one failing {w} does not stop '
                            'the others')
    which.add_argument('-all', '--all', action='store_true',
                       help=f'every {w} with a disk on a storage of config.ini')
    create.add_argument('-node-local', '--node-local', action='store_true',
                        help=f'with -all: only the {w}s of the PVE node this runs on, so that one timer on every '
                             'node makes each node snapshot its own (a node without any is no error)')
    power = create.add_mutually_exclusive_group()
    if kind == Kind.VM:
        power.add_argument('-suspend', '--suspend', action='store_true',
                           help='suspend a running VM to disk while its disks are captured, then start it again')
    power.add_argument('-shutdown', '--shutdown', action='store_true',
                       help=f'shut a running {w} down while its disks are captured, then start it again')
    if kind == Kind.VM:
        power.add_argument('-freeze', '--freeze', action='store_true',
                           help="freeze the guest's file systems (QEMU guest agent) while its disks are captured; "
                                'thawed after at most freeze_timeout seconds (default 10)')
        power.add_argument('-pause', '--pause', action='store_true',
                           help='pause a running VM in memory (no hibernation) while its disks are captured, then '
                                'resume it: every disk at one instant; at most freeze_timeout seconds (default 10)')
    else:
        # No -suspend: PVE's suspend of a CT is lxc-checkpoint, a CRIU dump to disk, "experimental"
        # (pve-container src/PVE/API2/LXC/Status.pm, vm_suspend); no -freeze: a CT has no guest agent.
        power.add_argument('-pause', '--pause', action='store_true',
                           help="freeze a running CT with its cgroup freezer, as PVE does for its own snapshots, "
                                'its file systems synced, while its disks are captured, then thaw it: every disk at '
                                'one instant; at most freeze_timeout seconds (default 10). Only on the node that '
                                'runs the CT, as root (-all -node-local -pause on each node covers a cluster); a CT '
                                'frozen before stays frozen. (No -suspend: for a CT that is a CRIU checkpoint, '
                                'experimental in PVE; no -freeze: a CT has no guest agent.)')
    Arg.add_keep(create, f"of the {w}'s snapshots")
    create.add_argument('-no-register', '--no-register', dest='register', action='store_false',
                        help=f'do not add the clones to the {w} config as unused disks')
    create.add_argument('-parallel', '--parallel', type=Arg.parallel_count, metavar='N', default=Parallel.VMS_AT_ONCE,
                        help=f'work on up to N {w}s at once (default {Parallel.VMS_AT_ONCE}, at most '
                             f'{Parallel.MOST_VMS_AT_ONCE}; 1: one after another); a node suspends or shuts down at '
                             f'most {Parallel.POWER_CYCLES_PER_NODE} of them at once')

    listing = leaf(commands, 'list', VmList.command, f"list a {w}'s snapshots (and pre-restore undo points)",
                   [f'{tree} list {option} {first}', f'{tree} list {option} {first} -output json'])
    Arg.add_vm(listing, kind)
    delete = leaf(commands, 'delete', VmDelete.command, f'delete a {w} snapshot (every file of it)',
                  [f'{tree} delete {option} {first} -snapshot {stamp}'])
    hold = leaf(commands, 'hold', VmHold.hold,
                f'hold a {w} snapshot, as zfs hold: -keep never counts or deletes it, {tree} delete refuses it '
                'without -force', [f'{tree} hold {option} {first} -snapshot {stamp}',
                                   f"{tree} hold {option} {first} -snapshot {stamp} -reason 'before the upgrade'"])
    release = leaf(commands, 'release', VmHold.release, f'release a held {w} snapshot ({tree} hold)',
                   [f'{tree} release {option} {first} -snapshot {stamp}'])
    for sub in (delete, hold, release):
        Arg.add_vm(sub, kind)
        sub.add_argument('-snapshot', '--snapshot', required=True, type=Arg.snapshot_stamp, metavar='STAMP',
                         help=f'the snapshot, as {tree} list shows it')
    delete.add_argument('-force', '--force', action='store_true',
                        help=f'delete it even if it is held ({tree} hold)')
    hold.add_argument('-reason', '--reason', metavar='TEXT',
                      help=f'why it is held, kept in the hold and shown by {tree} list (default: none)')
    add_restore(commands, leaf, kind)
    verify = leaf(commands, 'verify', VmVerify.command,
                  f"prove a {w}'s snapshots restorable without restoring them: every file there with the size its "
                  'manifest records, each qcow2 backing file within reach, the manifest passing its check; '
                  'reads metadata and qcow2 headers only, changes nothing',
                  [f'{tree} verify {option} {first}', f'{tree} verify {option} {first} -snapshot {stamp}',
                   f'-output json {tree} verify -all'])
    which = verify.add_mutually_exclusive_group(required=True)
    which.add_argument(option, '-' + option, dest='vm', type=Arg.vm_id, metavar='ID', help=f'the {w} id')
    which.add_argument('-all', '--all', action='store_true',
                       help=f'every {w} with a disk on a storage of config.ini')
    verify.add_argument('-snapshot', '--snapshot', type=Arg.snapshot_stamp, metavar='STAMP',
                        help=f'only this snapshot, as {tree} list shows it (default: every snapshot of the {w}, '
                             'pre-restore ones too)')


def add_restore(commands, leaf, kind):
    """vm restore, or (Kind.CT) ct restore: its options. A CT's puts back, or copies to a new CT, only
    what an ordinary user may set (RestoreRules: no -allow-key, no -no-saved-config)."""
    w, tree, option = kind.word, kind.tree, kind.option
    stamp, first = '2024-03-13_14:42:47+0000', 100 if kind == Kind.VM else 200
    examples = [f'{tree} restore {option} {first} -snapshot {stamp}',
                f'{tree} restore {option} {first} -snapshot {stamp} -with-config -shutdown',
                f'{tree} restore {option} {first} -storage-snapshot proxmox_snapshot_{stamp} -shutdown -yes']
    restore = leaf(commands, 'restore', VmRestore.command,
                   f"put a {w}'s disks (and -with-config its config) back to a {w} snapshot or to a storage snapshot "
                   f'(only this {w} changes), or make a new {w} from one (-as-new)',
                   examples + [f'{tree} restore {option} {first} -snapshot {stamp} -as-new {first + 100}'])
    Arg.add_vm(restore, kind)
    source = restore.add_mutually_exclusive_group(required=True)
    source.add_argument('-snapshot', '--snapshot', type=Arg.snapshot_stamp, metavar='STAMP',
                        help=f'a {w} snapshot, as {tree} list shows it')
    source.add_argument('-storage-snapshot', '--storage-snapshot', type=Arg.snapshot_name, metavar='NAME',
                        help='a storage snapshot (storage list): each disk as it was in it')
    restore.add_argument('-shutdown', '--shutdown', action='store_true',
                         help=f'shut a running {w} down for the restore, then start it again')
    restore.add_argument('-yes', '--yes', action='store_true',
                         help='do not ask for confirmation (required without a terminal)')
    restore.add_argument('-with-config', '--with-config', action='store_true',
                         help=f"put the {w}'s config back as the snapshot saved it, too (disks it lacks are kept as "
                              'unused disks); without it the config stays, and how it differs is shown' +
                              ('' if kind == Kind.VM else '; only what an ordinary user may set: never lxc.* keys, '
                               'a hookscript, a bind or device mount, a device, or a feature but nesting'))
    if kind == Kind.CT:
        restore.add_argument('-as-new', '--as-new', type=Arg.vm_id, metavar='NEWID',
                             help='make a new, stopped CT NEWID from the snapshot instead: copies of its disks, its '
                                  'saved config with new MAC addresses (an unprivileged CT stays so, its files '
                                  'keeping their id mapping), only what an ordinary user may set; written into '
                                  "pmxcfs on this node, so only on a PVE node as root; -ct names the CT it was made "
                                  'of, which may no longer exist; that CT is not touched')
        return
    restore.add_argument('-as-new', '--as-new', type=Arg.vm_id, metavar='NEWID',
                         help='make a new, stopped VM NEWID from the snapshot instead: copies of its disks, its '
                              'saved config with new MAC addresses, vmgenid and SMBIOS uuid; -vm names the VM it '
                              'was made of, which may no longer exist; that VM is not touched')
    restore.add_argument('-allow-key', '--allow-key', action='append', type=Arg.config_key, metavar='KEY',
                         help='put back (or with -as-new copy) the setting KEY of the saved config even where only '
                              'root@pam may set it (args, hookscript, a host device, ...) or this tool does not know '
                              'it: by default such settings stay as they are, as the plan shows, for the datastore '
                              'that holds the saved config may be written by others (README, Security); each is '
                              'shown before the question; give it once per key')
    restore.add_argument('-no-saved-config', '--no-saved-config', action='store_true',
                         help='with -as-new: where the saved config cannot be read or fails its signature check, '
                              'give the new VM the current config of the VM instead of refusing')


def build_parser():
    parser = CommandLine(prog='pve-ontap-snapshot', description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    Arg.add_global(parser)
    parser.add_argument('-version', '--version', action=ShowVersion, help='print the version and exit')
    common = CommandLine(add_help=False, allow_abbrev=False)
    Arg.add_global(common, suppress=True)
    contexts = parser.add_subparsers(dest='context', metavar='{vm,ct,storage,monitor,doctor}', required=True)
    parser.set_defaults(reads_own_config=False)

    def leaf(group, name, func, help_text, examples):
        sub = group.add_parser(name, help=help_text, description=help_text, parents=[common], allow_abbrev=False,
                               epilog='examples:\n' + '\n'.join(f'  pve-ontap-snapshot {e}' for e in examples),
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func)
        if sub.prog.split(' ', 1)[1] in RunRecords.COMMANDS:
            Arg.add_textfile(sub, 'at its end, failed or not, how each command that changes something last ended '
                                  f'({Metrics.RUNS_FILE})')
        return sub

    add_guest_commands(contexts, leaf, Kind.VM)
    add_guest_commands(contexts, leaf, Kind.CT)

    storage = contexts.add_parser('storage', help='ONTAP volume snapshots of a PVE storage', allow_abbrev=False)
    storage_commands = storage.add_subparsers(
        dest='command', metavar='{create,list,show,delete,hold,release,restore,mount,unmount,verify}',
        required=True)
    example = 'proxmox_snapshot_2024-03-13_14:42:47+0000'
    for name, func, help_text, examples, takes_snapshot in (
            ('create', StorageCreate.command, 'snapshot the volume behind a storage',
             ['storage create -storage ONTAP01', 'storage create -storage ONTAP01 -keep 7',
              'storage create -storage ONTAP01 -freeze'], False),
            ('list', StorageView.list, "list the tool's snapshots of a storage, oldest first",
             ['storage list -storage ONTAP01'], False),
            ('show', StorageView.show,
             'show the metadata of the volume behind a storage, or (-snapshot) the guests a snapshot holds',
             ['storage show -storage ONTAP01', f'storage show -storage ONTAP01 -snapshot {example}'], False),
            ('delete', StorageView.delete, 'delete a snapshot',
             [f'storage delete -storage ONTAP01 -snapshot {example}'], True),
            ('hold', StorageHold.hold,
             ('hold a snapshot, as zfs hold: storage create -keep and -min-age pass it over, storage delete '
              'refuses it without -force'), [f'storage hold -storage ONTAP01 -snapshot {example}'], True),
            ('release', StorageHold.release, 'release a held snapshot (storage hold)',
             [f'storage release -storage ONTAP01 -snapshot {example}'], True),
            ('restore', StorageRestore.command,
             'revert the whole volume to a snapshot: every VM on the storage loses all changes since',
             [f'storage restore -storage ONTAP01 -snapshot {example}',
              f'-dry-run storage restore -storage ONTAP01 -snapshot {example}'], True),
            ('mount', StorageMount.mount, 'add a FlexClone of a snapshot to PVE as storage <ID>-CLONE',
             [f'storage mount -storage ONTAP01 -snapshot {example}',
              f'storage mount -storage ONTAP01 -snapshot {example} -name ONTAP01-MARCH'], True)):
        sub = leaf(storage_commands, name, func, help_text, examples)
        Arg.add_storage(sub)
        if takes_snapshot:
            sub.add_argument('-snapshot', '--snapshot', required=True, metavar='NAME', type=Arg.snapshot_name,
                             help=f'the snapshot, e.g. {example}')
        if name == 'show':
            sub.add_argument('-snapshot', '--snapshot', metavar='NAME', type=Arg.snapshot_name,
                             help='a snapshot: show it, and each guest it holds (its name, node, how consistent, '
                                  'its disks there) as recorded when it was taken')
        if name == 'create':
            Arg.add_keep(sub, 'proxmox_snapshot_* snapshots with the same label (never one a FlexClone uses)')
            sub.add_argument('-label', '--label', type=Arg.snapmirror_label, metavar='NAME',
                             help="ONTAP's snapmirror_label for the snapshot, so that a vault policy keeps it on "
                                  "the destination (default: the section's snapmirror_label, else none); -keep "
                                  'and -min-age count only snapshots with the same label')
            sub.add_argument('-min-age', '--min-age', type=Arg.duration, metavar='DURATION',
                             help='take no snapshot (and succeed) if one with the same label is younger than '
                                  'this: 90s, 30m, 1h, 2d, 1w; so one timer on every node makes one snapshot')
            hold = sub.add_mutually_exclusive_group()
            hold.add_argument('-freeze', '--freeze', action='store_true',
                              help="freeze the file systems of every running VM with a disk on the storage through "
                                   'its guest agent for the snapshot, and thaw them after at most freeze_timeout '
                                   'seconds (default 10); VMs without an agent stay crash-consistent')
            hold.add_argument('-pause', '--pause', action='store_true',
                              help='as -freeze, and pause in memory (no hibernation) every running VM on the '
                                   'storage that cannot be frozen, resumed after at most freeze_timeout seconds')
        if name == 'delete':
            sub.add_argument('-force', '--force', action='store_true', help='delete it even if it is held (storage hold)')
        if name == 'restore':
            sub.add_argument('-force', '--force', action='store_true',
                             help='revert even while guests with disks on the storage run, are hibernated or '
                                  'locked (a backup, migration, ...), or while a node that is down keeps them from '
                                  'being checked')
            sub.add_argument('-yes', '--yes', action='store_true',
                             help='do not ask for confirmation (required without a terminal)')
        if name == 'mount':
            sub.add_argument('-name', '--name', type=Arg.storage_id, metavar='ID',
                             help='PVE storage id of the mount (default: <ID>-CLONE, FlexClone <volume>_clone; '
                                  'otherwise FlexClone <volume>_clone_<name>), so several snapshots can be '
                                  'mounted at once')
    unmount = leaf(storage_commands, 'unmount', StorageMount.unmount,
                   'remove a mounted clone storage and its FlexClone (not the snapshot)',
                   ['storage unmount -storage ONTAP01-CLONE', 'storage unmount -storage ONTAP01-MARCH'])
    Arg.add_storage(unmount, 'the clone storage, e.g. ONTAP01-CLONE')
    unmount.add_argument('-force', '--force', action='store_true',
                         help='remove it even while guests have disks on it, or a node that is down keeps them '
                              'from being checked')

    verify = leaf(storage_commands, 'verify', StorageVerify.command,
                  "prove a storage's snapshots restorable without restoring them: each there, its record and "
                  "every guest's manifest passing their checks, each recorded disk in it with its size; reads "
                  'metadata and qcow2 headers only, changes nothing',
                  ['storage verify -storage ONTAP01', f'storage verify -storage ONTAP01 -snapshot {example}',
                   'storage verify -all'])
    which = verify.add_mutually_exclusive_group(required=True)
    which.add_argument('-storage', '--storage', type=Arg.storage_name, metavar='ID',
                       help='PVE storage id (a section of config.ini)').completer = complete_storage
    which.add_argument('-all', '--all', action='store_true', help='every storage of config.ini')
    verify.add_argument('-snapshot', '--snapshot', type=Arg.snapshot_name, metavar='NAME',
                        help=f'only this snapshot, e.g. {example} (default: every proxmox_snapshot_* of the storage)')

    monitor = leaf(contexts, 'monitor', Monitor.command,
                   'check that the snapshots one counts on exist and are fresh: OK, WARNING, CRITICAL or UNKNOWN, '
                   'exit 0 to 3, as monitoring systems read it',
                   ['monitor', 'monitor -storage ONTAP01 -label daily -warn 26h -crit 50h', 'monitor -all',
                    '-loglevel warn monitor -all -textfile /var/lib/prometheus/node-exporter'])
    monitor.add_argument('-storage', '--storage', action='extend', nargs='+', type=Arg.storage_name, metavar='ID',
                         help='the storages whose newest snapshot to check (default: every one of config.ini)'
                         ).completer = complete_storage
    monitor.add_argument('-label', '--label', type=Arg.snapmirror_label, metavar='NAME',
                         help="count only storage snapshots with this snapmirror_label")
    monitor.add_argument('-vm', '--vm', action='extend', nargs='+', type=Arg.vm_id, metavar='ID',
                         help="also each of these VMs' newest complete snapshot")
    monitor.add_argument('-ct', '--ct', action='extend', nargs='+', type=Arg.vm_id, metavar='ID',
                         help="also each of these containers' newest complete snapshot")
    monitor.add_argument('-all', '--all', action='store_true',
                         help='also the newest complete snapshot of every VM and CT with a disk on a storage of '
                              'config.ini (not with -vm or -ct)')
    monitor.add_argument('-warn', '--warn', type=Arg.duration, metavar='AGE',
                         help="WARNING when the newest is older than this (90m, 26h, 2d; default: the storage's "
                              'warn_age in config.ini, else 26h)')
    monitor.add_argument('-crit', '--crit', type=Arg.duration, metavar='AGE',
                         help="CRITICAL when older than this, or when there is none (default: crit_age, else 50h)")
    Arg.add_textfile(monitor, f'{Metrics.SNAPSHOTS_FILE} (the snapshots) and {Metrics.RUNS_FILE} (how each '
                              'command that changes something last ended)')
    doctor = leaf(contexts, 'doctor', Doctor.command,
                  'check config.ini, PVE, each ONTAP cluster and each storage: ok, warn or fail, and the fix',
                  ['doctor', 'doctor -storage ONTAP01 -try', '-output json doctor'])
    doctor.set_defaults(reads_own_config=True)
    doctor.add_argument('-storage', '--storage', type=Arg.storage_name, metavar='ID',
                        help='check only this storage (a section of config.ini); default: every one'
                        ).completer = complete_storage
    doctor.add_argument('-try', '--try', dest='try_clone', action='store_true',
                        help='also write a small file on each storage, file-clone it, read the clone back and '
                             'delete both (pve-ontap-snapshot-doctor-<storage>-<stamp>): proof that cloning works; '
                             'and delete the capture snapshots earlier runs left')
    return parser


class PrintableFormatter(logging.Formatter):
    """`LEVEL: message`, one line each: a message quotes servers, configs and file names, so it
    is printable() whole (a traceback keeps its lines, each printable)."""

    def formatMessage(self, record):
        return Output.printable(super().formatMessage(record))

    def formatException(self, exc_info):
        return '\n'.join(Output.printable(line) for line in super().formatException(exc_info).split('\n'))


def setup_logging(level):
    """`LEVEL: message` lines on stderr (journald and cron add their own timestamps)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter('%(levelname)s: %(message)s'))
    log.handlers[:] = [handler]
    log.setLevel(LOG_LEVELS[level])
    log.propagate = False


class CheckedStdout:
    """sys.stdout while main() runs. Each write goes out at once, so that a full or closed
    stdout (> /dev/full, >&-) fails the print that meets it, as a Failure (one error line,
    exit 1), and leaves nothing for the interpreter's final flush to fail on after main()
    has returned. A reader gone away (| head) stays a BrokenPipeError: main() ends quietly."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        with self._checked():
            written = self.stream.write(text)
            self.stream.flush()
        return written

    def flush(self):
        if self.stream is not None:
            with self._checked():
                self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)

    @contextlib.contextmanager
    def _checked(self):
        if self.stream is None:     # started with stdout closed: Python drops every print silently
            raise Failure('cannot write to stdout: it is closed')
        try:
            yield
        except OSError as exc:
            # What the stream still holds goes nowhere, or the final flush would fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
            if isinstance(exc, BrokenPipeError):
                raise
            raise Failure(f'cannot write to stdout: {exc.strerror or exc}') from exc


def checking_stdout(main):
    """main() with a CheckedStdout as sys.stdout."""
    @functools.wraps(main)
    def checked_main(argv=None):
        stdout, sys.stdout = sys.stdout, CheckedStdout(sys.stdout)
        try:
            return main(argv)
        except Failure as exc:      # only --help's text gets here: argparse prints it before main's try
            sys.stderr.write(f'ERROR: {exc}\n')
            return 1
        finally:
            sys.stdout = stdout
    return checked_main


@checking_stdout
def main(argv=None):
    parser = build_parser()
    try:
        import argcomplete
    except ImportError:
        pass
    else:
        # argcomplete runs only the actions it knows to be harmless while it completes, and a
        # completer sees only their values: StoreOnce just stores (-config for -storage).
        # safe_actions is a tuple in argcomplete 2.0 (Debian 12), a set from 3.0 on.
        if isinstance(argcomplete.safe_actions, set):
            argcomplete.safe_actions.add(StoreOnce)
        else:
            argcomplete.safe_actions += (StoreOnce,)
        argcomplete.autocomplete(parser, default_completer=complete_nothing)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 2 and 'monitor' in (sys.argv[1:] if argv is None else argv):
            print('UNKNOWN: the command line is not understood (see the error above)')
            return 3    # a monitoring system reads exit 3, not argparse's 2
        raise
    setup_logging(args.loglevel)
    if args.dry_run and log.level == logging.INFO:
        log.setLevel(logging.WARNING)   # "... created" would be untrue: the would-lines say it all
    STOP.pending = STOP.lost = None
    previous = {signum: signal.signal(signum, STOP.handle) for signum in STOP.SIGNALS}
    command = f'{args.context} {getattr(args, "command", "")}'.strip()
    recorded = command in RunRecords.COMMANDS and not args.dry_run
    started, status, ctx = time.time(), 0, None
    try:
        try:
            Http.load_libraries()
            if args.reads_own_config:
                args.func(args)     # doctor: each problem of config.ini is one of its checks
            else:
                path = ConfigFile.find(args.config)
                if path == ConfigFile.SEARCH_PATH[0]:
                    log.info('config: %s, found in the current directory', os.path.abspath(path))
                ctx = Context(ConfigFile.read(path), output=args.output, dry_run=args.dry_run, wait=args.wait,
                              local_lock=args.local_lock, command=' '.join(sys.argv[1:] if argv is None else argv))
                status = args.func(ctx, args) or 0     # monitor's verdict
            STOP.check()
        except (Failure, Terminated, KeyboardInterrupt) as exc:
            if recorded:
                RunRecords.report(args, command, started, exc, ctx.changes if ctx else [])
            raise
        if recorded:
            RunRecords.report(args, command, started, None, ctx.changes if ctx else [])
        sys.stdout.flush()
    except Failure as exc:
        log.debug('traceback', exc_info=True)
        log.error('%s', exc)
        if command == 'monitor':
            return Monitor.not_checked(exc, args.textfile)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error('interrupted')
        return 130
    except Terminated as exc:
        log.error('%s', exc)
        return 128 + exc.signal
    except BrokenPipeError:
        # `| head`: the reader has all it wants. Python would complain again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


if __name__ == '__main__':
    sys.exit(main())
