"""VM snapshots as a lifecycle: list, delete, restore (from a set or a storage snapshot),
freeze, registration, retention, several VMs."""

import json
import re
import time

import pytest
from world import destroy_vm, error_lines, pve_reads_nfs_directories, write_disk, write_qcow2

import pve_ontap_snapshot as tool

OLD = '2024-03-13_14:42:47+0000'
OLDER = '2024-03-12_10:00:00+0000'
OLDEST = '2024-03-11_10:00:00+0000'
VM101_DISK = 'vm-101-disk-0.raw'


def make_set(world, vmid, stamp, sources, kind='snapshot'):
    """A VM snapshot as the original (or an earlier run) left it: clone files with their own bytes."""
    made = {}
    for vol, name in sources:
        stem, ext = name.rsplit('.', 1)
        made[name] = write_disk(vol, vmid, f'{stem}-{kind}-{stamp}.{ext}').read_bytes()
    return made


def vm100_sources(world):
    v1, v2 = world.vol1, world.vol2
    return [(v1, 'vm-100-disk-0.raw'), (v2, 'vm-100-disk-1.raw'), (v1, 'vm-100-disk-2.qcow2'),
            (v2, 'vm-100-disk-4.raw'), (v1, 'vm-100-disk-5.raw'), (v1, 'vm-100-disk-6.raw')]


def live_bytes(world, sources, vmid=100):
    return {name: world.disk(vol, vmid, name).read_bytes() for vol, name in sources}


def sets_of(world, vmid):
    result = world.run('vm', 'list', '-vm', vmid, '-output', 'json')
    assert result.code == 0, result.err
    return json.loads(result.out)


def table_rows(text):
    """The cells of each row of a text table below its header (cells are apart by 2+ spaces)."""
    return [re.split(r' {2,}', line) for line in text.splitlines()[1:]]


# -- list and delete

def test_list_shows_every_set_across_both_clusters_with_pre_restore_marked(world):
    sources = vm100_sources(world)
    make_set(world, 100, OLDER, sources)
    make_set(world, 100, OLD, sources[:2], kind='prerestore')

    result = world.run('vm', 'list', '-vm', 100)

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ['SNAPSHOT', 'KIND', 'SIZE', 'DISKS', 'STATE', 'CONSISTENCY', 'OF', 'HELD']
    assert table_rows(result.out) == [
        [OLDER, 'snapshot', '48.0 KiB', 'ide0,scsi0,efidisk0,tpmstate0,sata0,virtio0', 'complete', 'unknown',
         'unknown', 'no'],
        [OLD, 'pre-restore', '16.0 KiB', 'ide0,sata0', 'incomplete (lacks efidisk0,scsi0,tpmstate0,virtio0)',
         'unknown', 'unknown', 'no']]
    data = sets_of(world, 100)
    assert [(s['stamp'], s['kind'], len(s['files'])) for s in data] == [(OLDER, 'snapshot', 6),
                                                                       (OLD, 'pre-restore', 2)]
    assert data[0]['size'] == 6 * 8192
    assert {f['storage'] for f in data[0]['files']} == {'ONTAP01', 'ONTAP02'}


def test_list_marks_a_set_that_lacks_disks_as_incomplete_but_not_one_with_files_of_a_removed_disk(world):
    sources = vm100_sources(world)
    make_set(world, 100, OLDER, sources + [(world.vol1, 'vm-100-disk-9.raw')])   # disk-9 was deleted since
    make_set(world, 100, OLD, [(vol, name) for vol, name in sources if vol is world.vol1])   # a partial run

    result = world.run('vm', 'list', '-vm', 100)

    assert result.code == 0, result.err
    older, old = table_rows(result.out)
    assert older == [OLDER, 'snapshot', '56.0 KiB',
                     f'ide0,scsi0,efidisk0,tpmstate0,vm-100-disk-9-snapshot-{OLDER}.raw,sata0,virtio0', 'complete',
                     'unknown', 'unknown', 'no']
    assert old == [OLD, 'snapshot', '32.0 KiB', 'ide0,scsi0,efidisk0,tpmstate0', 'incomplete (lacks sata0,virtio0)',
                   'unknown', 'unknown', 'no']
    data = sets_of(world, 100)
    assert [(s['stamp'], s['complete'], s['missing']) for s in data] == [(OLDER, True, []),
                                                                       (OLD, False, ['sata0', 'virtio0'])]
    assert [f['disk'] for f in data[0]['files'] if 'disk-9' in f['path']] == [None]


