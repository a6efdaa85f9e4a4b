"""The man page pve-ontap-snapshot(8), made at build time from the tool's own parser, so that
it says what --help says (every command, option and example) and cannot drift from it, and
beside that what --help cannot: each command's behaviour in detail, locks, unclear answers,
the configuration, the names on the storage, exit status, environment, files and security,
written below as data (BEHAVIOUR, SECTIONS, FILES):

    python3 packaging/manpage.py [TOOL_DIR] > pve-ontap-snapshot.8

The description is the module docstring (the parser's description); the version is the
tool's (pyproject.toml); the date is SOURCE_DATE_EPOCH's (dpkg-buildpackage sets it from
debian/changelog), else today's. This file alone makes the page: packaging/build-deb copies it,
and nothing else of the repository is needed but the tool.
"""

import argparse
import datetime
import os
import re
import sys

# What the package puts where, and what the tool reads and writes on a node: its files, not the parser's.
FILES = {
    '/etc/pve-ontap-snapshot/config.ini': (
        'The configuration, when no -config FILE is given and there is no ./config.ini (mode 600: it holds '
        'passwords). The package never ships or changes it.'),
    '/usr/share/doc/pve-ontap-snapshot/config.ini.example': 'A commented example to start config.ini from.',
    '/usr/lib/systemd/system/pve-ontap-snapshot-storage@.service': (
        'A storage snapshot of the storage that names the instance, keeping the newest KEEP (7), in a sandbox.'),
    '/usr/lib/systemd/system/pve-ontap-snapshot-storage@.timer': (
        'Starts that service nightly: systemctl enable --now pve-ontap-snapshot-storage@ONTAP01.timer.'),
    '/etc/pve-ontap-snapshot/STORAGE.env': "KEEP, MIN_AGE and OPTIONS of that storage's service, if present.",
    '/usr/lib/systemd/system/pve-ontap-snapshot-monitor.service': (
        "monitor -textfile into node_exporter's textfile directory /var/lib/prometheus/node-exporter (OPTIONS "
        'in /etc/pve-ontap-snapshot/monitor.env), where that directory exists.'),
    '/usr/lib/systemd/system/pve-ontap-snapshot-monitor.timer': (
        'Starts it hourly: systemctl enable --now pve-ontap-snapshot-monitor.timer.'),
    '/usr/lib/systemd/system/pve-ontap-snapshot-failure@.service': (
        "Mails root that the unit naming the instance failed, with that run's journal lines "
        '(/usr/libexec/pve-ontap-snapshot/mail-failure through /usr/sbin/sendmail); the package\'s services '
        'start it by OnFailure=.'),
    '/etc/pve/priv/lock/pve-ontap-snapshot-VOLUME@SVM@HOST.lock': (
        'The cluster-wide lock of one ONTAP volume while a run changes something there (see LOCKS).'),
    '/etc/pve/priv/pve-ontap-snapshot/VOLUME@SVM@HOST.lock': (
        "That lock's record: its holder, the stamps used lately, captures that may still exist, guests held."),
    '/etc/pve/priv/pve-ontap-snapshot-manifest.key': (
        'The key every manifest is signed with, the same on every node; made by the first snapshot. Keep it '
        'with the backups of /etc/pve.'),
    '/run/lock/pve-ontap-snapshot/': (
        "This node's locks (-local-lock); made at boot (tmpfiles.d), root's alone."),
    '/etc/pve/nodes/NODE/qemu-server/VMID.conf': (
        "A VM's config (a container's in lxc/), read byte for byte into its manifests on a PVE node as root."),
    '/usr/share/bash-completion/completions/pve-ontap-snapshot': 'Tab completion in every new shell.',
    '/usr/share/doc/pve-ontap-snapshot/README.md.gz': (
        'The whole manual: install, config.ini, a first snapshot and restore, scheduled snapshots, output for '
        'scripts, least privilege (the ONTAP REST role, the PVE privileges), limitations, each command in detail.'),
}
SEE_ALSO = (r'\fBqm\fR(1), \fBpvesm\fR(1), \fBpveum\fR(1), \fBpmxcfs\fR(8), \fBsystemctl\fR(1), '
            r'\fBsystemd.timer\fR(5), \fBsystemd.exec\fR(5); /usr/share/doc/pve-ontap-snapshot/README.md.gz')

