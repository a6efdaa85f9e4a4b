"""vm create of several VMs without a mode: the run captures each volume once for all its running
VMs, before any VM is cloned, so that they share one instant per volume; the captures go once
every VM is done (or stay for the next run while a clone may still read them)."""

import re

from world import FILE_CLONE, add_vm_on_both_clusters, cloning, error_lines, interrupt_once_cloning, write_disk

import pve_ontap_snapshot as tool

CLONE = FILE_CLONE
BOTH = (103, 104, 105)      # running, a disk on each volume


def add_vm_on_one_volume(world, vmid, status='running'):
    """A VM with its one disk on ONTAP01."""
    write_disk(world.vol1, vmid, f'vm-{vmid}-disk-0.raw', size=4096)
    return world.pve.add_vm(vmid, f'vm{vmid}', node='pve1', status=status,
                            config={'scsi0': f'ONTAP01:{vmid}/vm-{vmid}-disk-0.raw,size=4K'})


def disks_of(world, vmid):
    """{(volume, disk file): bytes} of the VM's live disks."""
    return {(vol.name, name): world.disk(vol, vmid, name).read_bytes() for vol in (world.vol1, world.vol2)
            for name in world.files(vol, vmid) if name.endswith('.raw') and '-snapshot-' not in name}


def clones_of(world, vmid):
    """{(volume, disk file): bytes of its clone} of the VM's one snapshot."""
    return {(vol.name, name.split('-snapshot-')[0] + '.raw'): world.disk(vol, vmid, name).read_bytes()
            for vol in (world.vol1, world.vol2) for name in world.clones(vol, vmid)}


def capture_requests(world, method):
    """The names of the capture snapshots created (POST) or the paths deleted (DELETE) on both clusters."""
    found = world.ontap_requests(method, '*/snapshots*')
    return [r['body']['name'] for r in found] if method == 'POST' else [r['path'] for r in found]


def noted_captures(world, cluster_dir):
    return [line.split()[0] for storage in ('ONTAP01', 'ONTAP02')
            for line in world.noted(cluster_dir, storage)
            if line.startswith(tool.Names.CAPTURE_PREFIX)]


# -- one instant per volume, one capture per volume

def test_three_running_vms_cost_two_captures_and_two_deletes_not_one_per_vm_and_volume(world, cluster_dir):
    for vmid in BOTH:
        add_vm_on_both_clusters(world, vmid)

    ontap, pve = world.requests_of('vm', 'create', '-vm', *BOTH, '-no-register')

    # a volume lookup per cluster, the 2 shared captures made and deleted, 2 clones per VM, and each
    # VM's manifest
    assert ontap == 2 + 2 + 2 + 3 * 2 + 3
    assert pve == 3 + 3                  # login, VM list, storage.cfg; each VM's config
    (name,) = set(capture_requests(world, 'POST'))
    assert re.fullmatch(r'pve_ontap_capture_\S+_all', name) and len(capture_requests(world, 'POST')) == 2
    assert len(capture_requests(world, 'DELETE')) == 2
    assert not world.vol1.snapshots and not world.vol2.snapshots
    assert noted_captures(world, cluster_dir) == []
    sources = {r['body']['source_path'].split('/')[1] for r in world.ontap_requests(path=CLONE)}
    assert sources == {name}


def test_with_a_pause_each_vm_still_takes_its_own_captures(world):
    for vmid in BOTH:
        add_vm_on_both_clusters(world, vmid)

    assert world.run('vm', 'create', '-vm', *BOTH, '-pause', '-no-register').code == 0

    # one per VM and volume, each taken while its own VM is paused
    owners = sorted(name.rsplit('_', 1)[1] for name in capture_requests(world, 'POST'))
    assert owners == ['vm103', 'vm103', 'vm104', 'vm104', 'vm105', 'vm105']
    assert len(capture_requests(world, 'DELETE')) == 6


