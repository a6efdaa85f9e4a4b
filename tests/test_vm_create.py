"""vm create of a VM: an ONTAP file clone of each of its disks on both clusters, named as the
original named them, one stamp for the run; a running VM's disks cloned from one short-lived
capture snapshot per volume, taken while the guest waits if a mode asks it to (-pause, -suspend,
-shutdown, -freeze); a manifest, the VM's config in it, saved beside the clones; the clones
registered as unused disks; -keep. Several VMs in one run are test_parallel.py's."""

import json
import re
import time
import types

import pytest
from fakepve import TaskError
from world import (
    FILE_CLONE,
    OLD_UUID,
    OLDER_STAMP,
    OLDEST_STAMP,
    ORIGINAL_STAMP,
    VM100,
    VM100_ONTAP_DISKS,
    VM101_DISK,
    agent_commands,
    attach_snapshot_file,
    cloning,
    error_lines,
    fails_cleanly,
    kill_while_paused,
    make_set,
    vm100_sources,
    vm101_made,
    write_disk,
    write_lock_record,
    write_qcow2,
)

import pve_ontap_snapshot as tool

OLD, OLDER, OLDEST = ORIGINAL_STAMP, OLDER_STAMP, OLDEST_STAMP


# -- the clones

def stamps(names):
    return {re.search(tool.Names.STAMP_PATTERN, name).group(0) for name in names}


def assert_clones_match_sources(world, vol, vmid, sources):
    """Each source disk has exactly one clone, byte for byte equal to it."""
    clones = world.clones(vol, vmid)
    assert len(clones) == len(sources)
    for source in sources:
        stem, ext = source.rsplit('.', 1)
        (clone,) = [c for c in clones if c.startswith(stem + '-snapshot-') and c.endswith('.' + ext)]
        assert world.disk(vol, vmid, clone).read_bytes() == world.disk(vol, vmid, source).read_bytes()


def test_admin_snapshots_a_running_vm_on_two_clusters(world):
    result = world.run('vm', 'create', '-vm', 100)

    assert result.code == 0, result.err
    assert_clones_match_sources(world, world.vol1, 100, ['vm-100-disk-0.raw', 'vm-100-disk-2.qcow2',
                                                          'vm-100-disk-5.raw', 'vm-100-disk-6.raw'])
    assert_clones_match_sources(world, world.vol2, 100, ['vm-100-disk-1.raw', 'vm-100-disk-4.raw'])
    # one stamp for the whole run, on both clusters
    assert len(stamps(world.clones(world.vol1, 100) + world.clones(world.vol2, 100))) == 1
    # the unused disk, the CD-ROM and the local-lvm disk are not cloned
    assert not any(name.startswith('vm-100-disk-7-snapshot') for name in world.files(world.vol1, 100))
    assert 'skipping disk scsi1 (local-lvm:vm-100-disk-3)' in result.err
    assert 'ide2' not in result.err
    # running without -suspend/-shutdown: the original's warning, and the VM keeps running
    assert 'VM 100 is running' in result.err and '-suspend' in result.err
    assert world.pve.vm(100).status == 'running'
    # the clone names are the original's
    assert re.fullmatch(r'vm-100-disk-0-snapshot-' + tool.Names.STAMP_PATTERN + r'\.raw',
                        next(c for c in world.clones(world.vol1, 100) if 'disk-0' in c))


def test_clones_are_made_without_overwriting_and_by_one_request_each(world):
    assert world.run('vm', 'create', '-vm', 100).code == 0

    clones = world.ontap_requests(path=FILE_CLONE)
    assert len(clones) == len(VM100_ONTAP_DISKS)
    assert all(r['body']['overwrite_destination'] is False for r in clones)
    assert all(r['body']['volume']['uuid'] for r in clones)


def test_a_stopped_vm_is_cloned_and_stays_stopped(world):
    result = world.run('vm', 'create', '-vm', 101, '-suspend')

    assert result.code == 0, result.err
    assert world.pve.vm(101).status == 'stopped'
    assert not world.power_actions()
    assert_clones_match_sources(world, world.vol1, 101, ['vm-101-disk-0.raw'])


def test_a_stopped_vm_is_cloned_straight_from_its_disks(world):
    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    sources = [r['body']['source_path'] for r in world.ontap_requests('POST', FILE_CLONE)]
    assert sources == ['images/101/vm-101-disk-0.raw']
    assert not world.ontap_requests(path='*/snapshots')


def test_vm_with_no_ontap_disk_is_an_error(world):
    before = world.state()
    result = world.run('vm', 'create', '-vm', 102)

    assert result.code == 1
    assert result.err.strip().splitlines()[-1].startswith('ERROR: VM 102 has no disk on an ONTAP storage')
    assert world.state() == before


def test_unknown_vm(world):
    fails_cleanly(world, ('vm', 'create', '-vm', 999), 1, 'no VM 999')


def test_a_dry_run_prints_its_lines_in_disk_order(world):
    result = world.run('-dry-run', 'vm', 'create', '-vm', 100)

    clones = [line for line in result.out.splitlines() if line.startswith('would file-clone')]
    assert all(line.split()[2].startswith('.snapshot/pve_ontap_capture_') for line in clones)
    sources = [line.split()[2].split('/', 2)[2] for line in clones]
    assert sources == [f'images/100/{name}' for name in ('vm-100-disk-5.raw', 'vm-100-disk-0.raw', 'vm-100-disk-1.raw',
                                                        'vm-100-disk-2.qcow2', 'vm-100-disk-6.raw',
                                                        'vm-100-disk-4.raw')]


def test_dry_run_of_vm_create_names_each_step(world):
    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-dry-run')
    lines = [line for line in result.out.splitlines() if line.startswith('would ')]
    steps = [re.sub(r'snapshot-\S+$', 'snapshot-', ' '.join(line.split()[1:3]).split('pve_ontap_capture_')[0])
             for line in lines]
    assert steps == (['suspend VM', 'create snapshot', 'create snapshot', 'start VM'] + ['file-clone .snapshot/'] * 6
                     + ['delete snapshot', 'delete snapshot', 'write images/100/vm-100-snapshot-', 'register the'])
    assert lines[0] == f'would suspend VM 100 (Proxmox {world.pve_host})'
    capture = re.search(r'pve_ontap_capture_\S+_vm100', lines[1])[0]
    assert lines[4].startswith(f'would file-clone .snapshot/{capture}/images/100/')
    assert lines[-1].startswith('would register the snapshot as unused disks (VM 100)')