# What each command does in detail, beside its generated synopsis, options and examples: what it
# changes, in which order, what it leaves when something fails or its outcome stays unknown, how
# it locks, and what -dry-run shows. Condensed from README.md's command sections, which say
# more; a change of a command's behaviour changes both. Plain text: a blank line starts a
# paragraph, "- " an item; every option of the parser is set in bold where it stands.
BEHAVIOUR = {
    'vm create': '''
Each disk of the VM on a storage of config.ini (ide, sata, scsi, virtio, efidisk0, tpmstate0;
not CD-ROMs, unused disks or pass-through devices) is file-cloned to
images/<vmid>/<disk>-snapshot-<stamp>.<ext> beside it: a VM snapshot, named by the run's UTC
stamp, which all VMs of the run share. A disk on a storage without a section in config.ini is
skipped with a warning; a VM without any ONTAP disk is an error. -all takes every VM but
templates with a disk on a configured storage; with -node-local only those of this node.

In order: the VMs, their configs and the volumes behind their storages are looked up; the lock
of every volume the VMs use is taken for the whole run (see LOCKS), and guests a dead run left
held there are brought back. Then for each VM, up to -parallel at once: the header of each
qcow2 disk is read; a running VM's disks are captured, one short-lived volume snapshot
pve_ontap_capture_<stamp>_vm<id> per volume, all at once, while the VM is held as its mode asks;
the VM runs again; each disk is cloned from its capture and the captures are deleted; the
manifest vm-<id>-snapshot-<stamp>.<consistency>[.<identity>].manifest.json, with the VM's
config, is written beside the clones on the storage of its first disk; the clones are
registered as unused disks (qm disk rescan on the VM's own node, else unusedN through the API);
-keep deletes what it does not keep.

A stopped VM is cloned as it is, without a capture. Several VMs without a mode share one
capture per volume, pve_ontap_capture_<stamp>_all, taken before the first clone and deleted
once every VM is done: every running VM of the run is taken at the same instant on each volume.

- -pause suspends the VM in memory and resumes it, -suspend suspends it to disk, -shutdown shuts
  it down, each starting it again in every case, also when a capture fails. -freeze freezes its
  file systems through the QEMU guest agent; without agent: 1, with freezing turned off, or with
  the agent not answering it fails before anything is frozen. A freeze or pause in memory lasts
  freeze_timeout seconds at most; captures that take longer make the snapshot fail as not
  consistent. A VM paused before (an I/O error, say) is captured as it is and left paused. A
  node suspends or shuts down at most 4 VMs at once; -suspend of an HA-managed VM is refused.
- A disk standing on a PVE 9 volume-chain snapshot of itself (snapshot-as-volume-chain) is
  refused before anything is made: delete the VM's PVE snapshots, or take a storage snapshot.
- A capture that fails: nothing is cloned and the other captures are deleted. A clone that
  fails: the clones made are removed and the captures deleted; the error names the disks.
- A capture or clone of unknown outcome is found out about first (see UNCLEAR ANSWERS); one
  still unknown is named with its job, never deleted on a guess, and a clone still running keeps
  its capture. A capture ONTAP keeps busy is deleted again for up to 30 s, then renamed
  pve_ontap_leftover_capture_<stamp>_vm<id> (or _all). The next vm create on the volume (or
  doctor -try) deletes what is left once it is 10 minutes old.
- What fails after the clones (the VM not started again, a guest not thawed, the manifest, the
  registration) leaves the snapshot: -keep still runs, and the error says it was made.
- One VM's failure does not stop the others: each is a warning, the exit status is 1 and the
  last line names the VMs that failed.
- A stop signal (Ctrl-C, SIGTERM, SIGHUP) begins no new VM; those begun finish whole (the VM
  running again, its clones, registration and -keep), the shared captures are deleted, and the
  run stops, its error naming each snapshot made and the VMs not begun.

-keep N keeps the VM's newest N complete snapshots, this one counted, and deletes every older
one, incomplete ones too; never this run's, a pre-restore snapshot, another VM's that had this
id before, or one with a file attached to the VM as a disk (a warning). A held snapshot (vm
hold) is neither counted nor deleted; an info line names each.

-dry-run prints each change it would make (the hold, each capture, clone and delete, the
manifest, the registration, -keep's deletes), one VM at a time, and holds no VM.
''',
    'vm list': '''
Changes nothing and takes no lock. One row per snapshot of the VM, oldest first, found in
images/<vmid>/ on every storage of config.ini: stamp, kind (snapshot or pre-restore), size,
disks, state, consistency and OF. The state is complete, or incomplete (lacks ...) when the
snapshot holds no copy of some of the VM's current ONTAP disks; "its manifest cannot be used"
when its manifest cannot be read or fails its signature check (a warning names the file and
why); "a qcow2 copy stands on a file it cannot keep" for a copy taken over a PVE 9 volume
chain. The consistency is running, atomic, paused, frozen, suspended or shutdown, from the
manifest's name, or unknown without one (the original's snapshots, pre-restore snapshots).

OF says this VM, unknown, or another VM: a VM that had this id before, told by the
meta: ctime= or SMBIOS uuid each manifest records. Those are listed apart: -keep never counts
or deletes them, a plain vm restore refuses them, vm restore -as-new makes a VM of one.

HELD, the last column, says no, or yes with who held it, since when and why (vm hold): the hold
is seen in the directory listing, and read (one request) only where there is one.
''',
    'vm delete': '''
Deletes every file of the snapshot, its manifest and its hold too, under the locks of the VM's
storages: first the unusedN entries of its files, through PVE in one config change (PVE deletes
those files), then every other file on ONTAP. An unknown stamp is an error. A held snapshot (vm
hold) is refused, naming the hold, unless -force. A snapshot with a file attached to the VM as
a disk is refused until it is detached. A file that cannot be deleted is named in the error; the
others are gone. -dry-run prints each delete and config change, and refuses as the run would.
''',
    'vm hold': '''
Holds the VM snapshot, as zfs hold does: -keep neither counts nor deletes it, and vm delete
refuses it without -force, until vm release. Under the locks of the VM's storages, one file is
written through ONTAP's files API beside the snapshot's manifest (else beside its first clone):
images/<vmid>/vm-<vmid>-snapshot-<stamp>.hold, the JSON text {"held_by", "since", "reason"}: the
user who ran sudo (else the running user), the UTC stamp, and -reason's text or null. The
mark is kept with the snapshot: vm list sees it in the listing it makes anyway, it stays with
the snapshot on every node and in a SnapMirror copy, and a delete of the snapshot takes it
along. A snapshot held already is no error (info); its hold stays as it was. A write whose
answer was lost is read back (is the file there?); one that cannot be read back is said to be
unknown. -dry-run prints the write.
''',
    'vm release': '''
Lets a held VM snapshot go (see vm hold): under the locks of the VM's storages its hold file is
deleted. A snapshot not held is no error (info). A delete whose answer was lost is read back (is
the file gone?). -dry-run prints the delete.
''',
    'vm restore': '''
In order: the VM is looked up and the locks of its storages taken (see LOCKS); its snapshots
are looked up on every storage of config.ini, and each copy in the chosen one (a snapshot
without a copy of a disk leaves that disk as it is, with a warning); with -with-config the lock
of a storage the saved config puts a disk back on is taken too. A VM that runs without
-shutdown, is suspended to disk, paused, or locked (backup, clone, migration) is refused. The
plan is shown on stderr (with -output json on stdout): the disks, a diff of the config now and
as saved, the settings kept as they are and why, the saved config's file and whether it is
signed. It asks on a terminal; without one it needs -yes, else it exits 2. The VM's status is
read again (one started or locked meanwhile is refused). Then the VM is shut down (-shutdown);
the current disks are cloned to a pre-restore snapshot, an undo point listed and restored like
any other; each copy is cloned over its disk; the config of before is saved in the pre-restore
snapshot's manifest; with -with-config the saved config is put back; the VM is started again.

- A disk is written only onto the file it was taken of: one moved since (Move Disk) is named in
  a warning and its copy written nowhere, unless -with-config puts the disk back where it was.
- All or nothing: if one disk fails, those overwritten are put back from the pre-restore
  snapshot and the command fails. If ONTAP may still be overwriting a disk (a job past every
  bound, a lost answer), nothing is put back or started on a guess: the VM stays stopped, the
  pre-restore snapshot is kept, and the error names the job and what to do.
- -with-config sets every key of the saved config and deletes the others, in one change
  against the digest of the config read then, except unusedN entries, PVE's bookkeeping (lock,
  parent, vmstate, meta, vmgenid), the cloud-init password and what only root@pam may set (unless
  -allow-key names it). Disks the VM has beyond the saved config stay as unused disks. If the
  change fails, the disks stay restored and the error says so; if its outcome stays unknown, the
  VM stays stopped. Refused for a snapshot without a saved config, or whose manifest cannot be
  read or fails its signature check.
- -storage-snapshot NAME takes each disk from its copy in the storage snapshot: only this VM
  changes, every other VM on the storage stays as it is.
- -as-new NEWID clones each disk from the snapshot to images/NEWID/vm-NEWID-disk-<n>.<ext> on
  the same storage and creates VM NEWID with the saved config (new MAC addresses, vmgenid and
  SMBIOS uuid; no onboot, unusedN or cloud-init password) on this node, else the old VM's node,
  else the node serving the API. It is never started, and VM -vm, which may no longer exist, is
  not touched. Refused: a NEWID PVE uses, a disk it cannot copy, a snapshot without a saved
  config of a VM that is gone (-no-saved-config gives it the current config where the saved one
  cannot be used). If PVE refuses the create, the clones are removed; if its outcome stays
  unknown, they are left and named. It asks only where -allow-key lets a setting through.
- A stop signal waits until the disks are restored (or the new VM made), then the run stops.

-dry-run shows the plan and each clone and config change it would make, and asks nothing.
''',
    'vm verify': '''
Changes nothing and takes no lock: proves each snapshot of the VM restorable without restoring
it, from metadata and qcow2 headers alone, never disk data. Its snapshots are found in
images/<vmid>/ on every storage of config.ini, pre-restore ones too; -snapshot STAMP takes one,
-all every VM with a disk on a storage of config.ini. For each: every copy its manifest names is
there, with the size the manifest records (the disk's size= when it was taken: a raw copy's
length, a qcow2 copy's virtual size from its header; a vmdk copy's is not checked, and the line
says so);
each qcow2 copy's header can be read, and its backing file is a file of the snapshot or a linked
clone's base image that is still there (a copy over a PVE 9 volume chain fails); the manifest
can be read, is of this VM and snapshot, and passes its signature check. A snapshot without a
manifest (the original's, or an earlier build's with a .conf) is verified by its files alone,
and says so.

One line per snapshot: ok or FAIL, the VM and stamp, and what is wrong (a missing file by its
path, a size with both numbers, a backing file, a manifest that cannot be used) or what was not
checked; -output json gives the same as a list. A storage of config.ini that cannot be looked up
is named in a warning, and fails each VM with a disk there. Exit status 1 when anything fails,
its one ERROR: line naming what; 0 when all hold, also with no snapshot at all. Requests, at most
16 at once: one listing of images/<vmid> per storage, one manifest read per snapshot, one header
read per qcow2 copy.
''',
    'ct create': '''
As vm create, for containers: the root disk (rootfs) and each mount point (mpN) of the CT on a
storage of config.ini is file-cloned to images/<ctid>/<disk>-snapshot-<stamp>.raw beside it,
with the manifest vm-<ctid>-snapshot-<stamp>.<consistency>.manifest.json, named as a VM's, the
CT's config in it. Bind mounts and device mounts are no disks: each is skipped with a warning
naming it; a CT without any ONTAP disk is an error. -ct takes CT ids only and -all every CT but
templates with a disk on a configured storage (with -node-local only those of this node): a VM
id is refused in one line, and vm create never touches a CT. The clones are registered as
unused disks (pct rescan on the CT's own node, else unusedN through the API, pending on a
running CT until its next start).

- Without a mode, a running CT's disks are captured first, every disk of a volume at one
  instant (crash-consistent), as a running VM's.
- -shutdown shuts the CT down and starts it again, in every case.
- -pause freezes the CT with its cgroup freezer as PVE does for its own snapshots (lxc-freeze,
  then a sync of each of its disks' file systems; lxc-unfreeze after), for freeze_timeout
  seconds at most. The freezer is reachable only on the node running the CT, as root: anywhere
  else -pause is refused in one line, before anything changes; -all -node-local -pause on each
  node covers a cluster. A CT frozen before the run is cloned as it is and left frozen. The CT
  is noted in the volume's lock record while frozen: a run that dies leaves it to the next ct
  create of it, or doctor -try, on its node, which thaw it.
- There is no -suspend (PVE's suspend of a CT is a CRIU checkpoint, experimental) and no
  -freeze (a CT has no guest agent).

Everything else (locks, captures, unknown outcomes, -keep, -parallel, stop signals, -dry-run)
is as for vm create.
''',
    'ct list': '''
As vm list, for a container: its snapshots in images/<ctid>/ on every storage of config.ini,
with their disks (rootfs, mpN), state, consistency and hold. Changes nothing.
''',
    'ct delete': '''
As vm delete, for a container: every file of the snapshot, its unusedN entries first through
PVE. A held snapshot (ct hold) is refused unless -force.
''',
    'ct hold': '''
As vm hold, for a container: the hold file images/<ctid>/vm-<ctid>-snapshot-<stamp>.hold beside
its manifest; -keep passes it over and ct delete refuses it without -force, until ct release.
-reason says why.
''',
    'ct release': '''
As vm release, for a container: its hold file is deleted.
''',
    'ct restore': '''
As vm restore, in place, for a container: its disks (rootfs, mpN) back to a CT snapshot, or
(-storage-snapshot NAME) to their state in a storage snapshot, after the live disks are kept
as a pre-restore snapshot; a running CT is refused without -shutdown, which shuts it down and
starts it again. -with-config puts back only the settings an ordinary user may set (pve-container
check_ct_modify_config_perm): never raw lxc.* keys, a hookscript, a bind or device mount, a
device (devN) or a feature but nesting, whatever the saved config says; those stay as they
are, and the plan names each. It asks on a terminal; without one it needs -yes. -dry-run shows
the plan and each change.

-as-new NEWID makes a new, stopped CT: each disk cloned to images/NEWID/vm-NEWID-disk-<n>.raw,
the saved config (screened as above; no onboot, no unusedN) with a new MAC address (hwaddr=) on
each netN, written into pmxcfs as /etc/pve/nodes/<node>/lxc/NEWID.conf on this node (PVE's API
creates a CT only from a template or a backup). Only on a PVE node as root; refused off one, for
an id any guest has (in PVE or in pmxcfs on any node), and for a privileged container (its
creation takes Sys.Modify on /): an unprivileged CT stays so, its files keeping their id
mapping. If the config cannot be written, the clones are removed.
''',
    'ct verify': '''
As vm verify, for a container: each copy its manifest names there with the size it records, the
manifest passing its check; -snapshot STAMP takes one, -all every CT with a disk on a storage of
config.ini. Changes nothing and takes no lock.
''',
    'storage create': '''
Takes the ONTAP snapshot proxmox_snapshot_<UTC stamp> of the volume behind the storage, with
the comment "Snapshot of Proxmox storage <id>; guests: <how many, how consistent>" and -label's
snapmirror_label, under the volume's lock (see LOCKS). In order: -min-age (a snapshot with the
same label younger than that: none taken, exit 0); each guest's config is read (on a PVE node
from /etc/pve/nodes, else through the API); with -freeze or -pause, which guests to hold; one
record, the manifest of every guest with a disk, mount point or unused disk on the storage, is
written over the last at the volume's root (pve-ontap-snapshot.manifest.json); the guests are
held; the snapshot is taken; the guests run again; -keep. On a node that is six requests,
whatever the number of guests.

- -freeze freezes every running VM on the storage whose guest agent can freeze, a few at a time
  per node, every node at once; -pause pauses in memory every other running VM too, and freezes
  each running container of this node (its cgroup freezer, as ct create -pause). None is held
  longer than freeze_timeout from the first hold: a snapshot that takes longer is taken after
  they are let go, and a warning says it is crash-consistent for them. Containers on other nodes
  or without -pause, VMs without an agent, and without -pause VMs that cannot be frozen, stay
  crash-consistent. A guest that
  could not be thawed or resumed fails the run, naming the command to run by hand.
- A record not written: the snapshot is still taken and the run fails after it, saying so. A
  snapshot whose answer was lost is read back: is it there?
- -keep N deletes the oldest proxmox_snapshot_* with the same label beyond the newest N, never
  one a FlexClone uses or ONTAP keeps busy (a warning; a later run deletes it). A held snapshot
  (storage hold) is neither counted nor deleted, and -min-age does not count it either; an info
  line names each.
- A stop signal waits until every guest runs again, then the run stops, naming the snapshot if
  it was made.

-dry-run prints the record it would write, each hold and the snapshot, and holds nothing.
''',
    'storage list': '''
Changes nothing and takes no lock. This tool's snapshots of the volume (proxmox_snapshot_*, the
original's too), oldest first by time, not text: name, creation time (in the cluster's time
zone), size, snapmirror label, how many guests each holds and how consistent, from its
comment (- and unknown where the comment does not say: a snapshot of the original or of an
earlier build), comment, and HELD, yes or no (storage hold: the comment ends "; held"). Four
requests, however many snapshots.
''',
    'storage show': '''
Changes nothing and takes no lock: the metadata of the volume behind the storage; with
-output json ONTAP's volume record. With -snapshot NAME: the snapshot and each guest its record
names (name, node, consistency, disks on the storage, whether its manifest is signed); "not
recorded" for a snapshot of the original.
''',
    'storage delete': '''
Deletes the snapshot under the volume's lock; an unknown name is an error. The snapshot is read
first, and a held one (storage hold) is refused, naming the hold, unless -force, which deletes
it unread by a query-based DELETE filtered by its name (a delete whose answer does not say what
it matched is checked by reading the snapshots back). A snapshot a FlexClone uses is refused,
naming the clone and the PVE storage to unmount first. -dry-run looks the snapshot and its
clones up, refuses as the run would, and prints the delete.
''',
    'storage hold': '''
Holds the storage snapshot, as zfs hold does: storage create's -keep neither counts nor deletes
it, its -min-age does not count it, and storage delete refuses it without -force, until storage
release. Under the volume's lock, "; held" is added to the end of the snapshot's ONTAP comment
(PATCH of the snapshot's comment): the original's "Snapshot of Proxmox storage <id>" or storage
create's with its guests, which storage list still reads. The mark is kept with the snapshot:
storage list sees it in the listing it makes anyway, and the comment travels with the snapshot,
into a SnapMirror copy too. A comment that would grow beyond the 255 characters ONTAP keeps is
refused. A snapshot held already is no error (info). A change whose answer was lost is read
back (has the snapshot that comment now?); one that cannot be read back is said to be unknown.
-dry-run prints the change.
''',
    'storage release': '''
Lets a held storage snapshot go (see storage hold): under the volume's lock, "; held" is taken
off the end of its comment. A snapshot not held is no error (info). A change whose answer was
lost is read back. -dry-run prints the change.
''',
    'storage restore': '''
Reverts the whole volume to the snapshot: every guest on the storage loses all changes since, and
ONTAP deletes every snapshot newer than it. Under the volume's lock: the snapshot and the newer
ones are looked up, the guests with a disk on the storage found (that needs VM.Audit on /vms,
unless -force), the plan shown (the volume, the guests with their status and lock, the newer
snapshots; on stderr, or with -output json on stdout). It refuses while a guest there runs, is
hibernated or locked, or a node that is down keeps its guests from being checked (-force
overrides these), and while a newer snapshot backs a FlexClone. It asks on a terminal (-yes
without one, else exit 2), reads the guests again (one started or locked meanwhile stops it),
then reverts. A stop signal waits for ONTAP's answer. -dry-run shows the plan and the revert.
To get single VMs back, use vm restore -storage-snapshot or storage mount.
''',
    'storage mount': '''
Under the lock of the storage's volume: creates the FlexClone <volume>_clone of the snapshot
(with -name ID: <volume>_clone_<ID>), mounted at /<its name>, and adds it to PVE as the NFS
storage <storage>-CLONE (or ID) with the parent storage's server, content and mount options,
enabled for this node only (off a node, for the node serving the API). An id config.ini gives
another meaning, or PVE has already, is refused before anything is made. If PVE refuses the
storage, the FlexClone is deleted again; a FlexClone create of unknown outcome is read back. A
stop signal waits until both are made. While the clone exists, its snapshot is busy on ONTAP.
-dry-run prints the create and the storage it would add.
''',
    'storage unmount': '''
Takes only a storage whose volume is a FlexClone of a configured storage's volume, never one with
a section in config.ini, and none while a guest has a disk on it or a node that is down keeps
its guests from being checked (-force overrides that). Under the lock of the parent's volume: the
PVE storage is disabled and removed, its NFS path unmounted on this node when run as root on a
PVE node (lazily if busy; elsewhere a warning says it may stay mounted), and the FlexClone
deleted; the snapshot stays. What a mount or unmount left half-way is cleaned up too: a storage
whose FlexClone is gone is removed, a FlexClone whose storage is gone is deleted. -dry-run
prints each step.
''',
    'storage verify': '''
Changes nothing and takes no lock: proves each snapshot of the storage (proxmox_snapshot_*, or
-snapshot NAME; -all: every storage of config.ini) restorable without restoring it, from
metadata and qcow2 headers alone: the snapshot exists; its record pve-ontap-snapshot.manifest.json
in it can be read (or an earlier build's one file per guest), its comment's count of guests
agrees, and each guest's manifest is of that snapshot and passes its signature check; each disk a
manifest records on the storage is in the snapshot, as .snapshot/<name>/images/<vmid>/<file>, with
the size recorded (a qcow2 disk's virtual size from its header; a vmdk's is not checked), and a
qcow2 disk's backing file is in the snapshot too. A snapshot without a record (the original's)
is proven to exist, no more, and says so; one whose comment names guests but that holds no record
fails.

One line per snapshot: ok or FAIL, the storage and snapshot, and what is wrong or was not
checked; -output json gives the same as a list. Exit status 1 when anything fails, its one
ERROR: line naming what; 0 when all hold. Requests, at most 16 at once: per storage its volume and
snapshots; per snapshot its record (its size, then its data), one listing per directory of a
recorded guest's disks in it, one header read per qcow2 disk.
''',
    'monitor': '''
Changes nothing and takes no lock: whether the snapshots one counts on exist and are fresh, as
monitoring systems read it (the Nagios plugin convention). For each storage of config.ini (or
each -storage) its newest storage snapshot (with -label, the newest with that snapmirror label);
with -vm, -ct or -all (every VM and CT), each guest's newest complete snapshot of this guest. An
item older than -warn (else
the storage's warn_age in config.ini, else 26h) is WARNING, older than -crit (crit_age, 50h) or
missing CRITICAL; an incomplete VM snapshot, an empty manifest, a capture snapshot left behind
and a command whose last run failed (see RUNS) are WARNING; an item that cannot be checked (a
cluster unreachable) is UNKNOWN. The first line is OK, WARNING, CRITICAL or UNKNOWN and names
the worst items (CRITICAL before UNKNOWN before WARNING); one line per item follows; exit 0, 1, 2
or 3, and 3 (UNKNOWN) for a command line or config.ini it cannot use. One snapshot listing per
volume, one listing per VM directory; VM configs from /etc/pve on a node.

-textfile DIR writes, for node_exporter's textfile collector, pve_ontap_snapshot.prom (per
storage and label the newest snapshot's time and the count, per VM and per CT the newest complete
snapshot's time, each item's state; where monitor can check nothing, one state of kind monitor,
3) and pve_ontap_snapshot_runs.prom (see RUNS), each whole (a temporary
file renamed), mode 644, into a directory that must be root's and writable by nobody else.
''',
    'doctor': '''
Checks, in order: config.ini (where, owner and mode, every section, unknown keys); PVE (its
certificate, the login, release, quorum, nodes, the privileges of each command group); the
cluster lock and the locks held now; the lock directory, the manifest key and the service's
sandbox; then each ONTAP cluster (certificate, login, release, licences) and each storage: PVE's
entry, volume chains, its volume (the REST role, state, FlexVol, snapshot count, space,
autodelete, policy, SnapMirror), leftover captures, guests a dead run left held, and on a node
its NFS mount. One line per check, ok, warn or fail with the fix, then a summary; exit 1 when
a check fails. It reads config.ini itself: a broken one is a failed check, not exit 2.

It changes nothing but with -try: on each storage it writes a small file
pve-ontap-snapshot-doctor-<storage>-<stamp> in the volume's root, file-clones it, reads the
clone back and deletes both, also when a step fails (a clone of unknown outcome is left alone
and both files named); it deletes the leftover captures vm create would, under the volume's
lock, and brings back the guests dead runs left held. With -dry-run, -try makes nothing.
''',
}

