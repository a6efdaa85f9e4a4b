"""The demo and test world: fakepve (Proxmox) and two emulated ONTAP clusters on 127.0.0.1.

PVE has two nodes and three storages: ONTAP01 (NFS, export /proxmox_storage01, options
nconnect=16) on cluster A, ONTAP02 (NFS, export /proxmox_storage02, SVM svm2) on cluster
B, and local-lvm. The VMs:

  100 web    running on pve1, a disk on every bus (on both clusters), a CD-ROM, a disk on
             local-lvm and an unused disk
  101 db     stopped on pve2, one disk on ONTAP01
  102 local  stopped on pve1, only a local-lvm disk

Every disk file on ONTAP holds its own random bytes. The pytest fixtures (conftest.py),
the sandbox and the benchmark all build it with populate() and drive it with World.
"""

import asyncio
import contextlib
import ctypes
import datetime
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import NamedTuple

import proxmoxer
from ontap_emulator import NEWEST_RELEASE, OntapEmulator

import pve_ontap_snapshot as tool

PVE_USER, PVE_PASSWORD = 'root@pam', 'pve-Secr3t'

def read_config_as_qemu_server_does():
    """Make fakepve answer a VM's config as qemu-server does, where vm create relies on it.
    fakepve 0.5.0 answers GET …/config with the current values only and leaves pending
    changes out of the digest. qemu-server answers the pending values unless `current=1`
    (API2/Qemu.pm vm_config, load_current_config: a pending value wins, a pending delete
    drops the key), and its digest is the SHA1 of the whole file, [PENDING] included
    (QemuServer.pm parse_vm_config)."""
    import hashlib
    import json

    from fakepve import model, server

    def digest(vm):
        blob = [vm.config, vm.snapshots, vm.pending] if vm.snapshots or vm.pending else vm.config
        return hashlib.sha1(json.dumps(blob, sort_keys=True).encode()).hexdigest()

    async def config_get(self, request):
        vm = self._vm(request, 'VM.Audit')
        current = str(request.query.get('current', '0')).lower() in ('1', 'true', 'yes', 'on')
        config = dict(vm.config)
        for key, value in ({} if current else vm.pending).items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        if 'memory' in config:
            config['memory'] = str(config['memory'])     # PVE sends it as a string
        config['digest'] = vm.digest()
        return server.ok(config)

    model.FakeVm.digest = digest
    server.FakePve._config_get = config_get


read_config_as_qemu_server_does()
ONTAP_PASSWORD = 'ontap-Secr3t-A'
ONTAP_B_PASSWORD = 'ontap-Secr3t-B'

VM100 = {
    'ide0': 'ONTAP01:100/vm-100-disk-0.raw,size=1G',
    'ide2': 'local:iso/debian-12.iso,media=cdrom,size=600M',
    'sata0': 'ONTAP02:100/vm-100-disk-1.raw,size=1G',
    'scsi0': 'ONTAP01:100/vm-100-disk-2.qcow2,discard=on,size=2G',
    'scsi1': 'local-lvm:vm-100-disk-3,size=4G',
    'virtio0': 'ONTAP02:100/vm-100-disk-4.raw,size=1G',
    'efidisk0': 'ONTAP01:100/vm-100-disk-5.raw,efitype=4m,size=528K',
    'tpmstate0': 'ONTAP01:100/vm-100-disk-6.raw,size=4M,version=v2.0',
    'unused0': 'ONTAP01:100/vm-100-disk-7.raw',
    'scsihw': 'virtio-scsi-single', 'memory': 2048, 'cores': 2, 'boot': 'order=scsi0',
}
VM100_ONTAP_DISKS = ['efidisk0', 'ide0', 'sata0', 'scsi0', 'tpmstate0', 'virtio0']
VM101 = {'scsi0': 'ONTAP01:101/vm-101-disk-0.raw,size=1G', 'memory': 1024}
VM102 = {'scsi0': 'local-lvm:vm-102-disk-0,size=8G', 'memory': 512}


class PveRequest(NamedTuple):
    method: str
    path: str
    params: dict


@dataclass
class Result:
    code: int
    out: str
    err: str


def error_lines(result):
    """The ERROR lines of a run's stderr (a failure ends with exactly one)."""
    return [line for line in result.err.splitlines() if line.startswith('ERROR')]


def table(text):
    """The cells of a text table's rows, its header first (cells are apart by 2+ spaces)."""
    return [re.split(r' {2,}', line) for line in text.splitlines()]


def fails_cleanly(world, argv, code, *phrases):
    """Run argv; it must fail with `code` and one line on stderr, an ERROR holding every phrase,
    nothing on stdout, no traceback, and change nothing. Returns the result."""
    before = world.state()
    result = world.run(*argv)
    assert result.code == code, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert result.err.startswith('ERROR: ')
    for phrase in phrases:
        assert phrase in result.err
    assert 'Traceback' not in result.err and result.out == ''
    assert world.state() == before
    return result


def write_disk(vol, vmid, name, size=8192):
    path = vol.path / 'images' / str(vmid) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def populate(pve, a, b):
    """Storages, VMs and disk files of the world, on a started fakepve and two emulators."""
    pve.add_node('pve2')
    for sid, export in (('ONTAP01', '/proxmox_storage01'), ('ONTAP02', '/proxmox_storage02')):
        pve.storages[sid] = {'type': 'nfs', 'server': '127.0.0.1', 'export': export, 'path': '/mnt/pve/' + sid,
                             'content': 'images', 'active': 1, 'files': set(), 'volumes': {}}
    pve.storages['ONTAP01']['options'] = 'nconnect=16'

    vol1 = a.add_volume('proxmox_storage01', svm='svm1')
    a.add_volume('other_volume', svm='svm1')
    vol2 = b.add_volume('proxmox_storage02', svm='svm2')
    for key in VM100_ONTAP_DISKS + ['unused0']:
        sid, volname = VM100[key].split(',')[0].split(':')
        write_disk(vol1 if sid == 'ONTAP01' else vol2, 100, volname.split('/')[1])
    write_disk(vol1, 101, 'vm-101-disk-0.raw')

    pve.add_vm(100, 'web', node='pve1', status='running', config=VM100)
    pve.add_vm(101, 'db', node='pve2', status='stopped', config=VM101)
    pve.add_vm(102, 'local', node='pve1', status='stopped', config=VM102)