def test_back_to_back_runs_get_their_own_stamps(world, cluster_dir):
    for _ in range(2):
        assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    first, second = [s['stamp'] for s in world.vm_snapshots(101)]
    assert first < second
    world.pve.vm(101).status = 'stopped'
    assert world.run('vm', 'restore', '-vm', 101, '-snapshot', second, '-yes').code == 0
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0

    sets = world.vm_snapshots(101)
    assert [s['kind'] for s in sets] == ['snapshot', 'snapshot', 'pre-restore', 'snapshot']
    assert len({s['stamp'] for s in sets}) == 4
    # the lock record remembers who ran last and the stamp it used for this VM
    assert world.lock_record(cluster_dir).read_text().splitlines()[1] == f'vm101 {sets[-1]["stamp"]}'


def add_vm_of_four_disks_on_two_clusters(world, status):
    config = {}
    for n, (sid, vol) in enumerate((('ONTAP01', world.vol1), ('ONTAP01', world.vol1),
                                    ('ONTAP02', world.vol2), ('ONTAP02', world.vol2))):
        write_disk(vol, 103, f'vm-103-disk-{n}.raw')
        config[f'scsi{n}'] = f'{sid}:103/vm-103-disk-{n}.raw'
    world.pve.add_vm(103, 'four', node='pve2', status=status, config=config)


@pytest.mark.newest_release
def test_vm_create_of_a_stopped_vm_of_four_disks_on_two_clusters_takes_twelve_requests(world):
    add_vm_of_four_disks_on_two_clusters(world, 'stopped')

    ontap, pve = world.requests_of('vm', 'create', '-vm', 103)

    # one volume lookup per cluster, one clone per disk, and the VM's manifest (its config in it)
    # written, answered without a job poll
    assert ontap == 2 + 4 + 1
    assert not world.ontap_requests(path='*/jobs*')
    # login, VM lookup, config, storage.cfg, and registering the clones (one PUT, guarded by the config's digest)
    assert pve == 5


@pytest.mark.newest_release
def test_vm_create_of_a_running_vm_adds_only_its_two_captures_and_their_deletes(world):
    """A running VM's disks are cloned from one capture snapshot per volume: a create and a
    delete on each of the two volumes, four requests more than a stopped VM's twelve."""
    add_vm_of_four_disks_on_two_clusters(world, 'running')

    ontap, pve = world.requests_of('vm', 'create', '-vm', 103)

    assert (ontap, pve) == (2 + 2 + 4 + 2 + 1, 5)
    changes = [(r['method'], r['path'].split('/')[-2 if r['method'] == 'DELETE' else -1])
               for r in world.ontap_changes()]
    assert sorted(changes) == [('DELETE', 'snapshots')] * 2 + [('POST', 'clone')] * 4 + [('POST', 'snapshots')] * 2 + [
        ('POST', name) for name in sorted(world.records(world.vol1, 103))]
    assert not world.ontap_requests(path='*/jobs*')
    assert not world.vol1.snapshots and not world.vol2.snapshots


# -- qcow2 disks that stand on other files

def test_a_qcow2_disk_over_a_pve9_volume_chain_is_refused_and_nothing_is_made(world):
    """PVE 9 (snapshot-as-volume-chain): the disk names its snapshot's file, which PVE commits and
    removes when that snapshot is deleted (pve-storage Plugin.pm volume_snapshot_delete): a clone
    of the disk alone would then stand on nothing."""
    write_qcow2(world.disk(world.vol1, 100, 'vm-100-disk-2.qcow2'), backing='snap-before-vm-100-disk-2.qcow2')
    write_qcow2(world.disk(world.vol1, 100, 'snap-before-vm-100-disk-2.qcow2'))
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100)

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith('ERROR: VM 100: no snapshot, for scsi0 (ONTAP01:100/vm-100-disk-2.qcow2) stands on a PVE '
                           'snapshot of it as a volume chain (its backing file snap-before-vm-100-disk-2.qcow2)'), line
    assert line.endswith('or take a storage snapshot (storage create), which holds the whole chain')
    assert world.state() == before


def test_a_linked_clone_is_taken_and_its_base_image_recorded(world):
    base = '../100/base-100-disk-9.raw'
    world.disk(world.vol1, 100, 'base-100-disk-9.raw').write_bytes(b'template')
    write_qcow2(world.disk(world.vol1, 105, 'vm-105-disk-0.qcow2'), backing=base)
    world.pve.add_vm(105, 'linked', node='pve1', status='stopped',
                     config={'scsi0': 'ONTAP01:100/base-100-disk-9.raw/105/vm-105-disk-0.qcow2,size=1G', 'memory': 512})

    result = world.run('vm', 'create', '-vm', 105, '-no-register')

    assert result.code == 0, result.err
    (name,) = world.records(world.vol1, 105)
    (disk,) = json.loads((world.vol1.path / 'images/105' / name).read_text())['disks']
    assert (disk['format'], disk['backing']) == ('qcow2', base)
    (clone,) = world.clones(world.vol1, 105)
    assert world.disk(world.vol1, 105, clone).read_bytes() == world.disk(world.vol1, 105, 'vm-105-disk-0.qcow2').read_bytes()


# -- a failed clone

def test_a_failed_clone_restarts_the_vm_and_takes_back_the_other_clones(world):
    world.b.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match=cloning('images/100/vm-100-disk-4.raw'))
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    assert world.pve.vm(100).status == 'running'
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert line.startswith('ERROR: VM 100: snapshot') and 'failed: virtio0 (' in line
    assert 'Clone start failed' in line
    assert 'removed the 5 clone(s) made before (efidisk0, ide0, sata0, scsi0, tpmstate0)' in line
    assert 'Traceback' not in result.err
    # no partial snapshot is left behind, and the VM is as it was
    assert world.clones(world.vol1, 100) == [] and world.clones(world.vol2, 100) == []
    assert world.state() == before


@pytest.mark.parametrize('fault', ['drop', 'fail'])
def test_a_failed_clone_post_is_not_repeated_and_leaves_nothing(world, fault):
    match = cloning('images/100/vm-100-disk-2.qcow2')
    if fault == 'drop':
        world.a.drop('POST', '/api/storage/file/clone', match=match)
    else:
        world.a.fail('POST', '/api/storage/file/clone', status=500, code='1', message='internal error', match=match)
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'scsi0 (' in line and 'removed the 5 clone(s)' in line
    posts = [r for r in world.ontap_requests(path=FILE_CLONE) if match(r['body'])]
    assert len(posts) == 1
    assert world.state() == before


def test_a_job_slower_than_its_bound_fails_and_names_the_clone(world):
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', '/api/storage/file/clone', 3, match=cloning('images/100/vm-100-disk-0.raw'))

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'ide0 (' in line and 'still running after 1 s (job_timeout)' in line
    assert 'to images/100/vm-100-disk-0-snapshot-' in line
    assert world.pve.vm(100).status == 'running'