# Sections of their own after COMMANDS: (title, text), as above.
SECTIONS = (
    ('LOCKS', '''
Each command that changes something holds a lock per ONTAP volume (its cluster host as
config.ini names it, SVM and volume; two storages on one volume share it) for as long as it
works; reads and dry runs take none. On a PVE node, as root, it is the cluster-wide directory
/etc/pve/priv/lock/pve-ontap-snapshot-<volume>@<svm>@<host>.lock, made with mkdir through pmxcfs
and updated every 30 s; pmxcfs removes one not updated for 120 s, so a run that died leaves
none for longer. If an update is refused (no quorum, or another node took it over), the run
changes nothing more but to start, resume or thaw the guests it holds, and stops. Its record,
/etc/pve/priv/pve-ontap-snapshot/<volume>@<svm>@<host>.lock, names the holder (pid, node,
since, command), the stamps used lately, vm create's captures that may still exist, and the
guests the run holds, so that the next run brings back a guest a dead run left paused, frozen,
suspended or shut down (doctor -try brings back all). Off a node or without quorum a change is
refused, unless -local-lock (or local_lock = yes) takes this node's lock,
/run/lock/pve-ontap-snapshot/<volume>@<svm>@<host>.lock: safe only while no run on another node
can work on the same volumes. -wait SECONDS waits for another run; without it a run that finds
the lock taken fails at once, naming the holder.
'''),
    ('UNCLEAR ANSWERS', '''
Every change asked of ONTAP or PVE ends done, failed or unknown: a job still running when
job_timeout (or a task when task_timeout) ends, an answer lost after the request went out
(read_timeout, a reset connection), or one that cannot be read. Unknown is never taken for
failed: the job is followed for another job_timeout, or the jobs of the same call are, and the
result read back (does the clone, the snapshot, the VM exist?). Only what is known done is
rolled back; nothing is deleted, overwritten or started over what may still change, and the
error names what stays unknown, its job, and what to check (job show -id <uuid> on the cluster).
'''),
    ('RUNS', '''
Every command that changes something (vm and ct create, delete, hold, release, restore; storage
create, delete, hold, release, restore, mount, unmount), but not a dry run, records how it
ended: its last run, last success and last failure (when, how long, on which node, the error,
and what it changed as its info lines say it: the first 20, and how many more), in
/etc/pve/priv/pve-ontap-snapshot/<command>@<subject>.run on a PVE node (so every node's monitor
reads it), else in the lock directory. monitor warns of a command whose last run failed. With
-textfile DIR such a command writes pve_ontap_snapshot_runs.prom at its end, failed or not:
per command and subject the last success, the last failure, the last duration and whether the
last run succeeded.
'''),
    ('CONFIGURATION', '''
config.ini: a [proxmox] section (proxmox_host, optionally :port; proxmox_user; proxmox_pass, or
proxmox_token_name and proxmox_token_value; proxmox_verify: true, false or a CA bundle), one
section per PVE storage id with the ONTAP cluster that exports it (host; user; pass, or cert and
key; verify; optional svm and snapmirror_label), and an optional [defaults] section:
connect_timeout (10), read_timeout (120), job_timeout (600), task_timeout (600), freeze_timeout
(10) in seconds, and local_lock (no). Only NFS storages whose export is an ONTAP volume's
junction path can be used; a storage X-CLONE uses the section [X]. Comments go on lines of
their own. The file must be owned by the running user or root and writable by nobody else (as
root anything else is an error); one readable by others is a warning. Without proxmox_verify,
a proxmox_host that is this node is verified against /etc/pve/pve-root-ca.pem where
that exists.
'''),
    ('NAMES ON THE STORAGE', '''
The original tool's names, kept so that its snapshots stay usable:

- images/<vmid>/<disk>-snapshot-<stamp>.<ext>: a VM snapshot's clone of a disk; <stamp> is
  YYYY-mm-dd_HH:MM:SS+0000, UTC. A pre-restore snapshot's: <disk>-prerestore-<stamp>.<ext>.
- images/<vmid>/vm-<vmid>-snapshot-<stamp>.<consistency>[.<identity>].manifest.json: its
  manifest, the VM's config in it (earlier builds: vm-<vmid>-snapshot-<stamp>.conf).
- images/<vmid>/vm-<vmid>-snapshot-<stamp>.hold: its hold (vm hold), who held it, since when
  and why.
- proxmox_snapshot_<stamp>: a storage snapshot, with the comment "Snapshot of Proxmox storage
  <id>" (this tool adds "; guests: 3 frozen, 1 running", and storage hold "; held"); in it, pve-ontap-snapshot.manifest.json,
  the manifest of each guest it holds (earlier builds: pve-ontap-snapshot/vm-<vmid>.<consistency>.manifest.json,
  ct-<vmid>... for a container). The live volume's holds the last one written.
- pve_ontap_capture_<stamp>_vm<vmid> and pve_ontap_capture_<stamp>_all: vm create's short-lived
  captures; pve_ontap_leftover_capture_...: one ONTAP kept busy, for a later run to delete.
- <volume>_clone, <volume>_clone_<id>: the FlexClone of storage mount, mounted as the PVE
  storage <storage>-CLONE or <id>.
- pve-ontap-snapshot-doctor-<storage>-<stamp> and its .clone: doctor -try's test files, deleted
  by it.
'''),
    ('EXIT STATUS', '''
- 0: done; also a dry run, storage create skipped by -min-age, and a reader of stdout that
  stopped early.
- 1: the operation failed (one ERROR: line on stderr says what, and what was left), a question
  answered no, or stdout could not be written.
- 2: a usage or configuration error, or a question that cannot be asked without a terminal (add
  -yes).
- 128 plus the signal's number (130 SIGINT, 143 SIGTERM, 129 SIGHUP): stopped by a signal once
  what must not be cut short was done.
- monitor exits as monitoring systems read it: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, also for
  a usage or configuration error (see monitor).
'''),
    ('ENVIRONMENT', '''
- PVE_ONTAP_SNAPSHOT_LOCK_DIR: the directory of this node's locks (-local-lock) instead of
  /run/lock/pve-ontap-snapshot; every run on the node must then share it. A user other than
  root gets $XDG_RUNTIME_DIR/pve-ontap-snapshot, else one in the temporary directory.
- PVE_ONTAP_SNAPSHOT_CLUSTER_DIR: the directory that stands for /etc/pve/priv (cluster locks,
  their records, the manifest key), for tests where no pmxcfs runs; not for a node.
- REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE: trusted instead of the system CAs where verify is
  true; never instead of a CA file or false in config.ini.
- HTTPS_PROXY, NO_PROXY and the other proxy variables requests reads: read once per run, for
  proxmox_host and each host.
- SUDO_USER: as root, the user vm hold names as the snapshot's holder (else the running user).
'''),
    ('SECURITY', '''
What the tool reads from places others can write is untrusted. A restore (-with-config,
-as-new) puts back only settings an ordinary PVE user with the VM.Config privileges may set:
what only root@pam may set (args, hookscript, a host device or path, another guest's volume) and
settings the tool does not know stay as they are, unless -allow-key names them; the plan shows
each. Manifests are signed (HMAC-SHA256) with /etc/pve/priv/pve-ontap-snapshot-manifest.key; one
changed, moved or unreadable is not used. Directories it writes in must be the running user's
alone, and files are opened without following links. Credentials go to proxmox_host and host
alone: no redirect is followed, ~/.netrc is not read. Text from outside is printed with control
characters escaped. An API token of a user with the least privileges (see README.md) keeps even
a planted manifest from reaching root-only settings.
'''),
)