def add_vm_on_both_clusters(world, vmid, node='pve1', status='running', older=()):
    """A VM with two disks, scsi0 on ONTAP01 (cluster A) and scsi1 on ONTAP02 (cluster B), and
    a snapshot set of both for each stamp in `older`, as an earlier run would have left it."""
    config = {}
    for n, (sid, vol) in enumerate((('ONTAP01', world.vol1), ('ONTAP02', world.vol2))):
        name = f'vm-{vmid}-disk-{n}.raw'
        data = write_disk(vol, vmid, name, size=4096).read_bytes()
        for stamp in older:
            world.disk(vol, vmid, f'vm-{vmid}-disk-{n}-snapshot-{stamp}.raw').write_bytes(data)
        config[f'scsi{n}'] = f'{sid}:{vmid}/{name},size=4K'
    return world.pve.add_vm(vmid, f'vm{vmid}', node=node, status=status, config=config)


def destroy_vm(world, vmid, node):
    """Destroy a VM through the PVE API as an admin would, the files of its disks and unused disks
    going with it (as PVE's destroy removes every volume its config names, on NFS too; fakepve
    only forgets its records of them). Files it does not name stay: destroy-unreferenced-disks
    is off by default in the API (qemu-server API2/Qemu.pm destroy_vm)."""
    api = proxmoxer.ProxmoxAPI(world.pve_host, user=PVE_USER, password=PVE_PASSWORD, verify_ssl=world.pve_cafile)
    config = dict(world.pve.vm(vmid).config)
    api.nodes(node).qemu(vmid).delete()
    wait_for_tasks(world.pve)
    assert world.pve.vm(vmid) is None
    for key, value in config.items():
        volume = tool.Guest.parse_volume(value) if tool.Guest.parse_disk(key, value) or key.startswith('unused') else None
        if volume and volume[2]:
            (world.vol1 if volume[0] == 'ONTAP01' else world.vol2).path.joinpath(volume[2]).unlink()


def pve_reads_nfs_directories(world):
    """fakepve knows a storage's volumes only from its own records, where PVE reads an NFS
    storage's directory: a create takes an existing volume and reads its size from the file
    (qemu-server API2/Qemu.pm, create_disks). So fakepve is made to see every image file in
    images/ of the two ONTAP volumes too, as PVE sees them over NFS."""
    pve, original = world.pve, world.pve._volumes
    roots = {'ONTAP01': world.vol1.path, 'ONTAP02': world.vol2.path}

    def volumes(storage):
        found = original(storage)
        for path in sorted((roots[storage] / 'images').glob('*/*')) if storage in roots else ():
            volname = f'{path.parent.name}/{path.name}'
            if tool.Guest.IMAGE_VOLNAME.match(volname) and volname not in found:
                found[volname] = {'content': 'images', 'format': path.suffix[1:], 'size': path.stat().st_size,
                                  'vmid': int(path.parent.name), 'ctime': 0}
        return found
    pve._volumes = volumes


def pve_detaches_disks(pve):
    """PVE keeps the file of a disk deleted from a stopped VM's config (without `force`), or
    given another file, as an unusedN entry (qemu-server PVE/QemuServer.pm, vmconfig_apply_pending
    and vmconfig_delete_or_detach_drive); fakepve drops it from the config. So fakepve is made
    to do as PVE does."""
    original = pve._apply_config

    async def apply(vm, user, params):
        before = dict(vm.config)
        await original(vm, user, params)
        if vm.status == 'running' or params.get('force'):
            return
        used = {tool.Guest.drive_volume(value) for key, value in vm.config.items()
                if tool.Guest.DISK_KEY.match(key) or tool.Guest.UNUSED_KEY.match(key)}
        for key, value in sorted(before.items()):
            found = tool.Guest.parse_disk(key, value)
            if found and found.volid not in used:
                vm.config[next(f'unused{n}' for n in range(256) if f'unused{n}' not in vm.config)] = found.volid
                used.add(found.volid)
    pve._apply_config = apply


def lose_pve_answer(pve, method, path):
    """fakepve carries out every `method` request whose path ends with `path`, then resets the
    connection instead of answering (its own network faults drop a request before it is served)."""
    original = pve._answer

    async def answer(request, *rest):
        response = await original(request, *rest)
        if request.method == method and request.path.endswith(path):
            request.transport.close()
            raise ConnectionResetError('test world: the answer was lost')
        return response
    pve._answer = answer


def drop_pve_request(pve, method, path):
    """fakepve resets the connection of every `method` request whose path ends with `path`
    before serving it: to the tool an answer lost after the request went out, of a change that
    was not made."""
    original = pve._answer

    async def answer(request, *rest):
        if request.method == method and request.path.endswith(path):
            request.transport.close()
            raise ConnectionResetError('test world: the request was dropped')
        return await original(request, *rest)
    pve._answer = answer


# The names the README's examples use, as if the original tool had made them before.
ORIGINAL_STAMP = '2024-03-13_14:42:47+0000'
OLD_SNAPSHOT = f'proxmox_snapshot_{ORIGINAL_STAMP}'
MARCH_SNAPSHOT = 'proxmox_snapshot_2024-03-14_10:00:00+0000'
EARLIER_SNAPSHOT = 'proxmox_snapshot_2024-03-12_10:00:00+0000'


def sized_as_pve_sizes_them(world):
    """PVE writes a disk's size into its config, `size=`, as the storage gives it: a raw file's
    length, a qcow2 file's virtual size (pve-storage Plugin.pm file_size_info, from `qemu-img
    info`; qemu-server update_disksize). The world's disk files are 8 KiB of random bytes whatever
    their config says; here they agree, as on a real storage, for what compares them (vm verify,
    storage verify): each raw disk's `size=` becomes its file's length, and each qcow2 disk gets a
    qcow2 header of the virtual size its config says."""
    roots = {'ONTAP01': world.vol1.path, 'ONTAP02': world.vol2.path}
    for guest, kind in [(vm, 'qemu') for vm in world.pve.vms] + [(ct, 'lxc') for ct in world.pve.cts]:
        for disk in tool.Guest.disks({'type': kind}, guest.config):
            path = roots[disk.storage] / disk.path if disk.storage in roots and disk.path else None
            if path is None or not path.exists():
                continue
            value = guest.config[disk.key]
            if disk.path.endswith('.qcow2'):
                write_qcow2(path, size=tool.Guest.drive_size(value) or 2**30)
            elif disk.path.endswith('.raw'):
                guest.config[disk.key] = re.sub(r'(^|,)size=[^,]*', rf'\g<1>size={pve_size(path.stat().st_size)}', value)


def pve_size(size):
    """Bytes as PVE writes a disk's size, in the largest unit that holds it whole (pve-common
    JSONSchema.pm format_size): 8192 -> 8K."""
    for unit in ('', 'K', 'M', 'G'):
        if size % 1024 or not size:
            return f'{size}{unit}'
        size //= 1024
    return f'{size}T'