# -- a node at its split-load limit

@pytest.fixture
def quick_back_off(monkeypatch):
    monkeypatch.setattr(tool.Volume, 'BUSY_FIRST', 0.05)
    monkeypatch.setattr(tool.Volume, 'BUSY_STEP', 0.1)


def test_a_clone_refused_at_the_split_load_limit_is_asked_again_and_made(world, quick_back_off):
    world.a.split_load_refusals = 2

    result = world.run('vm', 'create', '-vm', 101)

    assert result.code == 0, result.err
    assert len(world.clones(world.vol1, 101)) == 1
    assert len(world.ontap_requests('POST', FILE_CLONE, on=world.a)) == 3
    assert world.a.split_load_refusals == 0


def test_a_clone_still_refused_at_the_bound_fails_the_vm_saying_why(world, quick_back_off, monkeypatch):
    monkeypatch.setattr(tool.Volume, 'BUSY_BOUND', 0.5)
    world.a.split_load_refusals = 1000

    result = world.run('vm', 'create', '-vm', 101)

    assert result.code == 1
    assert 'Reached maximum split load allowed on the node' in error_lines(result)[-1]
    assert world.clones(world.vol1, 101) == []
    assert world.pve.vm(101).status == 'stopped'


def test_a_clone_refused_for_another_reason_is_not_asked_again(world, quick_back_off):
    world.a.fail_job('POST', r'/api/storage/file/clone$', message='Clone start failed: the FlexClone license expired')

    result = world.run('vm', 'create', '-vm', 101)

    assert result.code == 1
    assert 'the FlexClone license expired' in error_lines(result)[-1]
    assert len(world.ontap_requests('POST', FILE_CLONE, on=world.a)) == 1


# -- one instant: a capture snapshot per volume

SNAPSHOT_OF = {'ide0': 'vm-100-disk-0.raw', 'sata0': 'vm-100-disk-1.raw', 'scsi0': 'vm-100-disk-2.qcow2',
               'virtio0': 'vm-100-disk-4.raw', 'efidisk0': 'vm-100-disk-5.raw', 'tpmstate0': 'vm-100-disk-6.raw'}


def volume_of(world, key):
    return world.vol1 if VM100[key].startswith('ONTAP01:') else world.vol2


def live_disks(world):
    """{disk key: bytes of VM 100's live disk} for every ONTAP disk."""
    return {key: world.disk(volume_of(world, key), 100, name).read_bytes() for key, name in SNAPSHOT_OF.items()}


def snapshot_disks(world):
    """{disk key: bytes of its clone} of VM 100's one snapshot."""
    found = {}
    for key, name in SNAPSHOT_OF.items():
        stem = name.rsplit('.', 1)[0]
        (clone,) = [f for f in world.files(volume_of(world, key), 100) if f.startswith(stem + '-snapshot-')]
        found[key] = world.disk(volume_of(world, key), 100, clone).read_bytes()
    return found


def change_every_disk_after_the_first_clone(world):
    """The guest goes on writing while the clones are made: right after the first file clone (on
    either cluster), every live disk of VM 100 changes. Returns the bytes from before."""
    before = live_disks(world)
    changed = []

    def write(volume, source, destination):
        if not changed:
            changed.append(destination)
            for key, name in SNAPSHOT_OF.items():
                world.disk(volume_of(world, key), 100, name).write_bytes(b'written later ' + key.encode())
    world.a.on_clone = world.b.on_clone = write
    return before


def capture_snapshots(world):
    return sorted(name for vol in (world.vol1, world.vol2) for name in vol.snapshots)


def test_every_disk_of_a_paused_vm_holds_the_bytes_of_one_instant(world):
    before = change_every_disk_after_the_first_clone(world)

    result = world.run('vm', 'create', '-vm', 100, '-pause', '-no-register')

    assert result.code == 0, result.err
    assert snapshot_disks(world) == before      # not one disk holds what was written during the clones
    assert live_disks(world) != before
    assert capture_snapshots(world) == []
    assert 'different instants' not in result.err


def test_disks_on_one_volume_are_taken_at_one_instant_without_any_pause(world):
    before = change_every_disk_after_the_first_clone(world)

    result = world.run('vm', 'create', '-vm', 100, '-no-register')

    assert result.code == 0, result.err
    assert snapshot_disks(world) == before
    assert not world.power_actions()
    # two volumes, two captures, two instants: said, with the way to one
    assert 'VM 100: its disks on 2 volumes are captured at 2 different instants; -pause takes them at one' in result.err


def test_a_running_vm_on_one_volume_is_taken_at_one_instant(world):
    write_disk(world.vol1, 103, 'vm-103-disk-0.raw')
    write_disk(world.vol1, 103, 'vm-103-disk-1.raw')
    world.pve.add_vm(103, 'one', node='pve1', status='running',
                     config={'scsi0': 'ONTAP01:103/vm-103-disk-0.raw', 'scsi1': 'ONTAP01:103/vm-103-disk-1.raw'})

    assert world.run('vm', 'create', '-vm', 103, '-no-register').code == 0

    manifest = saved_record(world, 103)['manifest']
    assert manifest['consistency'] == 'atomic'
    assert [d['size'] for d in manifest['disks']] == [None, None]     # no size= in the config


def test_a_failed_capture_takes_back_the_other_and_clones_nothing(world):
    world.b.fail('POST', r'/snapshots$', status=400, code='524479', message='Volume is offline.')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-pause', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert line.startswith('ERROR: VM 100: snapshot ') and 'Volume is offline.' in line
    assert line.endswith('nothing was cloned')
    assert world.state() == before          # the capture on ONTAP01 is deleted again
    assert world.pve.vm(100).qmpstatus == 'running'
    assert not world.ontap_requests(path=FILE_CLONE)


def test_captures_never_show_as_storage_snapshots(world, monkeypatch):
    monkeypatch.setattr(tool.Captures, 'DELETE_WAIT', 0.2)
    world.a.busy_after_clone = 60
    assert world.run('vm', 'create', '-vm', 100, '-no-register').code == 0
    assert [name.startswith('pve_ontap_leftover_capture_') for name in world.vol1.snapshots] == [True]

    listed = world.json('storage', 'list', '-storage', 'ONTAP01')
    kept = world.run('storage', 'create', '-storage', 'ONTAP01', '-keep', 1)

    assert listed == []
    assert kept.code == 0 and len(world.vol1.snapshots) == 2      # -keep 1 counted only its own


# -- busy captures, leftovers and the next run

