"""vm create of several VMs in one run (-vm with several ids, -all, -node-local): a failing VM stops
no other; the running VMs share one capture snapshot per volume, taken at one instant; each VM
costs its own requests and no more; -parallel VMs at once, each VM's lines together and in VM
order; no node shuts down more than four VMs at once. Stop signals are test_signals.py's. Last,
the batches of parallel requests under every command (Parallel.map)."""

import concurrent.futures
import re
import threading

import pytest
from world import FILE_CLONE, add_vm_on_both_clusters, cloning, cloning_of_vm, error_lines, slow_clones, write_disk

import pve_ontap_snapshot as tool

OLDER = ('2024-01-01_00:00:00+0000', '2024-01-02_00:00:00+0000', '2024-01-03_00:00:00+0000')


def vm_lines(err):
    """The VM each stderr line is about, in order (lines naming no VM left out)."""
    return [int(m.group(1)) for line in err.splitlines() if (m := re.match(r'\w+: VM (\d+)', line))]


def note_answered(world, first, then):
    """A list that gets, for each clone of VM `then` as it arrives, how many clones of VM
    `first` have been answered by then: 0 while `first` is still being cloned."""
    answered = []

    def note(record):
        if record['path'] == FILE_CLONE and cloning_of_vm(then)(record['body']):
            answered.append(sum(1 for r in world.ontap_requests(path=FILE_CLONE)
                                if cloning_of_vm(first)(r['body']) and r['status'] is not None))
    world.a.on_request = world.b.on_request = note
    return answered


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


# -- several VMs, one failure

def test_several_vms_and_one_failure_does_not_stop_the_others(world):
    result = world.run('vm', 'create', '-vm', 102, 101)

    assert result.code == 1
    assert 'VM 102 has no disk on an ONTAP storage' in result.err
    assert result.err.strip().splitlines()[-1] == 'ERROR: vm create failed for 1 of 2 VMs: 102'
    assert len(world.clones(world.vol1, 101)) == 1


def test_a_failing_vm_among_several_stops_no_other_and_keeps_its_place_in_the_output(world):
    for vmid in (103, 104, 105):
        add_vm_on_both_clusters(world, vmid, status='stopped')
    world.b.fail_job('POST', FILE_CLONE, code=13565952, message='Clone start failed.', match=cloning_of_vm(103))

    result = world.run('vm', 'create', '-vm', 105, 103, 104, '-no-register')

    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert lines[-1] == 'ERROR: vm create failed for 1 of 3 VMs: 103'
    assert vm_lines(result.err) == [105, 103, 104]      # as given
    assert lines[1].startswith('WARNING: VM 103: snapshot ') and 'Clone start failed' in lines[1]
    assert 'removed the 1 clone(s) made before (scsi0)' in lines[1]
    assert world.vm_stamps(103) == [] and len(world.vm_stamps(104)) == len(world.vm_stamps(105)) == 1


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


# -- one capture per volume for every running VM: one instant

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
    assert world.noted_captures(cluster_dir) == []
    sources = {r['body']['source_path'].split('/')[1] for r in world.ontap_requests(path=FILE_CLONE)}
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

    shared, live = sorted(r['body']['source_path'] for r in world.ontap_requests(path=FILE_CLONE, on=world.a))
    assert re.fullmatch(r'\.snapshot/pve_ontap_capture_\S+_all/images/103/vm-103-disk-0\.raw', shared)
    assert live == 'images/101/vm-101-disk-0.raw'


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
    world.a.slow_job('POST', FILE_CLONE, 4, match=cloning('images/103/vm-103-disk-0.raw'))

    result = world.run('vm', 'create', '-vm', 103, 104, '-no-register')
    world.a.wait_for_jobs()

    assert result.code == 1
    assert error_lines(result) == ['ERROR: vm create failed for 1 of 2 VMs: 103']
    (capture,) = world.vol1.snapshots          # VM 103's clone still read from it: kept
    assert capture.endswith('_all') and not world.vol2.snapshots
    assert f'capture snapshot {capture} of volume proxmox_storage01 (ONTAP {world.a.host}) kept' in result.err
    assert len(clones_of(world, 104)) == 2
    assert world.noted_captures(cluster_dir) == [capture]

    # the next vm create on the volume takes it for a capture left behind, and deletes it
    world.write_config()
    monkeypatch.setattr(tool.Captures, 'LEFTOVER_AGE', 0)
    again = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert again.code == 0, again.err
    assert not world.vol1.snapshots and world.noted_captures(cluster_dir) == []