def seed_history(world):
    """A VM snapshot of VM 100 (the original's: no saved config) and one of VM 101 with its saved
    config, three storage snapshots of ONTAP01 with the README's names, and a guest agent in VM
    100 (for -freeze), so that every README example runs here (fakepve seeing the disk files
    over NFS, as PVE does, for vm restore -as-new; each disk's size as PVE sizes it, for vm verify
    and storage verify), and the world's containers (add_containers), for the ct examples."""
    add_containers(world)
    sized_as_pve_sizes_them(world)
    for vol in (world.vol1, world.vol2):
        for name in world.files(vol, 100):
            stem, ext = name.rsplit('.', 1)
            (vol.path / 'images/100' / f'{stem}-snapshot-{ORIGINAL_STAMP}.{ext}').write_bytes(
                world.disk(vol, 100, name).read_bytes())
    world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{ORIGINAL_STAMP}.raw').write_bytes(
        world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes())
    vm101 = world.pve.vm(101)
    (disk,) = tool.Guest.vm_disks(vm101.config)
    (world.vol1.path / tool.Names.manifest_path(101, ORIGINAL_STAMP, 'shutdown')).write_text(tool.Manifest.build(
        {'vmid': 101, 'name': vm101.name, 'node': vm101.node}, [disk], vm101.config, ORIGINAL_STAMP, 'shutdown',
        {'ONTAP01': (world.a.host, world.vol1.svm, world.vol1.name)}, tool.Guest.config_text(vm101.config).encode(), 'api',
        tool.tool_version(), {disk.key: tool.Names.snapshot_file_path(disk.path, ORIGINAL_STAMP)}))
    pve_reads_nfs_directories(world)
    for name, created in ((EARLIER_SNAPSHOT, '2024-03-12T10:00:00+00:00'), (OLD_SNAPSHOT, '2024-03-13T14:42:47+00:00'),
                          (MARCH_SNAPSHOT, '2024-03-14T10:00:00+00:00')):
        world.a.add_snapshot('proxmox_storage01', name, comment='Snapshot of Proxmox storage ONTAP01',
                             create_time=created)
    world.with_agent(100)


# Stamps of VM snapshots an earlier run left, older than the original's ORIGINAL_STAMP.
OLDEST_STAMP, OLDER_STAMP = '2024-03-11_10:00:00+0000', '2024-03-12_10:00:00+0000'
VM101_DISK = 'vm-101-disk-0.raw'


def make_set(world, vmid, stamp, sources, kind='snapshot'):
    """A VM snapshot as the original (or an earlier run) left it, of the disks `sources` ((volume,
    file name) each): clone files (kind 'snapshot' or 'prerestore') with bytes of their own, no
    manifest. Returns {file name: the bytes of its clone}."""
    made = {}
    for vol, name in sources:
        stem, ext = name.rsplit('.', 1)
        made[name] = write_disk(vol, vmid, f'{stem}-{kind}-{stamp}.{ext}').read_bytes()
    return made


def vm100_sources(world):
    """The ONTAP disks of VM 100 as (volume, file name), by file name."""
    v1, v2 = world.vol1, world.vol2
    return [(v1, 'vm-100-disk-0.raw'), (v2, 'vm-100-disk-1.raw'), (v1, 'vm-100-disk-2.qcow2'),
            (v2, 'vm-100-disk-4.raw'), (v1, 'vm-100-disk-5.raw'), (v1, 'vm-100-disk-6.raw')]


def live_bytes(world, sources, vmid=100):
    """{file name: bytes} of the VM's live disks `sources`."""
    return {name: world.disk(vol, vmid, name).read_bytes() for vol, name in sources}


# PVE hands out the lowest free id (pve-manager API2/Cluster.pm nextid): a VM id is used again.
OLD_UUID, NEW_UUID = '11111111-2222-3333-4444-555555555555', '66666666-7777-8888-9999-000000000000'


def vm101_made(world, ctime, uuid):
    """VM 101 as PVE's create makes it: meta ctime and an SMBIOS uuid of its own."""
    world.pve.vm(101).config.update(meta=f'creation-qemu=9.2.0,ctime={ctime}', smbios1=f'uuid={uuid}')


def attach_snapshot_file(world, vmid, stamp, key='scsi5'):
    """The admin attaches the file of disk 0 in VM snapshot `stamp` to the VM as disk `key`, to
    copy data out of it; returns its volume id."""
    volid = f'ONTAP01:{vmid}/vm-{vmid}-disk-0-snapshot-{stamp}.raw'
    world.pve.vm(vmid).config[key] = volid
    return volid


# What PVE gives a VM it makes: a NIC's MAC address, an SMBIOS uuid, a vmgenid (conftest.py's vm101).
MAC = 'BC:24:11:AA:BB:CC'
SMBIOS_UUID = '11111111-2222-3333-4444-555555555555'
VMGENID = '66666666-7777-8888-9999-000000000000'


# Two storage snapshots across the end of summer time in a cluster at UTC+2/+1: DST_A is older,
# but its create_time text sorts after DST_B's.
DST_A, DST_B = 'proxmox_snapshot_2024-10-27_00:30:00+0000', 'proxmox_snapshot_2024-10-27_01:15:00+0000'


def snapshots_across_a_dst_change(world):
    utc = datetime.UTC
    world.a.utc_offset = datetime.timedelta(hours=2)
    world.a.add_snapshot('proxmox_storage01', DST_A, create_time=datetime.datetime(2024, 10, 27, 0, 30, tzinfo=utc))
    world.a.utc_offset = datetime.timedelta(hours=1)
    world.a.add_snapshot('proxmox_storage01', DST_B, create_time=datetime.datetime(2024, 10, 27, 1, 15, tzinfo=utc))
    assert world.vol1.snapshots[DST_A].create_time == '2024-10-27T02:30:00+02:00'
    assert world.vol1.snapshots[DST_B].create_time == '2024-10-27T02:15:00+01:00'


def record_of(path):
    """{'vm-101': manifest, 'ct-200': …} of a storage snapshot's record file (as the tool reads it:
    its first JSON value); None if there is none."""
    if not path.exists():
        return None
    manifests = tool.Manifest.read_storage_record(path.read_bytes(), str(path))
    return {f'{"ct" if m["type"] == "lxc" else "vm"}-{m["vmid"]}': m for m in manifests}


def log_in_without_vm_audit(world):
    """The tool logs in to PVE as ops@pve, who may use the storages but not see the guests (no VM.Audit)."""
    world.pve.users['ops@pve'] = 'ops-Secr3t'
    world.pve.grant('ops@pve', '/storage', 'Datastore.Allocate', 'Datastore.Audit')
    world.pve.grant('ops@pve', '/', 'Sys.Audit')
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = ops@pve\nproxmox_pass = ops-Secr3t\n'
                               f'proxmox_verify = {world.pve_cafile}\n')