def test_a_busy_capture_is_renamed_and_the_next_run_deletes_it(world, cluster_dir, monkeypatch):
    monkeypatch.setattr(tool.Captures, 'DELETE_WAIT', 0.3)
    world.a.busy_after_clone = 60

    first = world.run('vm', 'create', '-vm', 100, '-no-register')

    assert first.code == 0, first.err
    (leftover,) = world.vol1.snapshots
    capture = 'pve_ontap_' + leftover.removeprefix('pve_ontap_leftover_')
    assert leftover.startswith('pve_ontap_leftover_capture_') and leftover.endswith('_vm100')
    assert (f'WARNING: capture snapshot {capture} of volume proxmox_storage01 (ONTAP {world.a.host}) is still busy '
            f'after 0.3 s: renamed to {leftover}; the next vm create on the volume deletes it once it is 10 minutes '
            'old') in first.err
    assert world.vol1.snapshots[leftover].comment == tool.Names.LEFTOVER_COMMENT
    assert not world.vol2.snapshots         # not busy there: deleted at once
    assert [line.split()[0] for line in world.noted(cluster_dir)] == ['vm100', capture]

    # a run soon after leaves it (younger than LEFTOVER_AGE) and spends no request on it
    world.a.busy_after_clone = 0
    world.a.requests.clear()
    second = world.run('vm', 'create', '-vm', 101, '-no-register')
    assert second.code == 0, second.err
    assert leftover in world.vol1.snapshots
    assert not world.ontap_requests(path='*/snapshots', on=world.a)

    # once it is old enough (and ONTAP lets go of it), the next run on the volume deletes it
    monkeypatch.setattr(tool.Captures, 'LEFTOVER_AGE', 0)
    world.vol1.snapshots[leftover].busy_until = 0
    third = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert third.code == 0, third.err
    assert world.vol1.snapshots == {}
    assert f'storage ONTAP01: leftover capture snapshot {leftover} of volume proxmox_storage01 deleted' in third.err
    assert capture not in '\n'.join(world.noted(cluster_dir))


def test_a_capture_left_by_a_run_that_died_is_deleted_by_the_next(world, cluster_dir):
    capture = 'pve_ontap_capture_2024-03-13_14:42:47+0000_vm100'
    world.a.add_snapshot('proxmox_storage01', capture, create_time='2024-03-13T14:42:47+00:00')
    record = write_lock_record(world, cluster_dir, '4242 pve1 2024-03-13_14:42:40+0000 vm create -vm 100',
                               f'{capture} 2024-03-13_14:42:47+0000')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    assert world.vol1.snapshots == {}
    assert capture not in record.read_text()


def test_a_capture_that_stays_busy_and_cannot_be_renamed_is_named(world, monkeypatch):
    monkeypatch.setattr(tool.Captures, 'DELETE_WAIT', 0.2)
    world.b.busy_after_clone = 60
    world.b.fail('PATCH', r'/snapshots/', status=409, code='8', message='resource in use')

    result = world.run('vm', 'create', '-vm', 100, '-no-register')

    assert result.code == 0, result.err
    (capture,) = world.vol2.snapshots
    assert (f'capture snapshot {capture} of volume proxmox_storage02 (ONTAP {world.b.host}) is still busy after 0.2 s '
            f'and could not be renamed to pve_ontap_leftover_{capture.removeprefix("pve_ontap_")}') in result.err


# -- -suspend and -shutdown: the guest waits only for the captures

@pytest.mark.parametrize('flag, action', [('-suspend', 'suspend'), ('-shutdown', 'shutdown'),
                                          ('--suspend', 'suspend')])
def test_suspend_or_shutdown_then_start_again(world, flag, action):
    result = world.run('vm', 'create', '-vm', 100, flag)

    assert result.code == 0, result.err
    vm = world.pve.vm(100)
    assert vm.status == 'running' and vm.lock is None
    assert world.power_actions() == [action, 'start']
    if action == 'suspend':
        assert world.power_requests()[0] == ('suspend', {'todisk': '1'})
    assert len(world.clones(world.vol1, 100)) == 4
    assert 'VM 100 is running' not in result.err


def test_only_the_captures_happen_while_the_vm_is_suspended(world):
    order = []
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['method'] == 'POST' and order.append((r['path'].rsplit('/', 1)[1],
                                                                             world.pve.vm(100).status))

    assert world.run('vm', 'create', '-vm', 100, '-suspend').code == 0

    assert sorted(order) == [('clone', 'running')] * 6 + [('snapshots', 'stopped')] * 2 + [
        (name, 'running') for name in sorted(world.records(world.vol1, 100))]


def test_every_lookup_happens_before_the_suspend_and_only_the_captures_inside_it(world):
    seen = []
    for emu in (world.a, world.b):
        emu.on_request = lambda r: seen.append((r['method'], r['path'], len(world.pve.requests)))

    assert world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register').code == 0

    pve = [(m, p) for m, p, _ in world.pve.requests]
    suspend = next(i for i, (m, p) in enumerate(pve) if p.endswith('/status/suspend'))
    start = next(i for i, (m, p) in enumerate(pve) if p.endswith('/status/start'))
    # inside the window PVE only sees the suspend task being polled
    assert {p.split('/')[-1] for m, p in pve[suspend + 1:start]} == {'status'}
    assert all('/tasks/' in p for m, p in pve[suspend + 1:start])
    for method, path, pve_count in seen:
        if method == 'POST' and path.endswith('/snapshots'):
            assert suspend < pve_count <= start     # the one thing the VM waits for
        elif path == '/api/storage/file/clone' or method == 'DELETE' or (method == 'POST' and '/files/' in path):
            assert pve_count > start, (method, path)
        else:
            assert pve_count <= suspend, (method, path)


def failing_suspend(pve):
    async def _do_suspend(self, vm, user, params):
        async def body():
            raise TaskError('VM 100 qmp command savevm-start failed - timeout')
        return await self.task(vm.node, 'qmsuspend', vm.vmid, user, body, vm=vm)
    pve._do_suspend = types.MethodType(_do_suspend, pve)


def test_a_failed_suspend_task_leaves_the_vm_running_and_nothing_cloned(world):
    failing_suspend(world.pve)
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: suspend VM 100: task qmsuspend failed: VM 100 '
                                   'qmp command savevm-start failed - timeout')]
    assert world.state() == before
    assert not world.ontap_requests('POST')


def test_a_failed_start_task_says_the_vm_is_stopped(world):
    world.pve.vm(100).start_error = 'kvm: -drive file=/mnt/pve/ONTAP01/images/100/vm-100-disk-0.raw: Permission denied'

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert re.match(r'ERROR: VM 100: snapshot \S+ of 6 disk\(s\) was made, but VM 100 could not be started again '
                    'after', line)
    assert 'start it by hand' in line and 'Permission denied' in line
    # the snapshot itself is complete and kept
    assert len(world.clones(world.vol1, 100)) == 4