def test_list_marks_a_set_made_before_a_disk_was_added_as_incomplete(world):
    make_set(world, 101, OLD, [(world.vol1, VM101_DISK)])
    write_disk(world.vol1, 101, 'vm-101-disk-1.raw')
    world.pve.vm(101).config['scsi1'] = 'ONTAP01:101/vm-101-disk-1.raw,size=1G'

    result = world.run('vm', 'list', '-vm', 101)

    assert result.code == 0, result.err
    assert table_rows(result.out) == [[OLD, 'snapshot', '8.0 KiB', 'scsi0', 'incomplete (lacks scsi1)', 'unknown',
                                       'unknown', 'no']]
    assert [(s['complete'], s['missing']) for s in sets_of(world, 101)] == [(False, ['scsi1'])]


def test_list_of_a_vm_without_snapshots_is_empty(world):
    assert sets_of(world, 101) == []


def test_delete_removes_every_file_of_the_set_and_nothing_else(world):
    sources = vm100_sources(world)
    make_set(world, 100, OLDER, sources)
    make_set(world, 100, OLD, sources)
    before = {vol.name: world.files(vol, 100) for vol in (world.vol1, world.vol2)}

    result = world.run('vm', 'delete', '-vm', 100, '-snapshot', OLDER)

    assert result.code == 0, result.err
    for vol in (world.vol1, world.vol2):
        assert world.files(vol, 100) == [f for f in before[vol.name] if OLDER not in f]
    assert [s['stamp'] for s in sets_of(world, 100)] == [OLD]


def test_delete_of_an_unknown_stamp_is_an_error(world):
    make_set(world, 100, OLD, vm100_sources(world))
    before = world.state()

    result = world.run('vm', 'delete', '-vm', 100, '-snapshot', OLDER)

    assert result.code == 1
    assert result.err.strip() == f'ERROR: VM 100 has no snapshot {OLDER} (it has: {OLD})'
    assert world.state() == before


def test_delete_of_registered_clones_removes_their_unused_entries(world):
    assert world.run('vm', 'create', '-vm', 101).code == 0
    (stamp,) = [s['stamp'] for s in sets_of(world, 101)]
    config = world.pve.vm(101).config
    (key,) = [k for k in config if k.startswith('unused')]
    assert config[key] == f'ONTAP01:101/vm-101-disk-0-snapshot-{stamp}.raw'

    result = world.run('vm', 'delete', '-vm', 101, '-snapshot', stamp)

    assert result.code == 0, result.err
    assert not [k for k in world.pve.vm(101).config if k.startswith('unused')]
    assert world.files(world.vol1, 101) == [VM101_DISK]
    deletes = [r for r in world.a.requests if r['method'] == 'DELETE' and '/files/' in r['path']]
    assert len(deletes) == 2    # PVE deleted the registered clone; the manifest goes through ONTAP


def attach(world, vmid, stamp, key='scsi5'):
    """The admin attaches a snapshot file as a disk to copy data out of it."""
    volid = f'ONTAP01:{vmid}/vm-{vmid}-disk-0-snapshot-{stamp}.raw'
    world.pve.vm(vmid).config[key] = volid
    return volid