def test_every_running_vm_of_a_run_holds_the_bytes_of_one_instant(world):
    for vmid in BOTH:
        add_vm_on_both_clusters(world, vmid)
    add_vm_on_one_volume(world, 106)
    vmids = (*BOTH, 106)
    before = {vmid: disks_of(world, vmid) for vmid in vmids}

    # the guests go on writing: right after the first clone, every live disk of every VM changes
    changed = []

    def write(volume, source, destination):
        if not changed:
            changed.append(destination)
            for vmid in vmids:
                for name, disk in before[vmid]:
                    vol = world.vol1 if name == world.vol1.name else world.vol2
                    world.disk(vol, vmid, disk).write_bytes(b'written later')
    world.a.on_clone = world.b.on_clone = write

    # one VM after the other: a capture of its own would come after the VMs before it were cloned
    result = world.run('vm', 'create', '-vm', *vmids, '-parallel', 1, '-no-register')

    assert result.code == 0, result.err
    assert changed
    assert {vmid: clones_of(world, vmid) for vmid in vmids} == before
    assert 'INFO: the running VMs share one capture per volume, taken at one instant: pve_ontap_capture_' in result.err
    # the consistency each VM records stays its own: one volume one instant, two volumes two
    assert [name.split('.')[-3] for vmid in vmids for name in world.records(world.vol1, vmid)
            if name.endswith('.manifest.json')] == ['running'] * 3 + ['atomic']


def test_a_stopped_vm_among_running_ones_is_cloned_straight_from_its_disk(world):
    add_vm_on_both_clusters(world, 103)

    assert world.run('vm', 'create', '-vm', 101, 103, '-no-register').code == 0

    shared, live = sorted(r['body']['source_path'] for r in world.ontap_requests(path=CLONE, on=world.a))
    assert re.fullmatch(r'\.snapshot/pve_ontap_capture_\S+_all/images/103/vm-103-disk-0\.raw', shared)
    assert live == 'images/101/vm-101-disk-0.raw'


# -- a capture that fails, or that a clone may still read

def test_a_failed_shared_capture_fails_only_the_vms_that_need_it(world):
    for vmid in (103, 104):
        add_vm_on_both_clusters(world, vmid)
    add_vm_on_one_volume(world, 106)
    world.b.fail('POST', r'/snapshots$', status=400, code='524479', message='Volume is offline.')

    result = world.run('vm', 'create', '-vm', 101, 103, 104, 106, '-no-register')

    assert result.code == 1
    assert error_lines(result) == ['ERROR: vm create failed for 2 of 4 VMs: 103, 104']
    for vmid in (103, 104):
        (line,) = [line for line in result.err.splitlines() if line.startswith(f'WARNING: VM {vmid}: snapshot ')]
        assert 'Volume is offline.' in line and line.endswith('nothing was cloned')
        assert not clones_of(world, vmid)
    assert len(clones_of(world, 101)) == len(clones_of(world, 106)) == 1
    assert not world.vol1.snapshots and not world.vol2.snapshots        # the capture on ONTAP01 is gone too


def test_a_shared_capture_a_clone_may_still_read_stays_for_the_next_run(world, cluster_dir, monkeypatch):
    for vmid in (103, 104):
        add_vm_on_both_clusters(world, vmid)
    world.write_config(defaults='job_timeout = 1\n')
    world.a.slow_job('POST', CLONE, 4, match=cloning('images/103/vm-103-disk-0.raw'))

    result = world.run('vm', 'create', '-vm', 103, 104, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 1
    assert error_lines(result) == ['ERROR: vm create failed for 1 of 2 VMs: 103']
    (capture,) = world.vol1.snapshots          # VM 103's clone still read from it: kept
    assert capture.endswith('_all') and not world.vol2.snapshots
    assert f'capture snapshot {capture} of volume proxmox_storage01 (ONTAP {world.a.host}) kept' in result.err
    assert len(clones_of(world, 104)) == 2
    assert noted_captures(world, cluster_dir) == [capture]

    # the next vm create on the volume takes it for a capture left behind, and deletes it
    world.write_config()
    monkeypatch.setattr(tool.Captures, 'LEFTOVER_AGE', 0)
    again = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert again.code == 0, again.err
    assert not world.vol1.snapshots and noted_captures(world, cluster_dir) == []


# -- a stop signal

def test_ctrl_c_during_a_run_still_deletes_the_shared_captures(world, cluster_dir):
    vmids = list(range(103, 109))
    for vmid in vmids:
        add_vm_on_both_clusters(world, vmid)
    for emu in (world.a, world.b):
        emu.slow_job('POST', CLONE, 1, times=None)
    err = interrupt_once_cloning(world, 'vm', 'create', '-vm', *vmids, '-parallel', 2, '-no-register')

    last = err.splitlines()[-1]
    made = [vmid for vmid in vmids if clones_of(world, vmid)]
    assert 1 <= len(made) <= 2 and last.endswith(f'not begun: VM {", ".join(map(str, vmids[len(made):]))})')
    assert not world.vol1.snapshots and not world.vol2.snapshots
    assert len(capture_requests(world, 'POST')) == len(capture_requests(world, 'DELETE')) == 2
    assert noted_captures(world, cluster_dir) == []