# -- each VM its own requests

def test_every_vm_costs_its_own_requests_and_no_more(world):
    for vmid in (103, 104, 105, 106):
        add_vm_on_both_clusters(world, vmid)

    ontap, pve = world.requests_of('vm', 'create', '-all', '-no-register')

    # a volume lookup per cluster, one clone per disk: 6 of VM 100, 1 of VM 101, 2 of each new one;
    # one capture of each volume for all five running VMs, made and deleted; each VM's saved
    # manifest: 6 VMs, 1 each; and the header of VM 100's one qcow2 disk (its backing file)
    assert ontap == 2 + 6 + 1 + 4 * 2 + 2 * 2 + 6 + 1
    # login, the VM list, storage.cfg, and each VM's config (VM 102's too, to find it has no ONTAP disk)
    assert pve == 3 + 7
    assert all(len(world.vm_stamps(vmid)) == 1 for vmid in (100, 101, 103, 104, 105, 106))


def test_keep_deletes_every_old_set_of_a_vm_without_reading_its_config_again(world):
    for vmid in (103, 104, 105, 106):
        add_vm_on_both_clusters(world, vmid, older=OLDER)

    ontap, pve = world.requests_of('vm', 'create', '-vm', 103, 104, 105, 106, '-keep', 2)

    # the 2 captures all VMs share, made and deleted; per VM: 2 clones, 2 directory listings, 2 old sets
    # of 2 files deleted (made before manifests were saved), and its manifest written
    assert ontap == 2 + 2 * 2 + 4 * (2 + 2 + 4 + 1)
    # per VM: its config, and registering the clones (PUT, guarded by the config's digest): that config
    # serves to delete both old sets as well
    assert pve == 3 + 4 * 2
    for vmid in (103, 104, 105, 106):
        assert world.vm_stamps(vmid)[0] == OLDER[2] and len(world.vm_stamps(vmid)) == 2


def test_keep_takes_the_unused_disks_of_a_registered_old_set_with_it(world):
    for vmid in (103, 104):
        add_vm_on_both_clusters(world, vmid, status='stopped')     # its config changes at once
    assert world.run('vm', 'create', '-vm', 103, 104, '-keep', 1).code == 0
    first = {vmid: world.vm_stamps(vmid) for vmid in (103, 104)}

    ontap, pve = world.requests_of('vm', 'create', '-vm', 103, 104, '-keep', 1)

    # per VM: 2 clones, its manifest written, 2 listings, the old set's 2 files with its manifest; its
    # config and one PUT to register, one PUT to unregister the old set
    assert (ontap, pve) == (2 + 2 * 8, 3 + 2 * 3)
    for vmid in (103, 104):
        (stamp,) = world.vm_stamps(vmid)
        assert [stamp] != first[vmid]
        unused = sorted(v for k, v in world.pve.vm(vmid).config.items() if k.startswith('unused'))
        assert unused == [f'ONTAP01:{vmid}/vm-{vmid}-disk-0-snapshot-{stamp}.raw',
                          f'ONTAP02:{vmid}/vm-{vmid}-disk-1-snapshot-{stamp}.raw']


# -- -parallel