def test_delete_refuses_a_set_with_a_file_attached_as_a_disk(world):
    make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])
    attach(world, 101, OLDER)
    before = world.state()

    result = world.run('vm', 'delete', '-vm', 101, '-snapshot', OLDER)

    assert result.code == 1
    assert f'snapshot {OLDER} is in use: images/101/vm-101-disk-0-snapshot-{OLDER}.raw is attached as scsi5' \
        in result.err
    assert world.state() == before


def test_keep_skips_a_set_with_a_file_attached_as_a_disk(world):
    make_set(world, 101, OLDEST, [(world.vol1, VM101_DISK)])
    make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])
    volid = attach(world, 101, OLDEST)

    result = world.run('vm', 'create', '-vm', 101, '-keep', 1, '-no-register')

    assert result.code == 0, result.err
    assert [s['stamp'] for s in sets_of(world, 101)][:1] == [OLDEST]
    assert len(sets_of(world, 101)) == 2
    assert world.pve.vm(101).config['scsi5'] == volid
    assert f'snapshot {OLDEST} is in use' in result.err and 'kept beyond -keep 1' in result.err


# -- registration

def test_create_registers_clones_as_unused_disks(world):
    assert world.run('vm', 'create', '-vm', 100).code == 0
    (stamp,) = [s['stamp'] for s in sets_of(world, 100)]

    vm = world.pve.vm(100)
    # a running VM: unusedN is not hot-pluggable, so it waits in the pending config
    registered = sorted(v for k, v in vm.pending.items() if k.startswith('unused'))
    assert len(registered) == 6 and 'unused0' not in vm.pending
    assert f'ONTAP02:100/vm-100-disk-1-snapshot-{stamp}.raw' in registered
    assert vm.config['unused0'] == 'ONTAP01:100/vm-100-disk-7.raw'


def test_a_second_snapshot_of_a_running_vm_keeps_the_pending_unused_disks_of_the_first(world):
    assert world.run('vm', 'create', '-vm', 100).code == 0
    time.sleep(1)       # stamps have one-second resolution
    assert world.run('vm', 'create', '-vm', 100).code == 0

    registered = [v for k, v in world.pve.vm(100).pending.items() if k.startswith('unused')]
    assert len(registered) == len(set(registered)) == 12
    assert {stamp for s in sets_of(world, 100) for stamp in [s['stamp']]} == \
        {re.search(r'snapshot-(\S+)\.', v)[1] for v in registered}


def test_a_disk_detached_while_the_snapshot_is_taken_keeps_its_unused_entry(world):
    vm = world.pve.vm(101)

    def detach_a_disk(volume, source, destination):
        vm.config['unused0'] = 'ONTAP01:101/vm-101-disk-9.raw'
    world.a.on_clone = detach_a_disk

    _, pve = world.requests_of('vm', 'create', '-vm', 101)

    (made,) = sets_of(world, 101)
    assert vm.config['unused0'] == 'ONTAP01:101/vm-101-disk-9.raw'
    assert vm.config['unused1'] == f'ONTAP01:101/vm-101-disk-0-snapshot-{made["stamp"]}.raw'
    # login, VM list, storage.cfg, its config; the change refused for its digest, the config read again, the change
    assert pve == 4 + 3


def test_no_register_leaves_the_vm_config_alone(world):
    before = dict(world.pve.vm(101).config)
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    assert world.pve.vm(101).config == before and not world.pve.vm(101).pending
    assert len(world.clones(world.vol1, 101)) == 1


# -- restore