def roff(text):
    """Text as roff sees it literally: backslashes, minus signs, a leading dot or quote."""
    text = text.replace('\\', r'\e').replace('-', r'\-')
    return re.sub(r"^([.'])", r'\\&\1', text, flags=re.MULTILINE)


def bold(text):
    return rf'\fB{roff(text)}\fR'


BREAK = '\x00'     # where a long word may break: roff's \: once escaped


def breakable(text):
    """Text with a break point after each `/` and before each `.`, `[` and `<` of a word too long
    for a line to hold whole beside its indent (a file name pattern): roff breaks a line only at
    blanks, and warns where it cannot ("can't break line", which lintian reports)."""
    return re.sub(r'\S{40,}', lambda word: re.sub(r'(?<=/)|(?=[.\[<])(?<!^)', BREAK, word[0]), text)


def inline(text, flags):
    """A written paragraph in roff: every option of the parser (`flags`) where it stands in bold,
    long file names breakable."""
    pieces = re.split(r'(?<![\w-])(-[a-z][a-z-]*[a-z])(?![\w-])', text)
    return ''.join(bold(piece) if n % 2 and piece in flags else roff(breakable(piece))
                   for n, piece in enumerate(pieces)).replace(BREAK, r'\:')


def written(text, flags):
    """Roff for written text (BEHAVIOUR, SECTIONS): a blank line starts a paragraph, `- ` an item
    (its further lines indented by two blanks)."""
    out = []
    for block in text.strip().split('\n\n'):
        lines = block.splitlines()
        if not lines[0].startswith('- '):
            out += ['.PP', inline(' '.join(line.strip() for line in lines), flags)]
            continue
        items = []
        for line in lines:
            if line.startswith('- '):
                items.append(line[2:])
            else:
                items[-1] += ' ' + line.strip()
        for item in items:
            out += [r'.IP \(bu 2', inline(item, flags)]
    return out