class PmxcfsLocks:
    """What pmxcfs does with priv/lock/ beside a plain directory's mkdir (pve-cluster
    src/README, "File Locking"; memdb.c memdb_lock_expired): `utime 0 0` on a lock is an unlock
    request, which removes the lock if it was not updated for `expiry` seconds (pmxcfs: 120),
    measured by its own clock from the last update it saw; an update is any other utime (its
    checksum covers the entry's version, so one within the same second counts too): seen here
    by polling as a new ctime. A run's requests show as mtime 0; a test's go through
    unlock_request, so that none hides an update."""

    def __init__(self, directory, expiry):
        self.directory, self.expiry = directory, expiry
        self.seen = {}      # lock path -> (mtime, ctime, when we saw it updated)
        self.guard = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def run(self):
        while not self.stop.wait(0.02):
            for lock in list(self.directory.iterdir()) if self.directory.exists() else []:
                self.observe(lock)

    def unlock_request(self, lock):
        self.observe(lock, request=True)

    def observe(self, lock, request=False):
        with self.guard:
            try:
                info = lock.stat()
            except FileNotFoundError:
                return
            if lock not in self.seen:     # pmxcfs's clock starts when it first sees a lock
                self.seen[lock] = (info.st_mtime or time.time(), info.st_ctime_ns, time.monotonic())
            last, ctime, since = self.seen[lock]
            if info.st_mtime and info.st_ctime_ns != ctime:
                self.seen[lock] = last, ctime, since = info.st_mtime, info.st_ctime_ns, time.monotonic()
            if info.st_mtime == 0 or request:
                if time.monotonic() - since > self.expiry:
                    os.rmdir(lock)
                    del self.seen[lock]
                elif info.st_mtime == 0:    # pmxcfs keeps the lock as it was
                    os.utime(lock, (last, last))
                    self.seen[lock] = last, lock.stat().st_ctime_ns, since