def test_restore_from_a_set_brings_back_the_bytes_and_keeps_an_undo_point(world):
    sources = vm100_sources(world)
    at_snapshot = live_bytes(world, sources)
    world.pve.vm(100).status = 'stopped'
    assert world.run('vm', 'create', '-vm', 100, '-no-register').code == 0
    (stamp,) = [s['stamp'] for s in sets_of(world, 100)]
    for vol, name in sources:
        world.disk(vol, 100, name).write_bytes(b'written after the snapshot ' + name.encode())
    changed = live_bytes(world, sources)
    other = world.disk(world.vol1, 101, VM101_DISK).read_bytes()

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', stamp, '-yes')

    assert result.code == 0, result.err
    assert live_bytes(world, sources) == at_snapshot
    assert world.disk(world.vol1, 101, VM101_DISK).read_bytes() == other
    sets = sets_of(world, 100)
    assert [s['kind'] for s in sets] == ['snapshot', 'pre-restore']
    undo = {f['path'].rsplit('/', 1)[1].split('-prerestore-')[0]: f for f in sets[1]['files']}
    assert len(undo) == 6
    for vol, name in sources:
        stem, ext = name.rsplit('.', 1)
        path = world.disk(vol, 100, f'{stem}-prerestore-{sets[1]["stamp"]}.{ext}')
        assert path.read_bytes() == changed[name]
    overwrites = [r for r in world.a.requests + world.b.requests
                  if r['path'] == '/api/storage/file/clone' and r['body']['overwrite_destination']]
    assert len(overwrites) == 6


def test_restore_refuses_a_running_vm_without_shutdown(world):
    make_set(world, 100, OLD, vm100_sources(world))
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-yes')

    assert result.code == 1
    assert result.err.strip() == 'ERROR: VM 100 is running: shut it down first, or add -shutdown'
    assert world.state() == before


def test_restore_with_shutdown_stops_restores_and_starts(world):
    sources = vm100_sources(world)
    made = make_set(world, 100, OLD, sources)
    order = []
    world.a.on_request = lambda r: r['path'] == '/api/storage/file/clone' and order.append(world.pve.vm(100).status)

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-shutdown', '-yes')

    assert result.code == 0, result.err
    assert live_bytes(world, sources) == made
    assert world.pve.vm(100).status == 'running'
    assert set(order) == {'stopped'}
    posts = [p.rsplit('/', 1)[1] for m, p, _ in world.pve.requests if m == 'POST' and '/status/' in p]
    assert posts == ['shutdown', 'start']


def test_restore_without_a_terminal_needs_yes(world):
    make_set(world, 101, OLD, [(world.vol1, VM101_DISK)])
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', OLD)

    assert result.code == 2
    assert 'not asking without a terminal; add -yes' in result.err
    assert world.state() == before


def test_a_partial_restore_names_the_disks_it_keeps_in_its_question(world):
    world.pve.vm(100).status = 'stopped'
    make_set(world, 100, OLD, vm100_sources(world)[:2])

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD)

    assert result.code == 2
    assert (f'Overwrite disks ide0, sata0 of VM 100 with snapshot {OLD} (efidisk0, scsi0, tpmstate0, virtio0 not '
            'in it: kept as they are): not asking without a terminal') in result.err


def test_a_failure_on_one_disk_puts_every_disk_back(world):
    world.pve.vm(100).status = 'stopped'
    sources = vm100_sources(world)
    make_set(world, 100, OLD, sources)
    before = live_bytes(world, sources)
    files_before = {vol.name: world.files(vol, 100) for vol in (world.vol1, world.vol2)}
    world.a.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match={'destination_path': 'images/100/vm-100-disk-2.qcow2', 'overwrite_destination': True})

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-yes')

    assert result.code == 1
    assert 'every disk is as it was' in result.err and 'Clone start failed' in result.err
    assert live_bytes(world, sources) == before
    assert {vol.name: world.files(vol, 100) for vol in (world.vol1, world.vol2)} == files_before