def docstring_body(text):
    """Roff for a docstring's paragraphs: plain lines filled, lines indented by two or more
    spaces kept as they are (the command list, the examples)."""
    out = []
    for paragraph in text.strip().split('\n\n'):
        out.append('.PP')
        verbatim = False
        for line in paragraph.splitlines():
            indented = line.startswith('  ')
            if indented != verbatim:
                out += ['.RS 2', '.nf'] if indented else ['.fi', '.RE']
                verbatim = indented
            out.append(roff(line[2:] if indented else line))
        if verbatim:
            out += ['.fi', '.RE']
    return out


def option_term(action, formatter):
    """`-storage, --storage ID` in roff."""
    flags = ', '.join(bold(flag) for flag in action.option_strings)
    if action.nargs == 0:
        return flags
    return rf'{flags} \fI{roff(formatter._format_args(action, action.dest.upper()))}\fR'


def options(actions, formatter):
    out = []
    for action in actions:
        out += ['.TP', option_term(action, formatter), roff(formatter._expand_help(action))]
    return out


def own_actions(parser, global_flags):
    """A command's options without the global ones it accepts too, and without -h."""
    return [action for action in parser._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)
            and tuple(action.option_strings) not in global_flags]


def synopsis_line(words, actions, groups, formatter):
    """`pve-ontap-snapshot [global options] vm create (-vm ID [ID ...] | -all) ...`, breaking
    only between options."""
    depth, text = 0, ''
    for char in formatter._format_actions_usage(actions, groups):
        if char in '[(':
            depth += 1
        elif char in '])':
            depth -= 1
        text += '\x00' if char == ' ' and depth else char    # a blank inside brackets: no break there
    return ['.PP', rf'{bold("pve-ontap-snapshot")} [\fIglobal options\fR] {bold(words)} '
            + roff(text).replace('\x00', r'\ ')]