def test_each_vms_lines_come_together_and_in_vm_order_however_the_vms_finish(world):
    for vmid in (103, 104, 105):
        add_vm_on_both_clusters(world, vmid)
    slow_clones(world, 1, vmid=103)
    answered = note_answered(world, 103, 104)

    result = world.run('vm', 'create', '-vm', 103, 104, 105, '-no-register')

    assert result.code == 0, result.err
    assert answered == [0, 0]   # VM 104 was cloned before VM 103 was
    # per VM: its warnings (two volumes captured at two instants, crash-consistent), then its result
    assert vm_lines(result.err) == [103] * 3 + [104] * 3 + [105] * 3
    assert all(len(world.vm_stamps(vmid)) == 1 for vmid in (103, 104, 105))


def test_a_dry_run_prints_each_vms_lines_together_in_vm_order(world):
    add_vm_on_both_clusters(world, 103, node='pve2')
    add_vm_on_both_clusters(world, 104, node='pve1')
    world.pve.slow_network(0.3, node='pve2')     # VM 103's pending config comes late

    result = world.run('-dry-run', 'vm', 'create', '-vm', 103, 104)

    assert result.code == 0, result.err
    # the captures both VMs share made first and deleted last; between them each VM's clones, manifest
    # and registration
    lines = result.out.splitlines()
    assert [line.split()[1] for line in lines[:2] + lines[-2:]] == ['create'] * 2 + ['delete'] * 2
    assert all(re.search(r' snapshot pve_ontap_capture_\S+_all of volume ', line) for line in lines[:2] + lines[-2:])
    named = [re.search(r'images/(\d+)/|VM (\d+)', line).groups() for line in lines[2:-2]]
    assert [int(next(filter(None, found))) for found in named] == [103] * 4 + [104] * 4
    assert world.vm_stamps(103) == world.vm_stamps(104) == []


def test_parallel_1_takes_one_vm_after_the_other(world):
    for vmid in (103, 104):
        add_vm_on_both_clusters(world, vmid)
    slow_clones(world, 0.3, vmid=103)
    answered = note_answered(world, 103, 104)

    assert world.run('vm', 'create', '-vm', 103, 104, '-parallel', 1, '-no-register').code == 0

    assert answered == [2, 2]


@pytest.mark.parametrize('value', ['0', '33', 'many', '٣'])
def test_parallel_takes_a_whole_number_from_1_to_32(world, value):
    assert world.usage_error('vm', 'create', '-all', '-parallel', value).endswith(
        f"argument -parallel/--parallel: '{value}': -parallel takes a whole number from 1 to 32")


def test_no_node_shuts_down_more_than_four_vms_at_once(world):
    ours = {vmid: 'pve1' for vmid in range(103, 109)} | {109: 'pve2', 110: 'pve2'}
    for vmid, node in ours.items():
        add_vm_on_both_clusters(world, vmid, node=node)
    for emu in (world.a, world.b):      # the captures, taken while the VMs are down
        emu.slow_job('POST', r'/snapshots$', 1, times=None)
    down = {'pve1': 0, 'pve2': 0}

    def note(record):
        if record['path'].endswith('/snapshots'):
            for node, most in down.items():
                now = sum(1 for vmid, home in ours.items() if home == node and world.pve.vm(vmid).status != 'running')
                down[node] = max(most, now)
    world.a.on_request = world.b.on_request = note

    result = world.run('vm', 'create', '-vm', *ours, '-shutdown', '-no-register')

    assert result.code == 0, result.err
    assert down == {'pve1': 4, 'pve2': 2}
    assert all(world.pve.vm(vmid).status == 'running' and len(world.vm_stamps(vmid)) == 1 for vmid in ours)