def test_a_failed_clone_and_a_failed_start_are_both_reported_and_the_clones_removed(world):
    world.a.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match=cloning('images/100/vm-100-disk-0.raw'))
    world.pve.vm(100).start_error = 'kvm: Permission denied'

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'ide0 (' in line and 'removed the 5 clone(s) made before' in line
    assert 'and VM 100 could not be started again' in line and 'start it by hand' in line
    assert not world.snapshot_files(100)


def test_a_locked_vm_is_refused_before_anything_changes(world):
    world.pve.snapshot_lock(100, 'backup')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'suspend VM 100' in line and 'locked' in line
    assert world.state() == before


def test_shutdown_of_an_ha_vm_waits_until_ha_has_stopped_it_and_started_it(world):
    vm = world.pve.vm(100)
    vm.ha_state = 'started'
    world.pve.time_scale, world.pve.ha_delay = 0.01, 10     # HA acts 0.1 s after its task ended
    status_at = []
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['method'] == 'POST' and status_at.append((r['path'].rsplit('/', 1)[1], vm.status))

    result = world.run('vm', 'create', '-vm', 100, '-shutdown', '-no-register')

    assert result.code == 0, result.err
    # the capture snapshots while HA has the VM stopped, the clones once HA runs it again
    assert sorted(status_at) == [('clone', 'running')] * 6 + [('snapshots', 'stopped')] * 2 + [
        (name, 'running') for name in sorted(world.records(world.vol1, 100))]
    assert vm.status == 'running'
    assert world.power_actions() == ['shutdown', 'start']


def test_suspend_of_an_ha_vm_is_refused_before_anything_changes(world):
    world.pve.vm(100).ha_state = 'started'
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-suspend')

    assert result.code == 1
    assert error_lines(result) == [('ERROR: VM 100 is managed by HA, and PVE does not suspend such a VM to disk: '
                                   'use -pause, -shutdown or -freeze')]
    assert world.state() == before and not world.ontap_changes(on=world.a)


def test_an_ha_vm_whose_stop_outlasts_the_wait_is_asked_to_start_again(world):
    vm = world.pve.vm(100)
    vm.ha_state = 'started'
    world.pve.time_scale, world.pve.ha_delay = 0.01, 50     # HA acts 0.5 s after its request
    world.write_config(defaults='task_timeout = 0.1\n')

    result = world.run('vm', 'create', '-vm', 100, '-shutdown', '-no-register')

    assert result.code == 1
    assert 'the HA manager has not made it stopped after 0.1 s (task_timeout)' in result.err
    assert world.power_actions()[:2] == ['shutdown', 'start']
    assert not world.ontap_changes(on=world.a)


# -- -pause: in memory, never hibernated

def test_pause_leaves_the_vm_running_and_never_hibernated(world):
    vm = world.pve.vm(100)
    seen = []     # at each ONTAP change: what it was, the VM's state, and how many PVE requests came before
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['method'] != 'GET' and seen.append(
            (r['method'], r['path'].rsplit('/', 1)[1], vm.status, vm.qmpstatus, vm.lock, len(world.pve.requests)))

    result = world.run('vm', 'create', '-vm', 100, '-pause', '-no-register')

    assert result.code == 0, result.err
    assert world.power_requests() == [('suspend', {}), ('resume', {})]          # in memory: no todisk, no start
    resumed = next(i for i, (m, p, _) in enumerate(world.pve.requests) if p.endswith('/status/resume'))
    captures = [s for s in seen if s[:2] == ('POST', 'snapshots')]
    clones = [s for s in seen if s[:2] == ('POST', 'clone')]
    assert len(captures) == 2 and all(s[2:5] == ('running', 'paused', None) for s in captures)
    assert len(clones) == 6 and all(s[3] == 'running' and s[5] > resumed for s in clones)
    assert (vm.status, vm.qmpstatus, vm.lock) == ('running', 'running', None)
    assert 'lock' not in vm.config
    assert 'VM 100 was paused for' in result.err


def test_a_pause_that_fails_leaves_the_vm_running_and_nothing_taken(world):
    world.pve.fail('POST', '/nodes/pve1/qemu/100/status/suspend', 500, 'VM 100 qmp command failed - got timeout')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-pause')

    assert result.code == 1
    assert error_lines(result) == [(f'ERROR: Proxmox {world.pve_host}: suspend VM 100: VM 100 qmp command failed - '
                                    'got timeout')]
    assert world.state() == before
    assert not world.ontap_changes()