def test_restore_from_a_storage_snapshot_changes_only_this_vm(world):
    world.pve.vm(100).status = 'stopped'
    on_ontap01 = [s for s in vm100_sources(world) if s[0] is world.vol1]
    on_ontap02 = [s for s in vm100_sources(world) if s[0] is world.vol2]
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (snapshot,) = world.vol1.snapshots
    at_snapshot = live_bytes(world, on_ontap01)
    for vol, name in on_ontap01 + on_ontap02 + [(world.vol1, VM101_DISK)]:
        world.disk(vol, 101 if name == VM101_DISK else 100, name).write_bytes(b'new ' + name.encode())
    ontap02_now = live_bytes(world, on_ontap02)

    result = world.run('vm', 'restore', '-vm', 100, '-storage-snapshot', snapshot, '-yes')

    assert result.code == 0, result.err
    assert live_bytes(world, on_ontap01) == at_snapshot
    assert live_bytes(world, on_ontap02) == ontap02_now
    assert 'has no copy of disk sata0' in result.err
    assert world.disk(world.vol1, 101, VM101_DISK).read_bytes() == b'new ' + VM101_DISK.encode()
    sources = {r['body']['source_path'] for r in world.a.requests
               if r['path'] == '/api/storage/file/clone' and r['body']['overwrite_destination']}
    assert sources == {f'.snapshot/{snapshot}/images/100/{name}' for _, name in on_ontap01}
    assert sorted(world.vol1.snapshots) == [snapshot]


def test_restore_of_a_locked_vm_is_refused(world):
    make_set(world, 101, OLD, [(world.vol1, VM101_DISK)])
    world.pve.snapshot_lock(101, 'backup')
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 101, '-snapshot', OLD, '-yes')

    assert result.code == 1
    assert result.err.strip() == 'ERROR: VM 101 is locked (backup): try again when that is done'
    assert world.state() == before


def test_restore_of_a_suspended_vm_is_refused(world):
    make_set(world, 100, OLD, vm100_sources(world))
    vm = world.pve.vm(100)
    vm.status, vm.lock, vm.config['lock'] = 'stopped', 'suspended', 'suspended'
    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-yes')
    assert result.code == 1 and 'suspended to disk' in result.err


# -- freeze

def enable_agent(world, vmid=100):
    vm = world.pve.vm(vmid)
    vm.config['agent'] = '1'
    vm.agent = {}
    return vm


def agent_commands(vm):
    return [request[0] for request in vm.agent_requests]


def test_freeze_captures_between_freeze_and_thaw_and_clones_after_it(world):
    vm = enable_agent(world)
    frozen_at = []
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['method'] == 'POST' and frozen_at.append((r['path'].rsplit('/', 1)[1],
                                                                                 vm.agent_frozen))

    result = world.run('vm', 'create', '-vm', 100, '-freeze')

    assert result.code == 0, result.err
    assert [c for c in agent_commands(vm) if c != 'ping'] == ['fsfreeze-freeze', 'fsfreeze-thaw']
    # the manifest is written after the thaw too
    assert sorted(frozen_at) == [('clone', False)] * 6 + [('snapshots', True)] * 2 + [
        (name, False) for name in sorted(world.records(world.vol1, 100))]
    assert not vm.agent_frozen and vm.status == 'running'
    assert 'VM 100 was frozen for' in result.err


def test_freeze_thaws_after_a_failed_clone(world):
    vm = enable_agent(world)
    world.b.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.')

    result = world.run('vm', 'create', '-vm', 100, '-freeze')

    assert result.code == 1
    assert agent_commands(vm)[-1] == 'fsfreeze-thaw' and not vm.agent_frozen
    assert 'Clone start failed' in result.err.strip().splitlines()[-1]


def test_freeze_thaws_when_the_captures_outlast_the_bound(world):
    vm = enable_agent(world)
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
    enable_agent(world)
    for command in ('fsfreeze-freeze', 'fsfreeze-thaw'):
        world.pve.fail('POST', f'/nodes/pve1/qemu/100/agent/{command}', 500, 'VM 100 qmp command failed - timeout')

    result = world.run('vm', 'create', '-vm', 100, '-freeze', '-no-register')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert 'fsfreeze-freeze' in line and 'and the guest of VM 100 could not be thawed' in line
    assert sets_of(world, 100) == []