class World:
    """The servers, the config.ini that points at them, and ways to look at their state."""

    def __init__(self, pve, pve_cafile, a, b, directory, capture=None):
        self.pve, self.pve_cafile, self.a, self.b = pve, pve_cafile, a, b
        self.dir = Path(directory)
        self._capture = capture
        self.vol1 = a.volume('proxmox_storage01')
        self.vol2 = b.volume('proxmox_storage02')
        self.config = self.dir / 'config.ini'
        self.write_config()

    @property
    def pve_host(self):
        return f'{self.pve.host}:{self.pve.port}'

    def write_config(self, **overrides):
        """config.ini for this world; an override replaces a section's text (None drops it)."""
        sections = {
            'proxmox': f'proxmox_host = {self.pve_host}\nproxmox_user = {PVE_USER}\n'
                       f'proxmox_pass = {PVE_PASSWORD}\nproxmox_verify = {self.pve_cafile}\n',
            'ONTAP01': f'host = {self.a.host}\nuser = admin\npass = {ONTAP_PASSWORD}\nverify = {self.a.cafile}\n',
            'ONTAP02': f'host = {self.b.host}\nuser = admin\npass = {ONTAP_B_PASSWORD}\nverify = {self.b.cafile}\n'
                       'svm = svm2\n',
        }
        sections.update(overrides)
        text = ''.join(f'[{name}]\n{body}\n' for name, body in sections.items() if body is not None)
        self.config.write_text(text)
        os.chmod(self.config, 0o600)
        return self.config

    def run(self, *argv):
        """main() as an admin types it, with this world's config; returns Result."""
        self._capture.readouterr()
        code = tool.main(['-config', str(self.config)] + [str(a) for a in argv])
        captured = self._capture.readouterr()
        return Result(code, captured.out, captured.err)

    def lock_name(self, storage='ONTAP01'):
        """The lock name of the volume behind ONTAP01 or ONTAP02 (one per volume, not per storage)."""
        emu, vol = (self.a, self.vol1) if storage == 'ONTAP01' else (self.b, self.vol2)
        return tool.VolumeLock.file_name(emu.host, vol.svm, vol.name)

    def lock_file(self, lock_dir, storage='ONTAP01'):
        """This node's lock file of that volume (-local-lock)."""
        return Path(lock_dir) / self.lock_name(storage)

    def cluster_lock(self, cluster_dir, storage='ONTAP01'):
        """The cluster-wide lock directory of that volume, in the directory standing for /etc/pve/priv."""
        return Path(cluster_dir) / 'lock' / (tool.Locks.CLUSTER_PREFIX + self.lock_name(storage))

    def lock_record(self, cluster_dir, storage='ONTAP01'):
        """Who holds the cluster lock of that volume, and the stamps used lately."""
        return Path(cluster_dir) / tool.Locks.CLUSTER_RECORD_DIR / self.lock_name(storage)

    def noted(self, cluster_dir, storage='ONTAP01'):
        """The entries of the lock record of that volume after its holder: the stamps the runs used
        lately ('vm101 <stamp>') and the capture snapshots a run noted ('<capture> <stamp>')."""
        return self.lock_record(cluster_dir, storage).read_text().splitlines()[1:]

    def noted_captures(self, cluster_dir):
        """The capture snapshots the runs noted in the lock records of both volumes, as still to delete."""
        return [line.split()[0] for storage in ('ONTAP01', 'ONTAP02') for line in self.noted(cluster_dir, storage)
                if line.startswith(tool.Names.CAPTURE_PREFIX)]

    def add_storage_snapshots(self):
        """On ONTAP01's volume: the original's OLD_SNAPSHOT, an hourly snapshot of ONTAP's own schedule
        after it, and MARCH_SNAPSHOT, the newest."""
        self.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, create_time='2024-03-13T14:42:47+00:00')
        self.a.add_snapshot('proxmox_storage01', 'hourly.2024-03-14_0905', create_time='2024-03-14T09:05:00+00:00')
        self.a.add_snapshot('proxmox_storage01', MARCH_SNAPSHOT, create_time='2024-03-14T10:00:00+00:00')

    def usage_error(self, *argv):
        """Run argv; it must be refused as usage (exit 2) before anything changes: the error line."""
        before = self.state()
        try:
            self.run(*argv)
        except SystemExit as exit_:
            code = exit_.code
        else:
            code = None
        assert code == 2, code
        assert self.state() == before
        return self._capture.readouterr().err.strip().splitlines()[-1]

    def requests_of(self, *argv):
        """(ONTAP requests, PVE requests) of one successful command."""
        before = len(self.a.requests) + len(self.b.requests), len(self.pve.requests)
        result = self.run(*argv)
        assert result.code == 0, result.err
        return len(self.a.requests) + len(self.b.requests) - before[0], len(self.pve.requests) - before[1]

    def ontap_requests(self, method='*', path='*', on=None):
        """The requests ONTAP got so far whose method and path match, cluster A's and then B's
        (or those of the emulator `on` alone), as the emulators record them (method, path,
        query, body, status). `method` and `path` are fnmatch patterns whose * spans slashes:
        '*/snapshots' ends so, '/api/cluster/jobs/*' begins so, a path without * is that path."""
        return [r for emu in ((self.a, self.b) if on is None else (on,)) for r in list(emu.requests)
                if fnmatchcase(r['method'], method) and fnmatchcase(r['path'], path)]

    def pve_requests(self, method='*', path='*'):
        """The requests fakepve got so far whose method and path (/api2/json/...) match, as
        (method, path, params): fnmatch patterns as in ontap_requests; params, a form body's."""
        return [PveRequest(m, p, pve_params(b)) for m, p, b in list(self.pve.requests)
                if fnmatchcase(m, method) and fnmatchcase(p, path)]

    def ontap_changes(self, on=None):
        """The requests that asked ONTAP to change something (every method but GET), as ontap_requests."""
        return [r for r in self.ontap_requests(on=on) if r['method'] != 'GET']

    def pve_changes(self):
        """The requests that asked PVE to change something (every method but GET; a login is no change)."""
        return [r for r in self.pve_requests() if r.method != 'GET' and not r.path.endswith('/access/ticket')]

    def power_requests(self, vmid='*'):
        """What PVE was asked to do to the power state of the VMs (or of VM `vmid`), in order, as
        (action, params): ('suspend', {'todisk': '1'}), ('resume', {}), ... (POST .../status/<action>)."""
        return [(r.path.rsplit('/', 1)[1], r.params) for r in self.pve_requests('POST', f'*/qemu/{vmid}/status/*')]

    def power_actions(self, vmid='*'):
        """The actions of power_requests alone: ['shutdown', 'start'], say."""
        return [action for action, _ in self.power_requests(vmid)]

    def logins(self):
        """How many times a run logged in to PVE with a password (POST .../access/ticket)."""
        return len(self.pve_requests('POST', '*/access/ticket'))

    def json(self, *argv):
        """The JSON a successful command prints with -output json."""
        result = self.run('-output', 'json', *argv)
        assert result.code == 0, result.err
        return json.loads(result.out)

    def vm_snapshots(self, vmid):
        """vm list -vm VMID as JSON: one dict per snapshot (stamp, kind, complete, consistency, files, ...)."""
        return self.json('vm', 'list', '-vm', vmid)

    def vm_snapshot(self, vmid, *flags, kind='vm'):
        """vm create of one VM (kind='ct': ct create of one container), which must succeed; the stamp
        of the snapshot it made."""
        before = self.vm_stamps(vmid)
        result = self.run(kind, 'create', f'-{kind}', vmid, *flags)
        assert result.code == 0, result.err
        (stamp,) = set(self.vm_stamps(vmid)) - set(before)
        return stamp

    def vm_stamps(self, vmid):
        """The stamps of the VM's (or container's) snapshots (and pre-restore undo points) on both
        volumes, from their clone files, oldest first."""
        return sorted({re.search(tool.Names.STAMP_PATTERN, name)[0] for vol in (self.vol1, self.vol2)
                       for name in self.clones(vol, vmid)})

    def storage_snapshots(self, vol=None):
        """The names of the tool's storage snapshots of that volume (ONTAP01's by default), sorted."""
        return sorted(name for name in (vol or self.vol1).snapshots
                      if name.startswith(tool.Names.STORAGE_SNAPSHOT_PREFIX))

    def storage_record(self, name):
        """The record of ONTAP01's storage snapshot `name`, as record_of reads it."""
        return record_of(self.vol1.snapshots[name].path / tool.Names.STORAGE_RECORD)

    def as_an_earlier_build_recorded(self, name, written=None):
        """Turn ONTAP01's storage snapshot `name` into one an earlier build took: its record becomes one
        manifest file per guest in pve-ontap-snapshot/ (the text written(guest, manifest) gives, else
        the manifest as JSON). Returns the record as it was ({'vm-101': manifest, …})."""
        snapshot = self.vol1.snapshots[name].path
        record = self.storage_record(name)
        (snapshot / tool.Names.STORAGE_RECORD_DIR).mkdir()
        for guest, manifest in record.items():
            (snapshot / tool.Names.STORAGE_RECORD_DIR / f'{guest}.{manifest["consistency"]}.manifest.json').write_text(
                written(guest, manifest) if written else json.dumps(manifest))
        (snapshot / tool.Names.STORAGE_RECORD).unlink()
        return record

    def with_agent(self, vmid=100):
        """The VM with a QEMU guest agent configured and answering; returns it."""
        vm = self.pve.vm(vmid)
        vm.config['agent'], vm.agent = '1', {}
        return vm

    def disk(self, vol, vmid, name):
        return vol.path / 'images' / str(vmid) / name

    def files(self, vol, vmid):
        folder = vol.path / 'images' / str(vmid)
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def clones(self, vol, vmid):
        """The names of the VM's snapshot clones on that volume (not their saved configs and manifests)."""
        return [name for name in self.files(vol, vmid) if tool.Names.SNAPSHOT_FILE.match(name)]

    def snapshot_files(self, vmid=100):
        """The names of the VM's snapshot clones on both volumes (ONTAP01's first)."""
        return self.clones(self.vol1, vmid) + self.clones(self.vol2, vmid)

    def records(self, vol, vmid):
        """The names of the configs and manifests saved beside the VM's snapshot clones."""
        return [name for name in self.files(vol, vmid) if tool.Names.MANIFEST_FILE.match(name)]

    def state(self):
        """Everything a failed command must leave as it was, in comparable form: the volumes, the storages,
        and the VMs and containers (status, config with its lock, pending)."""
        def volumes(emu):
            return {v.name: (sorted(v.snapshots), sorted(str(p.relative_to(v.path)) for p in v.path.rglob('*')))
                    for v in emu.volumes}
        return (volumes(self.a), volumes(self.b),
                {sid: {k: v for k, v in s.items() if k not in ('files', 'volumes')}
                 for sid, s in self.pve.storages.items()},
                {vm.vmid: (vm.status, vm.lock, dict(vm.config), dict(vm.pending)) for vm in self.pve.vms},
                {ct.vmid: (ct.status, dict(ct.config), dict(ct.pending)) for ct in self.pve.cts})