def test_a_vm_that_cannot_be_resumed_is_named_with_what_to_run(world):
    world.pve.fail('POST', '/nodes/pve1/qemu/100/status/resume', 500, 'VM 100 qmp command failed - got timeout',
                   times=None)

    result = world.run('vm', 'create', '-vm', 100, '-pause', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'of 6 disk(s) was made, but VM 100 could not be resumed after' in line
    assert 'may still be paused: check it, and resume it by hand ("qm resume 100")' in line
    assert len(world.snapshot_files(100)) == 6


def test_a_paused_vm_is_cloned_as_it_is_and_left_paused(world):
    vm = world.pve.vm(100)
    vm.qmpstatus = 'paused'

    result = world.run('vm', 'create', '-vm', 100, '-suspend', '-no-register')

    assert result.code == 0, result.err
    assert 'VM 100 is paused, not running: cloned as it is and left paused' in result.err
    assert (vm.status, vm.qmpstatus) == ('running', 'paused') and not vm.lock
    assert len(world.snapshot_files()) == len(VM100_ONTAP_DISKS)
    assert not world.power_actions()


# -- -freeze: through the guest agent

def test_freeze_captures_between_freeze_and_thaw_and_clones_after_it(world):
    vm = world.with_agent()
    frozen_at = []
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['method'] == 'POST' and frozen_at.append((r['path'].rsplit('/', 1)[1],
                                                                                 vm.agent_frozen))

    result = world.run('vm', 'create', '-vm', 100, '-freeze')

    assert result.code == 0, result.err
    assert agent_commands(vm) == ['fsfreeze-freeze', 'fsfreeze-thaw']
    # the thaw comes before the first clone; the manifest is written after it too
    assert sorted(frozen_at) == [('clone', False)] * 6 + [('snapshots', True)] * 2 + [
        (name, False) for name in sorted(world.records(world.vol1, 100))]
    assert not vm.agent_frozen and vm.status == 'running'
    assert 'VM 100 was frozen for' in result.err


def test_freeze_thaws_after_a_failed_clone(world):
    vm = world.with_agent()
    world.b.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.')

    result = world.run('vm', 'create', '-vm', 100, '-freeze')

    assert result.code == 1
    assert agent_commands(vm)[-1] == 'fsfreeze-thaw' and not vm.agent_frozen
    assert 'Clone start failed' in result.err.strip().splitlines()[-1]


def test_freeze_thaws_when_the_captures_outlast_the_bound(world):
    vm = world.with_agent()
    world.write_config(defaults='freeze_timeout = 0.2\n')
    world.a.slow_job('POST', r'/snapshots$', 1.0)

    result = world.run('vm', 'create', '-vm', 100, '-freeze')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert 'the capture snapshots outlasted the freeze bound of 0.2 s (freeze_timeout): not consistent' in line
    assert 'nothing was cloned' in line
    assert agent_commands(vm)[-1] == 'fsfreeze-thaw' and not vm.agent_frozen
    assert not world.clones(world.vol1, 100) + world.clones(world.vol2, 100)
    assert not world.vol1.snapshots and not world.vol2.snapshots      # both captures taken back


def test_a_failed_freeze_and_a_failed_thaw_make_one_error_line(world):
    world.with_agent()
    for command in ('fsfreeze-freeze', 'fsfreeze-thaw'):
        world.pve.fail('POST', f'/nodes/pve1/qemu/100/agent/{command}', 500, 'VM 100 qmp command failed - timeout')

    result = world.run('vm', 'create', '-vm', 100, '-freeze', '-no-register')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert 'fsfreeze-freeze' in line and 'and the guest of VM 100 could not be thawed' in line
    assert world.vm_snapshots(100) == []


def test_a_failed_thaw_says_what_to_run_by_hand(world):
    world.with_agent()
    world.pve.fail('POST', '/nodes/pve1/qemu/100/agent/fsfreeze-thaw', 500, 'VM 100 qmp command failed - timeout')

    result = world.run('vm', 'create', '-vm', 100, '-freeze', '-no-register')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert re.match(r'ERROR: VM 100: snapshot \S+ of 6 disk\(s\) was made, but the guest of VM 100 could not be '
                    r'thawed and may still be frozen: run "qm guest cmd 100 fsfreeze-thaw"', line)
    assert len(world.vm_snapshots(100)) == 1


@pytest.mark.parametrize('configured, running, phrase', [
    (False, True, 'no QEMU guest agent configured'), (True, False, 'does not answer')])
def test_freeze_needs_a_configured_answering_agent(world, configured, running, phrase):
    vm = world.pve.vm(100)
    if configured:
        vm.config['agent'] = 'enabled=1'
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-freeze')

    assert result.code == 1 and phrase in result.err
    assert 'fsfreeze-freeze' not in agent_commands(vm)
    assert world.state() == before


def test_a_guest_that_gave_up_its_freeze_is_no_consistent_snapshot(world):
    world.with_agent(100)
    world.pve.fail('POST', '/nodes/pve1/qemu/100/agent/fsfreeze-thaw', 500,
                   "VM 100 qmp command 'guest-fsfreeze-thaw' failed - couldn't hold writes: fsfreeze is limited up "
                   'to 10 seconds')
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-freeze', '-no-register')

    assert result.code == 1
    (line,) = error_lines(result)
    assert 'gave up its freeze before the thaw, as Windows VSS does after about 10 s' in line
    assert 'not consistent; nothing was cloned' in line and 'may still be frozen' not in line
    assert world.state() == before


def test_a_vm_whose_agent_setting_turns_freezing_off_is_not_frozen(world):
    vm = world.pve.vm(100)
    vm.config['agent'], vm.agent = 'enabled=1,freeze-fs=0', {}
    before = world.state()

    result = world.run('vm', 'create', '-vm', 100, '-freeze')

    assert error_lines(result) == [('ERROR: VM 100: its agent setting turns freezing off (agent: enabled=1,freeze-fs=0); '
                                    'use -pause, or allow freezing (freeze-fs=1)')]
    assert world.state() == before and not vm.agent_requests


# -- the manifest, the VM's config in it

def saved_record(world, vmid, vol=None):
    """{'conf': bytes, 'manifest': dict, 'manifest_name': name} of the one set the VM has a record of."""
    (manifest,) = world.records(vol or world.vol1, vmid)
    record = json.loads(((vol or world.vol1).path / 'images' / str(vmid) / manifest).read_text())
    return {'conf': record.pop('config').encode('utf-8', 'surrogateescape'), 'manifest': record,
            'manifest_name': manifest}


def test_a_snapshot_carries_the_vms_config_and_a_manifest_of_its_disks(world):
    vm = world.pve.vm(101)
    vm.config['description'] = 'db: primary\nsecond line'

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    (stamp,) = world.vm_stamps(101)
    saved = saved_record(world, 101)
    assert saved['manifest_name'] == f'vm-101-snapshot-{stamp}.shutdown.manifest.json'
    # PVE's .conf syntax: the description as encoded comments first, then every key sorted, no digest
    lines = saved['conf'].decode().splitlines()
    assert lines[:2] == ['#db%3A primary', '#second line']
    assert 'memory: 1024' in lines and 'scsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G' in lines
    assert lines[2:] == sorted(lines[2:]) and not [line for line in lines if line.startswith('digest')]
    assert saved['manifest'].pop('signature').startswith('hmac-sha256:')
    assert saved['manifest'] == {
        'tool': 'pve-ontap-snapshot', 'version': tool.tool_version(), 'vmid': 101, 'type': 'qemu', 'name': 'db',
        'node': 'pve2',
        'stamp': stamp, 'consistency': 'shutdown', 'config_from': 'api',
        'identity': {'ctime': None, 'smbios_uuid': None, 'hwaddr': []},
        'disks': [{'key': 'scsi0', 'volid': 'ONTAP01:101/vm-101-disk-0.raw',
                   'clone': f'images/101/vm-101-disk-0-snapshot-{stamp}.raw', 'size': 2**30, 'storage': 'ONTAP01',
                   'cluster': world.a.host, 'svm': 'svm1', 'volume': 'proxmox_storage01', 'format': 'raw'}]}
    # no image PVE would take for a disk
    assert not tool.Guest.IMAGE_VOLNAME.match(f'101/{saved["manifest_name"]}')


@pytest.mark.parametrize('flags, consistency', [((), 'running'), (('-pause',), 'paused'),
                                                (('-suspend',), 'suspended'), (('-shutdown',), 'shutdown')])
def test_the_manifest_says_how_consistent_the_snapshot_is(world, flags, consistency):
    result = world.run('vm', 'create', '-vm', 100, *flags, '-no-register')

    assert result.code == 0, result.err
    # beside the first ONTAP disk (efidisk0, on ONTAP01) only
    saved = saved_record(world, 100)
    assert saved['manifest']['consistency'] == consistency
    assert [d['key'] for d in saved['manifest']['disks']] == ['efidisk0', 'ide0', 'sata0', 'scsi0', 'tpmstate0',
                                                              'virtio0']
    assert {d['cluster'] for d in saved['manifest']['disks']} == {world.a.host, world.b.host}
    assert world.records(world.vol2, 100) == []


def test_on_a_node_the_config_file_is_saved_as_pve_holds_it(world, monkeypatch, tmp_path):
    raw = b'#web server\nmemory: 1024\nscsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G\n\n[before-update]\nmemory: 512\n'
    (tmp_path / 'nodes' / 'pve2' / 'qemu-server').mkdir(parents=True)
    (tmp_path / 'nodes' / 'pve2' / 'qemu-server' / '101.conf').write_bytes(raw)
    monkeypatch.setattr(tool.Node, 'name', lambda: 'pve1')
    monkeypatch.setattr(tool.Node, 'CONFIGS_DIR', str(tmp_path / 'nodes'))

    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0

    saved = saved_record(world, 101)
    assert saved['conf'] == raw
    assert saved['manifest']['config_from'] == str(tmp_path / 'nodes' / 'pve2' / 'qemu-server' / '101.conf')


def test_a_manifest_that_cannot_be_written_leaves_the_snapshot_and_says_so(world):
    world.a.fail('POST', r'snapshot-.*manifest', status=500, code='917927', message='Disk quota exceeded.')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert re.fullmatch(r'ERROR: VM 101: snapshot \S+ of 1 disk\(s\) was made, but its manifest and config were not '
                        r'saved on ONTAP01: ONTAP \S+: write images/101/vm-101-snapshot-\S+\.shutdown\.manifest\.json '
                        r'in volume proxmox_storage01: Disk quota exceeded\.', line), line
    assert len(world.clones(world.vol1, 101)) == 1
    (listed,) = world.vm_snapshots(101)
    assert listed['complete'] and listed['consistency'] == 'unknown'


# -- registered as unused disks

def test_create_registers_clones_as_unused_disks(world):
    assert world.run('vm', 'create', '-vm', 100).code == 0
    (stamp,) = [s['stamp'] for s in world.vm_snapshots(100)]

    vm = world.pve.vm(100)
    # a running VM: unusedN is not hot-pluggable, so it waits in the pending config
    registered = sorted(v for k, v in vm.pending.items() if k.startswith('unused'))
    assert len(registered) == 6 and 'unused0' not in vm.pending
    assert f'ONTAP02:100/vm-100-disk-1-snapshot-{stamp}.raw' in registered
    assert vm.config['unused0'] == 'ONTAP01:100/vm-100-disk-7.raw'


def test_the_manifest_and_the_registration_do_not_wait_for_each_other(world):
    # The emulator holds the manifest's write until PVE has the registration (or 20 s have
    # passed): one after the other, the registration would come only after that write.
    seen = []

    def hold_the_manifest(record):
        if record['method'] == 'POST' and record['path'].endswith('.manifest.json'):
            deadline = time.monotonic() + 20
            while not world.pve_requests('PUT', '*/qemu/101/config') and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(len(world.pve_requests('PUT', '*/qemu/101/config')))
    world.a.on_request = hold_the_manifest

    result = world.run('vm', 'create', '-vm', 101)

    assert result.code == 0, result.err
    assert seen == [1] and len(world.vm_snapshots(101)) == 1
    assert any(key.startswith('unused') for key in {**world.pve.vm(101).config, **world.pve.vm(101).pending})


def test_a_second_snapshot_of_a_running_vm_keeps_the_pending_unused_disks_of_the_first(world):
    assert world.run('vm', 'create', '-vm', 100).code == 0
    time.sleep(1)       # stamps have one-second resolution
    assert world.run('vm', 'create', '-vm', 100).code == 0

    registered = [v for k, v in world.pve.vm(100).pending.items() if k.startswith('unused')]
    assert len(registered) == len(set(registered)) == 12
    assert {stamp for s in world.vm_snapshots(100) for stamp in [s['stamp']]} == \
        {re.search(r'snapshot-(\S+)\.', v)[1] for v in registered}


def test_a_disk_detached_while_the_snapshot_is_taken_keeps_its_unused_entry(world):
    vm = world.pve.vm(101)

    def detach_a_disk(volume, source, destination):
        vm.config['unused0'] = 'ONTAP01:101/vm-101-disk-9.raw'
    world.a.on_clone = detach_a_disk

    _, pve = world.requests_of('vm', 'create', '-vm', 101)

    (made,) = world.vm_snapshots(101)
    assert vm.config['unused0'] == 'ONTAP01:101/vm-101-disk-9.raw'
    assert vm.config['unused1'] == f'ONTAP01:101/vm-101-disk-0-snapshot-{made["stamp"]}.raw'
    # login, VM list, storage.cfg, its config; the change refused for its digest, the config read again, the change
    assert pve == 4 + 3


def test_no_register_leaves_the_vm_config_alone(world):
    before = dict(world.pve.vm(101).config)
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    assert world.pve.vm(101).config == before and not world.pve.vm(101).pending
    assert len(world.clones(world.vol1, 101)) == 1


def test_a_failed_registration_still_keeps_the_snapshot_and_runs_retention(world):
    make_set(world, 101, OLDEST, [(world.vol1, VM101_DISK)])
    world.pve.snapshot_lock(101, 'backup')

    result = world.run('vm', 'create', '-vm', 101, '-keep', 1)

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert re.match(r'ERROR: VM 101: snapshot \S+ of 1 disk\(s\) was made, but .*register the snapshot as unused '
                    r'disks .*locked', line), line
    (made,) = world.vm_snapshots(101)
    assert made['stamp'] != OLDEST


def test_clones_of_a_vm_on_this_node_are_registered_by_qm_disk_rescan(world, on_pve1):
    before = dict(world.pve.vm(100).pending)

    assert world.run('vm', 'create', '-vm', 100).code == 0

    assert on_pve1() == ['qm disk rescan --vmid 100']
    assert world.pve.vm(100).pending == before
    assert not world.pve_requests('PUT')


def test_a_vm_on_another_node_is_registered_through_the_api(world, on_pve1):
    assert world.run('vm', 'create', '-vm', 101).code == 0
    assert on_pve1() == []
    assert [k for k in world.pve.vm(101).config if k.startswith('unused')] == ['unused0']


# -- -keep

def test_keep_leaves_exactly_n_sets_and_never_a_pre_restore_set(world):
    make_set(world, 101, OLDEST, [(world.vol1, VM101_DISK)])
    make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])
    make_set(world, 101, OLD, [(world.vol1, VM101_DISK)], kind='prerestore')

    result = world.run('vm', 'create', '-vm', 101, '-keep', 2)

    assert result.code == 0, result.err
    sets = world.vm_snapshots(101)
    assert [s['kind'] for s in sets] == ['snapshot', 'pre-restore', 'snapshot']
    assert sets[0]['stamp'] == OLDER
    assert f'snapshot {OLDEST} deleted (-keep 2)' in result.err