def test_vms_of_one_run_share_each_storage_lock_and_the_run_stamp(world, cluster_dir):
    for vmid in (103, 104, 105):
        add_vm_on_both_clusters(world, vmid, status='stopped')

    assert world.run('vm', 'create', '-vm', 104, 105, '-no-register').code == 0

    (stamp,) = {world.vm_stamps(vmid)[0] for vmid in (104, 105)}
    for storage in ('ONTAP01', 'ONTAP02'):
        recorded = world.noted(cluster_dir, storage)
        assert sorted(recorded) == [f'vm104 {stamp}', f'vm105 {stamp}']
    # the same VM again gets a stamp of its own
    assert world.run('vm', 'create', '-vm', 104, '-no-register').code == 0
    first, again = world.vm_stamps(104)
    assert first == stamp < again


# -- one timer on every node: -node-local

def snapshotted(world, vmid):
    vols = (world.vol1, world.vol2)
    return any('-snapshot-' in name for vol in vols for name in world.files(vol, vmid))


def test_node_local_takes_only_the_vms_of_this_node(world, monkeypatch):
    monkeypatch.setattr(tool.Node, 'name', lambda: 'pve2')

    result = world.run('vm', 'create', '-all', '-node-local', '-no-register')

    assert result.code == 0, result.err
    assert snapshotted(world, 101) and not snapshotted(world, 100)


def test_node_local_on_a_node_without_vms_has_nothing_to_do(world, monkeypatch):
    world.pve.add_node('pve3')
    monkeypatch.setattr(tool.Node, 'name', lambda: 'pve3')
    before = world.state()

    result = world.run('vm', 'create', '-all', '-node-local')

    assert result.code == 0, result.err
    assert 'no VM on node pve3 has a disk on a storage of' in result.err
    assert world.state() == before


def test_node_local_needs_a_node_and_all(world):
    before = world.state()

    off = world.run('vm', 'create', '-all', '-node-local')
    alone = world.run('vm', 'create', '-vm', 100, '-node-local')

    assert (off.code, alone.code) == (1, 2)
    assert off.err.splitlines()[-1] == ('ERROR: -node-local: not on a PVE node as root, so no node is this one: '
                                        'run it on a node')
    assert alone.err.splitlines()[-1] == 'ERROR: -node-local goes with -all (it chooses among all VMs)'
    assert world.state() == before


# -- the batches of parallel requests under every command (Parallel.map)

def test_a_batch_answers_in_item_order_with_limit_calls_at_once():
    running, most, lock = [0], [0], threading.Lock()
    three_at_once = threading.Barrier(3, timeout=30)     # broken unless three calls run at once

    def call(item):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        three_at_once.wait()
        with lock:
            running[0] -= 1
        return item * 10

    assert tool.Parallel.map(call, list(range(9)), limit=3) == [item * 10 for item in range(9)]
    assert most[0] == 3


def test_after_a_failure_no_call_begins_and_the_failure_is_raised():
    called = []

    def call(item):
        called.append(item)
        if item == 0:
            raise tool.Failure('item 0')

    with pytest.raises(tool.Failure, match='item 0'):
        tool.Parallel.map(call, list(range(8)), limit=2)
    assert set(called) <= {0, 1}      # item 1 may have begun beside it, no later one


def test_a_batch_that_finishes_calls_every_item_and_raises_the_first_failure_in_item_order():
    called = []

    def call(item):
        called.append(item)
        if item in (2, 5):
            raise tool.Failure(f'item {item}')

    with pytest.raises(tool.Failure, match='item 2'):
        tool.Parallel.map(call, list(range(8)), limit=3, finish=True)
    assert sorted(called) == list(range(8))


def test_a_worker_threads_batch_ends_even_when_no_thread_of_the_pool_is_free(monkeypatch):
    busy, blocked = concurrent.futures.ThreadPoolExecutor(max_workers=1), threading.Event()
    busy.submit(blocked.wait, 30)
    monkeypatch.setattr(tool.Parallel, '_pool', busy)
    answer = {}
    worker = threading.Thread(target=lambda: answer.update(out=tool.Parallel.map(lambda item: item + 1, [1, 2, 3])))

    worker.start()
    worker.join(30)
    blocked.set()
    busy.shutdown()

    assert answer == {'out': [2, 3, 4]}