def wait_for_tasks(pve, timeout=30):
    """Until every PVE task has stopped, so that a test checks the state it leaves for good."""
    deadline = time.monotonic() + timeout
    while any(task['status'] != 'stopped' for task in list(pve.tasks.values())):
        if time.monotonic() > deadline:
            raise TimeoutError('a PVE task is still running')
        time.sleep(0.05)


def with_running_guests(world):
    """Running on ONTAP01: VM 100 and 101 with a guest agent, VM 103 without one, container 200;
    VM 104 with an agent runs on ONTAP02 only. Returns the VMs by id."""
    for vmid in (100, 101):
        vm = world.with_agent(vmid)
        vm.status = vm.qmpstatus = 'running'
    write_disk(world.vol1, 103, 'vm-103-disk-0.raw')
    world.pve.add_vm(103, 'plain', node='pve2', status='running',
                     config={'scsi0': 'ONTAP01:103/vm-103-disk-0.raw,size=1G', 'memory': 512})
    write_disk(world.vol2, 104, 'vm-104-disk-0.raw')
    world.pve.add_vm(104, 'elsewhere', node='pve2', status='running',
                     config={'scsi0': 'ONTAP02:104/vm-104-disk-0.raw,size=1G', 'agent': '1', 'memory': 512})
    world.pve.vm(104).agent = {}
    add_container(world)
    return {vmid: world.pve.vm(vmid) for vmid in (100, 101, 103, 104)}


def agent_commands(vm):
    """What the VM's guest agent was asked, in order, its pings left out: ['fsfreeze-freeze', ...]."""
    return [command for command, _ in vm.agent_requests if command != 'ping']


def add_container(world):
    """Container 200 running on pve2, its root file system on ONTAP01, a bind mount beside it."""
    write_disk(world.vol1, 200, 'vm-200-disk-0.raw')
    world.pve.add_ct(200, 'files', node='pve2', status='running',
                     config={'rootfs': 'ONTAP01:200/vm-200-disk-0.raw,size=8G', 'hostname': 'files',
                             'mp0': '/srv/data,mp=/data'})


SCRIPT = Path(tool.__file__).resolve()
FILE_CLONE = '/api/storage/file/clone'


def is_capture(record):
    """The request (an ONTAP emulator's record of it) that takes a capture snapshot: the guests are
    held (paused, frozen) while it is under way."""
    return record['method'] == 'POST' and record['path'].endswith('/snapshots')


