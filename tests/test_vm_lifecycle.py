"""VM snapshots as a lifecycle: list, delete, restore (from a set or a storage snapshot),
freeze, registration, retention, several VMs."""

import re
import time

import pytest
from world import (
    OLD_UUID,
    OLDER_STAMP,
    OLDEST_STAMP,
    ORIGINAL_STAMP,
    VM101_DISK,
    attach_snapshot_file,
    make_set,
    vm100_sources,
    vm101_made,
)

import pve_ontap_snapshot as tool

OLD, OLDER, OLDEST = ORIGINAL_STAMP, OLDER_STAMP, OLDEST_STAMP


# -- list and delete

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


# -- registration

def test_create_registers_clones_as_unused_disks(world):
    assert world.run('vm', 'create', '-vm', 100).code == 0
    (stamp,) = [s['stamp'] for s in world.vm_snapshots(100)]

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


# -- restore


# -- freeze

def agent_commands(vm):
    return [request[0] for request in vm.agent_requests]


def test_freeze_captures_between_freeze_and_thaw_and_clones_after_it(world):
    vm = world.with_agent()
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


def test_a_set_from_a_clock_ahead_never_makes_keep_delete_the_new_one(world):
    ahead = '2099-01-01_00:00:00+0000'
    make_set(world, 101, ahead, [(world.vol1, VM101_DISK)])

    dry = world.run('-dry-run', 'vm', 'create', '-vm', 101, '-keep', 1, '-no-register')
    real = world.run('vm', 'create', '-vm', 101, '-keep', 1, '-no-register')

    assert dry.code == 0 and 'would delete' not in dry.out, dry.err
    assert real.code == 0, real.err
    assert len(world.vm_snapshots(101)) == 2


def test_a_failed_thaw_says_what_to_run_by_hand(world):
    world.with_agent()
    world.pve.fail('POST', '/nodes/pve1/qemu/100/agent/fsfreeze-thaw', 500, 'VM 100 qmp command failed - timeout')

    result = world.run('vm', 'create', '-vm', 100, '-freeze', '-no-register')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert re.match(r'ERROR: VM 100: snapshot \S+ of 6 disk\(s\) was made, but the guest of VM 100 could not be '
                    r'thawed and may still be frozen: run "qm guest cmd 100 fsfreeze-thaw"', line)
    assert len(world.vm_snapshots(100)) == 1


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


def test_all_takes_every_vm_on_ontap_and_one_failure_does_not_stop_the_others(world):
    world.a.fail_job('POST', '/api/storage/file/clone', code=13565952, message='Clone start failed.',
                     match={'source_path': 'images/101/vm-101-disk-0.raw'})

    result = world.run('vm', 'create', '-all', '-no-register')

    assert result.code == 1
    assert result.err.strip().splitlines()[-1] == 'ERROR: vm create failed for 1 of 2 VMs: 101'
    assert len(world.vm_snapshots(100)) == 1
    assert world.vm_snapshots(101) == []


def test_all_goes_on_past_a_node_that_is_down_and_names_its_vms(world):
    world.pve.set_node_offline('pve2')

    result = world.run('vm', 'create', '-all', '-no-register')

    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines[-1] == 'ERROR: vm create failed for 1 of 2 VMs: 101'
    assert [line for line in lines if line.startswith('WARNING: VM 101 on node pve2 skipped:')]
    assert len(world.vm_snapshots(100)) == 1


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


def test_keep_deletes_a_snapshot_of_unknown_identity_only_where_it_holds_the_vms_disks(world):
    vm101_made(world, 1700000000, OLD_UUID)
    make_set(world, 101, OLDEST, [(world.vol1, VM101_DISK)])             # the original's: no manifest
    make_set(world, 101, OLDER, [(world.vol1, 'vm-101-disk-7.raw')])     # of disks this VM does not have

    result = world.run('vm', 'create', '-vm', 101, '-no-register', '-keep', 1)

    assert result.code == 0, result.err
    listed = {s['stamp']: s['of'] for s in world.vm_snapshots(101)}
    assert OLDEST not in listed and listed[OLDER] == 'unknown' and list(listed.values()).count('this VM') == 1
