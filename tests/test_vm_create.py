"""vm create: ONTAP file clones of every disk, with the VM paused or not."""

import json
import re
import signal

import pytest
from world import (
    VM100_ONTAP_DISKS,
    PmxcfsLocks,
    cloning,
    error_lines,
    pve_params,
    signalled_run,
    write_qcow2,
)

import pve_ontap_snapshot as tool

STAMP = r'\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d\+0000'


def clones_of(world, vol, vmid):
    return world.clones(vol, vmid)


def stamps(names):
    return {re.search(STAMP, name).group(0) for name in names}


def assert_clones_match_sources(world, vol, vmid, sources):
    """Each source disk has exactly one clone, byte for byte equal to it."""
    clones = clones_of(world, vol, vmid)
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
    assert len(stamps(clones_of(world, world.vol1, 100) + clones_of(world, world.vol2, 100))) == 1
    # the unused disk, the CD-ROM and the local-lvm disk are not cloned
    assert not any(name.startswith('vm-100-disk-7-snapshot') for name in world.files(world.vol1, 100))
    assert 'skipping disk scsi1 (local-lvm:vm-100-disk-3)' in result.err
    assert 'ide2' not in result.err
    # running without -suspend/-shutdown: the original's warning, and the VM keeps running
    assert 'VM 100 is running' in result.err and '-suspend' in result.err
    assert world.pve.vm(100).status == 'running'
    # the clone names are the original's
    assert re.fullmatch(r'vm-100-disk-0-snapshot-' + STAMP + r'\.raw',
                        next(c for c in clones_of(world, world.vol1, 100) if 'disk-0' in c))


def test_clones_are_made_without_overwriting_and_by_one_request_each(world):
    assert world.run('vm', 'create', '-vm', 100).code == 0

    clones = [r for r in world.a.requests + world.b.requests if r['path'] == '/api/storage/file/clone']
    assert len(clones) == len(VM100_ONTAP_DISKS)
    assert all(r['body']['overwrite_destination'] is False for r in clones)
    assert all(r['body']['volume']['uuid'] for r in clones)


@pytest.mark.parametrize('flag, action', [('-suspend', 'suspend'), ('-shutdown', 'shutdown'),
                                          ('--suspend', 'suspend')])
def test_suspend_or_shutdown_then_start_again(world, flag, action):
    result = world.run('vm', 'create', '-vm', 100, flag)

    assert result.code == 0, result.err
    vm = world.pve.vm(100)
    assert vm.status == 'running' and vm.lock is None
    posts = [path for method, path, _ in world.pve.requests if method == 'POST' and '/status/' in path]
    assert [p.rsplit('/', 1)[1] for p in posts] == [action, 'start']
    if action == 'suspend':
        body = next(b for m, p, b in world.pve.requests if p.endswith('/status/suspend'))
        assert pve_params(body)['todisk'] == '1'
    assert len(clones_of(world, world.vol1, 100)) == 4
    assert 'VM 100 is running' not in result.err


def test_only_the_captures_happen_while_the_vm_is_suspended(world):
    order = []
    for emu in (world.a, world.b):
        emu.on_request = lambda r: r['method'] == 'POST' and order.append((r['path'].rsplit('/', 1)[1],
                                                                             world.pve.vm(100).status))

    assert world.run('vm', 'create', '-vm', 100, '-suspend').code == 0

    assert sorted(order) == [('clone', 'running')] * 6 + [('snapshots', 'stopped')] * 2 + [
        (name, 'running') for name in sorted(world.records(world.vol1, 100))]


def test_a_stopped_vm_is_cloned_and_stays_stopped(world):
    result = world.run('vm', 'create', '-vm', 101, '-suspend')

    assert result.code == 0, result.err
    assert world.pve.vm(101).status == 'stopped'
    assert not [p for m, p, _ in world.pve.requests if '/status/' in p and m == 'POST']
    assert_clones_match_sources(world, world.vol1, 101, ['vm-101-disk-0.raw'])


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
    assert clones_of(world, world.vol1, 100) == [] and clones_of(world, world.vol2, 100) == []
    assert world.state() == before


def test_several_vms_and_one_failure_does_not_stop_the_others(world):
    result = world.run('vm', 'create', '-vm', 102, 101)

    assert result.code == 1
    assert 'VM 102 has no disk on an ONTAP storage' in result.err
    assert result.err.strip().splitlines()[-1] == 'ERROR: vm create failed for 1 of 2 VMs: 102'
    assert len(clones_of(world, world.vol1, 101)) == 1


def test_vm_with_no_ontap_disk_is_an_error(world):
    before = world.state()
    result = world.run('vm', 'create', '-vm', 102)

    assert result.code == 1
    assert result.err.strip().splitlines()[-1].startswith('ERROR: VM 102 has no disk on an ONTAP storage')
    assert world.state() == before