def test_a_set_from_a_clock_ahead_never_makes_keep_delete_the_new_one(world):
    ahead = '2099-01-01_00:00:00+0000'
    make_set(world, 101, ahead, [(world.vol1, VM101_DISK)])

    dry = world.run('-dry-run', 'vm', 'create', '-vm', 101, '-keep', 1, '-no-register')
    real = world.run('vm', 'create', '-vm', 101, '-keep', 1, '-no-register')

    assert dry.code == 0 and 'would delete' not in dry.out, dry.err
    assert real.code == 0, real.err
    assert len(sets_of(world, 101)) == 2


def test_a_failed_thaw_says_what_to_run_by_hand(world):
    enable_agent(world)
    world.pve.fail('POST', '/nodes/pve1/qemu/100/agent/fsfreeze-thaw', 500, 'VM 100 qmp command failed - timeout')

    result = world.run('vm', 'create', '-vm', 100, '-freeze', '-no-register')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert re.match(r'ERROR: VM 100: snapshot \S+ of 6 disk\(s\) was made, but the guest of VM 100 could not be '
                    r'thawed and may still be frozen: run "qm guest cmd 100 fsfreeze-thaw"', line)
    assert len(sets_of(world, 100)) == 1


def test_a_failed_registration_still_keeps_the_snapshot_and_runs_retention(world):
    make_set(world, 101, OLDEST, [(world.vol1, VM101_DISK)])
    world.pve.snapshot_lock(101, 'backup')

    result = world.run('vm', 'create', '-vm', 101, '-keep', 1)

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert re.match(r'ERROR: VM 101: snapshot \S+ of 1 disk\(s\) was made, but .*register the snapshot as unused '
                    r'disks .*locked', line), line
    (made,) = sets_of(world, 101)
    assert made['stamp'] != OLDEST


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


# -- the pause window

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


# -- retention and several VMs

def test_keep_leaves_exactly_n_sets_and_never_a_pre_restore_set(world):
    make_set(world, 101, OLDEST, [(world.vol1, VM101_DISK)])
    make_set(world, 101, OLDER, [(world.vol1, VM101_DISK)])
    make_set(world, 101, OLD, [(world.vol1, VM101_DISK)], kind='prerestore')

    result = world.run('vm', 'create', '-vm', 101, '-keep', 2)

    assert result.code == 0, result.err
    sets = sets_of(world, 101)
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
    (made,) = [s['stamp'] for s in sets_of(world, 100) if s['stamp'] > day(14)]
    # the newest 2 complete sets are this run's and the 13th's; the 14th is newer than that: it stays
    for vol, stamps in ((world.vol1, [day('09'), day(13), day(14), made]), (world.vol2, [day('09'), day(13), made])):
        assert sorted({name.split('-snapshot-')[-1].split('-prerestore-')[-1].rsplit('.', 1)[0]
                       for name in world.files(vol, 100) if tool.Names.SNAPSHOT_FILE.match(name)}) == stamps
    # 4 disks and unused0, 1 pre-restore file, 3 sets, this run's manifest
    assert len(world.files(world.vol1, 100)) == 5 + 1 + 3 * 4 + 1
    assert f'incomplete (lacks sata0,virtio0) snapshot {day(10)} deleted (-keep 2)' in result.err
    assert f'VM 100: snapshot {day(11)} deleted (-keep 2)' in result.err


def test_storage_keep_never_deletes_a_busy_snapshot(world):
    names = [f'proxmox_snapshot_2024-03-1{day}_10:00:00+0000' for day in (1, 2, 3)]
    for day, name in zip((1, 2, 3), names):
        world.a.add_snapshot('proxmox_storage01', name, create_time=f'2024-03-1{day}T10:00:00+00:00')
    assert world.run('storage', 'mount', '-storage', 'ONTAP01', '-snapshot', names[0]).code == 0

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-keep', 1)

    assert result.code == 0, result.err
    remaining = sorted(n for n in world.vol1.snapshots if n.startswith('proxmox_snapshot_'))
    assert remaining[0] == names[0] and len(remaining) == 2 and remaining[1] not in names
    assert f'keeping snapshot {names[0]} beyond -keep 1: FlexClone proxmox_storage01_clone uses it' in result.err