def signalled_run(world, argv, when, *signals, to_a_worker=False, script=SCRIPT):
    """Run the tool as a process of its own with `argv` and send it `signals` (one after the
    other, 0.5 s apart) the moment the first request `when(record)` reaches either ONTAP
    emulator. They are sent from the emulator, before it answers that request: no polling delay
    lets a loaded machine's run get further first. `to_a_worker`: to one of its threads other
    than the main one, as the kernel may choose for a signal to the process (signal(7)). `script`:
    what runs as the tool (a CtNode's launcher: the tool on that node). The exit code and stderr,
    once the run and every PVE task have ended; that it had no traceback is checked here."""
    sent = threading.Event()

    def send(record):
        if when(record) and not sent.is_set():
            sent.set()
            for count, signum in enumerate(signals):
                time.sleep(0.5 if count else 0)
                if to_a_worker:
                    send_to_a_worker(process.pid, signum)
                else:
                    process.send_signal(signum)

    world.a.on_request = world.b.on_request = send
    try:
        process = subprocess.Popen(as_typed(world, argv, script), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        _, err = process.communicate(timeout=60)
    finally:
        world.a.on_request = world.b.on_request = None
    wait_for_tasks(world.pve)
    assert sent.is_set(), f'the run never sent such a request: {err}'
    assert 'Traceback' not in err, err
    return process.returncode, err


def as_typed(world, argv, script=SCRIPT):
    """The command line of the tool (`script`) as a process of its own, with this world's config."""
    return [sys.executable, str(script), '-config', str(world.config), *map(str, argv)]


def on_a_terminal(world, keys, *argv):
    """Run the tool with `argv` as a process, its stdin on a pseudo-terminal with `keys` typed
    ahead: (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(as_typed(world, argv), stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        os.write(master, keys)
        out, err = process.communicate(timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    return process.returncode, out, err


def answer_after_a_change(world, change, *argv):
    """Run the tool with `argv` as a process on a pseudo-terminal; once its question is shown
    (on stderr), change() the world, then say yes. The exit code and the stderr that follows the
    answer."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(as_typed(world, argv), stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        shown, deadline = b'', time.monotonic() + 20
        while b'[y/N]' not in shown and time.monotonic() < deadline:
            if select.select([process.stderr], [], [], 0.1)[0]:
                shown += os.read(process.stderr.fileno(), 4096)
        assert b'[y/N]' in shown
        change()
        os.write(master, b'y\n')
        _, err = process.communicate(timeout=30)
    finally:
        os.close(slave)
        os.close(master)
    return process.returncode, err.decode()


HOLDER = '4242 pve2 2024-03-13_14:42:47+0000 storage create -storage ONTAP01'


def write_lock_record(world, cluster_dir, holder, *entries, storage='ONTAP01'):
    """The lock record of that volume as a run left it: its holder line, then `entries` (the stamps
    used lately, the capture snapshots it noted). Returns its path."""
    record = world.lock_record(cluster_dir, storage)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(''.join(line + '\n' for line in (holder, *entries)))
    return record


def hold_cluster_lock(world, cluster_dir, storage='ONTAP01', holder=HOLDER):
    """Another run's cluster lock of that volume, as a run on node pve2 leaves it (its record naming
    `holder`); returns the lock directory."""
    lock = world.cluster_lock(cluster_dir, storage)
    lock.parent.mkdir(exist_ok=True)
    lock.mkdir()
    write_lock_record(world, cluster_dir, holder, storage=storage)
    return lock


def kill_while_paused(world, vmid=100):
    """vm create -pause of VM `vmid` as a process, killed (SIGKILL: the OOM killer, a node reset) as
    its capture reaches ONTAP: the VM is left paused by a run that died. Returns the VM."""
    vm = world.pve.vm(vmid)
    vm.status = vm.qmpstatus = 'running'
    code, _ = signalled_run(world, ['vm', 'create', '-vm', vmid, '-pause'], is_capture, signal.SIGKILL)
    assert code == -signal.SIGKILL and vm.qmpstatus == 'paused'
    return vm


def send_to_a_worker(pid, signum):
    """Send `signum` to a thread of process `pid` other than its main thread (glibc's tgkill)."""
    worker = next(int(task) for task in sorted(os.listdir(f'/proc/{pid}/task')) if int(task) != pid)
    if ctypes.CDLL(None, use_errno=True).tgkill(pid, worker, signum):
        raise OSError(ctypes.get_errno(), f'tgkill {pid} {worker}')


def interrupt_once_cloning(world, *argv, to_a_worker=False):
    """Run the tool with `argv`, interrupted (SIGINT) as its first file clone reaches ONTAP; its
    stderr, once it is checked that the run stopped as a signal says (exit 130)."""
    code, err = signalled_run(world, argv, lambda record: record['path'] == FILE_CLONE, signal.SIGINT,
                              to_a_worker=to_a_worker)
    assert code == 128 + signal.SIGINT, err
    assert err.splitlines()[-1].startswith('ERROR: stopped by SIGINT ('), err
    return err


def cloning(path):
    """A fault's `match` for the file clone of the disk at `path` (images/<vmid>/<file>), made
    from the live disk (a stopped VM, a restore's undo point) or from a capture snapshot
    (`.snapshot/<capture>/<path>`: a running VM)."""
    def matches(body):
        source = str((body or {}).get('source_path', ''))
        return source == path or source.endswith('/' + path)
    return matches


def cloning_of_vm(vmid):
    """A fault's `match` for the file clone of any disk of VM `vmid` (from a capture, or its live file)."""
    return lambda body: re.match(rf'(\.snapshot/[^/]+/)?images/{vmid}/', body.get('source_path', '')) is not None


def slow_clones(world, seconds, vmid=None):
    """Every file clone (of VM `vmid`'s disks) on both clusters takes `seconds` to end, as a job."""
    for emu in (world.a, world.b):
        emu.slow_job('POST', FILE_CLONE, seconds, times=None, match=cloning_of_vm(vmid) if vmid else None)


def pve_params(body):
    """The parameters of a request as fakepve recorded it (a form body)."""
    text = body.decode() if isinstance(body, bytes) else str(body or '')
    return {k: v[0] for k, v in urllib.parse.parse_qs(text).items()}


def closed_port():
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def silent_port():
    """A loopback port that never answers a connect: it listens, but its backlog is full, so
    the kernel drops further SYNs (a host behind a dropping firewall)."""
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen(0)
        port = server.getsockname()[1]
        waiting = [socket.socket() for _ in range(8)]
        for client in waiting:
            client.setblocking(False)
            client.connect_ex(('127.0.0.1', port))
        try:
            yield port
        finally:
            for client in waiting:
                client.close()


def start_emulators(directory, ca=None, release=NEWEST_RELEASE):
    a = OntapEmulator(Path(directory) / 'cluster-a', password=ONTAP_PASSWORD, cluster_name='cluster-a', ca=ca,
                      release=release)
    b = OntapEmulator(Path(directory) / 'cluster-b', password=ONTAP_B_PASSWORD, cluster_name='cluster-b',
                      ca=a.ca if ca is None else ca, release=release)
    return a.start(), b.start()


class ServedPve:
    """fakepve outside pytest: a FakePve on its own event loop in a daemon thread."""

    def __init__(self, directory, time_scale=0.0):
        from fakepve import FakePve
        from fakepve.certs import make_cert
        certfile, keyfile, _ = make_cert(str(directory), hosts=('127.0.0.1',))
        self.cafile = certfile
        self.pve = FakePve(user=PVE_USER, password=PVE_PASSWORD, host='127.0.0.1', port=0)
        self.pve.time_scale = time_scale
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._call(self.pve.start(certfile, keyfile))

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self):
        self._call(self.pve.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


@contextlib.contextmanager
def recording_https_server(ca, answer):
    """An HTTPS server on 127.0.0.1 with a certificate of `ca` (trustme): each request, as
    {'method', 'path', 'headers', 'body'}, goes to the list it yields (with its host:port as
    `.host`); answer(request) gives (status, headers, body bytes)."""
    import http.server
    import ssl

    class Requests(list):
        host = None

    seen = Requests()

    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_one(self):
            body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
            request = {'method': self.command, 'path': self.path, 'headers': dict(self.headers), 'body': body}
            seen.append(request)
            status, headers, data = answer(request)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_one

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert('127.0.0.1').configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    seen.host = f'127.0.0.1:{server.server_address[1]}'
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def write_qcow2(path, backing=None, size=2**30):
    """A qcow2 file's header as qemu-img writes it (QEMU docs/interop/qcow2.txt: magic, version 3,
    backing_file_offset and _size, cluster_bits 16, the virtual size), naming `backing` (relative
    to the file's directory, as PVE names a volume chain's snapshot or a linked clone's base) right
    after the header; padded to 8 KiB. Nothing but the tool's header read looks inside."""
    name = (backing or '').encode()
    header = (b'QFI\xfb' + (3).to_bytes(4, 'big') + (512 if name else 0).to_bytes(8, 'big') +
              len(name).to_bytes(4, 'big') + (16).to_bytes(4, 'big') + size.to_bytes(8, 'big'))
    data = header.ljust(512, b'\0') + name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.ljust(8192, b'\0'))
    return path


def write_pmxcfs_configs(pve, directory):
    """Every guest's config as pmxcfs shows it to a node: nodes/<node>/qemu-server/<vmid>.conf
    and nodes/<node>/lxc/<vmid>.conf under `directory` (pve-cluster src/README), written as
    qemu-server and pve-container write them (the description as `#` lines, then `key: value`;
    PVE/QemuServer.pm write_vm_config, PVE/LXC/Config.pm write_pct_config), a VM's pending
    changes in [PENDING]. Returns the nodes directory, for Node.CONFIGS_DIR; written anew at
    each call (the fake's configs change through its API)."""
    nodes = Path(directory) / 'nodes'
    for guests, kind in ((pve.vms, 'qemu-server'), (pve.cts, 'lxc')):
        for guest in guests:
            config = dict(guest.config)
            lines = [f'#{line}' for line in str(config.pop('description', '')).splitlines()]
            lines += [f'{key}: {value}' for key, value in sorted(config.items())]
            pending = getattr(guest, 'pending', None)
            if pending:
                lines += ['', '[PENDING]'] + [f'{key}: {value}' for key, value in sorted(pending.items())]
            path = nodes / guest.node / kind / f'{guest.vmid}.conf'
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text('\n'.join(lines) + '\n')
    return nodes