def test_one_pve_login_per_run(world):
    assert world.run('vm', 'create', '-vm', 100, '-suspend').code == 0
    logins = [p for m, p, _ in world.pve.requests if p.endswith('/access/ticket')]
    assert len(logins) == 1


@pytest.mark.parametrize('argv', [('vm', 'create', '-vm', 100, '-suspend', '-keep', 2),
                                  ('storage', 'create', '-storage', 'ONTAP01', '-keep', 2),
                                  ('vm', 'create', '-vm', 101, '-freeze')])
def test_a_successful_run_at_loglevel_warn_is_silent(world, argv):
    world.pve.vm(100).config.pop('scsi1')   # a disk on local-lvm is rightly warned about
    db = world.pve.vm(101)
    db.status = db.qmpstatus = 'running'
    db.config['agent'], db.agent = '1', {}

    result = world.run('-loglevel', 'warn', *argv)
    assert result.code == 0
    assert (result.out, result.err) == ('', '')


# -- a run that dies (SIGKILL: the OOM killer, a node reset) while it holds a VM

@pytest.fixture
def pmxcfs(cluster_dir):
    """pmxcfs's expiry of a lock whose run died, in half a second instead of 120 s."""
    with PmxcfsLocks(cluster_dir / 'lock', expiry=0.5):
        yield


def kill_while_paused(world, vmid=100):
    """vm create -pause of VM `vmid`, killed (SIGKILL) as its capture reaches ONTAP: the VM paused."""
    vm = world.pve.vm(vmid)
    vm.status = vm.qmpstatus = 'running'
    code, _ = signalled_run(world, ['vm', 'create', '-vm', vmid, '-pause'],
                            lambda record: record['method'] == 'POST' and record['path'].endswith('/snapshots'),
                            signal.SIGKILL)
    assert code == -signal.SIGKILL and vm.qmpstatus == 'paused'
    return vm


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


def test_doctor_names_a_vm_left_paused_and_try_resumes_it(world, cluster_dir, pmxcfs):
    vm = kill_while_paused(world)

    seen = world.run('doctor', '-storage', 'ONTAP01')
    tried = world.run('-wait', 10, 'doctor', '-storage', 'ONTAP01', '-try')

    (line,) = [line for line in seen.out.splitlines() if 'guests left held' in line]
    assert line.startswith('warn  ONTAP01 guests left held: VM 100 paused by a run that died (pid '), line
    assert line.endswith('fix: doctor -try -storage ONTAP01 brings them back, as the next run on them does')
    (line,) = [line for line in tried.out.splitlines() if 'guests left held' in line]
    assert line.startswith('ok    ONTAP01 guests left held: VM 100 was left paused by a run that died'), line
    assert line.endswith('resumed it') and vm.qmpstatus == 'running'


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


# -- a node at its split-load limit

@pytest.fixture
def quick_back_off(monkeypatch):
    monkeypatch.setattr(tool.Volume, 'BUSY_FIRST', 0.05)
    monkeypatch.setattr(tool.Volume, 'BUSY_STEP', 0.1)


def clone_posts(world):
    return [r for r in world.a.requests if r['method'] == 'POST' and r['path'] == '/api/storage/file/clone']


def test_a_clone_refused_at_the_split_load_limit_is_asked_again_and_made(world, quick_back_off):
    world.a.split_load_refusals = 2

    result = world.run('vm', 'create', '-vm', 101)

    assert result.code == 0, result.err
    assert len(clones_of(world, world.vol1, 101)) == 1
    assert len(clone_posts(world)) == 3
    assert world.a.split_load_refusals == 0


def test_a_clone_still_refused_at_the_bound_fails_the_vm_saying_why(world, quick_back_off, monkeypatch):
    monkeypatch.setattr(tool.Volume, 'BUSY_BOUND', 0.5)
    world.a.split_load_refusals = 1000

    result = world.run('vm', 'create', '-vm', 101)

    assert result.code == 1
    assert 'Reached maximum split load allowed on the node' in error_lines(result)[-1]
    assert clones_of(world, world.vol1, 101) == []
    assert world.pve.vm(101).status == 'stopped'


def test_a_clone_refused_for_another_reason_is_not_asked_again(world, quick_back_off):
    world.a.fail_job('POST', r'/api/storage/file/clone$', message='Clone start failed: the FlexClone license expired')

    result = world.run('vm', 'create', '-vm', 101)

    assert result.code == 1
    assert 'the FlexClone license expired' in error_lines(result)[-1]
    assert len(clone_posts(world)) == 1