def test_keep_counts_only_complete_sets_and_keeps_incomplete_ones_newer_than_the_oldest_kept(world):
    sources = vm100_sources(world)
    on_one_cluster = [(vol, name) for vol, name in sources if vol is world.vol1]   # lacks sata0, virtio0
    day = '2024-03-{}_10:00:00+0000'.format
    make_set(world, 100, day('09'), sources[:2], kind='prerestore')
    make_set(world, 100, day(10), on_one_cluster)
    make_set(world, 100, day(11), sources)
    make_set(world, 100, day(12), on_one_cluster)
    make_set(world, 100, day(13), sources)
    make_set(world, 100, day(14), on_one_cluster)

    result = world.run('vm', 'create', '-vm', 100, '-keep', 2, '-no-register')

    assert result.code == 0, result.err
    (made,) = [s['stamp'] for s in world.vm_snapshots(100) if s['stamp'] > day(14)]
    # the newest 2 complete sets are this run's and the 13th's; the 14th is newer than that: it stays
    for vol, stamps in ((world.vol1, [day('09'), day(13), day(14), made]), (world.vol2, [day('09'), day(13), made])):
        assert sorted({name.split('-snapshot-')[-1].split('-prerestore-')[-1].rsplit('.', 1)[0]
                       for name in world.files(vol, 100) if tool.Names.SNAPSHOT_FILE.match(name)}) == stamps
    # 4 disks and unused0, 1 pre-restore file, 3 sets, this run's manifest
    assert len(world.files(world.vol1, 100)) == 5 + 1 + 3 * 4 + 1
    assert f'incomplete (lacks sata0,virtio0) snapshot {day(10)} deleted (-keep 2)' in result.err
    assert f'VM 100: snapshot {day(11)} deleted (-keep 2)' in result.err