# The privileges of the guest agent, where PVE 8 and 9 differ for this tool. PVE 9 split
# VM.Monitor up into VM.GuestAgent.* for the agent (qemu-server API2/Qemu/Agent.pm, commit
# b92a40ce, 2025-07-17) and dropped VM.Monitor (pve-access-control 0706945, "privileges: drop
# VM.Monitor", 2025-07-17); PVE 8 knows only VM.Monitor, which every agent call checks. A
# privilege the release does not know is ignored in a role ("user config - ignore invalid
# privilege": pve-access-control src/PVE/AccessControl.pm). fakepve checks PVE 9's schema.
AGENT_PRIVILEGES = {8: ('VM.Monitor',), 9: ('VM.GuestAgent.Audit', 'VM.GuestAgent.FileRead',
                                            'VM.GuestAgent.FileSystemMgmt', 'VM.GuestAgent.FileWrite',
                                            'VM.GuestAgent.Unrestricted')}
PVE_VERSIONS = {8: ('8.4.1', '8.4'), 9: ('9.0.10', '9.0')}


def play_pve_release(world, major):
    """The fake as PVE `major` (8 or 9) where the releases differ for this tool: its version, and
    which privileges exist and which one each guest agent call checks (AGENT_PRIVILEGES)."""
    pve = world.pve
    pve.version, pve.release_version = PVE_VERSIONS[major]
    unknown = set(AGENT_PRIVILEGES[17 - major])
    grant, allowed = type(pve).grant.__get__(pve), type(pve).allowed.__get__(pve)

    def grant_known(user, path, *privileges):
        grant(user, path, *[p for p in privileges if p not in unknown])

    def allowed_as_released(user, path, privilege):
        if major == 8 and privilege in AGENT_PRIVILEGES[9]:
            privilege = 'VM.Monitor'
        return allowed(user, path, privilege)

    pve.grant, pve.allowed = grant_known, allowed_as_released


def readme_role(major):
    """The privileges of the README's least-privilege role for PVE `major` (its `pveum role add`)."""
    readme = (Path(__file__).resolve().parent.parent / 'README.md').read_text()
    return re.search(rf'# PVE {major}\b.*\npveum role add PVEOntapSnapshot -privs "([^"]+)"', readme)[1].split(',')


def log_in_with_role(world, user, password, privileges):
    """config.ini logs in as `user`, who holds `privileges` on / (propagated), as the README's
    `pveum acl modify / -role` gives them."""
    world.pve.users[user] = password
    world.pve.grant(user, '/', *privileges)
    world.write_config(proxmox=f'proxmox_host = {world.pve_host}\nproxmox_user = {user}\n'
                               f'proxmox_pass = {password}\nproxmox_verify = {world.pve_cafile}\n')


# ---- containers

def add_containers(world):
    """The world's containers: CT 200 running on pve2, its root file system on ONTAP01 and a bind
    mount beside it (add_container); CT 201 stopped on pve1, its root file system on ONTAP01 and
    a mount point, mp0, on ONTAP02 (cluster B). Returns them by id."""
    add_container(world)
    write_disk(world.vol1, 201, 'vm-201-disk-0.raw')
    write_disk(world.vol2, 201, 'vm-201-disk-1.raw')
    world.pve.add_ct(201, 'mail', node='pve1', status='stopped',
                     config={'rootfs': 'ONTAP01:201/vm-201-disk-0.raw,size=8G', 'hostname': 'mail',
                             'mp0': 'ONTAP02:201/vm-201-disk-1.raw,mp=/var/mail,size=4G'})
    return {ctid: world.pve.ct(ctid) for ctid in (200, 201)}


def on_node_with_pmxcfs(monkeypatch, world, directory, node='pve1'):
    """This run as node `node`'s, as root (CtNode), its pmxcfs guest configs (/etc/pve/nodes) a
    directory of its own under `directory`, with the node's lxc/ there: returns that directory."""
    CtNode(monkeypatch, directory / node, node)
    nodes = write_pmxcfs_configs(world.pve, directory / 'etc-pve')
    (nodes / node / 'lxc').mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(tool.Node, 'CONFIGS_DIR', str(nodes))
    return nodes


class CtNode:
    """This run as node `node`'s, as root, for containers: fake `qm`, `pct`, `lxc-info`, `lxc-freeze`,
    `lxc-unfreeze` and `sync` where Node.PROGRAMS names them, playing the node's side. Each CT's
    freezer state (liblxc's: RUNNING, FROZEN) is a file of its own, RUNNING until lxc-freeze
    writes FROZEN and lxc-unfreeze RUNNING again; lxc-info -s reads it and -p gives a pid; every
    call is a line of the calls file. `fail(program)` makes a program fail from then on.
    `launcher` is a script running the tool as a process of its own on the same node (signalled_run's
    script=)."""

    SCRIPTS = {
        'lxc-info': 'state=$(cat "{freezer}/$3" 2>/dev/null || echo RUNNING)\n'
                    'case "$1" in -s) echo "State:          $state";; -p) echo "PID:            4242";; esac\n',
        'lxc-freeze': 'echo FROZEN > "{freezer}/$2"\n',
        'lxc-unfreeze': 'echo RUNNING > "{freezer}/$2"\n',
    }

    def __init__(self, monkeypatch, directory, node):
        self.dir, self.node = Path(directory), node
        bin_dir, self.freezer, self.calls_file = self.dir / 'bin', self.dir / 'freezer', self.dir / 'calls'
        bin_dir.mkdir(parents=True)
        self.freezer.mkdir()
        for name in tool.Node.PROGRAMS:
            body = self.SCRIPTS.get(name, '').format(freezer=self.freezer)
            script = bin_dir / name
            script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{self.calls_file}"\n'
                              f'if [ -e "{self.dir}/fail-{name}" ]; then echo "{name}: failed" >&2; exit 1; fi\n{body}')
            script.chmod(0o755)
        self.programs = {name: str(bin_dir / name) for name in tool.Node.PROGRAMS}
        monkeypatch.setattr(tool.Node, 'PROGRAMS', self.programs)
        monkeypatch.setattr(tool.Node, 'name', lambda: node)
        self.launcher = self.dir / 'on-node.py'
        self.launcher.write_text(
            f'import sys\nsys.path.insert(0, {str(SCRIPT.parent)!r})\nimport pve_ontap_snapshot as tool\n'
            f'tool.Node.PROGRAMS = {self.programs!r}\ntool.Node.name = staticmethod(lambda: {node!r})\n'
            'sys.exit(tool.main(sys.argv[1:]))\n')

    def calls(self):
        return self.calls_file.read_text().splitlines() if self.calls_file.exists() else []

    def state(self, ctid):
        path = self.freezer / str(ctid)
        return path.read_text().strip() if path.exists() else 'RUNNING'

    def freeze(self, ctid):
        """Freeze a CT as its admin would, before any run."""
        (self.freezer / str(ctid)).write_text('FROZEN\n')

    def fail(self, program):
        (self.dir / f'fail-{program}').touch()