def leaves(parser, words=()):
    """(command words, parser) of each command that runs something, in the parser's order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if any(isinstance(a, argparse._SubParsersAction) for a in child._actions):
                    yield from leaves(child, words + (name,))
                else:
                    yield ' '.join(words + (name,)), child


def build_date():
    epoch = os.environ.get('SOURCE_DATE_EPOCH')
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch else datetime.datetime.now(datetime.UTC)
    return when.strftime('%Y-%m-%d')


def manpage(tool):
    parser = tool.build_parser()
    formatter = parser._get_formatter()
    title, _, body = parser.description.partition('\n')
    global_actions = [a for a in parser._actions if a.option_strings]
    global_flags = {tuple(a.option_strings) for a in global_actions}
    commands = list(leaves(parser))
    flags = {flag for _, command in [('', parser)] + commands for action in command._actions
             for flag in action.option_strings}
    name, _, summary = title.rstrip('.').partition(': ')

    header = f'.TH {roff("PVE-ONTAP-SNAPSHOT")} 8 "{build_date()}" "{roff("pve-ontap-snapshot " + tool.tool_version())}"'
    out = [rf'.\" Generated by packaging/manpage.py from {tool.__name__}.build_parser() and its own text: do not edit.',
           header + ' "System Administration"',
           '.\\" No hyphenation and a ragged right: option names stay whole, as they are typed. groff 1.23',
           '.\\" (Debian 13) sets the adjustment again from the string AD at each paragraph tag: AD says it.',
           '.nh', '.ds AD l', '.ad l',
           '.SH NAME', rf'{roff(name)} \- {roff(summary)}',
           '.SH SYNOPSIS']
    for words, command in commands:
        out += synopsis_line(words, own_actions(command, global_flags), command._mutually_exclusive_groups, formatter)
    out += ['.PP', rf'{bold("pve-ontap-snapshot")} {bold("-version")}', '.br',
            rf'{bold("pve-ontap-snapshot")} [\fIcommand\fR] {bold("-h")}',
            '.SH DESCRIPTION'] + docstring_body(body)
    out += ['.SH GLOBAL OPTIONS', 'Accepted before and after the command.'] + options(global_actions, formatter)
    out.append('.SH COMMANDS')
    for words, command in commands:
        out += ['.SS ' + f'"{roff(words)}"', '.PP', roff(command.description)]
        out += synopsis_line(words, own_actions(command, global_flags), command._mutually_exclusive_groups,
                             formatter)
        out += written(BEHAVIOUR[words], flags)
        out += options(own_actions(command, global_flags), formatter)
        if command.epilog:
            out += docstring_body(command.epilog)
    for title, text in SECTIONS:
        out += [f'.SH {title}'] + written(text, flags)
    out.append('.SH FILES')
    for path, meaning in FILES.items():
        out += ['.TP', bold(path), roff(meaning)]
    out += ['.SH SEE ALSO', SEE_ALSO]
    return '\n'.join(out) + '\n'


def main(argv):
    if len(argv) > 1:
        sys.exit('usage: manpage.py [TOOL_DIR]')
    sys.path.insert(0, argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
    import pve_ontap_snapshot
    sys.stdout.write(manpage(pve_ontap_snapshot))


if __name__ == '__main__':
    main(sys.argv[1:])