def test_all_takes_every_vm_on_ontap_and_one_failure_does_not_stop_the_others(world):
    world.a.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match={'source_path': 'images/101/vm-101-disk-0.raw'})

    result = world.run('vm', 'create', '-all', '-no-register')

    assert result.code == 1
    assert result.err.strip().splitlines()[-1] == 'ERROR: vm create failed for 1 of 2 VMs: 101'
    assert len(sets_of(world, 100)) == 1
    assert sets_of(world, 101) == []


def test_all_goes_on_past_a_node_that_is_down_and_names_its_vms(world):
    world.pve.set_node_offline('pve2')

    result = world.run('vm', 'create', '-all', '-no-register')

    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines[-1] == 'ERROR: vm create failed for 1 of 2 VMs: 101'
    assert [line for line in lines if line.startswith('WARNING: VM 101 on node pve2 skipped:')]
    assert len(sets_of(world, 100)) == 1


def test_back_to_back_runs_get_their_own_stamps(world, cluster_dir):
    for _ in range(2):
        assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    first, second = [s['stamp'] for s in sets_of(world, 101)]
    assert first < second
    world.pve.vm(101).status = 'stopped'
    assert world.run('vm', 'restore', '-vm', 101, '-snapshot', second, '-yes').code == 0
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0

    sets = sets_of(world, 101)
    assert [s['kind'] for s in sets] == ['snapshot', 'snapshot', 'pre-restore', 'snapshot']
    assert len({s['stamp'] for s in sets}) == 4
    # the lock record remembers who ran last and the stamp it used for this VM
    assert world.lock_record(cluster_dir).read_text().splitlines()[1] == f'vm101 {sets[-1]["stamp"]}'


def test_restore_from_a_storage_snapshot_that_does_not_exist_says_so(world):
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 100, '-storage-snapshot', 'proxmox_snapshot_nothing', '-yes')

    assert result.code == 1
    assert result.err.splitlines()[-1] == ('ERROR: VM 100: no storage snapshot proxmox_snapshot_nothing on ONTAP01 '
                                           '(volume proxmox_storage01), ONTAP02 (volume proxmox_storage02): see '
                                           'storage list')
    assert world.state() == before


# -- a VM id used again: PVE hands out the lowest free id (pve-manager API2/Cluster.pm nextid)

OLD_UUID, NEW_UUID = '11111111-2222-3333-4444-555555555555', '66666666-7777-8888-9999-000000000000'


def vm101_made(world, ctime, uuid):
    """VM 101 as PVE's create makes it: meta ctime and an SMBIOS uuid of its own."""
    world.pve.vm(101).config.update(meta=f'creation-qemu=9.2.0,ctime={ctime}', smbios1=f'uuid={uuid}')


def vm101_again(world):
    """VM 101 destroyed, its snapshots left, and a new, unrelated VM 101 made with the same disk name."""
    destroy_vm(world, 101, 'pve2')
    write_disk(world.vol1, 101, VM101_DISK)
    world.pve.add_vm(101, 'new', node='pve1', status='stopped', config={
        'scsi0': f'ONTAP01:101/{VM101_DISK},size=1G', 'memory': 2048,
        'meta': 'creation-qemu=9.2.0,ctime=1800000000', 'smbios1': f'uuid={NEW_UUID}'})