def test_keep_skips_a_set_with_a_file_attached_as_a_disk(world):
    make_set(world, 101, OLDEST, [(world.vol1, VM101_DISK)])
    make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])
    volid = attach_snapshot_file(world, 101, OLDEST)

    result = world.run('vm', 'create', '-vm', 101, '-keep', 1, '-no-register')

    assert result.code == 0, result.err
    assert [s['stamp'] for s in world.vm_snapshots(101)][:1] == [OLDEST]
    assert len(world.vm_snapshots(101)) == 2
    assert world.pve.vm(101).config['scsi5'] == volid
    assert f'snapshot {OLDEST} is in use' in result.err and 'kept beyond -keep 1' in result.err


def test_a_set_from_a_clock_ahead_never_makes_keep_delete_the_new_one(world):
    ahead = '2099-01-01_00:00:00+0000'
    make_set(world, 101, ahead, [(world.vol1, VM101_DISK)])

    dry = world.run('-dry-run', 'vm', 'create', '-vm', 101, '-keep', 1, '-no-register')
    real = world.run('vm', 'create', '-vm', 101, '-keep', 1, '-no-register')

    assert dry.code == 0 and 'would delete' not in dry.out, dry.err
    assert real.code == 0, real.err
    assert len(world.vm_snapshots(101)) == 2


def test_keep_deletes_a_snapshot_of_unknown_identity_only_where_it_holds_the_vms_disks(world):
    vm101_made(world, 1700000000, OLD_UUID)
    make_set(world, 101, OLDEST, [(world.vol1, VM101_DISK)])             # the original's: no manifest
    make_set(world, 101, OLDER, [(world.vol1, 'vm-101-disk-7.raw')])     # of disks this VM does not have

    result = world.run('vm', 'create', '-vm', 101, '-no-register', '-keep', 1)

    assert result.code == 0, result.err
    listed = {s['stamp']: s['of'] for s in world.vm_snapshots(101)}
    assert OLDEST not in listed and listed[OLDER] == 'unknown' and list(listed.values()).count('this VM') == 1


def test_keep_removes_the_manifests_and_older_config_files_of_the_sets_it_deletes(world):
    for _ in range(2):
        assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    (older, _) = world.vm_stamps(101)
    world.disk(world.vol1, 101, f'vm-101-snapshot-{older}.conf').write_bytes(b'memory: 1024\n')    # as earlier builds wrote it
    assert len(world.records(world.vol1, 101)) == 3

    result = world.run('vm', 'create', '-vm', 101, '-keep', 1, '-no-register')

    assert result.code == 0, result.err
    (stamp,) = world.vm_stamps(101)
    assert world.records(world.vol1, 101) == [f'vm-101-snapshot-{stamp}.shutdown.manifest.json']


# -- a run that dies (SIGKILL: the OOM killer, a node reset) while it holds a VM

def test_the_next_run_resumes_a_vm_a_run_that_died_left_paused(world, cluster_dir, pmxcfs):
    vm = kill_while_paused(world)
    assert 'held-100 pause ' in world.lock_record(cluster_dir).read_text()

    result = world.run('-wait', 10, 'vm', 'create', '-vm', 100, '-no-register')

    assert result.code == 0, result.err
    assert re.search(r'WARNING: VM 100 was left paused by a run that died \(pid \d+ on node \S+ since .*: resumed it',
                     result.err), result.err
    assert vm.qmpstatus == 'running' and 'left paused' not in result.err.split('resumed it')[1]
    assert 'held-' not in world.lock_record(cluster_dir).read_text()
    assert [name.split('.')[1] for name in world.records(world.vol1, 100)] == ['running']


def test_a_vm_paused_before_the_run_that_died_began_is_never_resumed(world, cluster_dir, pmxcfs):
    admins = world.pve.vm(101)
    admins.status, admins.qmpstatus = 'running', 'paused'      # paused by its admin, for an I/O error say
    kill_while_paused(world, 100)

    other = world.run('-wait', 10, 'vm', 'create', '-vm', 101, '-pause', '-no-register')

    assert other.code == 0, other.err
    assert admins.qmpstatus == 'paused'                 # left as its admin left it
    assert [name.split('.')[1] for name in world.records(world.vol1, 101)] == ['paused']   # it stood still
    assert world.pve.vm(100).qmpstatus == 'paused'      # another run's VM: named, left to its next run
    assert 'VM 100 was left paused by a run that died' in other.err and 'the next run on it, or doctor -try' in other.err
    assert 'held-100 pause ' in world.lock_record(cluster_dir).read_text()