def test_a_destroyed_vms_snapshots_stay_apart_from_the_new_vm_with_its_id(world):
    pve_reads_nfs_directories(world)
    vm101_made(world, 1700000000, OLD_UUID)
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    (old,) = [s['stamp'] for s in sets_of(world, 101)]
    old_bytes = world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{old}.raw').read_bytes()
    vm101_again(world)
    new_bytes = world.disk(world.vol1, 101, VM101_DISK).read_bytes()

    listed = world.run('vm', 'list', '-vm', 101)
    kept = world.run('vm', 'create', '-vm', 101, '-no-register', '-keep', 1)
    refused = world.run('vm', 'restore', '-vm', 101, '-snapshot', old, '-yes')
    copied = world.run('vm', 'restore', '-vm', 101, '-snapshot', old, '-as-new', 201)

    assert listed.code == 0 and kept.code == 0 and copied.code == 0, listed.err + kept.err + copied.err
    mine, theirs = listed.out.split('\n\nSnapshots of another VM that had the id 101 before')
    assert old not in mine and old in theirs and 'another VM' in theirs
    data = {s['stamp']: s['of'] for s in sets_of(world, 101)}
    assert data[old] == 'another VM' and list(data.values()).count('this VM') == 1
    assert old in data                                                  # -keep 1 neither counted nor deleted it
    assert refused.code == 1 and 'is of another VM that had the id 101 before' in error_lines(refused)[0]
    assert world.disk(world.vol1, 101, VM101_DISK).read_bytes() == new_bytes
    assert world.disk(world.vol1, 201, 'vm-201-disk-0.raw').read_bytes() == old_bytes
    assert world.run('vm', 'delete', '-vm', 101, '-snapshot', old).code == 0
    assert old not in {s['stamp'] for s in sets_of(world, 101)}


def test_keep_deletes_a_snapshot_of_unknown_identity_only_where_it_holds_the_vms_disks(world):
    vm101_made(world, 1700000000, OLD_UUID)
    make_set(world, 101, OLDEST, [(world.vol1, VM101_DISK)])             # the original's: no manifest
    make_set(world, 101, OLDER, [(world.vol1, 'vm-101-disk-7.raw')])     # of disks this VM does not have

    result = world.run('vm', 'create', '-vm', 101, '-no-register', '-keep', 1)

    assert result.code == 0, result.err
    listed = {s['stamp']: s['of'] for s in sets_of(world, 101)}
    assert OLDEST not in listed and listed[OLDER] == 'unknown' and list(listed.values()).count('this VM') == 1


@pytest.mark.parametrize('tag, ctime, uuid, same', [
    ('c1700000000', '1700000000', None, True), ('c1700000000', '1800000000', None, False),
    ('c1700000000', None, 'a' * 32, None),                # meta gone from the config: cannot tell
    ('u' + 'a' * 32, None, 'a' * 32, True), ('u' + 'a' * 32, None, 'b' * 32, False),
    ('u' + 'a' * 32, '1800000000', 'a' * 32, False),       # made anew since: meta comes with a create only
    (None, '1800000000', 'a' * 32, None),
])
def test_which_vm_a_snapshot_is_of(tag, ctime, uuid, same):
    assert tool.Identity.same_vm(tag, (ctime, uuid)) is same


def test_a_qcow2_copy_over_a_volume_chain_is_not_restored(world):
    """A set an earlier build took of a qcow2 disk over a PVE 9 volume chain: its copy names a
    snapshot file PVE may have merged away since, so it is not put back alone."""
    write_qcow2(world.disk(world.vol1, 100, f'vm-100-disk-2-snapshot-{OLD}.qcow2'), backing='snap-x-vm-100-disk-2.qcow2')
    for vol, name in vm100_sources(world):
        if 'disk-2' not in name:
            make_set(world, 100, OLD, [(vol, name)])
    world.pve.vm(100).status = 'stopped'
    before = world.state()

    result = world.run('vm', 'restore', '-vm', 100, '-snapshot', OLD, '-yes')

    assert result.code == 1
    (line,) = error_lines(result)
    assert f'not restored from snapshot {OLD}, for the copy of scsi0 (images/100/vm-100-disk-2-snapshot-{OLD}.qcow2) ' \
        'stands on a PVE snapshot of it as a volume chain' in line, line
    assert world.state() == before
    assert 'complete; a qcow2 copy stands on a file it cannot keep' in world.run('vm', 'list', '-vm', 100).out
